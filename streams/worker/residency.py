"""Residency: where each agent's state lives on a worker, live in the engine or resting in the table.

An agent is **resident** while it acts: its state is a live
:class:`detector.engine.AgentState` in the engine (about 4 KB with Python's
object overhead), with its home partition and its *cursor* (the offset, on
that partition, of the last event its state includes). Once it has been quiet
for ``rest_after`` seconds and everything it did is durable (no unwritten
change, no unconfirmed outbox entry), it **rests**: its envelope (below) is
compressed into the table's in-memory store (about 0.4-0.65 KB), its trace ring
is packed (:meth:`detector.trace.TraceStore.rest`), and the live objects are
dropped. Its next event, a release or an API call wakes it from the table.
While it is resident the table holds nothing for it (the live state is the
truth; the changelog has the last write), so an agent is in memory once.

The table envelope
------------------
The value of the ``agent-state`` table (and of its changelog, which brings a
partition's agents back after a crash or a rebalance) is
``msgpack([version, partition, offset, state, outbox, written_ms])``: the
engine's state of the agent, where it stands in its home partition, and the
freeze, incident and audit records decided for it but not yet confirmed
published (``streams/worker/app.py``, rule 3). The changelog holds it plain; the
in-memory store holds a resting agent's envelope deflated behind a zero byte
(a msgpack envelope starts with ``0x96``, never zero) and a byte naming the
preset dictionary it was deflated against: 0 none, 1 this process's. A state
deflated alone is mostly what every agent's state holds too (msgpack's layout,
the prior's values, empty rings), so the first :data:`DICT_SAMPLES` envelopes a
process rests become its dictionary, fixed from then on: a typical resting
agent takes ~0.5 KB instead of ~0.9 KB (``bench/bench_memory.py``). The
in-memory form never leaves the process.

>>> raw = pack_state(3, 41, b"state", [("freeze", "control", 3, "a", b"{}", "inc-1", 5)])
>>> unpack_state(raw) == unpack_state(rest_value(raw)) == (3, 41, b'state', [['freeze', 'control', 3, 'a', b'{}', 'inc-1', 5]], 0)
True
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import time
import zlib
from typing import Iterable, MutableMapping

import msgspec

from detector.engine import AgentState
from streams.worker.intake import home_partition

__all__ = ["Residency", "pack_state", "unpack_state", "rest_value", "RESTING", "ENVELOPE_VERSION"]

log = logging.getLogger("flowbreaker.worker")

ENVELOPE_VERSION = 1
#: first byte of a resting (deflated) envelope in the in-memory store
RESTING = b"\x00"
#: longest a call of Residency.rest_idle rests agents for (seconds; on the event loop, between batches)
REST_BUDGET = 0.02
_WBITS = -15  # raw deflate: no header or checksum to store per agent
#: envelopes that make up a process's preset dictionary (deflate looks back 32 KiB at most)
DICT_SAMPLES = 14
_DICT_MAX = 32 * 1024


class _Dictionary:
    """The process's preset deflate dictionary: the first :data:`DICT_SAMPLES` envelopes offered, then fixed
    (a value deflated against it must inflate against the same bytes for as long as the process lives)."""

    def __init__(self) -> None:
        self.samples: list[bytes] = []
        self.zdict: bytes | None = None
        self._primed = None  # a compressor that has read the dictionary: copied per envelope (~half the cost)

    def offer(self, envelope: bytes) -> None:
        if self.zdict is None:
            self.samples.append(envelope)
            if len(self.samples) >= DICT_SAMPLES:
                self.zdict = b"".join(self.samples)[-_DICT_MAX:]
                self.samples = []
                self._primed = zlib.compressobj(6, zlib.DEFLATED, _WBITS, 8, zdict=self.zdict)

    def deflate(self, envelope: bytes) -> bytes:
        if self._primed is None:
            packer = zlib.compressobj(6, zlib.DEFLATED, _WBITS, 8)
            return RESTING + b"\x00" + packer.compress(envelope) + packer.flush()
        packer = self._primed.copy()
        return RESTING + b"\x01" + packer.compress(envelope) + packer.flush()

    def inflate(self, raw: bytes) -> bytes:
        if raw[1:2] == b"\x00":
            return zlib.decompress(raw[2:], _WBITS)
        if raw[1:2] != b"\x01" or self.zdict is None:
            raise ValueError("resting envelope deflated against a dictionary this process does not have")
        unpacker = zlib.decompressobj(_WBITS, zdict=self.zdict)
        return unpacker.decompress(raw[2:]) + unpacker.flush()


_DICTIONARY = _Dictionary()


def pack_state(partition: int, offset: int, state: bytes, outbox: Iterable = (), written_ms: int = 0) -> bytes:
    """Table value: the engine's agent state and where it stands in the source partition."""
    return msgspec.msgpack.encode((ENVELOPE_VERSION, partition, offset, state, list(outbox), written_ms))


