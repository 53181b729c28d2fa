"""Flushing: agents' states to the changelog, then offsets to the consumer group (rules 1 and 2 of ``streams/worker/app.py``).

A changed agent is *dirty* from its first unwritten event: the flusher writes
its state (once, whatever the number of events since) when it has ``K``
unwritten events or its oldest unwritten change is ``T`` seconds old, and at
once for a breaker that opens or a release (``flush(only=...)``). A flush:

1. snapshots, with no batch in progress, the agents it writes and, per
   partition, the offset it may commit: the first unwritten event of the
   partition's agents that stay dirty, or else the next offset to process;
2. waits until every output sent so far is on the broker (the decisions
   included in those states first: :meth:`streams.worker.publisher.Publisher.drained`);
3. writes the states as producer batches to the changelog and waits for them;
4. commits the snapshot's offsets (at most once a second, unless forced).

So the committed offset never gets ahead of the durable state: after a crash,
Kafka redelivers from the committed offset, an event the state already includes
is skipped by the agent's cursor, and any other is scored from the state it was
first scored from (the same decision, byte for byte).

A periodic flush writes at most ``slice_max`` agents, those dirty longest
first; the others stay dirty (and hold back the commit of their partitions)
for the next flush, which :attr:`Flusher.behind` says should come soon. The
snapshot runs on the event loop between batches, so a fleet whose agents all
fall due together is written in slices of a few ms, not in one stall of the
stream. ``force`` and ``only`` (hand-over, freezes, releases) write all they
name.

One lock orders flushes among themselves; :meth:`Flusher.batch` marks a batch
in progress (a flush snapshots only between batches, and a batch does not
start while a flush snapshots).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Awaitable, Callable, Iterable

__all__ = ["Flusher"]


class Flusher:
    """Dirty agents and the writes and commits that make them durable.

    Collaborators: ``snapshot(agent)`` gives the agent's envelope (None: nothing to
    write), ``home(agent)`` its partition, ``positions`` the
    :class:`streams.worker.ordering.Positions` of the worker, ``publisher`` the
    :class:`streams.worker.publisher.Publisher`, ``changelog_key(agent)`` the key of its
    changelog record, ``changelog`` the changelog topic's name and ``commit``
    an awaitable taking ``{partition: offset}`` and answering whether it committed
    (a commit refused in a rebalance is not an error: the next owner redelivers).
    """

    def __init__(self, *, interval: float, events: int, snapshot: Callable[[str], bytes | None],
                 home: Callable[[str], int | None], positions, publisher, changelog: Callable[[], str],
                 changelog_key: Callable[[str], bytes], commit: Callable[[dict[int, int]], Awaitable[bool]],
                 commit_interval: float = 1.0, slice_max: int = 256, clock=time.monotonic) -> None:
        self.interval = interval
        self.events = events
        self.snapshot = snapshot
        self.home = home
        self.positions = positions
        self.publisher = publisher
        self.changelog = changelog
        self.changelog_key = changelog_key
        self.commit = commit
        self.commit_interval = commit_interval
        self.slice_max = slice_max
        #: the last periodic flush left due agents unwritten (its slice was full)
        self.behind = False
        self.clock = clock
        self._commit_at = -float("inf")
        #: agent -> [clock() of its first unwritten change, unwritten events, offset of its first unwritten event]
        self.dirty: dict[str, list] = {}
        self.committed: dict[int, int] = {}
        self.stats = {"state_writes": 0, "flushes": 0, "commits": 0}
        self._lock: asyncio.Lock | None = None
        self._idle: asyncio.Event | None = None

    def _sync(self) -> tuple[asyncio.Lock, asyncio.Event]:
        if self._lock is None:  # created on the running loop
            self._lock = asyncio.Lock()
            self._idle = asyncio.Event()
            self._idle.set()
        return self._lock, self._idle  # type: ignore[return-value]

    # ------------------------------------------------------------------ marking
    def mark(self, agent: str, offset: int | None, now: float) -> None:
        """One more unwritten event of ``agent`` (at ``offset`` of its home partition; None: not an event)."""
        self.mark_events(((agent, offset),), now)

    def mark_events(self, events: Iterable[tuple[str, int | None]], now: float) -> None:
        """:meth:`mark` of each ``(agent, offset)`` of a batch, in order (one loop, not a call per event)."""
        dirty = self.dirty
        for agent, offset in events:
            d = dirty.get(agent)
            if d is None:
                dirty[agent] = [now, 0 if offset is None else 1, offset]
            elif offset is not None:
                d[1] += 1
                if d[2] is None:
                    d[2] = offset

    @contextlib.asynccontextmanager
    async def batch(self):
        """A batch in progress: no flush snapshots until it ends (a snapshot itself never awaits, so a batch
        cannot start in the middle of one)."""
        _, idle = self._sync()
        idle.clear()
        try:
            yield
        finally:
            idle.set()

    @contextlib.asynccontextmanager
    async def quiet(self):
        """Hold the flush lock with no batch in progress (rest agents, hand partitions over)."""
        lock, idle = self._sync()
        async with lock:
            while not idle.is_set():
                await idle.wait()
            yield

    # ------------------------------------------------------------------ flushing
    async def flush(self, *, force: bool = False, only: Iterable[str] | None = None) -> int:
        """Write due agents (every dirty one with ``force``; just ``only`` when given), then commit."""
        lock, idle = self._sync()
        async with lock:
            while not idle.is_set():  # never snapshot a batch half-published
                await idle.wait()
            writes, offsets = self._snapshot(force, only)
            now = self.clock()
            if force or now - self._commit_at >= self.commit_interval:  # commits: at most once a second
                offsets = {p: o for p, o in offsets.items() if self.committed.get(p) != o}
            else:
                offsets = {}
            if not writes and not offsets:
                return 0
            await self.publisher.drained()                      # rule 1: decisions first ...
            if writes:
                topic = self.changelog()
                out: dict[tuple[str, int], list] = {}
                for agent, p, value in writes:                  # ... then the states ...
                    out.setdefault((topic, p), []).append((self.changelog_key(agent), value, None))
                futs = await self.publisher.send_records(out)
                await asyncio.gather(*futs, return_exceptions=True)
                self.publisher.check()
            offsets = {p: o for p, o in offsets.items() if self.committed.get(p) != o}
            if offsets:                                          # ... then the offsets
                self._commit_at = now
                if await self.commit(offsets):
                    self.committed.update(offsets)
                    self.stats["commits"] += 1
            self.stats["state_writes"] += len(writes)
            self.stats["flushes"] += 1
            return len(writes)

    def _snapshot(self, force: bool, only: Iterable[str] | None) -> tuple[list, dict[int, int]]:
        now = self.clock()
        if only is not None:
            due = [a for a in only if a in self.dirty]
        else:
            T, K = self.interval, self.events
            due = [a for a, (t0, n, _) in self.dirty.items() if force or n >= K or now - t0 >= T]
            if not force:  # dirty is in the order of first change: the longest dirty first
                self.behind = len(due) > self.slice_max
                due = due[:self.slice_max]
        writes = []
        for agent in due:
            del self.dirty[agent]
            p = self.home(agent)
            value = self.snapshot(agent)
            if value is not None and p is not None:
                writes.append((agent, p, value))
        # what may be committed once these writes are durable: per partition, the first unwritten event of the
        # agents that stay dirty, else everything processed
        offsets = {p: o for p, o in self.positions.expect.items()}
        for agent, (_, _, first) in self.dirty.items():
            if first is None:
                continue
            p = self.home(agent)
            if p is not None and first < offsets.get(p, first + 1):
                offsets[p] = first
        return writes, offsets

    def forget(self, agents: Iterable[str], partitions: Iterable[int]) -> None:
        for agent in agents:
            self.dirty.pop(agent, None)
        for p in partitions:
            self.committed.pop(p, None)
