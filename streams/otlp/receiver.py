"""The I/O of ``flowbreaker otlp``: OTLP/HTTP ``POST /v1/traces``, the Collector's Kafka records, and publishing.

How a request is answered (the OTLP/HTTP specification):

* ``200`` with an ``ExportTraceServiceResponse`` in the request's encoding once
  every event it gave is on the broker; when tool spans were refused its
  ``partial_success`` carries ``rejected_spans`` and an ``error_message`` naming
  the first refusals (ignored spans are not rejections);
* ``400`` (not a trace request: malformed protobuf or JSON, bad UTF-8, corrupt
  gzip or deflate), ``413`` (the body, or the body once decompressed, is over the bound),
  ``415`` (another content type or encoding), each with a ``google.rpc.Status``
  body, which the exporters do not retry;
* ``503`` with ``Retry-After`` when the events could not be published (the
  broker is down): exporters retry those, and an event published twice is scored
  once (same ``event_id``, same content: docs/contract.md, section 3).

Records of ``--from-topic`` (each one ``ExportTraceServiceRequest``, as the
Collector's Kafka exporter writes with ``encoding: otlp_proto`` or
``otlp_json``) are read in a consumer group; a record's offset is committed
once its events are on the broker (at least once); a record that cannot be
decoded is logged, counted and committed past; when publishing fails the
record is tried again until it succeeds or the process stops.

Events are keyed by ``agent_id`` and sent in per-partition producer batches, the
partition chosen as Kafka's default partitioner does (murmur2 of the key).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from aiohttp import web
from aiokafka.errors import KafkaError
from aiokafka.partitioner import murmur2

from streams.otlp.metrics import OtlpMetrics
from streams.otlp.translate import JSON, PROTOBUF, BadRequest, SpanTranslator, Translation, media_type, \
    parse_request, response_body, status_body

__all__ = ["ActionPublisher", "OtlpReceiver", "TopicIntake", "PublishFailed", "RETRY_AFTER_S"]

log = logging.getLogger("flowbreaker.otlp")

#: seconds an exporter is asked to wait before retrying when the broker is down
RETRY_AFTER_S = 5
_PARTITION_CACHE = 100_000
#: google.rpc.Code of each HTTP status we answer with (OTLP puts a google.rpc.Status in error bodies)
_RPC_CODE = {400: 3, 413: 8, 415: 3, 503: 14}


class PublishFailed(RuntimeError):
    """Events did not reach the broker (the request is answered 503; a topic record is tried again)."""


class ActionPublisher:
    """Publishes (key, value) records on ``topic`` in one producer batch per partition and waits for the broker.

    ``producer`` is a started ``aiokafka.AIOKafkaProducer``; ``partitions`` the topic's partition count.
    """

    def __init__(self, producer: Any, topic: str, partitions: int, *, timeout_s: float = 30.0) -> None:
        self.producer = producer
        self.topic = topic
        self.partitions = partitions
        self.timeout_s = timeout_s
        self._partition: dict[bytes, int] = {}

    def partition_for(self, key: bytes) -> int:
        p = self._partition.get(key)
        if p is None:
            p = (murmur2(key) & 0x7FFFFFFF) % self.partitions
            if len(self._partition) >= _PARTITION_CACHE:
                self._partition.clear()
            self._partition[key] = p
        return p

    async def publish(self, records: list[tuple[bytes, bytes]]) -> None:
        """Every record is on the broker when this returns; raises :class:`PublishFailed` otherwise."""
        if not records:
            return
        by_partition: dict[int, list[tuple[bytes, bytes]]] = {}
        for key, value in records:
            by_partition.setdefault(self.partition_for(key), []).append((key, value))
        futures = []
        try:
            for partition, items in by_partition.items():
                batch = self.producer.create_batch()
                for key, value in items:
                    if batch.append(key=key, value=value, timestamp=None) is None:
                        futures.append(await self.producer.send_batch(batch, self.topic, partition=partition))
                        batch = self.producer.create_batch()
                        if batch.append(key=key, value=value, timestamp=None) is None:
                            raise PublishFailed(f"an event of {len(value)} bytes does not fit in a producer batch")
                futures.append(await self.producer.send_batch(batch, self.topic, partition=partition))
            await asyncio.wait_for(asyncio.gather(*futures), self.timeout_s)
        except PublishFailed:
            raise
        except Exception as err:  # KafkaError, timeouts: the broker did not take them
            for fut in futures:
                if not fut.done():
                    fut.cancel()
            raise PublishFailed(f"publishing {len(records)} events failed: {err!r}") from err


class OtlpReceiver:
    """Translates requests and publishes their events; the HTTP handler and the topic intake share it."""

    def __init__(self, translator: SpanTranslator, publisher: ActionPublisher, metrics: OtlpMetrics, *,
                 max_bytes: int) -> None:
        self.translator = translator
        self.publisher = publisher
        self.metrics = metrics
        self.max_bytes = max_bytes

    async def export(self, transport: str, body: bytes, content_type: str, *,
                     encoding: str = "identity") -> Translation:
        """Decode, translate and publish one request (raises :class:`BadRequest`, :class:`PublishFailed`)."""
        translation = self.translator.translate(parse_request(body, content_type, encoding=encoding,
                                                              max_bytes=self.max_bytes))
        await self.publisher.publish(translation.records)
        self.metrics.count(transport, translation)  # once published: a request tried again is counted once
        self.metrics.events_published.inc(len(translation.records))
        return translation

    # ------------------------------------------------------------------ HTTP
    def app(self) -> web.Application:
        # the body is read as sent (auto_decompress off): gzip is inflated here, within the bound (gzip bombs)
        app = web.Application(client_max_size=self.max_bytes, handler_args={"auto_decompress": False})
        app.router.add_post("/v1/traces", self.handle)
        app.router.add_get("/metrics", self.handle_metrics)
        return app

    def _error(self, kind: str, status: int, message: str, outcome: str) -> web.Response:
        self.metrics.requests.labels("http", outcome).inc()
        headers = {"Retry-After": str(RETRY_AFTER_S)} if status == 503 else None
        return web.Response(status=status, body=status_body(kind, _RPC_CODE.get(status, 2), message),
                            content_type=kind, headers=headers)

    async def handle(self, request: web.Request) -> web.Response:
        started = time.perf_counter()
        try:
            kind = media_type(request.headers.get("Content-Type"))
        except BadRequest as err:
            return self._error(PROTOBUF, err.status, str(err), "unsupported")
        encoding = request.headers.get("Content-Encoding", "identity").strip().lower()
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return self._error(kind, 413, f"body is larger than {self.max_bytes} bytes", "too_large")
        try:
            translation = await self.export("http", body, kind, encoding=encoding)
        except BadRequest as err:
            outcome = {413: "too_large", 415: "unsupported"}.get(err.status, "bad_request")
            return self._error(kind, err.status, str(err), outcome)
        except PublishFailed as err:
            log.error("%s", err)
            return self._error(kind, 503, "the events could not be published (Kafka); retry", "unavailable")
        self.metrics.request_seconds.labels("http").observe(time.perf_counter() - started)
        self.metrics.requests.labels("http", "partial" if translation.rejected else "ok").inc()
        return web.Response(status=200, body=response_body(kind, translation.rejected, translation.error_message()),
                            content_type=kind)

    async def handle_metrics(self, _request: web.Request) -> web.Response:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return web.Response(body=generate_latest(self.metrics.registry),
                            headers={"Content-Type": CONTENT_TYPE_LATEST})


class TopicIntake:
    """Reads the Collector's Kafka records (``otlp_proto`` or ``otlp_json``) from ``consumer`` (a started
    ``aiokafka.AIOKafkaConsumer`` in a group, auto-commit off) and exports each through ``receiver``."""

    def __init__(self, receiver: OtlpReceiver, consumer: Any, encoding: str, *, retry_s: float = 1.0) -> None:
        self.receiver = receiver
        self.consumer = consumer
        self.content_type = JSON if encoding == "otlp_json" else PROTOBUF
        self.retry_s = retry_s
        self.stopping = asyncio.Event()

    async def run(self) -> None:
        metrics = self.receiver.metrics
        while not self.stopping.is_set():
            batches = await self.consumer.getmany(timeout_ms=200, max_records=500)
            for _tp, records in batches.items():
                for record in records:
                    if record.value is None:
                        continue
                    await self._one(record, metrics)
            if batches:
                try:
                    await self.consumer.commit()
                except KafkaError as err:  # a rebalance took the partition: its records come again (same events)
                    log.warning("commit failed (%r); the records since the last commit will be read again", err)

    async def _one(self, record: Any, metrics: OtlpMetrics) -> None:
        while True:
            started = time.perf_counter()
            try:
                translation = await self.receiver.export("kafka", record.value, self.content_type)
            except BadRequest as err:
                metrics.requests.labels("kafka", "too_large" if err.status == 413 else "bad_request").inc()
                log.warning("record %s[%d]@%d skipped: %s", record.topic, record.partition, record.offset, err)
                return
            except PublishFailed as err:
                metrics.requests.labels("kafka", "unavailable").inc()
                log.error("record %s[%d]@%d: %s; trying again in %.0f s", record.topic, record.partition,
                          record.offset, err, self.retry_s)
                try:
                    await asyncio.wait_for(self.stopping.wait(), self.retry_s)
                except asyncio.TimeoutError:
                    continue
                raise asyncio.CancelledError() from None  # stopping: the record stays uncommitted
            metrics.request_seconds.labels("kafka").observe(time.perf_counter() - started)
            metrics.requests.labels("kafka", "partial" if translation.rejected else "ok").inc()
            if translation.rejected:
                log.warning("record %s[%d]@%d: %s", record.topic, record.partition, record.offset,
                            translation.error_message())
            return