def unpack_state(raw: bytes) -> tuple[int, int, bytes, list, int]:
    """``(partition, offset, state, outbox, written_ms)`` of a plain or resting envelope; raises ValueError on an
    unknown version."""
    if raw[:1] == RESTING:
        raw = _DICTIONARY.inflate(raw)
    ver, partition, offset, state, outbox, written_ms = msgspec.msgpack.decode(raw)
    if ver != ENVELOPE_VERSION:
        raise ValueError(f"agent-state envelope version {ver} is not {ENVELOPE_VERSION}")
    return partition, offset, state, outbox, written_ms


def rest_value(envelope: bytes) -> bytes:
    """The in-memory form of a resting agent's envelope (deflated against the process's dictionary: mostly
    what every agent's state holds, zeros and sparse sketches); ~80 us, once per agent going idle."""
    if envelope[:1] == RESTING:
        return envelope
    rested = _DICTIONARY.deflate(envelope)
    _DICTIONARY.offer(envelope)
    return rested


def _malloc_trim():
    """glibc's ``malloc_trim``: hand freed heap pages back to the OS (else a no-op)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return lambda: None
    trim.argtypes = [ctypes.c_size_t]
    return lambda: trim(0)


class Residency:
    """The agents of one worker: resident ones (``home``, ``cursor``, ``seen``) and resting ones (in ``store``).

    ``store`` is the table's in-memory store (``table.data``), ``partitions`` the
    partition count of ``agent-actions``, ``rest_after`` how long an agent stays
    resident after its last event. Not thread-safe: the worker calls it from its
    event loop only.
    """

    def __init__(self, engine, store: MutableMapping[str, bytes] | None, *, partitions: int, rest_after: float,
                 clock=time.monotonic) -> None:
        self.engine = engine
        self.store = store
        self.partitions = partitions
        self.rest_after = rest_after
        self.clock = clock
        self.home: dict[str, int] = {}      # resident agent -> home partition
        self.cursor: dict[str, int] = {}    # resident agent -> offset of the last event its state includes (-1)
        self.seen: dict[str, float] = {}    # resident agent -> clock() of its last event (or of its loading)
        self._compact: list[str] = []       # keys to check for plain envelopes (recovered, or rested lately)
        self._trim = _malloc_trim()
        self._trimmed_at = -float("inf")
        self._rested_since_trim = 0
        self._trim_due = False
        self.stats = {"rested": 0, "woken": 0, "compacted": 0}

    def __contains__(self, agent: str) -> bool:
        return agent in self.home

    def __len__(self) -> int:
        return len(self.home)

    def resting(self) -> int:
        """How many agents rest in the store (resident ones have no value there)."""
        return len(self.store) if self.store is not None else 0

    def has_state(self, agent: str) -> bool:
        """The agent is resident or rests in the store."""
        return agent in self.home or (self.store is not None and self.store.get(agent) is not None)

    # ------------------------------------------------------------------ waking and resting
    def load(self, agent: str) -> list:
        """Make the agent resident (from the store when it has state there); return its outbox entries.

        Its home partition is computed from its id (streams/worker/intake.py), whatever
        record named it. An envelope from another partition (the topic was
        repartitioned) keeps the state but not the cursor: offsets of another
        partition say nothing here.
        """
        partition = home_partition(agent, self.partitions)
        self.home[agent] = partition
        self.cursor[agent] = -1
        self.seen[agent] = self.clock()
        raw = self.store.pop(agent, None) if self.store is not None else None
        if raw is None:
            return []
        p, offset, state, outbox, _ = unpack_state(raw)
        self.engine.load_agent(agent, state)
        self.stats["woken"] += 1
        if p == partition:
            self.cursor[agent] = offset
        else:
            log.warning("agent %s moved from partition %d to %d: not skipping redelivered events", agent, p,
                        partition)
        return [list(e) for e in outbox] if outbox else []

    def rest(self, agent: str, *, deflate: bool = True) -> None:
        """Serialise a resident agent into the store and drop its live state (it must be clean). ``deflate``:
        now, or later by :meth:`compact_some` (the store holds the plain envelope meanwhile, as after a
        recovery)."""
        state = self.engine.dump_agent(agent)
        if state is not None and self.store is not None:
            envelope = pack_state(self.home[agent], self.cursor[agent], state)
            # the store's key is a copy of the id made now: the id the agent came in with was decoded amid
            # its first event's short-lived strings, and kept for as long as the agent rests it would hold
            # their memory pool from being reused or released (RSS)
            key = agent.encode().decode()
            if deflate:
                envelope = rest_value(envelope)
            else:
                self._compact.append(key)
            self.store[key] = envelope
        self.engine.agents.pop(agent, None)
        self.engine.traces.rest(agent)
        self.forget(agent)
        self.stats["rested"] += 1

    def forget(self, agent: str) -> None:
        """Drop a resident agent's bookkeeping (its partition went to another worker, or it rested)."""
        self.home.pop(agent, None)
        self.cursor.pop(agent, None)
        self.seen.pop(agent, None)

    def rest_idle(self, keep, *, limit: int | None = 400, budget: float | None = REST_BUDGET,
                  timer=time.perf_counter) -> int:
        """Rest up to ``limit`` agents quiet for ``rest_after`` seconds for which ``keep(agent)`` is false
        (unwritten changes, unconfirmed outbox), for at most ``budget`` seconds (``timer``); return how many
        rested. About 45 us an agent, on the event loop: the default limit keeps one call under ~20 ms, so it
        never holds the stream up for long. An agent whose trace still holds blocks not deflated (a busy one,
        the worker defers deflating as replay does) costs up to ~0.7 ms: the budget bounds the call whatever
        the agents, the others rest with the next call. Their envelopes are deflated later, a few at a time
        (:meth:`compact_some`, ~80 us each): the worker calls this once a second and that every tick, so up to
        400 agents a second go to rest (agents acting in turns, six actions each at 1,500 actions/s, go idle at
        250 a second; at 200 a second the resident ones piled up, and RSS keeps its peak)."""
        now = self.clock()
        cutoff = now - self.rest_after
        idle = [a for a, t in self.seen.items() if t <= cutoff and not keep(a)]
        found = len(idle)
        if limit is not None:
            idle = idle[:limit]
        deadline = None if budget is None else timer() + budget
        for k, agent in enumerate(idle):
            self.rest(agent, deflate=False)
            if deadline is not None and timer() >= deadline:
                idle = idle[:k + 1]
                break
        quiet = len(idle) == found  # this sweep rested every idle agent there was
        self._rested_since_trim += len(idle)
        if self._rested_since_trim >= 1000 and (quiet or now - self._trimmed_at > 30.0):
            # many live states freed: dicts never shrink by themselves, and freed heap pages go back to the
            # OS only when asked, so RSS shows what the worker holds
            self._trimmed_at = now
            self._rested_since_trim = 0
            self.home, self.cursor, self.seen = dict(self.home), dict(self.cursor), dict(self.seen)
            self.engine.agents = dict(self.engine.agents)
            self._trim_due = True  # once their plain envelopes are deflated (compact_some)
        return len(idle)

    # ------------------------------------------------------------------ the store after a rebalance
    def schedule_compaction(self) -> None:
        """faust refilled the store from the changelog (plain envelopes): compact them, a few per call of
        :meth:`compact_some`."""
        self._compact = list(self.store) if self.store is not None else []

    def compact_some(self, n: int | None = 100) -> int:
        """Deflate up to ``n`` (``None``: all) plain envelopes of agents that are not resident (recovered, or
        rested by :meth:`rest_idle`); return how many."""
        done = 0
        store = self.store
        while self._compact and (n is None or done < n):
            agent = self._compact.pop()
            raw = store.get(agent) if store is not None else None
            if raw is not None and raw[:1] != RESTING and agent not in self.home:
                store[agent] = rest_value(raw)
                done += 1
        self.stats["compacted"] += done
        if self._trim_due and not self._compact:
            self._trim_due = False
            self._trim()
        return done

    def open_breakers(self, partitions: set[int]) -> dict[str, object]:
        """The resting agents of ``partitions`` whose breaker is open: ``{agent: BreakerState}``, longest
        open first. After a recovery faust refilled the store from the changelog, and a frozen agent does not
        act, so this is how a worker learns which of its agents are frozen, once per rebalance: 14 us an agent
        on average (20,000 agents, half of them deflated, took 0.27 s on a loaded 2-core machine; 100,000
        agents about 1.4 s). An envelope that cannot be read is logged and skipped: the agent fails when it
        wakes."""
        found = {}
        for agent, state in self._resting(partitions, "its breaker is not known"):
            try:
                breaker = AgentState.breaker_of(state)
            except ValueError as err:
                log.warning("agent %r: unreadable state in the table (%s); its breaker is not known", agent, err)
                continue
            if breaker.state == "open":
                found[agent] = breaker
        return dict(sorted(found.items(), key=lambda kv: kv[1].opened_t))

    def open_episodes(self, partitions: set[int]) -> dict[str, tuple]:
        """The resting agents of ``partitions`` whose state carries an open alert episode: ``{agent: episode
        state}`` (:meth:`detector.episodes.EpisodeBook.restore` takes it). Like :meth:`open_breakers`, once per
        rebalance: an agent that never acts again still has its episode closed by this worker."""
        found = {}
        for agent, state in self._resting(partitions, "its alert episode is not known"):
            try:
                ep = AgentState.episode_of(state)
            except ValueError as err:
                log.warning("agent %r: unreadable state in the table (%s); its alert episode is not known", agent,
                            err)
                continue
            if ep is not None:
                found[agent] = ep
        return found

    def _resting(self, partitions: set[int], unknown: str):
        """``(agent, state)`` of the resting agents of ``partitions`` (an unreadable envelope is logged and
        skipped: ``unknown`` says what is then not known)."""
        store = self.store if self.store is not None else {}
        for agent in list(store):
            if agent in self.home or home_partition(agent, self.partitions) not in partitions:
                continue
            raw = store.get(agent)
            if raw is None:
                continue
            try:
                state = unpack_state(raw)[2]
            except (ValueError, msgspec.DecodeError, zlib.error) as err:
                log.warning("agent %r: unreadable state in the table (%s); %s", agent, err, unknown)
                continue
            yield agent, state

    def drop_partitions(self, partitions: set[int]) -> int:
        """Drop resting agents of partitions this worker no longer owns from the store (faust prunes only
        what it recovered itself); return how many."""
        if self.store is None or not partitions:
            return 0
        gone = [a for a in list(self.store) if a not in self.home
                and home_partition(a, self.partitions) in partitions]
        for agent in gone:
            self.store.pop(agent, None)
        return len(gone)
