"""Approval requests and decisions on a worker: the store every worker keeps, and the owner's service.

Records are :mod:`detector.approvals` dicts, published on ``agent-approvals``
(key ``approval_id``, in the partition of the agent's key, so an agent's
approvals sit beside its actions). Every worker folds the whole topic into an
:class:`ApprovalStore` (through :class:`streams.api.control_feed.ControlFeed`): any worker
lists them. Requests are opened, approved and denied only on the worker that
owns the agent (the API routes there), which updates its store at once, so the
check it answers next sees the decision.

Ids are ``apr-`` and 128 random bits: an id that no worker issued (forged) is
one that is not in a caught-up store. Records are signed by the worker that
publishes them (the command signing key, ``streams/clients/signing.py``), and a
worker takes into its store only records that verify: a record another
producer wrote on the topic (an "approved" request of its own) is no approval.

>>> store = ApprovalStore()
>>> store.apply({"approval_id": "apr-1", "rev": 2, "state": "approved", "agent_id": "a"})
True
>>> store.apply({"approval_id": "apr-1", "rev": 1, "state": "pending", "agent_id": "a"})  # older: ignored
False
>>> store.get("apr-1")["state"]
'approved'
"""

from __future__ import annotations

import os
import secrets
from collections import OrderedDict
from typing import Annotated, Any, Literal

import msgspec
from aiokafka.partitioner import murmur2

from detector import approvals as core
from detector.events import ActionEvent

__all__ = ["ApprovalStore", "ApprovalService", "TooManyOpenRequests", "new_approval_id", "approval_ttl_s", "max_approval_ttl_s",
           "decode_approval", "ApprovalRecord"]

_encode = msgspec.json.Encoder().encode
_Str = Annotated[str, msgspec.Meta(max_length=4096)]
_Time = Annotated[float, msgspec.Meta(ge=0, le=1e11)]


class ApprovalRecord(msgspec.Struct, kw_only=True):
    """The shape of an ``agent-approvals`` record (:func:`detector.approvals.request` and ``decide``): every
    field the store, the check and the listings read, with its type, so a record that would make them fail
    is refused when it is read, not when an action is checked."""

    approval_id: Annotated[str, msgspec.Meta(min_length=1, max_length=1024)]
    state: Literal["pending", "approved", "denied", "expired"]
    rev: Annotated[int, msgspec.Meta(ge=0, le=2 ** 31)]
    agent_id: Annotated[str, msgspec.Meta(min_length=1, max_length=1024)]
    tool: _Str
    action: _Str
    sensitivity: _Str
    destinations: Annotated[list[_Str], msgspec.Meta(max_length=10_000)] = []
    max_records: Annotated[int, msgspec.Meta(ge=0, le=2 ** 62)] = 0
    resource: _Str | None = None
    task_id: _Str | None = None
    event_id: _Str | None = None
    operator_id: _Str | None = None
    reasons: Annotated[list[_Str], msgspec.Meta(max_length=100)] = []
    score: float = 0.0
    fingerprint: _Str | None = None
    requested_by: _Str | None = None
    requested_at: _Str | None = None
    requested_t: _Time = 0.0
    expires_t: _Time = 0.0
    expires_at: _Str | None = None
    decided_by: _Str | None = None
    decided_at: _Str | None = None
    decided_t: _Time | None = None
    decision_reason: _Str | None = None
    valid_until_t: _Time | None = None
    valid_until: _Str | None = None


def decode_approval(raw: Any) -> dict:
    """An ``agent-approvals`` record as the dict the store keeps; raises
    :class:`streams.clients.commands.RecordError` for anything else. Fields :class:`ApprovalRecord` does not
    name are kept as they are (a newer worker's additions) but never read here.

    >>> decode_approval(b'{"approval_id": "apr-1", "state": "approved", "rev": 2, "agent_id": "a", "tool": "t", '
    ...                 b'"action": "send", "sensitivity": "internal"}')["rev"]
    2
    >>> decode_approval(b'{"approval_id": "apr-1", "state": "approved", "rev": "2"}')
    Traceback (most recent call last):
    ...
    streams.clients.commands.RecordError: schema: Expected `int`, got `str` - at `$.rev`
    """
    from streams.clients.commands import RecordError, decode_record

    rec = decode_record(raw, dict, max_bytes=1024 * 1024)
    try:
        msgspec.convert(rec, ApprovalRecord)
    except msgspec.ValidationError as err:
        raise RecordError("schema", str(err)[:200]) from None
    except Exception as err:  # noqa: BLE001 - whatever else fails, the record is unusable
        raise RecordError("error", type(err).__name__) from None
    return rec


