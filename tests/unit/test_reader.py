"""The worker's reader of agent-actions (streams/worker/reader.py): what it changes on faust's consumer."""
from __future__ import annotations

import asyncio
import contextlib
import threading
from types import SimpleNamespace

from streams.worker.reader import ActionReader


class Thread:
    def __init__(self, consumer) -> None:
        self.consumer = consumer

    def _ensure_consumer(self):
        return self.consumer


@contextlib.contextmanager
def on_consumer_thread(consumer):
    """An app whose faust consumer thread runs ``consumer`` on an event loop of its own (aiokafka objects belong
    to faust's consumer thread and its loop), stopped at the end."""
    loop = asyncio.new_event_loop()
    runner = threading.Thread(target=loop.run_forever, daemon=True)
    runner.start()
    try:
        thread = Thread(consumer)
        thread.thread_loop = loop
        yield SimpleNamespace(consumer=SimpleNamespace(_thread=thread))
    finally:
        loop.call_soon_threadsafe(loop.stop)
        runner.join(timeout=5)
        loop.close()


def aiokafka_like(wait_ms: int = 1500):
    """The two attributes of an aiokafka consumer the reader touches: its fetcher's wait (faust sets 1,500 ms)."""
    return SimpleNamespace(_fetcher=SimpleNamespace(_fetch_max_wait_ms=wait_ms))


def test_an_empty_fetch_is_held_briefly_on_every_consumer_faust_makes():
    first = aiokafka_like()
    app = SimpleNamespace(consumer=SimpleNamespace(_thread=Thread(first)))
    reader = ActionReader(app, "agent-actions", max_records=250, broker_wait_ms=20)
    _, got = reader._consumer()
    assert got is first and first._fetcher._fetch_max_wait_ms == 20
    # a consumer faust recreates (after a crash of its thread) is tuned too
    second = aiokafka_like()
    app.consumer._thread.consumer = second
    reader._consumer()
    assert second._fetcher._fetch_max_wait_ms == 20


def test_a_consumer_not_started_yet_is_tuned_once_it_has_a_fetcher():
    consumer = SimpleNamespace()
    app = SimpleNamespace(consumer=SimpleNamespace(_thread=Thread(consumer)))
    reader = ActionReader(app, "agent-actions", max_records=250)
    reader._consumer()                      # no fetcher before start(): nothing to tune, no error
    consumer._fetcher = SimpleNamespace(_fetch_max_wait_ms=1500)
    reader._consumer()
    assert consumer._fetcher._fetch_max_wait_ms == reader.broker_wait_ms < 1500


def test_a_seek_the_consumer_refuses_is_not_reported_done():
    """A partition the consumer does not hold at the moment (mid-rebalance) is not sought: the worker keeps its
    seek pending and admits none of its records, instead of taking whatever comes next as the sought offset."""
    from aiokafka.errors import IllegalStateError

    class Consumer:
        def __init__(self) -> None:
            self.at: dict[int, int] = {}

        def seek(self, tp, offset: int) -> None:
            if tp.partition == 2:
                raise IllegalStateError(f"{tp} is not assigned")
            self.at[tp.partition] = offset

    consumer = Consumer()
    with on_consumer_thread(consumer) as app:
        reader = ActionReader(app, "agent-actions", max_records=250)
        done = asyncio.run(reader.seek({1: 10, 2: 20, 3: 30}))
        assert done == {1, 3} and consumer.at == {1: 10, 3: 30}


def test_under_load_a_fetch_is_held_only_briefly_and_an_idle_worker_goes_back_to_the_longer_wait():
    from aiokafka import TopicPartition

    class Consumer:
        def __init__(self) -> None:
            self._fetcher = SimpleNamespace(_fetch_max_wait_ms=1500)
            self.next: dict = {}

        async def getmany(self, *tps, timeout_ms, max_records):
            self.asked = max_records
            return self.next

    consumer = Consumer()
    with on_consumer_thread(consumer) as app:
        reader = ActionReader(app, "agent-actions", max_records=250, broker_wait_ms=50, busy_wait_ms=5,
                              busy_records=8)
        tp = TopicPartition("agent-actions", 0)
        rec = SimpleNamespace(offset=0)
        consumer.next = {tp: [rec] * 8}
        assert len(asyncio.run(reader.fetch([0]))[0]) == 8
        assert consumer._fetcher._fetch_max_wait_ms == 5
        consumer.next = {tp: [rec] * 2}  # a trickle: the broker may hold a fetch longer
        asyncio.run(reader.fetch([0]))
        assert consumer._fetcher._fetch_max_wait_ms == 50
        consumer.next = {tp: [rec] * 9}
        asyncio.run(reader.fetch([0]))
        consumer.next = {}
        assert asyncio.run(reader.fetch([0])) == {} and consumer._fetcher._fetch_max_wait_ms == 50
        assert consumer.asked == 250
        asyncio.run(reader.fetch([0], 32))  # a shorter batch when the worker asks for one (a freeze in progress)
        assert consumer.asked == 32


def test_a_fetch_soon_is_on_the_consumer_thread_before_the_callers_loop_runs_again():
    """The worker starts the next fetch and then decides a batch without yielding to its event loop: a fetch
    that waited for the loop to run a task would start only after the batch (and the worker would wait for it)."""
    import threading

    from aiokafka import TopicPartition

    started = threading.Event()

    class Consumer:
        _fetcher = SimpleNamespace(_fetch_max_wait_ms=1500)

        async def getmany(self, *tps, timeout_ms, max_records):
            started.set()
            return {TopicPartition("agent-actions", 3): [SimpleNamespace(offset=7)]}

    with on_consumer_thread(Consumer()) as app:
        reader = ActionReader(app, "agent-actions", max_records=250)

        async def decide_meanwhile():
            landed = reader.fetch_soon([3])
            assert started.wait(5)  # blocks this loop, as deciding a batch does
            return await landed

        got = asyncio.run(decide_meanwhile())
    assert [r.offset for r in got[3]] == [7]
