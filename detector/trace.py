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
about 1 us per action), and every :data:`CHUNK` of them are sealed into one
block, deflated (about 30-60 bytes an action: an agent's actions repeat its
tools, resources and people) when its ring rests or when the store's blocks not
yet deflated pass ``unpacked_bytes`` (:class:`TraceStore`), so a full resting
ring of 200 actions costs about 10 KB instead of 240 KB.
:meth:`TraceStore.rest` packs the newest ones too, for an agent that has gone
idle (``streams/worker/residency.py``). A block smaller than a full one (an
agent's last few actions) is deflated against the store's preset dictionary
(:class:`_Dictionary`), and a resting ring of one block is kept as one bytes
object: an agent at rest after six actions holds about 0.67 KB here (its id
included), not 1.15 KB (``bench/bench_memory.py``). Entries read back are exactly the entries
:func:`trace_entry` makes.

>>> store.rest("a")
True
>>> store.append("a", {"event_id": "e3"})
>>> [r["event_id"] for r in store.snapshot("a")]
['e2', 'e3']
"""

from __future__ import annotations

import zlib
from collections import OrderedDict, deque
from operator import itemgetter

import msgspec
from msgspec.structs import astuple, fields

from detector.events import ActionEvent
from detector.native import kernels as _kernels

__all__ = ["TraceStore", "trace_entry", "TRACE_FIELDS", "CHUNK", "UNPACKED_BYTES"]

#: the keys of a trace entry, in the order a packed block stores their values
TRACE_FIELDS = ("event_id", "ts", "tool", "action", "resource", "sensitivity", "records", "bytes", "destinations",
                "destination_count", "destination_classes", "task_id", "parent_event_id", "operator_id",
                "requested_by", "instruction_hash", "approval_id", "score", "severity")
_FIELD_SET = frozenset(TRACE_FIELDS)
#: newest actions kept as appended before they are sealed into a block
CHUNK = 32
#: the store's default bound on the bytes of blocks not yet deflated (about 280 agents' full rings)
UNPACKED_BYTES = 16 << 20
#: deflate's level (2 packs a resting ring ~20 bytes smaller against the dictionary, at a few % more time)
LEVEL = 1
#: blocks deflated against the dictionary: up to this many bytes (a resting ring's last rows; a full block of
#: CHUNK rows, ~7.5 KB, repeats enough of itself: 8% smaller against it, and ~8% costlier to deflate)
DICT_UP_TO = 4096
#: a store's preset deflate dictionary: this many bytes of its first blocks (deflate looks back 32 KiB)
DICT_BYTES = 32 * 1024
#: at most this many bytes of one block go into the dictionary
DICT_SAMPLE = 2048
_encode = msgspec.msgpack.Encoder().encode
#: the same encoding into a buffer (detector._native.decide's rows: one bytes object made at its size)
_encode_into = _encode.__self__.encode_into
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


#: an event's values (msgspec's astuple, one C call), then the classes, score and severity -> a packed entry's 18
#: values in trace order
_ITEM = [f.name for f in fields(ActionEvent)] + ["destination_classes", "score", "severity"]
_ORDER = tuple(_ITEM.index(k) for k in TRACE_FIELDS if k != "destination_count")
_order = itemgetter(*_ORDER)
_kernel = getattr(_kernels, "trace_row", None)


def _item_row(ev, score: float, severity: str, classes) -> tuple | list:
    """The packed entry of a decided action whose ``score`` is rounded already: :func:`_values_row` of its values."""
    return _values_row(astuple(ev), score, severity, classes)


def _values_row(values: tuple, score: float, severity: str, classes) -> tuple | list:
    """The packed entry of a decided action from its event's ``values`` (msgspec's ``astuple``): the values of
    :func:`trace_entry` in field order without ``destination_count`` (read back as the length of ``destinations``:
    18 values), so no larger packed than the entry; an event with more than 10 destinations (its trace keeps 10)
    as all 19 values. ``detector._native.trace_row`` when built; :func:`_py_values_row` otherwise, and for what it
    leaves to it."""
    if _kernel is not None:
        row = _kernel(values, _ORDER, classes, score, severity)
        if row is not None:
            return row
    return _py_values_row(values, score, severity, classes)


def _py_values_row(values: tuple, score: float, severity: str, classes) -> tuple | list:
    """The reference of ``detector._native.trace_row``."""
    row = _order(values + (classes if len(classes) < 2 else sorted(set(classes)), score, severity))
    dests = row[8]
    if len(dests) > 10:
        row = list(row)
        row[8:9] = dests[:10], len(dests)
    return row


def _row(e) -> tuple | list | dict:
    """A packed entry: of an engine item ``(event, score, severity, dest_classes)`` as :func:`_item_row` packs it
    (the score rounded as :func:`trace_entry` rounds it); a dict of exactly the trace fields as its values, any
    other dict whole."""
    if isinstance(e, tuple):
        ev, score, severity, classes = e
        return _item_row(ev, round(score, 4), severity, classes)
    return [e.get(k) for k in TRACE_FIELDS] if set(e) == _FIELD_SET else e


def _block(rows: list[bytes]) -> bytearray:
    """One msgpack array of encoded rows (an array header, then the rows as they are), not yet deflated.
    (Encoding each row into one growing bytearray instead, msgspec's encode_into, cost more in the engine's
    loop: the buffer is reallocated as it grows, ~0.5 % of a replay more.)"""
    return bytearray().join((b"\xdd" + len(rows).to_bytes(4, "big"), *rows))


class _Dictionary:
    """A store's preset deflate dictionary: the first :data:`DICT_BYTES` of the blocks it deflates (at most
    :data:`DICT_SAMPLE` of each, so many agents' rows), then fixed for the store's life, as a block deflated
    against it must inflate against the same bytes. An agent's few rows deflated alone repeat little; against
    other agents' rows (the same fields, tools, resources, people) they take about 40% less, at the same cost
    (a compressor primed once, copied per block). A deflated block is a byte naming what it was deflated
    against (0: nothing, 1: the dictionary), then raw deflate."""

    __slots__ = ("limit", "samples", "size", "zdict", "_primed")

    def __init__(self, limit: int = DICT_BYTES) -> None:
        self.limit = limit  # the dictionary's size
        self.samples: list[bytes] = []
        self.size = 0
        self.zdict: bytes | None = None
        self._primed = None  # a compressor that has read the dictionary, copied per block (~5 us; priming costs ~40)

    def deflate(self, block: bytearray) -> bytes:
        if self._primed is not None and len(block) <= DICT_UP_TO:
            packer = self._primed.copy()
            return b"".join((b"\x01", packer.compress(block), packer.flush()))
        packer = zlib.compressobj(LEVEL, zlib.DEFLATED, -15, 8)
        data = b"".join((b"\x00", packer.compress(block), packer.flush()))
        if self.zdict is not None:
            return data
        sample = bytes(block[:DICT_SAMPLE])
        self.samples.append(sample)
        self.size += len(sample)
        if self.size >= self.limit:
            self.zdict = b"".join(self.samples)[-self.limit:]
            self.samples = []
            self._primed = zlib.compressobj(LEVEL, zlib.DEFLATED, -15, 8, zdict=self.zdict)
        return data

    def inflate(self, data: bytes, start: int = 0) -> bytes:
        """The block deflated into ``data[start:]``."""
        raw = memoryview(data)[start + 1:]
        if data[start] == 0:
            return zlib.decompress(raw, -15)
        if data[start] != 1 or self.zdict is None:
            raise ValueError("trace block deflated against a dictionary this store does not have")
        unpacker = zlib.decompressobj(-15, zdict=self.zdict)
        return unpacker.decompress(raw) + unpacker.flush()


def _entry(r) -> dict:
    """The trace entry of a packed one, read back (see :func:`_row`). Spelt out as :func:`trace_entry` is: a dict
    display is built at its size, a quarter cheaper than ``dict(zip(TRACE_FIELDS, r))`` (an incident reads 200)."""
    if not isinstance(r, list):
        return r
    if len(r) != 18:
        return dict(zip(TRACE_FIELDS, r))
    dests = r[8]
    return {
        "event_id": r[0], "ts": r[1], "tool": r[2], "action": r[3], "resource": r[4], "sensitivity": r[5],
        "records": r[6], "bytes": r[7], "destinations": dests, "destination_count": len(dests),
        "destination_classes": r[9], "task_id": r[10], "parent_event_id": r[11], "operator_id": r[12],
        "requested_by": r[13], "instruction_hash": r[14], "approval_id": r[15], "score": r[16], "severity": r[17],
    }


_k_entries = getattr(_kernels, "trace_entries", None)


def _entries(rows: list) -> list:
    """``[_entry(r) for r in rows]``: ``detector._native.trace_entries`` when built (~0.25 us an entry against
    ~0.8; an incident reads up to 200), the comprehension otherwise and for what the kernel leaves to it."""
    if _k_entries is not None:
        got = _k_entries(rows, TRACE_FIELDS)
        if got is not None:
            return got
    return [_entry(r) for r in rows]


class _Ring:
    """One agent's ring: ``blocks`` (oldest first), then ``live`` entries. A block is ``(entry count,
    deflated bytes)`` (see :class:`_Dictionary`), or ``[entry count, bytearray]`` while not deflated yet.

    A resting ring of one block (most of them: an agent acts a few times, then rests) is not kept as a
    ``_Ring`` but as one ``bytes``: the entry count (a byte), then the deflated block (a ring, a list and a
    tuple would cost 200 bytes more, as much as 40% of the block)."""

    __slots__ = ("blocks", "packed", "live")

    def __init__(self, blocks: list | None = None, packed: int = 0) -> None:
        self.blocks: list = blocks or []  # a few blocks: a list is smaller than a deque
        self.packed = packed              # entries in the blocks
        self.live: list[bytes] | None = None  # encoded entries appended since the last block


class TraceStore:
    """Rings of the last ``length`` actions of at most ``max_agents`` agents.

    A block is deflated when its ring rests, or when the store's blocks not yet deflated (the newest)
    pass ``unpacked_bytes`` in all (the oldest of them first): most blocks of a busy ring drop out of
    it before, and are never deflated (deflating cost ~1.5 us per action). So the store holds at most
    ``unpacked_bytes`` more than with every block deflated, and a resting ring exactly what it held
    before.
    """

    def __init__(self, *, length: int = 200, max_agents: int = 5000, unpacked_bytes: int = UNPACKED_BYTES) -> None:
        self.length = length
        self.max_agents = max_agents
        self.unpacked_bytes = unpacked_bytes
        self._rings: OrderedDict[str, _Ring | bytes] = OrderedDict()  # bytes: a resting ring (see _Ring)
        self._dictionary = _Dictionary()
        #: ``(ring, block)`` of the blocks not deflated, oldest first (and of some since deflated or dropped)
        self._unpacked: deque[tuple[_Ring, list]] = deque()
        self._held = 0   # bytes of the blocks not deflated
        self._count = 0  # how many they are

    def append(self, agent_id: str, entry) -> None:
        """Keep one action: an engine item ``(event, score, severity, dest_classes)`` (see :meth:`add`), or a
        dict (a trace entry, or anything msgpack encodes, kept whole)."""
        if type(entry) is tuple:
            ev, score, severity, classes = entry
            self.add(agent_id, ev, round(score, 4), severity, classes)
            return
        ring = self._ring(agent_id)
        ring.live.append(_encode(_row(entry)))
        if len(ring.live) >= CHUNK:
            self._seal(ring)

    def add(self, agent_id: str, ev, score: float, severity: str, classes) -> None:
        """Keep one decided action, its ``score`` already rounded to 4 places and kept as given (``round`` costs
        ~250 ns: once per action, not twice). The entry's values are kept encoded (see :func:`_row`); the event
        itself is not kept alive."""
        self.add_values(agent_id, astuple(ev), score, severity, classes)

    def add_values(self, agent_id: str, values: tuple, score: float, severity: str, classes) -> None:
        """:meth:`add` of an event's ``values`` (msgspec's ``astuple``): the engine's call, with its decision
        record's score and the values it took the event's content key from."""
        ring = self._rings.get(agent_id)
        if type(ring) is _Ring and ring.live is not None:  # an agent that acted since its last block: most
            self._rings.move_to_end(agent_id)
            live = ring.live
        else:
            ring = self._ring(agent_id)
            live = ring.live
        live.append(_encode(_values_row(values, score, severity, classes)))
        if len(live) >= CHUNK:
            self._seal(ring)

    def _ring(self, agent_id: str) -> _Ring:
        """The agent's ring, made the most recently active, with a live block to write into: a new ring (the
        least recently active one dropped beyond ``max_agents``), or one that rested made a ring again."""
        ring = self._rings.get(agent_id)
        if ring is None:
            ring = self._rings[agent_id] = _Ring()
            if len(self._rings) > self.max_agents:
                dropped = self._rings.popitem(last=False)[1]
                for block in () if type(dropped) is bytes else dropped.blocks:
                    self._forget(block)
        else:
            self._rings.move_to_end(agent_id)
            if type(ring) is bytes:  # it rested: a ring again
                ring = self._rings[agent_id] = _Ring([(ring[0], ring[1:])], ring[0])
        if ring.live is None:
            ring.live = []
        return ring

    def _seal(self, ring: _Ring, deflate: bool = False) -> None:
        """Seal the live entries into a block (deflated at once with ``deflate``); drop blocks no longer
        needed for ``length`` entries; deflate the oldest blocks while the store holds too many bytes
        not deflated."""
        live = ring.live[-self.length:] if ring.live else []
        ring.live = None
        if not live:
            return
        if deflate:
            ring.blocks.append((len(live), self._dictionary.deflate(_block(live))))
        else:
            block = [len(live), _block(live)]
            ring.blocks.append(block)
            self._unpacked.append((ring, block))
            self._held += len(block[1])
            self._count += 1
        ring.packed += len(live)
        while ring.blocks and ring.packed - ring.blocks[0][0] >= self.length:
            dropped = ring.blocks.pop(0)
            ring.packed -= dropped[0]
            self._forget(dropped)
        queue = self._unpacked
        while self._held > self.unpacked_bytes and queue:
            self._pack(*queue.popleft())
        if len(queue) > 2 * self._count + 64:  # drop the entries of blocks since deflated or dropped
            self._unpacked = deque(e for e in queue if e[1][1] is not None)

    def _pack(self, ring: _Ring, block: list) -> None:
        """Deflate a block of ``ring`` (unless it was, or was dropped)."""
        data = block[1]
        if data is None:
            return
        blocks = ring.blocks
        for i, b in enumerate(blocks):
            if b is block:
                blocks[i] = (block[0], self._dictionary.deflate(data))
                break
        self._forget(block)

    def _forget(self, block) -> None:
        """A block not to be counted as not deflated any more (deflated, or dropped from its ring)."""
        if type(block) is list and block[1] is not None:
            self._held -= len(block[1])
            self._count -= 1
            block[1] = None

    def snapshot(self, agent_id: str) -> list:
        """The agent's ring, oldest first; tuples ``(event, score, severity, classes)`` become dicts."""
        ring = self._rings.get(agent_id)
        if ring is None:
            return []
        if type(ring) is bytes:
            return _entries(_decode(self._dictionary.inflate(ring, 1)))[-self.length:]
        live = _entries([_decode_row(e) for e in ring.live or ()])
        need = self.length - len(live)
        older: list[dict] = []
        for n, block in reversed(ring.blocks):  # newest blocks first, only as many as needed
            if need <= 0:
                break
            older[:0] = _entries(_decode(block if type(block) is bytearray else self._dictionary.inflate(block)))
            need -= n
        return (older + live)[-self.length:]

    def rest(self, agent_id: str) -> bool:
        """Seal and deflate the agent's ring (it has gone idle); False if it has no ring. It deflates what the
        ring's actions since it was last deflated did not (~45 us per :data:`CHUNK` of them on a quiet machine,
        0.5-0.7 ms for a full ring of 200 on this shared machine, against ~0.06 ms before: the deflating they
        each cost as they came before), so a resting ring holds what it held before."""
        ring = self._rings.get(agent_id)
        if ring is None:
            return False
        if type(ring) is bytes:
            return True
        self._seal(ring, deflate=True)
        for block in list(ring.blocks):
            if type(block) is list:
                self._pack(ring, block)
        blocks = ring.blocks
        if len(blocks) == 1 and type(blocks[0]) is tuple and blocks[0][0] < 256:  # kept as bytes (see _Ring)
            n, data = blocks[0]
            self._rings[agent_id] = bytes((n,)) + data
        return True
