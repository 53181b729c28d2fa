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