def approval_ttl_s(environ=None) -> float:
    """How long an approval covers matching actions (``FLOWBREAKER_APPROVAL_TTL_S``, default 900)."""
    env = os.environ if environ is None else environ
    try:
        return max(1.0, float(env.get("FLOWBREAKER_APPROVAL_TTL_S", core.DEFAULT_TTL_S)))
    except ValueError:
        return core.DEFAULT_TTL_S


def max_approval_ttl_s(environ=None) -> float:
    """The longest TTL an approver may give (``FLOWBREAKER_APPROVAL_MAX_TTL_S``, default 8 hours)."""
    env = os.environ if environ is None else environ
    try:
        return max(1.0, float(env.get("FLOWBREAKER_APPROVAL_MAX_TTL_S", 8 * 3600.0)))
    except ValueError:
        return 8 * 3600.0


class TooManyOpenRequests(Exception):
    """An agent already has as many open (pending) approval requests as a worker lets it have."""


def new_approval_id() -> str:
    return "apr-" + secrets.token_hex(16)


class ApprovalStore:
    """Approval records by id (newest ``rev`` wins), bounded: the oldest records go first."""

    def __init__(self, max_items: int = 100_000) -> None:
        self.max_items = max_items
        self._items: OrderedDict[str, dict] = OrderedDict()
        self._pending: dict[str, str] = {}  # fingerprint -> id of its newest pending request

    def __len__(self) -> int:
        return len(self._items)

    def apply(self, rec: dict) -> bool:
        aid = rec.get("approval_id")
        if not isinstance(aid, str):
            return False
        old = self._items.get(aid)
        if old is not None and int(old.get("rev", 0)) >= int(rec.get("rev", 0) or 0):
            return False
        self._items[aid] = rec
        fp = rec.get("fingerprint")
        if isinstance(fp, str):
            if rec.get("state") == "pending":
                self._pending[fp] = aid
            elif self._pending.get(fp) == aid:
                del self._pending[fp]
        while len(self._items) > self.max_items:
            gone, grec = self._items.popitem(last=False)
            if self._pending.get(grec.get("fingerprint")) == gone:
                del self._pending[grec["fingerprint"]]
        return True

    def get(self, approval_id: str) -> dict | None:
        return self._items.get(approval_id)

    def discard(self, approval_id: str) -> None:
        rec = self._items.pop(approval_id, None)
        if rec is not None and self._pending.get(rec.get("fingerprint")) == approval_id:
            del self._pending[rec["fingerprint"]]

    def restore(self, rec: dict) -> None:
        """Put back ``rec`` whatever its ``rev`` (undo a change that could not be published)."""
        self.discard(rec["approval_id"])
        self._items[rec["approval_id"]] = dict(rec, rev=int(rec.get("rev", 0)))
        if rec.get("state") == "pending" and isinstance(rec.get("fingerprint"), str):
            self._pending[rec["fingerprint"]] = rec["approval_id"]

    def pending_like(self, ev: ActionEvent, now: float) -> dict | None:
        """An open request for the same kind of action covering at least as many records."""
        aid = self._pending.get(core.fingerprint(ev))
        rec = self._items.get(aid) if aid else None
        if rec is None or core.effective_state(rec, now) != "pending" or rec.get("max_records", 0) < ev.records:
            return None
        return rec

    def open_for(self, agent_id: str, now: float) -> int:
        """How many requests of ``agent_id`` are still pending (not decided, not expired)."""
        n = 0
        for aid in self._pending.values():
            rec = self._items.get(aid)
            if rec is not None and rec.get("agent_id") == agent_id and core.effective_state(rec, now) == "pending":
                n += 1
        return n

    def listing(self, state: str | None, now: float, agent_id: str | None = None, limit: int = 100) -> list[dict]:
        out = []
        for rec in reversed(self._items.values()):  # newest first
            if agent_id is not None and rec.get("agent_id") != agent_id:
                continue
            eff = core.effective_state(rec, now)
            if state is not None and eff != state:
                continue
            out.append(view(rec, now))
            if len(out) >= limit:
                break
        return out


