"""Events near the contract's size limit (1 MiB) are taken by the broker (issue 21, item 8).

The contract accepts a message of up to 1 MiB; Kafka's default ``max.message.bytes`` (1 MiB + 12 bytes)
left no room for the record's key and framing, so the broker refused events the contract accepts.
``flowbreaker topics`` (``streams.kafka_admin.ensure_topics``) creates ``agent-actions`` with room for them.
"""
from __future__ import annotations

import json
import uuid

import pytest

from detector.events import MAX_EVENT_BYTES, decode_event

pytestmark = pytest.mark.timeout(120)


def _event_of_size(size: int) -> bytes:
    ev = {"event_id": "big-1", "ts": "2026-03-02T09:00:00Z", "agent_id": "big-agent-" + "x" * 100,
          "operator_id": "o", "tool": "t", "action": "read", "resource": "r://x", "sensitivity": "internal",
          "x_pad": ""}
    raw = json.dumps(ev, separators=(",", ":")).encode()
    ev["x_pad"] = "p" * (size - len(raw))
    raw = json.dumps(ev, separators=(",", ":")).encode()
    assert len(raw) == size
    return raw


def test_an_event_of_exactly_the_contract_limit_is_taken_by_the_broker_and_decodes(kafka_bootstrap):
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition

    from streams.kafka_admin import TOPIC_CONFIGS, ensure_topics
    from streams.settings import Settings

    prefix = f"it-big-{uuid.uuid4().hex[:8]}-"
    topic = ensure_topics(Settings(bootstrap=kafka_bootstrap, topic_prefix=prefix, partitions=1),
                          topics=["actions"])
    name = next(iter(topic))
    raw = _event_of_size(MAX_EVENT_BYTES)
    decode_event(raw)  # the contract accepts it
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, max_request_size=2 * 1024 * 1024, acks="all")
    try:
        meta = producer.send(name, key=b"big-agent-" + b"x" * 100, value=raw).get(timeout=30)
    finally:
        producer.close()
    consumer = KafkaConsumer(bootstrap_servers=kafka_bootstrap, enable_auto_commit=False,
                             consumer_timeout_ms=20_000)
    try:
        tp = TopicPartition(name, meta.partition)
        consumer.assign([tp])
        consumer.seek(tp, meta.offset)
        rec = next(iter(consumer))
    finally:
        consumer.close()
    assert rec.value == raw and decode_event(rec.value).event_id == "big-1"
    assert int(TOPIC_CONFIGS["actions"]["max.message.bytes"]) > MAX_EVENT_BYTES
