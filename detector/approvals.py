"""Approvals: a human sign-off for one kind of proposed action, scoped and time-limited.

When the pre-action check (:mod:`detector.gate`) says ``needs_approval``, the
shell opens an approval *request* for the proposed action; an analyst or a lead
approves or denies it. An approved request is an *approval*: the runtime attaches
its id as the action's ``approval_id``, and the check lets an action carrying it
through only while it is inside the approval's scope and time:

- the same agent, tool and kind of action;
- destinations: a subset of the approved ones;
- at most the approved number of records;
- data at most as sensitive as approved;
- before ``valid_until_t`` (approval time + TTL). A request nobody decides
  expires at ``expires_t``.

Records are plain dicts (JSON on the ``agent-approvals`` topic); every change
makes a new record with a higher ``rev``. Nothing here reads the clock: ``now``
(epoch seconds) comes from the caller, ids too.

When it fails: :func:`validate` names why an approval id does not cover an action
(one of :data:`REJECTIONS`); :func:`decide` raises :class:`ApprovalError` for a
request that is no longer pending.

>>> from detector.events import decode_event
>>> ev = decode_event({"event_id": "e1", "ts": "2026-03-02T09:00:00Z", "agent_id": "a", "operator_id": "o",
...     "tool": "mail.send", "action": "send", "resource": "crm://export", "sensitivity": "confidential",
...     "records": 40, "destinations": ["email:partner@ext.example"]})
>>> req = request(ev, approval_id="apr-1", now=100.0, reasons=["novel"], score=0.9, requested_by="rt")
>>> validate(req, ev, now=101.0)
'pending'
>>> ok = decide(req, approve=True, by="alice", reason="quarterly export", now=110.0, ttl_s=900)
>>> validate(ok, ev.replace(approval_id="apr-1"), now=200.0) is None
True
>>> validate(ok, ev.replace(records=41), now=200.0), validate(ok, ev, now=1011.0), validate(None, ev, now=0)
('out_of_scope', 'expired', 'forged')
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from detector.events import SENSITIVITIES, ActionEvent
from detector.timestamps import iso_utc

__all__ = ["request", "decide", "validate", "effective_state", "fingerprint", "covers", "screen", "ApprovalBook",
           "ApprovalError", "STATES", "REJECTIONS", "DEFAULT_TTL_S", "DEFAULT_PENDING_TTL_S", "OWN_PREFIX",
           "STREAM_GRACE_S"]

STATES = ("pending", "approved", "denied", "expired")
#: why an approval id does not cover an action (a bounded set: usable as a metric label)
REJECTIONS = ("forged", "pending", "denied", "expired", "out_of_scope")
#: an approval covers matching actions for this long after it was given
DEFAULT_TTL_S = 15 * 60.0
#: a request nobody decides expires after this long
DEFAULT_PENDING_TTL_S = 60 * 60.0
_RANK = {s: i for i, s in enumerate(SENSITIVITIES)}
#: ids this system issues start with this (then 128 random bits, ``streams/api/approvals.py``); only ids
#: found in the approvals record count, whatever they look like
OWN_PREFIX = "apr-"
#: on the stream an action is judged at its own time, with this much grace for clocks and delivery
STREAM_GRACE_S = 60.0


class ApprovalError(ValueError):
    """A decision that cannot be taken (the request is not pending any more)."""


_iso = iso_utc  # detector/timestamps.py


def fingerprint(ev: ActionEvent) -> str:
    """What a request is for, without the counts: repeated checks of the same kind of action share a request.

    >>> from detector.events import decode_event
    >>> e = decode_event({"event_id": "e", "ts": "2026-03-02T09:00:00Z", "agent_id": "a", "operator_id": "o",
    ...     "tool": "t", "action": "send", "resource": "r", "sensitivity": "internal", "destinations": ["x:b", "x:a"]})
    >>> fingerprint(e) == fingerprint(e.replace(destinations=["x:a", "x:b"], records=9))
    True
    """
    key = [ev.agent_id, ev.tool, ev.action, ev.sensitivity, sorted(set(ev.destinations))]
    return hashlib.sha256(json.dumps(key, separators=(",", ":")).encode()).hexdigest()[:32]


def request(ev: ActionEvent, *, approval_id: str, now: float, reasons: list[str], score: float,
            requested_by: str, pending_ttl_s: float = DEFAULT_PENDING_TTL_S) -> dict[str, Any]:
    """A new pending request for the proposed action ``ev``."""
    return {
        "approval_id": approval_id, "state": "pending", "rev": 1,
        "agent_id": ev.agent_id, "tool": ev.tool, "action": ev.action, "sensitivity": ev.sensitivity,
        "destinations": sorted(set(ev.destinations)), "max_records": ev.records,
        "resource": ev.resource, "task_id": ev.task_id, "event_id": ev.event_id, "operator_id": ev.operator_id,
        "reasons": list(reasons), "score": round(float(score), 4), "fingerprint": fingerprint(ev),
        "requested_by": requested_by, "requested_at": _iso(now), "requested_t": now,
        "expires_t": now + pending_ttl_s, "expires_at": _iso(now + pending_ttl_s),
        "decided_by": None, "decided_at": None, "decided_t": None, "decision_reason": None,
        "valid_until_t": None, "valid_until": None,
    }


def effective_state(a: dict[str, Any], now: float) -> str:
    """``pending``/``approved`` become ``expired`` once their time is up.

    >>> effective_state({"state": "pending", "expires_t": 10.0}, 11.0)
    'expired'
    """
    state = a.get("state")
    if state == "pending" and now > a.get("expires_t", 0.0):
        return "expired"
    if state == "approved" and now > (a.get("valid_until_t") or 0.0):
        return "expired"
    return state


def decide(a: dict[str, Any], *, approve: bool, by: str, reason: str, now: float,
           ttl_s: float = DEFAULT_TTL_S) -> dict[str, Any]:
    """The request approved (valid ``ttl_s`` from ``now``) or denied, as a new record."""
    state = effective_state(a, now)
    if state != "pending":
        raise ApprovalError(f"approval {a.get('approval_id')} is {state}, not pending")
    out = dict(a)
    out.update(state="approved" if approve else "denied", rev=int(a.get("rev", 1)) + 1, decided_by=by,
               decided_at=_iso(now), decided_t=now, decision_reason=reason)
    if approve:
        out.update(valid_until_t=now + ttl_s, valid_until=_iso(now + ttl_s))
    return out


def covers(a: dict[str, Any], ev: ActionEvent) -> bool:
    """Is ``ev`` inside the scope of ``a`` (ignoring state and time)?"""
    return (ev.agent_id == a.get("agent_id") and ev.tool == a.get("tool") and ev.action == a.get("action")
            and ev.records <= int(a.get("max_records") or 0)
            and _RANK.get(ev.sensitivity, 99) <= _RANK.get(a.get("sensitivity"), -1)
            and set(ev.destinations) <= set(a.get("destinations") or ()))


def validate(a: dict[str, Any] | None, ev: ActionEvent, now: float) -> str | None:
    """``None`` when approval ``a`` covers ``ev`` at ``now``, else the rejection (see :data:`REJECTIONS`).

    ``a`` is the record the id names, or ``None`` when no such approval exists (forged).
    Scope is checked before time, so an action that was never covered says so.
    """
    if a is None:
        return "forged"
    if not covers(a, ev):
        return "out_of_scope"
    state = effective_state(a, now)
    if state == "approved":
        return None
    return state if state in REJECTIONS else "forged"


def screen(get, ev: ActionEvent, *, grace_s: float = STREAM_GRACE_S) -> str | None:
    """Does ``ev.approval_id`` sign ``ev`` off, judged at the action's own time? ``None`` when it does
    (or ``ev`` carries no id), else the rejection (:data:`REJECTIONS`). ``get(approval_id)`` returns the
    latest record of an approval or ``None``.

    Only an approval this system issued counts: the id is looked up exactly as written (no case folding,
    no trimming), so a change ticket (``CHG-1``), the genuine id upper-cased or with a space before it
    names no approval and is ``forged``. An action that ran before anyone approved it was not signed
    off (``pending``). The engine calls this for every event with an id, in the worker and in
    ``replay --approvals``, so both give the same decisions.

    >>> from detector.events import decode_event
    >>> ev = decode_event({"event_id": "e1", "ts": "2026-03-02T09:00:00Z", "agent_id": "a", "operator_id": "o",
    ...     "tool": "t", "action": "send", "resource": "r://x", "sensitivity": "internal", "approval_id": "apr-9"})
    >>> screen({}.get, ev), screen({}.get, ev.replace(approval_id="TICKET-7"))
    ('forged', 'forged')
    """
    aid = ev.approval_id
    if aid is None:
        return None
    rec = get(aid)
    if rec is not None and rec.get("approval_id") != aid:
        rec = None  # a store that folds or trims keys must not turn a look-alike into the genuine id
    why = validate(rec, ev, ev.t - grace_s)
    if why is None and ev.t < float(rec.get("decided_t") or 0.0) - grace_s:
        why = "pending"
    return why


class ApprovalBook:
    """Approval records by id, the latest ``rev`` winning: what ``replay --approvals FILE`` reads (a dump
    of the ``agent-approvals`` topic, one record a line), screened exactly as the worker screens.

    >>> book = ApprovalBook()
    >>> book.apply({"approval_id": "apr-1", "rev": 2, "state": "denied"}), book.apply({"approval_id": "apr-1", "rev": 1})
    (True, False)
    >>> book.get("apr-1")["state"], len(book)
    ('denied', 1)
    """

    def __init__(self, *, grace_s: float = STREAM_GRACE_S) -> None:
        self._items: dict[str, dict[str, Any]] = {}
        self.grace_s = grace_s

    def __len__(self) -> int:
        return len(self._items)

    def apply(self, rec: Any) -> bool:
        """Take one record; ``False`` (ignored) when it is not an approval record or is older than the one held."""
        if not isinstance(rec, dict) or not isinstance(rec.get("approval_id"), str):
            return False
        try:
            rev = int(rec.get("rev", 0) or 0)
        except (TypeError, ValueError):
            return False
        old = self._items.get(rec["approval_id"])
        if old is not None and int(old.get("rev", 0) or 0) >= rev:
            return False
        self._items[rec["approval_id"]] = rec
        return True

    def get(self, approval_id: str) -> dict[str, Any] | None:
        return self._items.get(approval_id)

    def screen(self, ev: ActionEvent) -> str | None:
        return screen(self.get, ev, grace_s=self.grace_s)
