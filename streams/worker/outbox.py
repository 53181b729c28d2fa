"""The outbox: records decided for an agent but not yet confirmed published (rule 3 of ``streams/worker/app.py``).

A freeze is recorded before it is acted on: its command, its incident record
and its audit record are put in the agent's outbox, the agent's state is
written to the changelog with the outbox in it, and only then are the records
published. A record leaves the outbox once the broker confirmed it (or the
worker read it back from its topic), with the agent's next state write. An
agent that comes back from the changelog with a non-empty outbox (the worker
died in between) has each record looked up on its topic partition, from a
minute before it was recorded on, and republished only if it is not there:
no freeze is lost and none is sent twice.

>>> box = Outbox()
>>> e = OutboxEntry("freeze", "control", 3, "agent-a", b'{"command":"freeze"}', "inc-1", 1772442000000)
>>> box.add("agent-a", [e])
>>> box.published("agent-a", "inc-1"), box.confirm("agent-a", "inc-1", "freeze"), box.published("agent-a", "inc-1")
(False, True, True)

Entries are msgpack arrays in the changelog envelope, the same seven fields in
the same order as the positional lists older workers wrote, so either worker
reads the other's changelog.
"""

from __future__ import annotations

import logging
from typing import Callable, Iterable

import msgspec

__all__ = ["OutboxEntry", "Outbox", "reconcile", "RECONCILE_MARGIN_MS"]

log = logging.getLogger("flowbreaker.worker")

#: how far before an entry was recorded the lookup of its publication starts (clock skew between hosts)
RECONCILE_MARGIN_MS = 60_000


class OutboxEntry(msgspec.Struct, array_like=True, frozen=True):
    """One record to publish: ``kind`` (freeze, incident, release, audit-freeze, audit-release), its logical
    topic (``streams.settings.TOPICS``) and partition, key, encoded value, the incident it belongs to and
    the wall-clock time (ms) it was recorded."""

    kind: str
    logical: str
    partition: int
    key: str
    value: bytes
    incident_id: str
    recorded_ms: int

    @classmethod
    def of(cls, raw: Iterable) -> "OutboxEntry":
        """An entry from its envelope form (a 7-item list)."""
        return msgspec.convert(list(raw), cls)


class Outbox:
    """The unconfirmed entries of every agent this worker holds."""

    def __init__(self) -> None:
        self._entries: dict[str, list[OutboxEntry]] = {}

    def __contains__(self, agent: str) -> bool:
        return agent in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, agent: str) -> list[OutboxEntry]:
        return self._entries.get(agent, [])

    def add(self, agent: str, entries: Iterable[OutboxEntry]) -> None:
        self._entries.setdefault(agent, []).extend(entries)

    def drop(self, agent: str) -> None:
        self._entries.pop(agent, None)

    def confirm(self, agent: str, incident_id: str, kind: str) -> bool:
        """The ``kind`` record of ``incident_id`` is on its topic; True if that removed an entry."""
        box = self._entries.get(agent)
        if not box:
            return False
        left = [e for e in box if not (e.kind == kind and e.incident_id == incident_id)]
        if len(left) == len(box):
            return False
        if left:
            self._entries[agent] = left
        else:
            del self._entries[agent]
        return True

    def published(self, agent: str, incident_id: str) -> bool:
        """No record of this incident is waiting in the agent's outbox."""
        return not any(e.incident_id == incident_id for e in self._entries.get(agent, ()))

    def incident(self, agent: str, incident_id: str) -> dict | None:
        """Severity and author of an incident not yet confirmed published (for the two-person rule)."""
        for e in self._entries.get(agent, ()):
            if e.kind == "incident" and e.incident_id == incident_id:
                rec = msgspec.json.decode(e.value)
                return {"severity": rec.get("severity"), "frozen_by": rec.get("frozen_by") or "flowbreaker"}
        return None


async def reconcile(settings, topics: dict[str, str], entries: list[OutboxEntry],
                    found: Callable[[OutboxEntry], None], missing: Callable[[OutboxEntry], object]) -> None:
    """Look each entry up on its topic partition (from ``recorded_ms`` less a margin to the partition's end):
    ``found(entry)`` if it is there, else ``await missing(entry)`` (republish). Raises on Kafka errors (the
    caller keeps the outbox: the next owner of the agent tries again)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(client_id=f"{settings.app_id}-reconcile", group_id=None, enable_auto_commit=False,
                                **settings.aiokafka_config())
    await consumer.start()
    try:
        for entry in entries:
            tp = TopicPartition(topics[entry.logical], entry.partition)
            consumer.assign([tp])
            hit = False
            start = (await consumer.offsets_for_times({tp: max(0, entry.recorded_ms - RECONCILE_MARGIN_MS)}))[tp]
            end = (await consumer.end_offsets([tp]))[tp]
            if start is not None:
                consumer.seek(tp, start.offset)
                while not hit and await consumer.position(tp) < end:
                    got = await consumer.getmany(tp, timeout_ms=1000, max_records=1000)
                    hit = any(m.value == entry.value for m in got.get(tp, ()))
            if hit:
                found(entry)
            else:
                log.warning("republishing %s of incident %s (not found on %s)", entry.kind, entry.incident_id, tp)
                await missing(entry)
    finally:
        await consumer.stop()
