"""The worker's reading loop (Processor.run_reader in streams/worker/app.py): the next fetch runs while a batch is
decided, without losing, doubling or reordering a partition's records, also across a seek and a freeze."""
from __future__ import annotations

import asyncio
from types import SimpleNamespace

from hypothesis import given, settings, strategies as st

from detector.engine import Engine
from streams.settings import Settings
from streams.worker import app as worker_app
from streams.worker.publisher import Publisher


def rec(offset: int):
    return SimpleNamespace(offset=offset)


class ScriptedReader:
    """Hands out scripted fetches in order; logs fetches and seeks; stops the processor when the script ends."""

    def __init__(self, batches: list[dict[int, list[int]]], max_records: int = 1) -> None:
        self.batches = list(batches)
        self.max_records = max_records  # 1: every batch is a full one, the next fetch goes ahead
        self.log: list[tuple] = []
        self.processor = None

    def fetch_soon(self, partitions, limit=None):
        self.log.append(("fetch", limit))
        batch = self.batches.pop(0) if self.batches else None

        async def landed():
            if batch is None:
                self.processor._stopping = True
                return {}
            return {p: [rec(o) for o in offsets] for p, offsets in batch.items()}

        return landed()

    async def fetch(self, partitions, limit=None):
        return await self.fetch_soon(partitions, limit)

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
    pr.ready = True
    decided: list[tuple[int, int]] = []   # (partition, offset) in the order decided
    sizes: list[int] = []

    async def on_records(records):        # the batch step, as far as ordering goes: what admit lets through
        sizes.append(sum(len(r) for r in records.values()))
        reader.log.append(("decide", sizes[-1]))
        for p, recs in records.items():
            decided.extend((p, r.offset) for r in pr.positions.admit(p, recs, 0.0))

    pr.on_records = on_records
    return pr, decided, sizes


def run(pr) -> None:
    asyncio.run(asyncio.wait_for(pr.run_reader(), 10))


def test_records_fetched_ahead_of_a_seek_are_dropped_and_read_again_from_the_offset_sought():
    # the first fetch has a hole at partition 0 (offset 2 missing): the worker takes 0-1 and seeks back to 2. The
    # fetch ahead, started before that seek, holds later records of partition 0: taken after the seek, they would
    # look like "nothing lives between 2 and 6" and offsets 2-5 would never be decided.
    reader = ScriptedReader([{0: [0, 1, 3]}, {0: [6, 7], 1: [0]}, {0: [2, 3, 4, 5, 6, 7]}])
    pr, decided, _ = processor(reader)
    pr.positions.seek_to.clear()
    run(pr)
    assert [o for p, o in decided if p == 0] == list(range(8))
    assert [o for p, o in decided if p == 1] == [0]
    # the second fetch was started before the first batch was decided, the seek came after it landed
    assert reader.log[:4] == [("fetch", None), ("fetch", None), ("decide", 3), ("seek", {0: 2})]


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(1, 90), min_size=1, max_size=6), st.booleans())
def test_a_partitions_records_are_decided_once_and_in_order_whatever_the_batches(sizes, freezing):
    """Batches of any size, with or without a freeze in progress (then at most FREEZE_BATCH records a step)."""
    batches, at = [], {0: 0, 1: 0}
    for i, n in enumerate(sizes):
        batch = {}
        for p, k in ((0, n), (1, n // 2 + i % 2)):
            if k:
                batch[p] = list(range(at[p], at[p] + k))
                at[p] += k
        batches.append(batch)
    pr, decided, steps = processor(ScriptedReader(batches))
    pr.positions.seek_to.clear()
    if freezing:
        pr._freezing = {object()}
    run(pr)
    for p in (0, 1):
        assert [o for q, o in decided if q == p] == list(range(at[p]))
    if freezing:
        assert max(steps) <= worker_app.FREEZE_BATCH
    else:
        assert len(steps) == len(batches)


def test_a_freeze_decided_in_a_batch_slices_the_batch_fetched_ahead_of_it():
    reader = ScriptedReader([{0: list(range(10))}, {0: list(range(10, 110))}])
    pr, decided, steps = processor(reader)
    pr.positions.seek_to.clear()
    step = pr.on_records

    async def on_records(records):
        await step(records)
        pr._freezing.add(object())  # the first batch opens a breaker: its freeze waits for its write

    pr.on_records = on_records
    run(pr)
    assert reader.log[:3] == [("fetch", None), ("fetch", None), ("decide", 10)]  # fetched ahead while the first batch was decided: a full batch
    assert steps == [10, 32, 32, 32, 4]        # decided in slices, so the freeze's steps run between them
    assert [o for _, o in decided] == list(range(110))


def test_only_a_full_batch_fetches_ahead_a_worker_that_keeps_up_fetches_after_deciding():
    reader = ScriptedReader([{0: list(range(200))}, {0: list(range(200, 210))}, {0: [210]}], max_records=250)
    pr, decided, _ = processor(reader)
    pr.positions.seek_to.clear()
    run(pr)
    assert reader.log == [("fetch", None), ("fetch", None), ("decide", 200), ("decide", 10), ("fetch", None),
                          ("decide", 1), ("fetch", None)]
    assert [o for _, o in decided] == list(range(211))
