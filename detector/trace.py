"""Forensic trace: a bounded ring of each agent's last actions (metadata only, never payloads).

Rings live outside the per-agent baseline state (which stays small and goes to the
changelog); the store itself is bounded too: it keeps rings for at most
``max_agents`` agents, dropping the least recently active.

>>> store = TraceStore(length=2, max_agents=10)
>>> for i in range(3):
...     store.append("a", {"event_id": f"e{i}"})
>>> [r["event_id"] for r in store.snapshot("a")]
['e1', 'e2']

Memory: each action is kept as its trace entry's values encoded with msgpack
(about 250 bytes, against about 1.2 KB for the decoded event and its strings;
about 2 us per action), and every :data:`CHUNK` of them are packed into one
deflated block (about 30-60 bytes an action: an agent's actions repeat its
tools, resources and people), so a full ring of 200 actions costs about 10 KB
instead of 240 KB. :meth:`TraceStore.rest` packs the newest ones too, for an
agent that has gone idle (``streams/worker/residency.py``). Entries read back are
exactly the entries :func:`trace_entry` makes.

>>> store.rest("a")
True
>>> store.append("a", {"event_id": "e3"})
>>> [r["event_id"] for r in store.snapshot("a")]
['e2', 'e3']
"""

from __future__ import annotations

import zlib
from collections import OrderedDict

import msgspec

__all__ = ["TraceStore", "trace_entry", "TRACE_FIELDS", "CHUNK"]

#: the keys of a trace entry, in the order a packed block stores their values
TRACE_FIELDS = ("event_id", "ts", "tool", "action", "resource", "sensitivity", "records", "bytes", "destinations",
                "destination_count", "destination_classes", "task_id", "parent_event_id", "operator_id",
                "requested_by", "instruction_hash", "approval_id", "score", "severity")
_FIELD_SET = frozenset(TRACE_FIELDS)
#: newest actions kept as appended before they are packed into a block
CHUNK = 32
_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(list).decode
_decode_row = msgspec.msgpack.Decoder().decode


def trace_entry(item) -> dict:
    """The metadata of one action kept in the trace, from ``(event, score, severity, dest_classes)``."""
    ev, score, severity, dest_classes = item
    dests = ev.destinations
    return {
        "event_id": ev.event_id, "ts": ev.ts, "tool": ev.tool, "action": ev.action, "resource": ev.resource,
        "sensitivity": ev.sensitivity, "records": ev.records, "bytes": ev.bytes,
        "destinations": dests[:10], "destination_count": len(dests),
        "destination_classes": sorted(set(dest_classes)), "task_id": ev.task_id,
        "parent_event_id": ev.parent_event_id, "operator_id": ev.operator_id, "requested_by": ev.requested_by,
        "instruction_hash": ev.instruction_hash, "approval_id": ev.approval_id,
        "score": round(score, 4), "severity": severity,
    }


def _row(e) -> list | dict:
    """A packed entry: the values of :func:`trace_entry` in field order (any other dict is kept whole)."""
    if isinstance(e, tuple):
        ev, score, severity, dest_classes = e
        dests = ev.destinations
        return [ev.event_id, ev.ts, ev.tool, ev.action, ev.resource, ev.sensitivity, ev.records, ev.bytes,
                dests[:10], len(dests), sorted(set(dest_classes)), ev.task_id, ev.parent_event_id, ev.operator_id,
                ev.requested_by, ev.instruction_hash, ev.approval_id, round(score, 4), severity]
    return [e.get(k) for k in TRACE_FIELDS] if set(e) == _FIELD_SET else e


def _pack(rows: list[bytes]) -> bytes:
    """One deflated msgpack array of encoded rows (an array header, then the rows as they are)."""
    packer = zlib.compressobj(1, zlib.DEFLATED, -15, 8)
    return packer.compress(b"\xdd" + len(rows).to_bytes(4, "big") + b"".join(rows)) + packer.flush()


def _entry(r) -> dict:
    return dict(zip(TRACE_FIELDS, r)) if isinstance(r, list) else r


def _unpack(block: bytes) -> list[dict]:
    return [_entry(r) for r in _decode(zlib.decompress(block, -15))]


class _Ring:
    """One agent's ring: packed ``blocks`` (oldest first, with their entry counts), then ``live`` entries."""

    __slots__ = ("blocks", "packed", "live")

    def __init__(self) -> None:
        self.blocks: list[tuple[int, bytes]] = []  # a few blocks: a list is smaller than a deque
        self.packed = 0                  # entries in the blocks
        self.live: list[bytes] | None = None  # encoded entries appended since the last block


class TraceStore:
    def __init__(self, *, length: int = 200, max_agents: int = 5000) -> None:
        self.length = length
        self.max_agents = max_agents
        self._rings: OrderedDict[str, _Ring] = OrderedDict()

    def append(self, agent_id: str, entry) -> None:
        ring = self._rings.get(agent_id)
        if ring is None:
            ring = self._rings[agent_id] = _Ring()
            if len(self._rings) > self.max_agents:
                self._rings.popitem(last=False)
        else:
            self._rings.move_to_end(agent_id)
        live = ring.live
        if live is None:
            live = ring.live = []
        live.append(_encode(_row(entry)))  # the entry's values only: the event itself is not kept alive
        if len(live) >= CHUNK:
            self._seal(ring)

    def _seal(self, ring: _Ring) -> None:
        """Pack the live entries into a block; drop blocks no longer needed for ``length`` entries."""
        live = ring.live[-self.length:] if ring.live else []
        ring.live = None
        if not live:
            return
        ring.blocks.append((len(live), _pack(live)))
        ring.packed += len(live)
        while ring.blocks and ring.packed - ring.blocks[0][0] >= self.length:
            ring.packed -= ring.blocks.pop(0)[0]

    def snapshot(self, agent_id: str) -> list:
        """The agent's ring, oldest first; tuples ``(event, score, severity, classes)`` become dicts."""
        ring = self._rings.get(agent_id)
        if ring is None:
            return []
        live = [_entry(_decode_row(e)) for e in ring.live or ()]
        need = self.length - len(live)
        older: list[dict] = []
        for n, block in reversed(ring.blocks):  # newest blocks first, only as many as needed
            if need <= 0:
                break
            older[:0] = _unpack(block)
            need -= n
        return (older + live)[-self.length:]

    def rest(self, agent_id: str) -> bool:
        """Pack the agent's newest entries too (it has gone idle); False if it has no ring."""
        ring = self._rings.get(agent_id)
        if ring is None:
            return False
        self._seal(ring)
        return True
