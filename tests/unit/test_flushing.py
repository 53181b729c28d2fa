"""State writes and offset commits (streams/worker/flushing.py), outputs (streams/worker/publisher.py), the outbox
(streams/worker/outbox.py).

The broker is replaced by a small hand-written producer that records what it
was given and completes futures when told to, so the order of events (outputs
acknowledged, then states written, then offsets committed) is observable.
"""
from __future__ import annotations

import asyncio

import msgspec
import pytest

from streams.worker.flushing import Flusher
from streams.worker.ordering import Positions
from streams.worker.outbox import Outbox, OutboxEntry
from streams.worker.publisher import Publisher, PublishError
from streams.worker.residency import pack_state, unpack_state


class Batch:
    def __init__(self, room: int = 1000) -> None:
        self.records: list = []
        self.room = room

    def append(self, *, key, value, timestamp, headers):
        if len(self.records) >= self.room:
            return None
        self.records.append((key, value, headers))
        return object()


class Producer:
    """Records batches and single sends; their futures complete when the test says so."""

    def __init__(self, room: int = 1000) -> None:
        self.room = room
        self.sent: list[tuple[str, int, list]] = []
        self.futures: list[asyncio.Future] = []
        self.log: list[str] = []

    def create_batch(self):
        return Batch(self.room)

    async def send_batch(self, batch, topic, *, partition):
        self.sent.append((topic, partition, batch.records))
        self.log.append(f"sent {topic}")
        fut = asyncio.get_running_loop().create_future()
        self.futures.append(fut)
        return fut

    async def send(self, topic, *, value, key, partition):
        return await self.send_batch(Batch(), topic, partition=partition)

    def ack_all(self, error: BaseException | None = None) -> None:
        for fut in self.futures:
            if not fut.done():
                fut.set_exception(error) if error else fut.set_result(None)


COUNTS = {"decisions": 8, "changelog": 8, "audit": 3}


def make(producer: Producer, positions: Positions, states: dict[str, bytes], home: dict[str, int]):
    committed: list[dict] = []

    async def commit(offsets):
        producer.log.append(f"commit {sorted(offsets.items())}")
        committed.append(dict(offsets))
        return True

    pub = Publisher(lambda: producer, COUNTS, 8)
    flusher = Flusher(interval=5.0, events=3, snapshot=states.get, home=home.get, positions=positions,
                      publisher=pub, changelog=lambda: "changelog", changelog_key=str.encode, commit=commit,
                      commit_interval=0.0, clock=lambda: 100.0)
    return pub, flusher, committed


async def _acking(producer: Producer, coro):
    """Run ``coro`` while acknowledging every send as it happens."""
    task = asyncio.ensure_future(coro)
    while not task.done():
        producer.ack_all()
        await asyncio.sleep(0)
    return task.result()


def test_decisions_are_acknowledged_before_states_are_written_and_offsets_committed_last():
    async def scenario():
        producer = Producer()
        positions = Positions()
        positions.start({0: 10, 1: 0}, now=0.0)
        positions.expect.update({0: 15, 1: 3})  # processed 10..14 on partition 0, 0..2 on partition 1
        pub, flusher, committed = make(producer, positions, {"a": b"state-a", "b": b"state-b"}, {"a": 0, "b": 1})
        pub.add("decisions", 0, b"a", b"decision")
        await pub.send()
        flusher.mark("a", 10, 90.0)
        flusher.mark("b", 1, 99.0)  # b is not due yet (1 event, 1 s old): it holds partition 1 at offset 1
        written = await _acking(producer, flusher.flush())
        assert written == 1
        assert producer.log == ["sent decisions", "sent changelog", "commit [(0, 15), (1, 1)]"]
        assert producer.sent[1] == ("changelog", 0, [(b"a", b"state-a", [])])
        assert list(flusher.dirty) == ["b"]

    asyncio.run(scenario())


def test_nothing_is_written_or_committed_while_an_output_is_unacknowledged():
    async def scenario():
        producer = Producer()
        positions = Positions()
        positions.start({0: 0}, now=0.0)
        pub, flusher, committed = make(producer, positions, {"a": b"s"}, {"a": 0})
        pub.add("decisions", 0, b"a", b"d")
        await pub.send()
        flusher.mark("a", 0, 0.0)
        task = asyncio.ensure_future(flusher.flush(force=True))
        for _ in range(20):
            await asyncio.sleep(0)
        assert producer.log == ["sent decisions"] and not committed  # waiting for the decision
        producer.ack_all()
        await _acking(producer, task)
        assert producer.log[-1] == "commit [(0, 0)]"

    asyncio.run(scenario())


