"""What every worker knows of the control plane, folded from three topics it reads in full.

:class:`ControlFeed` follows ``agent-control``, ``agent-incidents`` and
``agent-approvals`` from the beginning, on every partition (a plain consumer
without a group, in the worker's event loop), so any worker can answer
``GET /v1/breakers``, ``GET /v1/incidents/{id}`` and the approval listings
without asking the others:

- breakers: for each agent the command with the highest offset wins (all
  commands of one agent are in one partition, keyed by ``agent_id``): ``freeze``
  -> ``open``, ``release`` -> ``half_open`` (listed for the policy's probation
  time after the release). This is the view the runtimes' FreezeGuards obey.
- incidents: a bounded index. The records themselves are kept up to
  ``max_incident_bytes`` (least recently added dropped first); a small summary
  of each (agent, severity, who froze it) is kept for many more, for the
  two-person rule.
- approvals: handed to an :class:`streams.approvals.ApprovalStore`.

When it works, when it fails:

- ``caught_up`` is set once the topics were read to the end offsets seen at
  start; until then the API answers these routes with 503.
- :meth:`ControlFeed.sync` waits (bounded) until everything on the topics at the
  time of the call is folded in: a worker reads what another just wrote.
- A broken record is counted in ``invalid`` and skipped. If the consumer fails
  it is restarted after a second; the folds are kept meanwhile.

>>> feed = ControlFeed.offline(probation_s=3600)
>>> feed.apply_control(0, 5, {"command": "freeze", "agent_id": "a", "incident_id": "inc-1",
...                           "issued_at": "2026-03-02T09:00:00Z", "reason": "r", "issued_by": "flowbreaker"})
>>> feed.breakers_in("open", now=0)[0]["incident_id"]
'inc-1'
>>> feed.apply_control(0, 4, {"command": "release", "agent_id": "a", "issued_at": "2026-03-02T09:01:00Z"})
>>> feed.breakers_in("open", now=0)[0]["agent_id"]   # an older offset changes nothing
'a'
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import OrderedDict
from datetime import datetime
from typing import Any, Callable

__all__ = ["ControlFeed"]

log = logging.getLogger("flowbreaker.api")


def _ts(value: Any) -> float | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        when = datetime.fromisoformat(value[:-1] + "+00:00" if value[-1] in "zZ" else value)
    except ValueError:
        return None
    return when.timestamp() if when.tzinfo is not None else None


class ControlFeed:
    def __init__(self, settings: Any, topics: dict[str, str], counts: dict[str, int], *, probation_s: float,
                 on_approval: Callable[[dict], None] | None = None, max_incident_bytes: int = 64 * 1024 * 1024,
                 max_incidents: int = 200_000, max_agents: int = 1_000_000) -> None:
        self.settings = settings
        self.topics = topics            # logical -> name: control, incidents, approvals
        self.counts = counts
        self.probation_s = probation_s
        self.on_approval = on_approval
        self.max_incident_bytes = max_incident_bytes
        self.max_incidents = max_incidents
        self.max_agents = max_agents
        self.breakers: dict[str, dict] = {}
        self._pos: dict[str, tuple[int, int]] = {}
        self._incidents: OrderedDict[str, bytes] = OrderedDict()
        self._incident_bytes = 0
        self._meta: OrderedDict[str, dict] = OrderedDict()
        self.invalid = 0
        self.caught_up = asyncio.Event() if settings is not None else None
        self._consumer: Any = None
        self._offsets: Any = None
        self._target: asyncio.Future | None = None
        self._tps: list = []
        self._progress: asyncio.Event | None = None

    @classmethod
    def offline(cls, probation_s: float = 24 * 3600.0) -> "ControlFeed":
        """A feed fed by hand (tests, doctests): no Kafka."""
        return cls(None, {}, {}, probation_s=probation_s)

    # ------------------------------------------------------------------ folding
    def apply_control(self, partition: int, offset: int, cmd: Any) -> None:
        if not isinstance(cmd, dict) or not isinstance(cmd.get("agent_id"), str) \
                or cmd.get("command") not in ("freeze", "release"):
            self.invalid += 1
            return
        agent = cmd["agent_id"]
        last = self._pos.get(agent)
        if last is not None and last[0] == partition and offset <= last[1]:
            return
        self._pos[agent] = (partition, offset)
        entry = {"agent_id": agent, "incident_id": cmd.get("incident_id"), "since": cmd.get("issued_at"),
                 "since_t": _ts(cmd.get("issued_at")), "why": cmd.get("reason"), "by": cmd.get("issued_by")}
        entry["state"] = "open" if cmd["command"] == "freeze" else "half_open"
        self.breakers.pop(agent, None)
        self.breakers[agent] = entry
        if len(self.breakers) > self.max_agents:  # the oldest change first; an open breaker is never dropped
            for a in list(self.breakers)[: len(self.breakers) - self.max_agents]:
                if self.breakers[a]["state"] != "open":
                    del self.breakers[a]
                    self._pos.pop(a, None)

    def apply_incident(self, raw: bytes | None, rec: Any = None) -> None:
        if rec is None:
            try:
                rec = json.loads(raw or b"")
            except ValueError:
                self.invalid += 1
                return
        if not isinstance(rec, dict) or not isinstance(rec.get("incident_id"), str):
            self.invalid += 1
            return
        iid = rec["incident_id"]
        if raw is None:
            raw = json.dumps(rec, separators=(",", ":")).encode()
        self._meta.pop(iid, None)
        self._meta[iid] = {"incident_id": iid, "agent_id": rec.get("agent_id"), "severity": rec.get("severity"),
                           "frozen_by": rec.get("frozen_by") or "flowbreaker", "opened_at": rec.get("opened_at"),
                           "manual": bool(rec.get("manual"))}
        while len(self._meta) > self.max_incidents:
            self._meta.popitem(last=False)
        old = self._incidents.pop(iid, None)
        if old is not None:
            self._incident_bytes -= len(old)
        self._incidents[iid] = raw
        self._incident_bytes += len(raw)
        while self._incident_bytes > self.max_incident_bytes and len(self._incidents) > 1:
            _, dropped = self._incidents.popitem(last=False)
            self._incident_bytes -= len(dropped)

    def incident(self, incident_id: str) -> bytes | None:
        return self._incidents.get(incident_id)

    def incident_meta(self, incident_id: str) -> dict | None:
        return self._meta.get(incident_id)

    def breakers_in(self, state: str, now: float, agent_prefix: str | None = None, limit: int = 1000) -> list[dict]:
        out = []
        for entry in self.breakers.values():
            if entry["state"] != state:
                continue
            if state == "half_open" and (entry["since_t"] or 0.0) + self.probation_s < now:
                continue
            if agent_prefix and not entry["agent_id"].startswith(agent_prefix):
                continue
            e = {k: v for k, v in entry.items() if k != "since_t"}
            meta = self._meta.get(entry["incident_id"] or "")
            e["severity"] = meta["severity"] if meta else None
            if state == "half_open":
                e["probation_until_t"] = (entry["since_t"] or 0.0) + self.probation_s
            out.append(e)
        out.sort(key=lambda e: (e["since"] or "", e["agent_id"]), reverse=True)
        return out[:limit]

    # ------------------------------------------------------------------ following Kafka
    async def run(self) -> None:
        """Follow the topics until cancelled (restarting the consumer after a failure)."""
        while True:
            try:
                await self._follow()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the broker went away: keep the folds, try again
                log.warning("control feed stopped (%r); restarting in 1 s", exc)
                await asyncio.sleep(1.0)

    async def _follow(self) -> None:
        from aiokafka import AIOKafkaConsumer, TopicPartition

        consumer = AIOKafkaConsumer(client_id=f"{self.settings.app_id}-control-feed", group_id=None,
                                    enable_auto_commit=False, auto_offset_reset="earliest",
                                    **self.settings.aiokafka_config())
        # end offsets from a client of their own: the follower's long-polling fetch would delay them ~0.5 s
        offsets = AIOKafkaConsumer(client_id=f"{self.settings.app_id}-control-feed-offsets", group_id=None,
                                   enable_auto_commit=False, **self.settings.aiokafka_config())
        await consumer.start()
        await offsets.start()
        try:
            tps = [TopicPartition(name, p) for logical, name in self.topics.items()
                   for p in range(self.counts[name])]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            self._consumer, self._offsets, self._tps = consumer, offsets, tps
            self._progress = asyncio.Event()
            target = await consumer.end_offsets(tps)
            by_name = {name: logical for logical, name in self.topics.items()}
            while True:
                got = await consumer.getmany(timeout_ms=200, max_records=5000)
                for tp, msgs in got.items():
                    kind = by_name.get(tp.topic)
                    for m in msgs:
                        self._apply(kind, tp.partition, m.offset, m.value)
                progress, self._progress = self._progress, asyncio.Event()
                progress.set()
                if not self.caught_up.is_set() and await self._reached(target):
                    self.caught_up.set()
                    log.info("control feed caught up: %d breakers, %d incidents", len(self.breakers),
                             len(self._meta))
        finally:
            self._consumer = self._offsets = None
            await consumer.stop()
            await offsets.stop()

    def _apply(self, kind: str | None, partition: int, offset: int, value: bytes | None) -> None:
        if kind == "incidents":
            self.apply_incident(value)
            return
        try:
            rec = json.loads(value or b"")
        except ValueError:
            self.invalid += 1
            return
        if kind == "control":
            self.apply_control(partition, offset, rec)
        elif kind == "approvals" and self.on_approval is not None:
            if isinstance(rec, dict) and isinstance(rec.get("approval_id"), str):
                self.on_approval(rec)
            else:
                self.invalid += 1

    async def _reached(self, target: dict) -> bool:
        consumer = self._consumer
        if consumer is None:
            return False
        for tp, end in target.items():
            if await consumer.position(tp) < end:
                return False
        return True

    async def sync(self, timeout: float = 2.0) -> bool:
        """Wait until everything on the topics now is folded in (True), or ``timeout`` (False)."""
        if self.caught_up is None:
            return True
        deadline = time.monotonic() + timeout
        try:
            await asyncio.wait_for(self.caught_up.wait(), timeout)
        except asyncio.TimeoutError:
            return False
        if self._offsets is None:
            return False
        if self._target is None or self._target.done():  # concurrent callers share one lookup
            self._target = asyncio.ensure_future(self._offsets.end_offsets(self._tps))
        try:
            target = await asyncio.wait_for(asyncio.shield(self._target), max(0.01, deadline - time.monotonic()))
        except (asyncio.TimeoutError, Exception):  # noqa: BLE001 - broker slow or gone: answer from what we have
            return False
        while not await self._reached(target):
            left = deadline - time.monotonic()
            if left <= 0 or self._progress is None:
                return False
            try:
                await asyncio.wait_for(self._progress.wait(), left)
            except asyncio.TimeoutError:
                return False
        return True
