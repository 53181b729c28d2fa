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
     "detail", "automatic" (true only for flowbreaker's own freezes), "worker",
     "client" (the caller's address, on refused calls), "count" (on ``refused_calls`` summaries)}

Refused calls (401 unauthenticated, 403 forbidden) are summarised per client
address (:class:`RefusalSummary`): the first of a client's refusals in a
window (60 s) is recorded at once, the rest of that window's as one
``refused_calls`` record with their ``count``, so a flood of bad calls writes at
most two records per client and window (and the number of clients tracked in a
window is bounded). Authenticated calls stay one record each.

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
from collections import Counter
from typing import Any

import msgspec
from aiokafka.partitioner import murmur2

from detector.timestamps import iso_utc

__all__ = ["record", "freeze_entry", "Auditor", "RefusalSummary", "ACTS", "RESULTS"]

ACTS = ("freeze", "release", "feedback", "approve", "deny", "approval_request", "approval_rejected",
        "check_fallback", "refused_calls")
RESULTS = ("ok", "unauthenticated", "forbidden", "invalid", "not_found", "conflict", "refused", "unavailable",
           "error")
MAX_TEXT = 1000
_encode = msgspec.json.Encoder().encode


def _iso_ms(at_ms: int) -> str:
    return iso_utc(at_ms / 1000)  # detector/timestamps.py


def _cut(value: Any) -> Any:
    if isinstance(value, str) and len(value) > MAX_TEXT:
        return value[:MAX_TEXT] + "…"
    return value


def record(*, who: str, role: str | None, what: str, result: str, at_ms: int, why: str | None = None,
           status: int | None = None, agent_id: str | None = None, incident_id: str | None = None,
           event_id: str | None = None, approval_id: str | None = None, detail: str | None = None,
           automatic: bool = False, worker: str | None = None, client: str | None = None,
           count: int | None = None) -> dict[str, Any]:
    """One audit record (see the module docstring)."""
    rec = {
        "audit_id": uuid.uuid4().hex, "at": _iso_ms(at_ms), "at_ms": at_ms, "who": _cut(who), "role": role,
        "what": what, "why": _cut(why), "result": result, "status": status,
        "target": {"agent_id": _cut(agent_id), "incident_id": _cut(incident_id), "event_id": _cut(event_id),
                   "approval_id": _cut(approval_id)},
        "detail": _cut(detail), "automatic": automatic, "worker": worker,
    }
    if client is not None:
        rec["client"] = _cut(client)
    if count is not None:
        rec["count"] = count
    return rec


class RefusalSummary:
    """Refused API calls per client, summarised per window (see the module docstring). Pure: the caller
    passes the time.

    >>> rs = RefusalSummary(window_s=60)
    >>> first = rs.note("10.0.0.9", who="anonymous", role=None, what="release", result="unauthenticated",
    ...                 status=401, at_ms=0)
    >>> first["client"], [rs.note("10.0.0.9", who="anonymous", role=None, what="freeze",
    ...                           result="unauthenticated", status=401, at_ms=t) for t in (1, 2)]
    ('10.0.0.9', [None, None])
    >>> rs.due(now_ms=30_000), [(r["what"], r["count"], r["detail"]) for r in rs.due(now_ms=60_000)]
    ([], [('refused_calls', 2, '2 more refused calls from 10.0.0.9 in 60 s: freeze 2')])
    """

    def __init__(self, window_s: float = 60.0, max_clients: int = 10_000) -> None:
        self.window_ms = int(window_s * 1000)
        self.max_clients = max_clients
        # (client, who, result) -> [window start ms, count after the first, Counter of acts, role, status]
        self._open: dict[tuple[str, str, str], list] = {}
        self.summarised = 0  # refusals not written one by one

    def note(self, client: str, *, who: str, role: str | None, what: str, result: str, status: int,
             at_ms: int, **fields: Any) -> dict | None:
        """The record to write now for this refusal (the client's first in its window), or None (counted
        for the window's summary)."""
        key = (client, who, result)
        win = self._open.get(key)
        if win is None and len(self._open) >= self.max_clients:
            key = ("other clients", "*", result)  # bounded: past so many clients, one shared summary
            win = self._open.get(key)
        if win is None:
            self._open[key] = [at_ms, 0, Counter(), role, status]
            return record(who=who, role=role, what=what, result=result, status=status, at_ms=at_ms,
                          client=client, **fields)
        win[1] += 1
        win[2][what] += 1
        self.summarised += 1
        return None

    def due(self, now_ms: int, *, force: bool = False) -> list[dict]:
        """Summary records of the windows that closed by ``now_ms`` (all open ones with ``force``)."""
        out = []
        for key, (start, n, acts, role, status) in list(self._open.items()):
            if not force and now_ms - start < self.window_ms:
                continue
            del self._open[key]
            if n == 0:
                continue
            client, who, result = key
            kinds = ", ".join(f"{a} {c}" for a, c in acts.most_common(10))
            out.append(record(who=who, role=role, what="refused_calls", result=result, status=status, at_ms=now_ms,
                              detail=f"{n} more refused calls from {client} in {self.window_ms // 1000} s: {kinds}",
                              client=client, count=n))
        return out


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