def test_a_failed_output_stops_every_later_write_and_commit():
    async def scenario():
        producer = Producer()
        positions = Positions()
        positions.start({0: 0}, now=0.0)
        pub, flusher, committed = make(producer, positions, {"a": b"s"}, {"a": 0})
        pub.add("decisions", 0, b"a", b"d")
        await pub.send()
        producer.ack_all(RuntimeError("broker said no"))
        flusher.mark("a", 0, 0.0)
        with pytest.raises(PublishError):
            await flusher.flush(force=True)
        assert not committed and len(producer.sent) == 1
        with pytest.raises(PublishError):
            pub.check()

    asyncio.run(scenario())


def test_a_targeted_flush_writes_just_those_agents_and_a_flush_waits_for_the_batch_in_progress():
    async def scenario():
        producer = Producer()
        positions = Positions()
        positions.start({0: 0}, now=0.0)
        pub, flusher, _ = make(producer, positions, {"a": b"sa", "b": b"sb"}, {"a": 0, "b": 0})
        flusher.mark("a", 0, 0.0)
        flusher.mark("b", 1, 0.0)
        async with flusher.batch():
            task = asyncio.ensure_future(flusher.flush(only=["b"]))
            for _ in range(10):
                await asyncio.sleep(0)
            assert not producer.sent  # a flush never snapshots a batch half-published
        assert await _acking(producer, task) == 1
        assert producer.sent[0][2] == [(b"b", b"sb", [])] and list(flusher.dirty) == ["a"]

    asyncio.run(scenario())


def test_an_agent_is_written_once_per_flush_however_many_events_it_had():
    async def scenario():
        producer = Producer()
        positions = Positions()
        positions.start({0: 0}, now=0.0)
        pub, flusher, _ = make(producer, positions, {"a": b"s"}, {"a": 0})
        for offset in range(5):
            flusher.mark("a", offset, 99.0)  # K=3 events: due
        assert flusher.dirty["a"] == [99.0, 5, 0]
        assert await _acking(producer, flusher.flush()) == 1
        assert [records for topic, _, records in producer.sent if topic == "changelog"] == [[(b"a", b"s", [])]]

    asyncio.run(scenario())


def test_records_are_batched_per_partition_and_a_full_batch_starts_another():
    async def scenario():
        producer = Producer(room=2)
        pub = Publisher(lambda: producer, COUNTS, 8)
        for i in range(5):
            pub.add("decisions", i % 2, b"k", b"v%d" % i)
        lasts = await pub.send()
        assert [(t, p, len(r)) for t, p, r in producer.sent] == [("decisions", 0, 2), ("decisions", 0, 1),
                                                                ("decisions", 1, 2)]
        assert len(lasts) == 2 and set(pub.last) == {("decisions", 0), ("decisions", 1)}
        assert pub.partition_for("decisions", b"k", 5) == 5  # co-partitioned: the source's partition
        assert 0 <= pub.partition_for("audit", b"agent", 5) < 3

    asyncio.run(scenario())


def test_outbox_entries_keep_the_envelope_format_of_positional_lists():
    legacy = ["freeze", "control", 3, "a", b'{"command":"freeze"}', "inc-1", 5]
    entry = OutboxEntry(*legacy)
    assert msgspec.msgpack.encode(entry) == msgspec.msgpack.encode(legacy)
    _, _, _, outbox, _ = unpack_state(pack_state(3, 41, b"s", [entry]))
    assert [OutboxEntry.of(e) for e in outbox] == [entry]
    box = Outbox()
    incident = OutboxEntry("incident", "incidents", 0, "inc-1", b'{"severity":"high","frozen_by":"ann"}', "inc-1", 5)
    box.add("a", [entry, incident])
    assert box.incident("a", "inc-1") == {"severity": "high", "frozen_by": "ann"}
    assert not box.confirm("a", "inc-1", "release") and box.confirm("a", "inc-1", "freeze")
    assert not box.published("a", "inc-1") and box.confirm("a", "inc-1", "incident") and "a" not in box


def test_a_periodic_flush_writes_a_slice_of_the_longest_dirty_agents_and_commits_only_what_they_cover():
    async def scenario():
        producer = Producer()
        positions = Positions()
        positions.start({0: 0}, now=0.0)
        positions.expect[0] = 3  # processed 0..2: a at 0, b at 1, c at 2
        states = {"a": b"sa", "b": b"sb", "c": b"sc"}
        pub, flusher, committed = make(producer, positions, states, {"a": 0, "b": 0, "c": 0})
        flusher.slice_max = 2
        for offset, agent in enumerate("abc"):
            flusher.mark(agent, offset, 90.0)  # all three due (10 s old)
        assert await _acking(producer, flusher.flush()) == 2
        assert producer.sent[0][2] == [(b"a", b"sa", []), (b"b", b"sb", [])]
        assert list(flusher.dirty) == ["c"] and flusher.behind
        assert committed == [{0: 2}]  # c's event at offset 2 is not durable yet
        assert await _acking(producer, flusher.flush()) == 1
        assert not flusher.dirty and not flusher.behind and committed[-1] == {0: 3}

    asyncio.run(scenario())


