"""What every worker knows of the control plane, folded from three topics it reads in full.

:class:`ControlFeed` follows ``agent-control``, ``agent-incidents`` and
``agent-approvals`` from the beginning, on every partition (a plain consumer
without a group, in the worker's event loop), so any worker can answer
``GET /v1/breakers``, ``GET /v1/incidents/{id}`` and the approval listings
without asking the others:

- breakers: the contract's rules (:class:`streams.clients.commands.CommandFold`), with
  only commands whose signature verifies (:mod:`streams.clients.signing`): a signed
  ``freeze`` -> ``open``; a signed ``release`` naming the open incident ->
  ``half_open`` (listed for the policy's probation time after the release). Per
  agent, only a command newer than every one verified before (``seq``) counts: a
  replayed old freeze or release changes nothing here.
  Workers sign every freeze and release their breakers make, so this is the
  owners' breaker state, as published: an unsigned or forged command changes
  nothing here (and is counted), so ``/v1/breakers`` and ``/v1/agents/{id}``
  tell the same story.
- incidents: a bounded index. The records themselves are kept up to
  ``max_incident_bytes`` (least recently added dropped first); a small summary
  of each (agent, severity, who froze it) is kept for many more, for the
  two-person rule. The first record of an incident id wins: a later record
  with the same id cannot change who froze it.
- approvals: shape-checked (:func:`streams.api.approvals.decode_approval`) and
  handed to an :class:`streams.api.approvals.ApprovalStore`.

When it works, when it fails:

- ``caught_up`` is set once the topics were read to the end offsets seen at
  start; until then the API answers these routes with 503. It stays set
  afterwards: the folds are kept and go on from where they were.
- :meth:`ControlFeed.sync` waits (bounded) until everything on the topics at the
  time of the call is folded in: a worker reads what another just wrote.
- A record that cannot be decoded or validated (any reason: not JSON, too deep,
  wrong types, too large, bad UTF-8) is counted in ``invalid`` and in the
  metric ``flowbreaker_control_records_rejected_total{topic, reason}``, logged
  with its topic, partition and offset, and skipped: no record can stop the
  follower. If the consumer itself fails (broker gone) it is restarted after a
  second from the offsets it had reached (``restarts`` counts this).

>>> feed = ControlFeed.offline(probation_s=3600)
>>> feed.apply_control(0, 5, {"command": "freeze", "agent_id": "a", "incident_id": "inc-1",
...                           "issued_at": "2026-03-02T09:00:00Z", "reason": "r", "issued_by": "flowbreaker"})
>>> feed.breakers_in("open", now=0)[0]["incident_id"]
'inc-1'
>>> feed.apply_control(0, 4, {"command": "release", "agent_id": "a", "incident_id": "inc-1",
...                           "issued_at": "2026-03-02T09:01:00Z"})
>>> feed.breakers_in("open", now=0)[0]["agent_id"]   # an older offset changes nothing
'a'
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import Counter, OrderedDict
from typing import Any, Callable

from detector.timestamps import instant_or_none

from streams.clients.commands import CommandFold, RecordError, RejectLog, decode_command, decode_record

__all__ = ["ControlFeed", "MAX_INCIDENT_BYTES"]

log = logging.getLogger("flowbreaker.api")

#: an incident record (trace of 200 actions, metadata only) is tens of KB; none is near this
MAX_INCIDENT_BYTES = 4 * 1024 * 1024


def _ts(value: Any) -> float | None:
    return instant_or_none(value)  # None for a missing, malformed or offset-less time


def _text(value: Any, limit: int = 1024) -> str | None:
    return value[:limit] if isinstance(value, str) else None


class ControlFeed:
    """The worker's index of breakers, incidents and approvals (see the module docstring).

    ``keys`` verifies commands (None: trusted, for :meth:`offline` feeds only);
    ``metrics`` is a :class:`streams.clients.commands.ControlMetrics` (optional).
    """

    def __init__(self, settings: Any, topics: dict[str, str], counts: dict[str, int], *, probation_s: float,
                 on_approval: Callable[[dict], None] | None = None, max_incident_bytes: int = 64 * 1024 * 1024,
                 max_incidents: int = 200_000, max_agents: int = 1_000_000, keys: Any = None,
                 metrics: Any = None) -> None:
        if settings is not None and keys is None:
            raise ValueError("a control feed that reads Kafka needs the command signing keys")
        self.settings = settings
        self.topics = topics            # logical -> name: control, incidents, approvals
        self.counts = counts
        self.probation_s = probation_s
        self.on_approval = on_approval
        self.max_incident_bytes = max_incident_bytes
        self.max_incidents = max_incidents
        self.max_agents = max_agents
        self.metrics = metrics
        self.fold = CommandFold(keys, unverified_freezes=False)
        self.breakers: dict[str, dict] = {}
        self._next: dict[tuple[str, int], int] = {}   # (logical topic, partition) -> next offset to fold
        self._incidents: OrderedDict[str, bytes] = OrderedDict()
        self._incident_bytes = 0
        self._meta: OrderedDict[str, dict] = OrderedDict()
        self.invalid = 0
        self.rejected: Counter = Counter()            # (topic, reason) -> records skipped
        self.restarts = 0
        self.caught_up = asyncio.Event() if settings is not None else None
        self._consumer: Any = None
        self._offsets: Any = None
        self._target: asyncio.Future | None = None
        self._tps: list = []
        self._progress: asyncio.Event | None = None
        self._reject_log = RejectLog(log)
        self._ignore_log = RejectLog(log, what="ignored a command")

    @classmethod
    def offline(cls, probation_s: float = 24 * 3600.0, keys: Any = None) -> "ControlFeed":
        """A feed fed by hand (tests, doctests): no Kafka; without ``keys`` every command counts as signed."""
        return cls(None, {}, {}, probation_s=probation_s, keys=keys)

    # ------------------------------------------------------------------ folding
    def _seen(self, topic: str, partition: int | None, offset: int | None) -> bool:
        """True if this record was folded already (a re-read); else note it."""
        if partition is None or offset is None:
            return False
        key = (topic, partition)
        nxt = self._next.get(key)
        if nxt is not None and offset < nxt:
            return True
        self._next[key] = offset + 1
        return False

    def _reject(self, topic: str, partition: Any, offset: Any, err: RecordError) -> None:
        self.invalid += 1
        self.rejected[(topic, err.reason)] += 1
        if self.metrics is not None:
            self.metrics.reject(topic, err.reason)
        self._reject_log(self.topics.get(topic, topic), partition, offset, err)

    def apply_control(self, partition: int, offset: int, value: Any) -> None:
        """Fold one ``agent-control`` record (its bytes, or a mapping). Never raises."""
        if self._seen("control", partition, offset):
            return
        try:
            cmd = decode_command(value)
        except RecordError as err:
            self._reject("control", partition, offset, err)
            return
        outcome = self.fold.apply(cmd)
        if self.metrics is not None:
            self.metrics.command("index", outcome, self.fold.last_verdict)
        if outcome not in ("frozen", "refrozen", "released"):
            if outcome != "repeat":
                self._ignore_log(self.topics.get("control", "control"), partition, offset,
                                 f"{cmd.command} of {cmd.agent_id!r} (incident {cmd.incident_id!r}, by "
                                 f"{cmd.issued_by!r}) not applied: {outcome} (signature: {self.fold.last_verdict})")
            return
        agent = cmd.agent_id
        entry = {"agent_id": agent, "incident_id": cmd.incident_id, "since": cmd.issued_at,
                 "since_t": _ts(cmd.issued_at), "why": cmd.reason, "by": cmd.issued_by,
                 "state": "half_open" if cmd.command == "release" else "open"}
        self.breakers.pop(agent, None)
        self.breakers[agent] = entry
        if len(self.breakers) > self.max_agents:  # the oldest change first; an open breaker is never dropped
            for a in list(self.breakers)[: len(self.breakers) - self.max_agents]:
                if self.breakers[a]["state"] != "open":
                    del self.breakers[a]

    def apply_incident(self, raw: bytes | None, rec: Any = None, *, partition: int | None = None,
                       offset: int | None = None) -> None:
        """Index one ``agent-incidents`` record (its bytes, or the record as a dict). Never raises."""
        if self._seen("incidents", partition, offset):
            return
        try:
            if rec is None:
                rec = decode_record(raw, dict, max_bytes=MAX_INCIDENT_BYTES)
            elif not isinstance(rec, dict):
                raise RecordError("not_object", "not an object")
            iid = rec.get("incident_id")
            if not isinstance(iid, str) or not 1 <= len(iid) <= 1024:
                raise RecordError("schema", "incident_id: a string of 1 to 1024 characters")
            if raw is None:
                raw = json.dumps(rec, separators=(",", ":")).encode()
        except RecordError as err:
            self._reject("incidents", partition, offset, err)
            return
        except Exception as err:  # noqa: BLE001 - e.g. a dict that is not JSON-encodable: a bad record
            self._reject("incidents", partition, offset, RecordError("error", type(err).__name__))
            return
        if iid not in self._meta:  # the first record of an incident is the one its worker wrote
            self._meta[iid] = {"incident_id": iid, "agent_id": _text(rec.get("agent_id")),
                               "severity": _text(rec.get("severity"), 32),
                               "frozen_by": _text(rec.get("frozen_by"), 256) or "flowbreaker",
                               "opened_at": _text(rec.get("opened_at"), 64), "manual": rec.get("manual") is True}
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

    def apply_approval(self, value: Any, *, partition: int | None = None, offset: int | None = None) -> None:
        """Hand one shape-checked ``agent-approvals`` record to ``on_approval``. Never raises."""
        if self._seen("approvals", partition, offset):
            return
        from streams.api.approvals import decode_approval

        try:
            rec = decode_approval(value)
        except RecordError as err:
            self._reject("approvals", partition, offset, err)
            return
        if self.on_approval is None:
            return
        try:
            self.on_approval(rec)
        except Exception as err:  # noqa: BLE001 - the store refused it: count it, never stop the feed
            self._reject("approvals", partition, offset, RecordError("error", type(err).__name__))

    def incident(self, incident_id: str) -> bytes | None:
        return self._incidents.get(incident_id)

    def incident_meta(self, incident_id: str) -> dict | None:
        return self._meta.get(incident_id)

    def breaker(self, agent_id: str) -> dict | None:
        """The agent's published breaker entry (state ``open`` or ``half_open``), or None."""
        return self.breakers.get(agent_id)

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

    def status(self) -> dict:
        return {"caught_up": bool(self.caught_up and self.caught_up.is_set()), "restarts": self.restarts,
                "invalid": self.invalid, "breakers": len(self.breakers), "incidents": len(self._meta),
                "commands": dict(self.fold.outcomes), "signatures": dict(self.fold.verdicts)}

    # ------------------------------------------------------------------ following Kafka
    async def run(self) -> None:
        """Follow the topics until cancelled (restarting the consumer after a failure, from where it was)."""
        from streams.aio_seek import keep_following

        await keep_following(self._follow, what="control feed", on_restart=self._restarted, logger=log)

    def _restarted(self) -> None:
        self.restarts += 1

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
            by_name = {name: logical for logical, name in self.topics.items()}
            tps = [TopicPartition(name, p) for logical, name in self.topics.items()
                   for p in range(self.counts[name])]
            consumer.assign(tps)
            fresh = []
            for tp in tps:  # a restart goes on from the folds' offsets; a start from the beginning
                nxt = self._next.get((by_name[tp.topic], tp.partition))
                if nxt is None:
                    fresh.append(tp)
                else:
                    consumer.seek(tp, nxt)
            if fresh:  # one request for all: a call per partition cost ~0.5 s each (12 s for 24 partitions)
                await consumer.seek_to_beginning(*fresh)
            self._consumer, self._offsets, self._tps = consumer, offsets, tps
            self._progress = asyncio.Event()
            target = await consumer.end_offsets(tps)
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
                    log.info("control feed caught up: %d breakers, %d incidents, %d records skipped",
                             len(self.breakers), len(self._meta), self.invalid)
        finally:
            self._consumer = self._offsets = None
            await consumer.stop()
            await offsets.stop()

    def _apply(self, kind: str | None, partition: int, offset: int, value: bytes | None) -> None:
        if kind == "control":
            self.apply_control(partition, offset, value)
        elif kind == "incidents":
            self.apply_incident(value, partition=partition, offset=offset)
        elif kind == "approvals":
            self.apply_approval(value, partition=partition, offset=offset)

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
