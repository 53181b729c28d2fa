"""Which records of agent-actions a worker processes, per partition (streams/worker/ordering.py)."""
from __future__ import annotations

from collections import namedtuple

from hypothesis import given, settings
from hypothesis import strategies as st

from streams.worker.ordering import Positions

R = namedtuple("R", "offset")


def started(offsets: dict[int, int]) -> Positions:
    pos = Positions()
    pos.start(offsets, now=0.0)
    for p, o in offsets.items():  # the reader's first seek, to the committed offsets
        pos.sought(p, o)
    return pos


def run(offsets) -> list:
    return [R(o) for o in offsets]


def test_reading_starts_with_a_seek_to_the_committed_offset_and_nothing_is_taken_before_it():
    pos = Positions()
    pos.start({0: 10, 1: 0}, now=0.0)
    assert pos.seek_to == {0: 10, 1: 0} and pos.readable() == [0, 1]
    assert pos.admit(0, run([10, 11]), now=1.0) == []  # fetched before the seek landed: dropped
    pos.sought(0, 10)
    assert [r.offset for r in pos.admit(0, run([10, 11]), now=1.0)] == [10, 11]
    assert (pos.expect[0], pos.done[0]) == (12, 11)


def test_records_already_processed_are_skipped_and_counted():
    pos = started({0: 5})
    assert [r.offset for r in pos.admit(0, run([3, 4, 5, 6]), now=1.0)] == [5, 6]
    assert pos.admit(0, run([6]), now=1.0) == []
    assert pos.stats["redelivered"] == 3


def test_a_missing_offset_is_sought_back_and_nothing_after_it_is_taken():
    pos = started({0: 5})
    assert [r.offset for r in pos.admit(0, run([5]), now=1.0)] == [5]
    assert pos.admit(0, run([8, 9]), now=1.0) == []  # 6 and 7 did not come
    assert pos.seek_to == {0: 6} and pos.stats["gaps"] == 1 and pos.expect[0] == 6
    assert pos.admit(0, run([6, 7]), now=1.0) == []  # still waiting for the seek
    pos.sought(0, 6)
    assert [r.offset for r in pos.admit(0, run([6, 7, 8]), now=2.0)] == [6, 7, 8]


def test_offsets_that_hold_no_records_are_passed_once_a_seek_confirms_it():
    pos = started({0: 5})
    pos.admit(0, run([5]), now=1.0)
    pos.admit(0, run([9]), now=1.0)
    pos.sought(0, 6)
    assert [r.offset for r in pos.admit(0, run([9, 10]), now=2.0)] == [9, 10]  # 6..8: transaction markers
    assert pos.stats["skipped_offsets"] == 3 and pos.expect[0] == 11


def test_a_hole_inside_a_fetch_stops_the_run_there_and_asks_for_a_seek():
    pos = started({0: 0})
    assert [r.offset for r in pos.admit(0, run([0, 1, 2, 5, 6]), now=1.0)] == [0, 1, 2]
    assert pos.seek_to == {0: 3}
    pos.sought(0, 3)
    assert [r.offset for r in pos.admit(0, run([5, 6]), now=2.0)] == [5, 6]


def test_partitions_not_started_or_being_handed_over_are_not_processed():
    pos = started({0: 0, 1: 0})
    assert pos.admit(2, run([0]), now=1.0) == [] and pos.stats["not_ready"] == 1
    pos.handing_over.add(1)
    assert pos.readable() == [0] and pos.admit(1, run([0]), now=1.0) == []
    pos.forget({1})
    assert 1 not in pos.expect and pos.readable() == [0] and not pos.handing_over


def test_a_seek_asked_for_again_while_one_is_in_flight_is_not_lost():
    pos = started({0: 0})
    pos.admit(0, run([0]), now=1.0)
    pos.admit(0, run([3]), now=1.0)            # wants 1
    assert pos.seek_to == {0: 1}
    pos.seek_to[0] = 2                         # a later, different request (made while the seek ran) ...
    pos.sought(0, 1)
    assert pos.seek_to == {0: 2}               # ... survives the earlier one's completion


@settings(max_examples=300, deadline=None)
@given(st.sets(st.integers(0, 59), max_size=15), st.integers(0, 5),
       st.lists(st.tuples(st.sampled_from(["fetch", "fetch", "fetch", "rewind"]), st.integers(1, 9)), max_size=80))
def test_every_record_is_processed_once_in_order_whatever_the_fetches_bring(holes, start, steps):
    """A log with holes (offsets without records), fetches of any size from the consumer's position, and
    rewinds of that position to at most the next expected offset (faust seeking to the committed offset):
    every record from the start is processed exactly once, in offset order."""
    log = [o for o in range(60) if o not in holes]
    pos = started({0: start})
    cur = start                                # the consumer's fetch position
    processed: list[int] = []
    for kind, n in steps + [("fetch", 9)] * 30:
        if 0 in pos.seek_to:                   # the reader seeks before its next fetch
            cur = pos.seek_to[0]
            pos.sought(0, cur)
        if kind == "rewind":
            cur = max(start, pos.expect[0] - n)
            continue
        batch = [R(o) for o in log if o >= cur][:n]
        if batch:
            cur = batch[-1].offset + 1
            processed += [r.offset for r in pos.admit(0, batch, now=1.0)]
    assert processed == [o for o in log if o >= start]


def test_a_partition_is_stalled_only_with_records_waiting_and_no_progress_for_the_whole_while():
    pos = started({0: 10, 1: 20, 2: 30})
    assert pos.stalled({0: 15, 1: 20, 2: None}, now=29.0, after=30.0) == {}   # not long enough yet
    stalled = pos.stalled({0: 15, 1: 20, 2: None}, now=31.0, after=30.0)
    assert list(stalled) == [0] and "next offset 10" in stalled[0] and "highwater 15" in stalled[0]
    pos.admit(0, [R(10)], now=31.0)                                              # it moved
    assert pos.stalled({0: 15}, now=40.0, after=30.0) == {}
    pos.handing_over.add(0)
    assert "being handed over" in pos.stalled({0: 15}, now=70.0, after=30.0)[0]
