"""The local broker from scripts/kafka.sh works: topics, keyed produce/consume, idempotent start."""
from __future__ import annotations

import json
import time
from collections import defaultdict

import pytest
from kafka import KafkaProducer
from kafka.admin import KafkaAdminClient

from streams.kafka_admin import group_consumer
from streams.settings import Settings

N_MESSAGES = 100
N_KEYS = 10


def test_topic_produce_consume_roundtrip(kafka_bootstrap, unique_topic_prefix, make_topics):
    topic = make_topics(kafka_bootstrap, [f"{unique_topic_prefix}actions"], partitions=8)[0]

    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap, request_timeout_ms=10000)
    try:
        (described,) = admin.describe_topics([topic])
        assert described["error_code"] == 0
        assert len(described["partitions"]) == 8
    finally:
        admin.close()

    sent = []
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all", linger_ms=5,
                             request_timeout_ms=10000, max_block_ms=10000)
    try:
        futures = []
        for i in range(N_MESSAGES):
            key = f"agent-{i % N_KEYS}".encode()
            value = json.dumps({"seq": i}).encode()
            sent.append((key, value))
            futures.append(producer.send(topic, key=key, value=value))
        producer.flush(timeout=30)
        produced_partition = {}
        for (key, _), fut in zip(sent, futures):
            meta = fut.get(timeout=10)
            # one key -> one partition
            assert produced_partition.setdefault(key, meta.partition) == meta.partition
    finally:
        producer.close(timeout=10)
    assert len(set(produced_partition.values())) > 1, "10 keys over 8 partitions should use several partitions"

    received = []
    consumer = group_consumer(Settings(bootstrap=kafka_bootstrap), topic, group=f"{unique_topic_prefix}group",
                              auto_offset_reset="earliest", enable_auto_commit=False, request_timeout_ms=30000)
    try:
        deadline = time.monotonic() + 60
        while len(received) < N_MESSAGES and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=1000).values():
                received.extend(records)
        consumer.commit()
    finally:
        consumer.close()

    assert len(received) == N_MESSAGES, f"got {len(received)} of {N_MESSAGES} messages within 60 s"
    assert sorted((r.key, r.value) for r in received) == sorted(sent)
    by_key = defaultdict(list)
    for r in received:
        assert r.partition == produced_partition[r.key]
        by_key[r.key].append(json.loads(r.value)["seq"])
    for seqs in by_key.values():  # per-key (per-partition) order is preserved
        assert seqs == sorted(seqs)


def test_topics_keep_records_stamped_in_the_past(kafka_bootstrap, unique_topic_prefix, make_topics):
    """Replayed and simulated events carry past create times: the broker retains by size, never by time (with
    time-based retention its cleaner deleted such records within minutes, under a running test or demo)."""
    from kafka.admin import ConfigResource, ConfigResourceType

    topic = make_topics(kafka_bootstrap, [f"{unique_topic_prefix}old"], partitions=1)[0]
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap, request_timeout_ms=10000)
    try:
        got = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic, None)], config_filter="all")
    finally:
        admin.close()
    (entries,) = got["topic"].values()  # {config key: {value, ...}}, the values the broker applies to the topic
    value = {k: (v.get("value") if isinstance(v, dict) else v) for k, v in entries.items()}
    assert value["retention.ms"] == "-1"
    assert int(value["retention.bytes"]) >= 1 << 30


def test_second_start_is_noop_and_status(kafka_broker):
    if not kafka_broker.managed:
        pytest.skip("FLOWBREAKER_TEST_KAFKA points at an external broker; kafka.sh not used")
    pid_file = kafka_broker.data_dir / "kafka.pid"
    pid_before = pid_file.read_text().strip()

    started = time.monotonic()
    again = kafka_broker.script("start", timeout=60)
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip() == kafka_broker.bootstrap
    assert time.monotonic() - started < 10, "second start should return at once"
    assert pid_file.read_text().strip() == pid_before

    status = kafka_broker.script("status", timeout=30)
    assert status.returncode == 0, status.stdout + status.stderr
    assert pid_before in status.stdout


def test_status_not_running_exits_3(tmp_path, kafka_script):
    port, controller_port = kafka_script.free_port_pair(29400)
    env = kafka_script.env(port, controller_port, tmp_path / "kafka")
    status = kafka_script.run("status", env=env, timeout=30)
    assert status.returncode == 3, status.stdout + status.stderr
    stop = kafka_script.run("stop", env=env, timeout=30)  # stopping nothing is fine
    assert stop.returncode == 0, stop.stderr
