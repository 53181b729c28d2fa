"""The audit trail: one JSON record per state-changing act on topic ``agent-audit``.

Who did what, when, why, and with what result. Written for every call of a
state-changing API route (accepted or refused: unauthenticated, forbidden,
invalid, conflicting), every automatic and manual freeze, every release,
approval decision, rejected approval id and pre-action-check fallback a runtime
reports. Records name the principal (the token's ``name``), never a token, a
token hash or an ``Authorization`` header.

Freezes and releases are written through the processor's outbox (the same
durability as the freeze command: in the agent's table state before it is
published, republished after a crash if missing); every other record is
awaited on the broker before the API answers.

Record fields::

    {"audit_id", "at" (RFC 3339 UTC), "at_ms", "who", "role", "what", "why", "result",
     "status" (HTTP status, or null), "target": {"agent_id", "incident_id", "event_id", "approval_id"},
     "detail", "automatic" (true only for flowbreaker's own freezes), "worker"}

``what`` is one of :data:`ACTS`; ``result`` one of ``ok``, ``unauthenticated``,
``forbidden``, ``invalid``, ``not_found``, ``conflict``, ``refused`` (a rule said
no: two-person rule, rejected approval), ``unavailable``, ``error``.

>>> rec = record(who="alice", role="lead", what="release", why="false positive", result="ok", at_ms=0,
...              agent_id="a1", incident_id="inc-1", status=200)
>>> rec["who"], rec["target"]["agent_id"], rec["at"]
('alice', 'a1', '1970-01-01T00:00:00.000Z')
"""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from typing import Any

import msgspec
from aiokafka.partitioner import murmur2

__all__ = ["record", "freeze_entry", "Auditor", "ACTS", "RESULTS"]

ACTS = ("freeze", "release", "feedback", "approve", "deny", "approval_request", "approval_rejected",
        "check_fallback")
RESULTS = ("ok", "unauthenticated", "forbidden", "invalid", "not_found", "conflict", "refused", "unavailable",
           "error")
MAX_TEXT = 1000
_encode = msgspec.json.Encoder().encode


def _iso_ms(at_ms: int) -> str:
    return datetime.fromtimestamp(at_ms / 1000, timezone.utc).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z")


def _cut(value: Any) -> Any:
    if isinstance(value, str) and len(value) > MAX_TEXT:
        return value[:MAX_TEXT] + "…"
    return value


def record(*, who: str, role: str | None, what: str, result: str, at_ms: int, why: str | None = None,
           status: int | None = None, agent_id: str | None = None, incident_id: str | None = None,
           event_id: str | None = None, approval_id: str | None = None, detail: str | None = None,
           automatic: bool = False, worker: str | None = None) -> dict[str, Any]:
    """One audit record (see the module docstring)."""
    return {
        "audit_id": uuid.uuid4().hex, "at": _iso_ms(at_ms), "at_ms": at_ms, "who": _cut(who), "role": role,
        "what": what, "why": _cut(why), "result": result, "status": status,
        "target": {"agent_id": _cut(agent_id), "incident_id": _cut(incident_id), "event_id": _cut(event_id),
                   "approval_id": _cut(approval_id)},
        "detail": _cut(detail), "automatic": automatic, "worker": worker,
    }


def freeze_entry(freeze: dict, incident: dict | None, at_ms: int, worker: str | None = None) -> bytes:
    """The audit record of a freeze (automatic or manual), for the processor's outbox."""
    inc = incident or {}
    by = freeze.get("issued_by") or "flowbreaker"
    automatic = by == "flowbreaker"
    sev = inc.get("severity")
    return _encode(record(
        who=by, role=None if automatic else inc.get("frozen_by_role"), what="freeze", why=freeze.get("reason"),
        result="ok", status=None if automatic else 200, at_ms=at_ms, agent_id=freeze.get("agent_id"),
        incident_id=freeze.get("incident_id"), event_id=inc.get("trigger_event_id"),
        detail=f"severity {sev}" if sev else None, automatic=automatic, worker=worker))


class Auditor:
    """Writes records to the audit topic with the worker's producer and waits for the broker."""

    def __init__(self, app: Any, topic: str, partitions: int, worker: str | None = None) -> None:
        self.app = app
        self.topic = topic
        self.partitions = partitions
        self.worker = worker
        self.written = 0

    def partition(self, key: bytes) -> int:
        return (murmur2(key) & 0x7FFFFFFF) % self.partitions

    def encode(self, rec: dict) -> tuple[bytes, bytes]:
        t = rec.get("target") or {}
        key = (t.get("agent_id") or t.get("approval_id") or rec.get("who") or "-").encode()
        if rec.get("worker") is None:
            rec["worker"] = self.worker
        return key, _encode(rec)

    async def write(self, rec: dict) -> None:
        """Append ``rec``; returns once the broker has it (raises if it does not take it)."""
        key, value = self.encode(rec)
        fut = await self.app.producer.send(self.topic, key, value, self.partition(key), None, None)
        await fut
        self.written += 1