def view(rec: dict, now: float) -> dict:
    """A record as the API shows it: its effective state (expiry applied)."""
    out = dict(rec)
    out["state"] = core.effective_state(rec, now)
    return out


class ApprovalService:
    """The owner's side: open, decide and check approvals, publishing every change."""

    def __init__(self, app: Any, store: ApprovalStore, topic: str, partitions: int, *,
                 ttl_s: float | None = None, max_ttl_s: float | None = None,
                 pending_ttl_s: float = core.DEFAULT_PENDING_TTL_S, keys: Any = None) -> None:
        self.app = app
        #: the worker's signing key ring (streams/clients/signing.py): every record it publishes is signed, and
        #: the workers take into their stores only records a worker signed (ControlPlane._approval_from_topic)
        self.keys = keys
        self.store = store
        self.topic = topic
        self.partitions = partitions
        self.ttl_s = ttl_s if ttl_s is not None else approval_ttl_s()
        self.max_ttl_s = max_ttl_s if max_ttl_s is not None else max_approval_ttl_s()
        self.pending_ttl_s = pending_ttl_s

    async def _publish(self, rec: dict) -> None:
        if self.keys is not None:
            rec = self.keys.sign(rec)
        key = rec["approval_id"].encode()
        partition = (murmur2(rec["agent_id"].encode()) & 0x7FFFFFFF) % self.partitions
        fut = await self.app.producer.send(self.topic, key, _encode(rec), partition, None, None)
        await fut

    async def open_request(self, ev: ActionEvent, *, reasons: list[str], score: float, by: str,
                           now: float, max_open: int | None = None) -> tuple[dict, bool]:
        """The pending request for ``ev`` (an existing one for the same kind of action, or a new one);
        ``(record, created)``. Raises :class:`TooManyOpenRequests` when a new one is needed and the agent
        already has ``max_open`` pending (a runtime token cannot flood the analysts' queue)."""
        rec = self.store.pending_like(ev, now)
        if rec is not None:
            return rec, False
        if max_open is not None and self.store.open_for(ev.agent_id, now) >= max_open:
            raise TooManyOpenRequests(f"agent already has {max_open} open approval requests; decide them or "
                                      "let them expire before asking for more")
        rec = core.request(ev, approval_id=new_approval_id(), now=now, reasons=reasons, score=score,
                           requested_by=by, pending_ttl_s=self.pending_ttl_s)
        self.store.apply(rec)  # before the await: a concurrent check of the same action reuses it
        try:
            await self._publish(rec)
        except BaseException:
            self.store.discard(rec["approval_id"])
            raise
        return rec, True

    async def decide(self, approval_id: str, *, approve: bool, by: str, reason: str, now: float,
                     ttl_s: float | None = None) -> dict:
        """Approve or deny; raises KeyError (unknown) or :class:`detector.approvals.ApprovalError`."""
        rec = self.store.get(approval_id)
        if rec is None:
            raise KeyError(approval_id)
        ttl = min(self.max_ttl_s, ttl_s) if ttl_s else self.ttl_s
        new = core.decide(rec, approve=approve, by=by, reason=reason, now=now, ttl_s=ttl)
        self.store.apply(new)  # synchronously: a second decision of the same request sees it taken
        try:
            await self._publish(new)
        except BaseException:
            self.store.restore(rec)
            raise
        return new

    def check(self, ev: ActionEvent, now: float) -> str | None:
        """``None`` if ``ev.approval_id`` covers ``ev`` now, else the rejection (detector.approvals.REJECTIONS)."""
        return core.validate(self.store.get(ev.approval_id or ""), ev, now)
