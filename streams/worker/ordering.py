"""Ordering: which records of ``agent-actions`` a worker processes, per partition, strictly in offset order.

Rule 4 of ``streams/worker/app.py``. Each partition a worker owns is *started* once its
agents' states are recovered, at its committed offset; from then on the worker
processes only the next expected offset of it:

* a record below it was processed already (a fetch from before a seek, a
  redelivery after a rebalance): skipped, it is in the state and its outputs
  are published;
* a record above it means the ones in between did not come: the worker seeks
  the partition back to the first missing offset and drops what it got. If,
  right after that seek, the first record is still above it, the offsets in
  between hold no records (transaction markers, or deleted by retention) and
  the worker moves on to it;
* a partition that is not started (its state not recovered yet, or being
  handed over in a rebalance) is not read at all.

Per agent, the cursor of ``streams/worker/residency.py`` (the offset of the last event
its state includes, on its home partition) skips events a restarted worker is
handed again: ordering and dedupe state are per (topic, partition, offset),
never per agent alone.

>>> pos = Positions()
>>> pos.start({3: 100}, now=0.0); pos.seek_to       # reading starts with a seek to the committed offset
{3: 100}
>>> pos.sought(3, 100)
>>> [r.offset for r in pos.admit(3, [_R(98), _R(99), _R(100), _R(101)], now=1.0)], pos.expect[3]
([100, 101], 102)
>>> pos.admit(3, [_R(105)], now=2.0), pos.seek_to
([], {3: 102})
>>> pos.sought(3, 102); [r.offset for r in pos.admit(3, [_R(105)], now=3.0)]   # after the seek: a real gap
[105]
"""

from __future__ import annotations

import logging
from collections import namedtuple

__all__ = ["Positions"]

log = logging.getLogger("flowbreaker.worker")

_R = namedtuple("_R", "offset")  # a record, for the examples


class Positions:
    """Per started partition: the next offset to process, the last one processed, when it last moved."""

    def __init__(self) -> None:
        self.expect: dict[int, int] = {}      # started partition -> next offset to process
        self.done: dict[int, int] = {}        # started partition -> last offset processed
        self.progress: dict[int, float] = {}  # started partition -> when it last moved (or started)
        self.seek_to: dict[int, int] = {}     # partitions to seek back, to this offset, before the next fetch
        self._sought: dict[int, int] = {}     # partition -> offset of our last seek, until a record arrives
        self.handing_over: set[int] = set()   # started, but no longer read (a rebalance is taking them)
        self.stats = {"not_ready": 0, "redelivered": 0, "gaps": 0, "skipped_offsets": 0}

    def readable(self) -> list[int]:
        return sorted(p for p in self.expect if p not in self.handing_over)

    def start(self, offsets: dict[int, int], now: float) -> None:
        """Partitions recovered and assigned: process each from this offset (its committed one) on."""
        self.expect = dict(offsets)
        self.done = {p: o - 1 for p, o in offsets.items()}
        self.progress = {p: now for p in offsets}
        self.seek_to = dict(offsets)  # whatever was fetched before, reading starts here
        self._sought = {}
        self.handing_over = set()

    def forget(self, partitions: set[int]) -> None:
        for d in (self.expect, self.done, self.progress, self.seek_to, self._sought):
            for p in partitions:
                d.pop(p, None)
        self.handing_over -= partitions

    def stalled(self, highwater: dict[int, int | None], now: float, after: float) -> dict[int, str]:
        """Started partitions with records waiting (``highwater`` above the next offset) that have not moved
        for ``after`` seconds: ``{partition: what holds it}``, for the worker's log.

        >>> pos = Positions(); pos.start({0: 5, 1: 7}, now=0.0)
        >>> pos.stalled({0: 9, 1: 7}, now=40.0, after=30.0)   # partition 1 has nothing waiting
        {0: 'next offset 5, highwater 9, seek to 5 pending, idle 40 s'}
        """
        out: dict[int, str] = {}
        for p, nxt in self.expect.items():
            hw = highwater.get(p)
            since = now - self.progress.get(p, now)
            if hw is None or hw <= nxt or since < after:
                continue
            why = [f"next offset {nxt}", f"highwater {hw}"]
            if p in self.seek_to:
                why.append(f"seek to {self.seek_to[p]} pending")
            if p in self.handing_over:
                why.append("being handed over")
            out[p] = ", ".join(why) + f", idle {since:.0f} s"
        return out

    def sought(self, partition: int, offset: int) -> None:
        """The reader has sought ``partition`` to ``offset``: the next record read from it is from there."""
        if self.seek_to.get(partition) == offset:
            del self.seek_to[partition]
            self._sought[partition] = offset

    def admit(self, partition: int, records: list, now: float) -> list:
        """The records of ``partition`` (offset order, as fetched) to process now; advances the partition."""
        nxt = self.expect.get(partition)
        if nxt is None or partition in self.handing_over or partition in self.seek_to:
            self.stats["not_ready"] += len(records)  # not started, going away, or a seek is pending
            return []
        first = records[0].offset
        if first < nxt:  # already processed (fetched before a seek)
            k = 0
            while k < len(records) and records[k].offset < nxt:
                k += 1
            self.stats["redelivered"] += k
            records = records[k:]
            if not records:
                return []
            first = records[0].offset
        if first > nxt:
            if self._sought.get(partition) == nxt:  # right after our seek there: nothing lives in between
                log.warning("agent-actions partition %d: offsets %d..%d hold no records; going on at %d", partition,
                            nxt, first - 1, first)
                self.stats["skipped_offsets"] += first - nxt
            else:
                self.stats["gaps"] += 1
                log.warning("agent-actions partition %d: offset %d missing from the fetch (got %d); seeking back",
                            partition, nxt, first)
                self.seek_to[partition] = nxt
                return []
        self._sought.pop(partition, None)
        last = records[-1].offset
        if last - records[0].offset != len(records) - 1:  # a hole inside the run: take it up to the hole
            k = 1
            while k < len(records) and records[k].offset == records[k - 1].offset + 1:
                k += 1
            self.seek_to[partition] = records[k - 1].offset + 1
            records = records[:k]
            last = records[-1].offset
        self.expect[partition] = last + 1
        self.done[partition] = last
        self.progress[partition] = now
        return records
