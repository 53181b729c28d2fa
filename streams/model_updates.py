"""The ``model-updates`` topic: how a promotion reaches the running workers.

``flowbreaker models promote`` and ``rollback`` publish one JSON message per
switch (see :mod:`models.registry`)::

    {"version": "m20260305-cc7a467c", "path": "/srv/registry/m20260305-cc7a467c",
     "checksum": "sha256:...", "promoted_at": "2026-03-06T10:00:00.000Z", "promoted_by": "alice",
     "action": "promote", "previous": "m20260226-0b1d2e3f"}

The topic has one partition (one total order of switches) and is compacted
with a constant key, so its last message is always the current model: a worker
that starts reads it with :func:`latest_update`, a running one follows it.
A worker must load ``path`` with ``models.store.load_model`` and check that the
loaded card's ``checksum`` equals the announced one before switching; on any
failure it keeps the model it has. Its name gets ``FLOWBREAKER_TOPIC_PREFIX``
like every other flowbreaker topic.

>>> decode_update(b'{"version": "m1", "path": "/r/m1", "checksum": "sha256:ab", '
...               b'"promoted_at": "2026-03-06T10:00:00.000Z", "promoted_by": "alice"}')["version"]
'm1'
>>> decode_update(b'{"version": "m1"}')
Traceback (most recent call last):
...
streams.clients.commands.RecordError: schema: model update lacks path, checksum, promoted_at, promoted_by
"""

from __future__ import annotations

import json
import time

from streams.settings import Settings

__all__ = ["MODEL_UPDATES", "KEY", "updates_topic", "ensure_updates_topic", "announce", "decode_update",
           "latest_update"]

MODEL_UPDATES = "model-updates"
KEY = b"current-model"
_FIELDS = ("version", "path", "checksum", "promoted_at", "promoted_by")
#: an announcement is a few hundred bytes
MAX_UPDATE_BYTES = 64 * 1024
#: compacted: the last announcement stays readable forever; a day before old ones may go
_CONFIGS = {"cleanup.policy": "compact", "min.compaction.lag.ms": str(24 * 3600 * 1000)}


def updates_topic(settings: Settings) -> str:
    return settings.topic_prefix + MODEL_UPDATES


def decode_update(value: bytes | str) -> dict:
    """Parse and check one ``model-updates`` message; :class:`streams.clients.commands.RecordError` (a
    ``ValueError``, one line, with a bounded ``reason``) when unusable, whatever is wrong with it (deep
    nesting, bad UTF-8, wrong types and huge values included)."""
    from streams.clients.commands import RecordError, decode_record

    msg = decode_record(value, dict, max_bytes=MAX_UPDATE_BYTES)
    missing = [k for k in _FIELDS if not isinstance(msg.get(k), str) or not msg.get(k)]
    if missing:
        raise RecordError("schema", f"model update lacks {', '.join(missing)}")
    long = [k for k in _FIELDS if len(msg[k]) > 4096]
    if long:
        raise RecordError("schema", f"model update field {long[0]} is longer than 4096 characters")
    return msg


def ensure_updates_topic(settings: Settings, *, timeout_s: float = 30.0) -> str:
    """Create the topic (1 partition, compacted) when missing; returns its name."""
    from kafka.admin import KafkaAdminClient, NewTopic
    from kafka.errors import TopicAlreadyExistsError

    name = updates_topic(settings)
    admin = KafkaAdminClient(client_id=f"{settings.app_id}-models", request_timeout_ms=int(timeout_s * 1000),
                             bootstrap_timeout_ms=int(timeout_s * 1000), **settings.kafka_python_config())
    try:
        if name not in set(admin.list_topics()):
            try:
                admin.create_topics([NewTopic(name, 1, settings.replication_factor, topic_configs=_CONFIGS)],
                                    timeout_ms=int(timeout_s * 1000))
            except TopicAlreadyExistsError:
                pass
    finally:
        admin.close()
    return name


def announce(settings: Settings, note: dict, *, timeout_s: float = 30.0) -> tuple[str, int, int]:
    """Publish ``note`` on ``model-updates`` and wait for the broker's acknowledgement;
    returns ``(topic, partition, offset)``. Raises kafka-python's errors on failure."""
    from kafka import KafkaProducer

    decode_update(json.dumps(note))  # never announce something a worker would reject
    topic = ensure_updates_topic(settings, timeout_s=timeout_s)
    producer = KafkaProducer(client_id=f"{settings.app_id}-models", acks="all", max_block_ms=int(timeout_s * 1000),
                             bootstrap_timeout_ms=int(timeout_s * 1000), **settings.kafka_python_config())
    try:
        meta = producer.send(topic, key=KEY, value=json.dumps(note, sort_keys=True).encode()).get(timeout=timeout_s)
    finally:
        producer.close(timeout=timeout_s)
    return topic, meta.partition, meta.offset


def latest_update(settings: Settings, *, timeout_s: float = 10.0) -> dict | None:
    """The last announcement on ``model-updates`` (None when the topic is missing or empty)."""
    from kafka import KafkaConsumer, TopicPartition

    topic = updates_topic(settings)
    consumer = KafkaConsumer(client_id=f"{settings.app_id}-models", group_id=None, enable_auto_commit=False,
                             bootstrap_timeout_ms=int(timeout_s * 1000), **settings.kafka_python_config())
    try:
        if not consumer.partitions_for_topic(topic):
            return None
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        end = consumer.end_offsets([tp])[tp]
        begin = consumer.beginning_offsets([tp])[tp]
        if end <= begin:
            return None
        # compaction may leave gaps: step back until a message is found
        last = None
        back = 1
        deadline = time.monotonic() + timeout_s
        while last is None and time.monotonic() < deadline:
            consumer.seek(tp, max(begin, end - back))
            while consumer.position(tp) < end and time.monotonic() < deadline:
                for rec in consumer.poll(timeout_ms=500).get(tp, []):
                    if rec.offset < end:
                        last = rec
            if end - back <= begin:
                break
            back *= 4
        return decode_update(last.value) if last is not None else None
    finally:
        consumer.close()
