"""The OTLP/HTTP answers of ``flowbreaker otlp`` (streams/otlp/receiver.py), over a real local HTTP server, with a
small hand-written producer in place of the broker's client (the integration tests use the real broker)."""

from __future__ import annotations

import asyncio
import os
import time

import pytest

pytest.importorskip("opentelemetry.proto")

from aiohttp.test_utils import TestClient, TestServer  # noqa: E402
from google.rpc.status_pb2 import Status  # noqa: E402
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (  # noqa: E402
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from prometheus_client import CollectorRegistry  # noqa: E402

from streams.otlp.metrics import OtlpMetrics  # noqa: E402
from streams.otlp.receiver import ActionPublisher, OtlpReceiver  # noqa: E402
from streams.otlp.translate import SpanTranslator  # noqa: E402


class Batch:
    def __init__(self) -> None:
        self.records = []

    def append(self, *, key, value, timestamp):
        self.records.append((key, value))
        return object()


class Producer:
    """What ActionPublisher asks of aiokafka's producer; ``fail`` makes every batch fail as a broker outage does."""

    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.sent: list[tuple[str, int, list]] = []

    def create_batch(self) -> Batch:
        return Batch()

    async def send_batch(self, batch, topic, *, partition):
        fut = asyncio.get_running_loop().create_future()
        if self.fail:
            fut.set_exception(ConnectionError("broker down"))
        else:
            self.sent.append((topic, partition, batch.records))
            fut.set_result(None)
        return fut


def body(n: int = 3) -> bytes:
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    kv = rs.resource.attributes.add()
    kv.key, kv.value.string_value = "service.name", "svc"
    ss = rs.scope_spans.add()
    for i in range(n):
        span = ss.spans.add(trace_id=os.urandom(16), span_id=os.urandom(8), name="execute_tool t",
                            end_time_unix_nano=time.time_ns())
        kv = span.attributes.add()
        kv.key, kv.value.string_value = "gen_ai.operation.name", "execute_tool"
        kv = span.attributes.add()
        kv.key, kv.value.string_value = "gen_ai.agent.id", f"agent-{i}"
    return req.SerializeToString()


def post(producer: Producer, data: bytes, headers: dict):
    async def go():
        metrics = OtlpMetrics(CollectorRegistry())
        receiver = OtlpReceiver(SpanTranslator(), ActionPublisher(producer, "agent-actions", 8), metrics,
                                max_bytes=1024 * 1024)
        async with TestClient(TestServer(receiver.app())) as client:
            r = await client.post("/v1/traces", data=data, headers=headers)
            return r.status, dict(r.headers), await r.read(), metrics.registry
    return asyncio.run(go())


def test_events_are_published_keyed_by_agent_on_the_partition_kafka_s_partitioner_gives():
    from aiokafka.partitioner import murmur2

    producer = Producer()
    status, _headers, raw, registry = post(producer, body(), {"Content-Type": "application/x-protobuf"})
    assert status == 200 and not ExportTraceServiceResponse.FromString(raw).HasField("partial_success")
    by_key = {k: p for _t, p, records in producer.sent for k, _v in records}
    assert by_key == {f"agent-{i}".encode(): (murmur2(f"agent-{i}".encode()) & 0x7FFFFFFF) % 8 for i in range(3)}
    assert registry.get_sample_value("flowbreaker_otlp_events_published_total") == 3


def test_a_broker_that_does_not_take_the_events_is_answered_503_with_retry_after_and_counts_nothing():
    status, headers, raw, registry = post(Producer(fail=True), body(), {"Content-Type": "application/x-protobuf"})
    assert status == 503 and headers["Retry-After"] == "5"
    assert "could not be published" in Status.FromString(raw).message
    assert registry.get_sample_value("flowbreaker_otlp_requests_total",
                                     {"transport": "http", "outcome": "unavailable"}) == 1
    assert registry.get_sample_value("flowbreaker_otlp_events_published_total") == 0
    assert registry.get_sample_value("flowbreaker_otlp_spans_received_total", {"transport": "http"}) == 0


def test_a_body_over_the_bound_is_answered_413_in_the_request_s_encoding():
    status, headers, raw, _registry = post(Producer(), b"{" + b" " * (2 * 1024 * 1024) + b"}",
                                           {"Content-Type": "application/json"})
    assert status == 413 and headers["Content-Type"].startswith("application/json")
    assert "larger than" in raw.decode()
