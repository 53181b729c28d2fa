"""The worker's reading loop (Processor.run_reader in streams/worker/app.py): a partition's records are decided
once and in order, across seeks and freezes, and the last batch is freed while the next fetch is on its way."""
from __future__ import annotations

import asyncio
import gc
import weakref
from types import SimpleNamespace

from hypothesis import given, settings, strategies as st

from detector.engine import Engine
from streams.settings import Settings
from streams.worker import app as worker_app
from streams.worker.publisher import Publisher


class Record:
    __slots__ = ("offset", "__weakref__")

    def __init__(self, offset: int) -> None:
        self.offset = offset


def rec(offset: int) -> Record:
    return Record(offset)


class ScriptedReader:
    """Hands out scripted fetches in order; logs fetches and seeks; stops the processor when the script ends."""

    def __init__(self, batches: list[dict[int, list[int]]]) -> None:
        self.batches = list(batches)
        self.log: list[tuple] = []
        self.processor = None
        self.on_fetch = lambda: None

    def fetch_soon(self, partitions, limit=None):
        self.log.append(("fetch", limit))
        self.on_fetch()
        batch = self.batches.pop(0) if self.batches else None

        async def landed():
            if batch is None:
                self.processor._stopping = True
                return {}
            return {p: [rec(o) for o in offsets] for p, offsets in batch.items()}

        return landed()

    async def seek(self, offsets):
        self.log.append(("seek", dict(offsets)))
        return set(offsets)

    async def commit(self, offsets):
        return True


def processor(reader: ScriptedReader, partitions=(0, 1)):
    counts = {t: 2 for t in Settings().topics().values()}
    pr = worker_app.Processor(SimpleNamespace(should_stop=False), Engine(), Settings(), partition_counts=counts,
                              reader=reader, publisher=Publisher(lambda: None, counts, 2))
    reader.processor = pr
    pr.positions.start({p: 0 for p in partitions}, 0.0)
    pr.positions.seek_to.clear()
    pr.ready = True
    decided: list[tuple[int, int]] = []   # (partition, offset) in the order decided

    async def on_records(records):        # the batch step, as far as ordering goes: what admit lets through
        reader.log.append(("decide", sum(len(r) for r in records.values())))
        for p, recs in records.items():
            decided.extend((p, r.offset) for r in pr.positions.admit(p, recs, 0.0))

    pr.on_records = on_records
    return pr, decided


def run(pr) -> None:
    asyncio.run(asyncio.wait_for(pr.run_reader(), 10))


def test_a_hole_in_a_fetch_is_sought_back_and_read_again_in_order():
    reader = ScriptedReader([{0: [0, 1, 3]}, {0: [2, 3, 4], 1: [0]}])
    pr, decided = processor(reader)
    run(pr)
    assert [o for p, o in decided if p == 0] == [0, 1, 2, 3, 4]
    assert [o for p, o in decided if p == 1] == [0]
    assert reader.log[:4] == [("fetch", None), ("decide", 3), ("seek", {0: 2}), ("fetch", None)]


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(1, 90), min_size=1, max_size=6), st.booleans())
def test_a_partitions_records_are_decided_once_and_in_order_and_short_batches_while_a_freeze_waits(sizes, freezing):
    batches, at = [], {0: 0, 1: 0}
    for i, n in enumerate(sizes):
        batch = {}
        for p, k in ((0, n), (1, n // 2 + i % 2)):
            if k:
                batch[p] = list(range(at[p], at[p] + k))
                at[p] += k
        batches.append(batch)
    reader = ScriptedReader(batches)
    pr, decided = processor(reader)
    if freezing:
        pr._freezing = {object()}
    run(pr)
    for p in (0, 1):
        assert [o for q, o in decided if q == p] == list(range(at[p]))
    limits = {limit for what, limit in reader.log if what == "fetch"}
    assert limits == ({worker_app.FREEZE_BATCH} if freezing else {None})


def test_the_last_batch_is_freed_once_the_next_fetch_is_asked_for():
    """Freeing a batch's records and decisions costs as much as ~6 % of its step: it is done while the next
    fetch is on its way to the consumer's thread, not before asking for it, and not kept any longer."""
    reader = ScriptedReader([{0: [0, 1]}, {0: [2]}, {0: [3]}])
    pr, decided = processor(reader)
    step = pr.on_records
    alive: list[weakref.ref] = []
    seen: list[tuple[bool, bool]] = []   # at each fetch: (last batch's record alive, its decisions alive)

    class Decisions(list):                # what _step keeps in _spent (a list of Decision: no weak references)
        pass

    async def on_records(records):
        await step(records)
        alive[:] = [weakref.ref(records[0][0])]
        pr._spent = Decisions()
        alive.append(weakref.ref(pr._spent))

    def on_fetch():
        gc.collect()
        seen.append(tuple(r() is not None for r in alive))

    reader.on_fetch = on_fetch
    pr.on_records = on_records
    run(pr)
    assert seen[1:] == [(True, True)] * 3         # still held when the next fetch is asked for ...
    gc.collect()
    assert [r() for r in alive] == [None, None]   # ... and not after


def test_partitions_whose_state_changelog_was_not_recovered_are_named():
    """on_rebalance_complete can come from a recovery of an older generation (faust sends it before checking);
    the worker names the assigned partitions whose agent-state changelog that recovery did not restore."""
    pr, _ = processor(ScriptedReader([]))
    pr.table = SimpleNamespace(changelog_topic=SimpleNamespace(get_topic_name=lambda: "app-agent-state-changelog"))
    from faust.types import TP as tp  # what faust's recovery holds: (topic, partition) named tuples
    recovering = {tp("app-agent-state-changelog", 0), tp("app-agent-state-changelog", 2), tp("other-changelog", 1)}
    assert pr.unrecovered([0, 1, 2, 3], recovering) == [1, 3]
    assert pr.unrecovered([2, 0], recovering) == []
    assert pr.unrecovered([0], set()) == [0]
