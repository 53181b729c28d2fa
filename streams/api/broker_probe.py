"""Is the broker there? What the pre-action check asks before it answers from a worker's memory.

During a broker outage a worker still holds every agent's state in memory, and could go on answering
``POST /v1/check``. It does not (``503 broker_unavailable``), because nothing it would say can be kept:

- the actions the runtime performs meanwhile cannot reach ``agent-actions``, so the agent's windows do
  not move: a runaway agent's thousandth send is judged as if it were its first, and allowed;
- an ``allow`` from the worker looks authoritative, is not audited (the audit trail is a topic) and is
  not reported as a fallback, so the SOC never learns what went ahead unchecked;
- a freeze, an approval request or a release cannot be published, and the runtimes' FreezeGuards,
  which cannot read ``agent-control`` either, already hold every agent (fail closed).

So the runtime's own, documented policy applies (``CheckClient``: fail closed for ``restricted``,
open otherwise), every such answer is reported to ``POST /v1/fallbacks`` once the broker is back, and
agents that embed a FreezeGuard stay held. :class:`BrokerProbe` asks the broker for one partition's end
offset every ``every_s`` seconds (a request of a few bytes); the broker counts as gone when no answer
came for ``FLOWBREAKER_CHECK_BROKER_STALE_S`` (default 5 s, within the guards' 2-4 s of holding).

>>> probe = BrokerProbe(None, "t", stale_s=5.0, clock=iter([0.0, 3.0, 9.0]).__next__)
>>> probe.answered()           # at 0.0
>>> probe.fresh(), probe.fresh()   # at 3.0, 9.0
(True, False)
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import Any, Callable

__all__ = ["BrokerProbe", "stale_after_s"]

log = logging.getLogger("flowbreaker.api")


def stale_after_s(environ=None) -> float:
    """``FLOWBREAKER_CHECK_BROKER_STALE_S`` (default 5): how long without a broker answer the check waits."""
    env = os.environ if environ is None else environ
    try:
        value = float(env.get("FLOWBREAKER_CHECK_BROKER_STALE_S", 5.0))
    except ValueError:
        return 5.0
    return value if value > 0 else 5.0


class BrokerProbe:
    def __init__(self, settings: Any, topic: str, *, stale_s: float | None = None, every_s: float = 1.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.settings, self.topic = settings, topic
        self.stale_s = stale_after_s() if stale_s is None else stale_s
        self.every_s = every_s
        self.clock = clock
        self.last_answer: float | None = None
        self.failures = 0

    def answered(self) -> None:
        self.last_answer = self.clock()

    def fresh(self) -> bool:
        """Did the broker answer within ``stale_s``? (False before its first answer.)"""
        return self.last_answer is not None and self.clock() - self.last_answer <= self.stale_s

    async def run(self) -> None:
        """Probe until cancelled; a client that fails is replaced."""
        from aiokafka import AIOKafkaConsumer, TopicPartition

        tp = TopicPartition(self.topic, 0)
        while True:
            consumer = AIOKafkaConsumer(client_id=f"{self.settings.app_id}-broker-probe", group_id=None,
                                        enable_auto_commit=False, request_timeout_ms=max(1000, int(self.stale_s * 1000)),
                                        **self.settings.aiokafka_config())
            try:
                await asyncio.wait_for(consumer.start(), self.stale_s)
                while True:
                    await asyncio.wait_for(consumer.end_offsets([tp]), self.stale_s)
                    was_gone = self.last_answer is not None and not self.fresh()
                    self.answered()
                    if was_gone:
                        log.warning("the broker answers again: /v1/check answers again")
                    await asyncio.sleep(self.every_s)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the broker is gone or slow: say so once per outage
                self.failures += 1
                if self.failures == 1 or self.fresh():
                    log.warning("no answer from the broker (%s): /v1/check answers 503 after %.0f s without one",
                                type(exc).__name__, self.stale_s)
                await asyncio.sleep(self.every_s)
            finally:
                try:
                    await asyncio.wait_for(consumer.stop(), 2.0)
                except Exception:  # noqa: BLE001 - a client of a gone broker may not stop cleanly
                    pass
