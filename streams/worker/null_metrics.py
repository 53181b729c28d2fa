"""A metrics object that records nothing: what a worker built without ``streams.worker.metrics`` holds.

It has the methods the worker's processor calls on :class:`streams.worker.metrics.Metrics`,
so the processor never asks whether it has metrics.

>>> m = NullMetrics()
>>> m.dlq("depth"), m.observe_batch([], 0.0), m.render()
(None, None, b'')
"""

from __future__ import annotations

__all__ = ["NullMetrics"]


class NullMetrics:
    registry = None

    def observe_batch(self, decisions, now: float) -> None:
        pass

    def observe(self, event, decision, latency_seconds: float) -> None:
        pass

    def dlq(self, code: str) -> None:
        pass

    def duplicate(self) -> None:
        pass

    def miskeyed(self, reason: str, rerouted: bool, n: int = 1) -> None:
        pass

    def release(self, agent_id: str | None = None) -> None:
        pass

    def episode(self, rec) -> None:
        pass

    def set_episodes_open(self, n: int) -> None:
        pass

    def verdict(self, kind: str) -> None:
        pass

    def verdict_rejected(self, reason: str) -> None:
        pass

    def set_frozen(self, frozen) -> None:
        pass

    def set_lag(self, partition: int, lag: int) -> None:
        pass

    def set_assignment(self, partitions) -> None:
        pass

    def set_model(self, version: str, trained_at: str | None) -> None:
        pass

    def set_drift(self, psi) -> None:
        pass

    def refresh_topk(self, now: float | None = None) -> None:
        pass

    def render(self) -> bytes:
        return b""
