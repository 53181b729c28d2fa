"""Every worker follows ``agent-verdicts`` and applies the verdicts of the agents it holds.

Analysts' verdicts (:mod:`streams.verdicts`) are few. Each worker reads every partition of the topic
(a plain aiokafka consumer without a group, in the worker's event loop) and hands each verdict whose
signature verifies to ``apply(verdict)``: the processor applies it when it owns the agent's partition
of ``agent-actions`` (:meth:`streams.worker.app.Processor.apply_verdict`) and otherwise leaves it to
the owner. A record that is not a signed, valid verdict is counted by reason (``on_reject``, the
metric ``flowbreaker_verdicts_rejected_total``), logged with where it is (rate-limited), and skipped:
no record can stop the follower or teach an agent anything.

Where reading starts: ``lookback_s`` (1 h) before the worker started, so a verdict given while no
worker ran (a key holder's release during an outage) is applied when they come back, and the first
assignment hands every verdict read so far to ``apply``. A verdict older than that is in its agent's
state already: the owner wrote the state when it applied it.

Rebalances: a verdict that arrives while its agent's partition is moving may find no owner (the old
one has let it go, the new one is not ready). The follower keeps the verdicts written in the last
``lookback_s`` (at most ``keep`` of them) and hands those of the last ``rebalance_s`` (60 s) of the
partitions a worker starts on to ``apply`` again (:meth:`VerdictFollower.reapply`), so the new owner
applies what the old one may have missed.

A verdict applied twice is mostly harmless: the engine remembers the ids it applied, so only a worker
that restarted or took the agent over applies one again; it keeps no episode from before, so an
episode's verdict teaches nothing there, and an incident's teaches the same trace items again and
clears the agent's risk budget again if that incident is still its latest.

When it fails: the consumer fails (broker gone) -> logged, restarted after a second from the offsets
it had reached.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from typing import Any, Awaitable, Callable, Iterable

from streams.clients.commands import RejectLog
from streams.verdicts import VerdictRejected, decode

__all__ = ["VerdictFollower", "LOOKBACK_S", "REBALANCE_S"]

log = logging.getLogger("flowbreaker.worker")

#: how far back a starting worker reads agent-verdicts (and keeps what it read)
LOOKBACK_S = 3600.0
#: verdicts written this recently are applied again on the partitions a rebalance hands a worker
REBALANCE_S = 60.0


class VerdictFollower:
    """Follows ``topic`` (``partitions`` of them); ``keys()`` gives the key ring that verifies verdicts,
    ``apply(verdict)`` applies one (async), ``home(agent_id)`` is its partition of ``agent-actions``."""

    def __init__(self, settings: Any, topic: str, partitions: int, *, keys: Callable[[], Any],
                 apply: Callable[[Any], Awaitable[str]], home: Callable[[str], int],
                 on_reject: Callable[[str], None] = lambda reason: None, lookback_s: float = LOOKBACK_S,
                 rebalance_s: float = REBALANCE_S,
                 keep: int = 100_000) -> None:
        self.settings = settings
        self.topic = topic
        self.partitions = partitions
        self.keys = keys
        self.apply = apply
        self.home = home
        self.on_reject = on_reject
        self.lookback_s = lookback_s
        self.rebalance_s = rebalance_s
        self.recent: deque = deque(maxlen=keep)   # (when the record was written, epoch seconds; verdict)
        self.outcomes: dict[str, int] = {}
        self.rejected: dict[str, int] = {}
        self.restarts = 0
        self._next: dict[int, int] = {}
        self._started = time.time()
        self._log = RejectLog(log, what="skipped a verdict")

    async def on_value(self, value: bytes | None, partition: int, offset: int, written: float | None = None) -> str:
        """One record of the topic (``written``: its Kafka timestamp, epoch seconds): applied, left to its
        owner, or rejected (the outcome is returned)."""
        try:
            verdict = decode(value, self.keys())
        except VerdictRejected as err:
            self.rejected[err.reason] = self.rejected.get(err.reason, 0) + 1
            self.on_reject(err.reason)
            self._log(self.topic, partition, offset, err)
            return "rejected"
        self.recent.append((time.time() if written is None else written, verdict))
        outcome = await self.apply(verdict)
        self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1
        return outcome

    async def reapply(self, partitions: Iterable[int], *, first: bool = False) -> int:
        """Hand the recent verdicts of agents on ``partitions`` to ``apply`` again: those of the last
        ``rebalance_s`` after a rebalance, every one kept (``lookback_s``) at the ``first`` assignment."""
        mine = set(partitions)
        now = time.time()
        while self.recent and self.recent[0][0] < now - self.lookback_s:
            self.recent.popleft()
        since = now - (self.lookback_s if first else self.rebalance_s)
        n = 0
        for written, verdict in list(self.recent):
            if written >= since and self.home(verdict.agent_id) in mine:
                await self.apply(verdict)
                n += 1
        return n

    def status(self) -> dict:
        return {"verdict_outcomes": dict(self.outcomes), "verdicts_rejected": dict(self.rejected),
                "verdict_follow_restarts": self.restarts}

    # ------------------------------------------------------------------ following Kafka
    async def run(self) -> None:
        """Follow the topic until cancelled (restarting the consumer after a failure, from where it was)."""
        from streams.aio_seek import keep_following

        await keep_following(self._follow, what=f"following {self.topic}", on_restart=self._restarted, logger=log)

    def _restarted(self) -> None:
        self.restarts += 1

    async def _follow(self) -> None:
        from aiokafka import AIOKafkaConsumer

        from streams.aio_seek import resume_or_since

        consumer = AIOKafkaConsumer(client_id=f"{self.settings.app_id}-verdicts", group_id=None,
                                    enable_auto_commit=False, auto_offset_reset="earliest",
                                    **self.settings.aiokafka_config())
        await consumer.start()
        try:
            await resume_or_since(consumer, self.topic, self.partitions, self._next,
                                  int((self._started - self.lookback_s) * 1000))
            while True:
                got = await consumer.getmany(timeout_ms=500, max_records=500)
                for tp, msgs in got.items():
                    for m in msgs:
                        self._next[tp.partition] = m.offset + 1
                        await self.on_value(m.value, tp.partition, m.offset,
                                            m.timestamp / 1000.0 if m.timestamp is not None else None)
        finally:
            await consumer.stop()
