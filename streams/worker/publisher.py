"""Publisher: the worker's outputs, straight to the aiokafka producer in per-partition batches.

A batch step adds its records (decisions, dead letters, re-routed events) with
:meth:`Publisher.add` and hands them over with one :meth:`Publisher.send`: one
producer batch per topic partition, enqueued without waiting for the broker.
Each partition's batches complete in order, so the future of its last batch
says when everything sent to it so far is on the broker: :meth:`Publisher.drained`
waits for those (rule 1 of ``streams/worker/app.py``: the decisions in a state are
published before the state is written). The first failure is kept and raised by
every later call: a worker never writes state or commits past an output that
did not reach the broker.

The reader never waits for the broker: aiokafka keeps one request in flight
per broker, and a batch for a partition whose previous batch has not left yet
waits for it, so while the broker is slow (tens of ms, a flush's states in
flight) the batch step would stop with it. :meth:`Publisher.send` with
``hold=True`` (the batch step's) keeps such a partition's records here, behind
its earlier ones, and a task of its own sends them as soon as the producer
takes them; :meth:`Publisher.drained` sends what is held first. Records of one
partition always go out in the order they were added.

faust's own ``send_soon`` buffer is not used: it throttles every stream while it
holds more than 100 messages, and a flush alone writes hundreds.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Callable

from aiokafka.partitioner import murmur2

__all__ = ["Publisher", "PublishError"]

log = logging.getLogger("flowbreaker.worker")


class PublishError(RuntimeError):
    """An output did not reach the broker: the worker must stop rather than commit past it."""


class Publisher:
    """Batches records per (topic, partition) and sends them with the producer ``producer()`` returns.

    ``counts`` maps topic names to partition counts; ``n_source`` is the
    partition count of ``agent-actions`` (outputs keyed like their source land
    on the source's partition number when their topic has as many partitions).
    """

    def __init__(self, producer: Callable[[], object], counts: dict[str, int], n_source: int) -> None:
        self._producer = producer
        self.counts = counts
        self.n_source = n_source
        self.pending: dict[tuple[str, int], list] = {}
        self.last: dict[tuple[str, int], asyncio.Future] = {}
        self.error: BaseException | None = None
        self._lock: asyncio.Lock | None = None   # one sender at a time: a partition's batches go out in order
        self._drainer: asyncio.Future | None = None

    def partition_for(self, topic: str, key: bytes, source_partition: int | None) -> int:
        """The source partition's number when ``topic`` is co-partitioned with ``agent-actions`` (what the
        default partitioner gives keys partitioned by it), else murmur2 of the key."""
        n = self.counts[topic]
        if source_partition is not None and n == self.n_source:
            return source_partition
        return (murmur2(key) & 0x7FFFFFFF) % n

    def add(self, topic: str, partition: int, key: bytes | None, value: bytes, headers: list | None = None) -> None:
        self.queue(topic, partition).append((key, value, headers))

    def queue(self, topic: str, partition: int) -> list:
        """The records added for ``(topic, partition)`` and not sent yet: appending ``(key, value, headers)`` to
        it is :meth:`add` (the batch step appends its decisions so, without a call per record)."""
        records = self.pending.get((topic, partition))
        if records is None:
            records = self.pending[(topic, partition)] = []
        return records

    def check(self) -> None:
        if self.error is not None:
            raise PublishError(f"publishing failed: {self.error!r}")

    def _on_sent(self, fut: asyncio.Future) -> None:
        if fut.cancelled():
            self.error = self.error or asyncio.CancelledError()
        elif fut.exception() is not None:
            self.error = self.error or fut.exception()
            log.error("publishing failed: %r", fut.exception())

    def _sender(self) -> asyncio.Lock:
        if self._lock is None:  # created on the running loop
            self._lock = asyncio.Lock()
        return self._lock

    async def send(self, *, track: bool = True, hold: bool = False) -> list[asyncio.Future]:
        """Enqueue everything added since the last call, one producer batch per partition (more when a
        batch is full); return each partition's last future. ``track``: the flush barrier waits for them.
        ``hold``: never wait for the producer; what it cannot take at once is sent by a task of its own."""
        lock = self._sender()
        if hold:
            if not self.pending:
                return []
            if lock.locked():  # a send in progress: these go after its records, with the drainer
                self._drain_later()
                return []
            producer = self._producer()
            out = {}
            for key in list(self.pending):
                if not self._queued(producer, key):
                    out[key] = self.pending.pop(key)
            if self.pending:
                self._drain_later()
            async with lock:  # free: no wait; and a partition of out has no batch before it
                return await self._send(producer, out, track)
        async with lock:  # also when nothing is pending: after the sends in progress (the drainer's)
            out, self.pending = self.pending, {}
            return await self._send(self._producer(), out, track) if out else []

    async def send_records(self, out: dict[tuple[str, int], list]) -> list[asyncio.Future]:
        """Send ``{(topic, partition): [(key, value, headers), ...]}`` now, apart from what was added (a flush's
        states); each partition's last future, not tracked."""
        async with self._sender():
            return await self._send(self._producer(), out, False)

    @staticmethod
    def _queued(producer, key: tuple[str, int]) -> bool:
        """The producer holds a batch of this partition not yet sent: a new one would wait for it."""
        batches = getattr(getattr(producer, "_message_accumulator", None), "_batches", None)
        return bool(batches.get(key)) if isinstance(batches, dict) else False  # aiokafka: TopicPartition keys

    def _drain_later(self) -> None:
        if self._drainer is None or self._drainer.done():
            self._drainer = asyncio.ensure_future(self._drain())

    async def _drain(self) -> None:
        try:
            while self.pending and self.error is None:
                await self.send()
        except BaseException as exc:  # noqa: BLE001 - kept: the next batch, flush or drained() raises it
            self.error = self.error or exc
            if not isinstance(exc, asyncio.CancelledError):
                log.error("publishing failed: %r", exc)

    async def _send(self, producer, out: dict, track: bool) -> list[asyncio.Future]:
        lasts = []
        for (topic, partition), records in out.items():
            batch = producer.create_batch()
            for key, value, headers in records:
                if batch.append(key=key, value=value, timestamp=None, headers=headers or []) is None:
                    fut = await producer.send_batch(batch, topic, partition=partition)
                    fut.add_done_callback(self._on_sent)
                    batch = producer.create_batch()
                    if batch.append(key=key, value=value, timestamp=None, headers=headers or []) is None:
                        raise PublishError(f"a record of {len(value)} bytes does not fit in a producer batch")
            fut = await producer.send_batch(batch, topic, partition=partition)
            fut.add_done_callback(self._on_sent)
            lasts.append(fut)
            if track:
                self.last[(topic, partition)] = fut
        return lasts

    async def send_one(self, topic: str, partition: int, key: bytes, value: bytes) -> asyncio.Future:
        """One record on its own (a freeze, a release): its delivery future."""
        fut = await self._producer().send(topic, value=value, key=key, partition=partition)
        fut.add_done_callback(self._on_sent)
        return fut

    async def drained(self) -> None:
        """Every output added so far is on the broker (raises :class:`PublishError` if one is not)."""
        self.check()
        await self.send()  # what the batch step held back, first
        outs = list(self.last.values())
        if outs:
            await asyncio.gather(*outs, return_exceptions=True)
        self.check()
