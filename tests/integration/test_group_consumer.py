"""A consumer group member of ``streams.kafka_admin.group_consumer`` knows its topic before it joins.

kafka-python's plain ``KafkaConsumer(topic, group_id=...)`` joins before its metadata names the
topic's partitions: the first assignment is empty and a second join follows, which kafka-python 3.0 can
lose under load (the member then waits "rebalancing" with no partitions; the actuator and the simulated
runtime did, in CI). Here the first assignment already holds every partition: no second join is needed.
"""
from __future__ import annotations

import time
import uuid

import pytest
from kafka import ConsumerRebalanceListener

from streams.kafka_admin import KafkaUnavailable, ensure_topics, group_consumer
from streams.settings import Settings

pytestmark = pytest.mark.timeout(120)


class Assignments(ConsumerRebalanceListener):
    def __init__(self) -> None:
        self.seen: list[set[int]] = []

    def on_partitions_revoked(self, revoked) -> None:
        pass

    def on_partitions_assigned(self, assigned) -> None:
        self.seen.append({tp.partition for tp in assigned})


def test_the_first_assignment_of_a_new_topic_holds_every_partition(kafka_bootstrap, unique_topic_prefix):
    for round_ in range(3):  # a topic created just now, each time
        prefix = f"{unique_topic_prefix}{round_}-"
        settings = Settings(bootstrap=kafka_bootstrap, topic_prefix=prefix)
        counts = ensure_topics(settings, partitions=4, topics=["tasks"])
        listener = Assignments()
        consumer = group_consumer(settings, settings.topic("tasks"), group=f"{prefix}g", listener=listener,
                                  enable_auto_commit=False)
        try:
            deadline = time.monotonic() + 30
            while not consumer.assignment() and time.monotonic() < deadline:
                consumer.poll(timeout_ms=200)
            assert listener.seen, "never assigned"
            assert listener.seen[0] == set(range(counts[settings.topic("tasks")])), listener.seen
        finally:
            consumer.close(autocommit=False)


def test_a_topic_that_does_not_exist_is_named_in_one_line(kafka_bootstrap):
    settings = Settings(bootstrap=kafka_bootstrap)
    missing = f"no-such-topic-{uuid.uuid4().hex[:8]}"
    with pytest.raises(KafkaUnavailable, match=missing):
        group_consumer(settings, missing, group="g-" + missing, timeout_s=1.0)
