"""Reading ``agent-actions`` below faust's per-message stream path.

faust stays the application: the consumer group and its assignment (the state
table's changelog partitions follow ``agent-actions``), changelog recovery, the
web server and the control-side agents. But its stream path costs about 80 us
per message before any work is done (a ``Message`` object, the conductor, a
channel queue, the stream iterator, an ack). So the worker reads
``agent-actions`` itself, in batches, from the aiokafka consumer faust already
holds (``getmany``, run on the consumer's own thread and event loop), and
commits that topic's offsets itself (``streams/worker/flushing.py``); faust's fetcher
is told to leave the topic alone (:meth:`ActionReader.install`). The topic stays
subscribed through a faust agent that never receives a message, so assignment,
recovery and rebalancing are faust's as before.

When it fails: a fetch or seek refused mid-rebalance is retried by the caller's
next round; a refused commit answers False (the next owner redelivers from the
last committed offset, and effects are idempotent); a stopped consumer ends
:meth:`ActionReader.fetch` with :class:`ReaderStopped`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Awaitable

__all__ = ["ActionReader", "ReaderStopped"]

log = logging.getLogger("flowbreaker.worker")


class ReaderStopped(RuntimeError):
    """The consumer is stopping or stopped."""


class ActionReader:
    """Batches of records of ``topic`` from the partitions asked for, on the consumer of faust ``app``."""

    def __init__(self, app, topic: str, *, max_records: int, wait_ms: int = 100, broker_wait_ms: int = 50,
                 busy_wait_ms: int = 5, busy_records: int = 8) -> None:
        self.app = app
        self.topic = topic
        self.max_records = max_records
        self.wait_ms = wait_ms
        self.broker_wait_ms = broker_wait_ms
        self.busy_wait_ms = busy_wait_ms
        self.busy_records = busy_records
        self._tuned = None
        self._fetcher = None

    # ------------------------------------------------------------------ set-up
    def install(self) -> None:
        """faust's fetcher skips ``topic``: its records stay in the consumer's buffer for :meth:`fetch`."""
        consumer = self.app.consumer
        original = consumer._getmany
        topic = self.topic

        async def getmany_without_actions(active_partitions, timeout):
            if active_partitions is None:  # a client-only app fetches everything; a worker never is one
                return await original(active_partitions, timeout)
            others = {tp for tp in active_partitions if tp.topic != topic}
            if not others:  # an empty set would mean "every partition" to aiokafka
                await asyncio.sleep(min(timeout, 0.2))
                return {}
            return await original(others, timeout)

        consumer._getmany = getmany_without_actions

    def _consumer(self):
        thread = self.app.consumer._thread
        consumer = thread._ensure_consumer()
        if consumer is not self._tuned:
            self._tune(consumer)
        return thread, consumer

    def _tune(self, consumer) -> None:
        """Hold an empty fetch at the broker for ``broker_wait_ms``, not faust's 1,500 ms.

        aiokafka keeps one fetch in flight per broker, for the partitions whose buffered records are all
        consumed. While the worker is still deciding buffered ``agent-actions`` records, that fetch names
        only partitions with nothing new (the control topic, the changelog), so the broker held it for
        ``fetch_max_wait_ms``, and a partition drained meanwhile waited for it: one worker read at most
        ~1 MB per partition per 1.5 s (~1,500 events/s per partition; 4 partitions: 6,200 events/s at
        0.6 of a core), and under load a decision waited up to half a second. 50 ms: two workers scale as
        with 20 ms (16k events/s on 2 cores either way) while an idle worker costs the broker 0.13 of a core
        (20 ms: 0.15; 200 ms and faust's 1,500 ms: 0.08, but two workers stalled again). The value is read
        for every request aiokafka builds; the fetcher exists once the consumer started.

        Under load (a fetch brought ``busy_records`` or more) the wait is ``busy_wait_ms`` instead: a fetch
        built while every ``agent-actions`` partition still had buffered records names only the quiet ones
        and was held the full 50 ms while the drained partitions filled (decisions 50-75 ms late at 5,000
        events/s, bench/bench_latency.py); an idle or slow worker goes back to 50 ms with its next fetch."""
        fetcher = getattr(consumer, "_fetcher", None)
        if fetcher is None or not hasattr(fetcher, "_fetch_max_wait_ms"):
            return
        fetcher._fetch_max_wait_ms = self.broker_wait_ms
        self._fetcher = fetcher
        self._tuned = consumer

    async def _on_consumer_thread(self, coro):
        """Run ``coro`` on the consumer's event loop (aiokafka objects belong to it) and await its result."""
        thread, _ = self._consumer()
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, thread.thread_loop))

    def _tp(self, partition: int):
        from aiokafka import TopicPartition

        return TopicPartition(self.topic, partition)

    # ------------------------------------------------------------------ reading
    async def fetch(self, partitions: list[int], limit: int | None = None) -> dict[int, list]:
        """Records fetched for ``partitions`` (up to ``max_records``, or ``limit`` when smaller, waiting up to
        ``wait_ms`` when there are none): ``{partition: [ConsumerRecord, ...]}`` in offset order per partition."""
        return await self.fetch_soon(partitions, limit)

    def fetch_soon(self, partitions: list[int], limit: int | None = None) -> Awaitable[dict[int, list]]:
        """:meth:`fetch`, handed to the consumer's thread now (not when the caller's event loop next runs a task:
        the batch step holds that loop for a whole batch), for the caller to await later."""
        try:
            thread, consumer = self._consumer()
        except Exception as exc:  # faust's ConsumerNotStarted: not yet, or no longer
            return self._raise(ReaderStopped(str(exc)))
        tps = [self._tp(p) for p in partitions]
        most = self.max_records if limit is None else max(1, min(limit, self.max_records))

        async def getmany():
            return await consumer.getmany(*tps, timeout_ms=self.wait_ms, max_records=most)

        return self._landed(asyncio.run_coroutine_threadsafe(getmany(), thread.thread_loop))

    @staticmethod
    async def _raise(exc: BaseException):
        raise exc

    async def _landed(self, pending) -> dict[int, list]:
        """The records of a getmany running on the consumer's thread (``pending``: its concurrent future)."""
        from aiokafka.errors import ConsumerStoppedError, KafkaError

        try:
            got = await asyncio.wrap_future(pending)
        except ConsumerStoppedError:
            raise ReaderStopped("consumer stopped") from None
        except KafkaError as exc:
            log.warning("fetching %s failed (retrying): %r", self.topic, exc)
            await asyncio.sleep(0.5)
            return {}
        fetcher = self._fetcher
        if fetcher is not None:  # read by the consumer's thread for the next request it builds
            busy = sum(len(records) for records in got.values()) >= self.busy_records
            fetcher._fetch_max_wait_ms = self.busy_wait_ms if busy else self.broker_wait_ms
        if not got:
            return {}
        self._note_inbound(got)
        return {tp.partition: records for tp, records in got.items()}

    def _note_inbound(self, got) -> None:
        """Tell faust's slow-stream watchdog that these partitions are being processed."""
        monitor = getattr(self.app, "monitor", None)
        inbound = getattr(monitor, "stream_inbound_time", None)
        if inbound is None:
            return
        from faust.types import TP

        now = time.monotonic()
        for tp in got:
            inbound[TP(tp.topic, tp.partition)] = now

    async def seek(self, offsets: dict[int, int]) -> set[int]:
        """Reading of each partition continues at its offset (buffered records of it are dropped); returns the
        partitions sought. One the consumer does not hold at this moment (a rebalance) is not: its caller
        keeps the seek pending, since whatever the consumer reads of it later may not start at that offset."""
        _, consumer = self._consumer()
        from aiokafka.errors import IllegalStateError

        async def seek_all() -> set[int]:
            done = set()
            for p, offset in offsets.items():
                try:
                    consumer.seek(self._tp(p), offset)
                    done.add(p)
                except (IllegalStateError, AssertionError) as exc:  # not assigned at the moment
                    log.debug("seek of partition %d not done: %r", p, exc)
            return done

        return await self._on_consumer_thread(seek_all())

    async def committed(self, partitions: list[int]) -> dict[int, int]:
        """The group's committed offset of each partition (the log start for one never committed)."""
        _, consumer = self._consumer()

        async def read():
            out: dict[int, int] = {}
            for p in partitions:
                offset = await consumer.committed(self._tp(p))
                if offset is not None and offset >= 0:
                    out[p] = offset
            missing = [self._tp(p) for p in partitions if p not in out]
            if missing:
                for tp, offset in (await consumer.beginning_offsets(missing)).items():
                    out[tp.partition] = offset
            return out

        return await self._on_consumer_thread(read())

    async def commit(self, offsets: dict[int, int]) -> bool:
        """Commit ``{partition: next offset to read}`` for the group; False if the group refused (rebalance)."""
        from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError
        from faust.types import TP

        thread, consumer = self._consumer()
        tps = {self._tp(p): offset for p, offset in offsets.items()}

        async def commit():
            await consumer.commit(tps)

        try:
            await self._on_consumer_thread(commit())
        except (CommitFailedError, IllegalStateError) as exc:
            log.warning("offsets of %s not committed (%r); the next owner resumes from the last commit",
                        self.topic, exc)
            return False
        except KafkaError as exc:
            log.warning("committing offsets of %s failed (%r); retried with the next flush", self.topic, exc)
            return False
        now = time.monotonic()  # faust's commit watchdog: these partitions are committed
        for p in offsets:
            thread.tp_last_committed_at[TP(self.topic, p)] = now
        return True

    def highwater(self, partition: int) -> int | None:
        from faust.types import TP

        try:
            return self.app.consumer.highwater(TP(self.topic, partition))
        except Exception:  # mid-rebalance, or not started: unknown
            return None