def test_a_forced_flush_writes_every_dirty_agent_whatever_the_slice():
    async def scenario():
        producer = Producer()
        positions = Positions()
        positions.start({0: 0}, now=0.0)
        pub, flusher, _ = make(producer, positions, {"a": b"sa", "b": b"sb", "c": b"sc"}, {"a": 0, "b": 0, "c": 0})
        flusher.slice_max = 1
        for offset, agent in enumerate("abc"):
            flusher.mark(agent, offset, 99.9)  # none due by age or count
        assert await _acking(producer, flusher.flush(force=True)) == 3 and not flusher.dirty

    asyncio.run(scenario())


class Accumulator:
    """The producer's queue of batches not yet sent, per (topic, partition), as aiokafka keeps it."""

    def __init__(self) -> None:
        self._batches: dict[tuple[str, int], list] = {}


class QueueingProducer(Producer):
    """A producer whose batch for a partition waits while an earlier batch of it is queued (aiokafka's rule)."""

    def __init__(self) -> None:
        super().__init__()
        self._message_accumulator = Accumulator()
        self.gate = asyncio.Event()

    async def send_batch(self, batch, topic, *, partition):
        queued = self._message_accumulator._batches
        while queued.get((topic, partition)):
            await self.gate.wait()
        return await super().send_batch(batch, topic, partition=partition)


def test_the_batch_step_does_not_wait_for_a_partition_still_queued_and_its_records_follow_in_order():
    async def scenario():
        producer = QueueingProducer()
        pub = Publisher(lambda: producer, COUNTS, 8)
        producer._message_accumulator._batches[("decisions", 1)] = ["an earlier batch"]
        pub.add("decisions", 0, b"a", b"d1")
        pub.add("decisions", 1, b"b", b"d2")
        await asyncio.wait_for(pub.send(hold=True), 1.0)  # returns although partition 1 is queued
        assert [(t, p) for t, p, _ in producer.sent] == [("decisions", 0)]
        pub.add("decisions", 1, b"b", b"d3")
        await asyncio.wait_for(pub.send(hold=True), 1.0)
        await asyncio.sleep(0.01)
        assert len(producer.sent) == 1  # still queued: d2 and d3 wait here, in order
        producer._message_accumulator._batches.clear()
        producer.gate.set()
        drained = asyncio.ensure_future(pub.drained())
        while not drained.done():
            producer.ack_all()
            await asyncio.sleep(0)
        await drained
        sent_1 = [records for t, p, records in producer.sent if p == 1]
        assert [value for records in sent_1 for _, value, _ in records] == [b"d2", b"d3"]
        assert not pub.pending

    asyncio.run(scenario())


def test_drained_sends_what_the_batch_step_held_and_waits_for_its_acknowledgement():
    async def scenario():
        producer = QueueingProducer()
        pub = Publisher(lambda: producer, COUNTS, 8)
        producer._message_accumulator._batches[("decisions", 2)] = ["an earlier batch"]
        pub.add("decisions", 2, b"c", b"held")
        await pub.send(hold=True)
        drained = asyncio.ensure_future(pub.drained())
        await asyncio.sleep(0.01)
        assert not drained.done() and not producer.sent  # it waits for the queue, then for the ack
        producer._message_accumulator._batches.clear()
        producer.gate.set()
        await asyncio.sleep(0.01)
        assert producer.sent == [("decisions", 2, [(b"c", b"held", [])])] and not drained.done()
        producer.ack_all()
        await asyncio.wait_for(drained, 1.0)

    asyncio.run(scenario())


def test_marking_a_batchs_events_at_once_is_marking_them_one_by_one():
    from hypothesis import given, settings, strategies as st

    def bare() -> Flusher:
        return Flusher(interval=5.0, events=1000, snapshot=lambda a: None, home=lambda a: 0, positions=Positions(),
                       publisher=None, changelog=lambda: "cl", changelog_key=str.encode, commit=None)

    agents = st.sampled_from(["a", "b", "c"])

    @settings(max_examples=60, deadline=None)
    @given(st.lists(st.tuples(agents, st.none() | st.integers(0, 50))),
           st.lists(st.tuples(agents, st.integers(0, 50)), min_size=1))
    def check(before, batch):
        one, many = bare(), bare()
        for f in (one, many):  # earlier marks: events, and manual changes (a freeze, a release: no offset)
            for agent, offset in before:
                f.mark(agent, offset, 1.0)
        for agent, offset in batch:
            one.mark(agent, offset, 2.0)
        many.mark_events(batch, 2.0)
        assert list(many.dirty.items()) == list(one.dirty.items())

    check()
