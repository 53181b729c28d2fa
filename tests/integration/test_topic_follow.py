"""One thread and one consumer follow several topics whole (streams/topic_follow.py), on the real broker:
a topic created later is picked up, a follower that raises loses one record and nothing else, and
``from_last`` starts at a topic's last record."""
from __future__ import annotations

import threading
import uuid

import pytest
from kafka import KafkaConsumer, KafkaProducer
from kafka.admin import KafkaAdminClient, NewTopic

from streams.settings import Settings
from streams.topic_follow import Follower, TopicFollowers, from_last
from worker_harness import wait_for

pytestmark = pytest.mark.timeout(120)


class Collect(Follower):
    def __init__(self, topic: str, *, last: bool = False, poison: bytes | None = None) -> None:
        self.topic = topic
        self.last = last
        self.poison = poison
        self.values: list[bytes] = []
        self.polls = 0
        self.absences = 0
        self.lock = threading.Lock()

    def position(self, consumer, tps) -> None:
        if self.last:
            from_last(consumer, tps)
        else:
            super().position(consumer, tps)

    def on_record(self, record) -> None:
        if record.value == self.poison:
            raise ValueError("a handler that fails on this record")
        with self.lock:
            self.values.append(record.value)

    def after_poll(self, consumer) -> None:
        self.polls += 1

    def absent(self) -> None:
        self.absences += 1


def create(bootstrap: str, *topics: str) -> None:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.create_topics([NewTopic(t, num_partitions=1, replication_factor=1) for t in topics])
    finally:
        admin.close()


def test_several_topics_on_one_thread(kafka_bootstrap, monkeypatch):
    whole_cluster = []  # metadata requests for every topic of the cluster (a large cluster: tens of ms each)
    real = KafkaConsumer._fetch_all_topic_metadata
    monkeypatch.setattr(KafkaConsumer, "_fetch_all_topic_metadata",
                        lambda self: whole_cluster.append(1) or real(self))
    run = uuid.uuid4().hex[:8]
    early, late, announced = f"follow-{run}-early", f"follow-{run}-late", f"follow-{run}-announced"
    create(kafka_bootstrap, early, announced)
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    for v in (b"a1", b"a2", b"a3"):
        producer.send(announced, v).get(30)
    producer.send(early, b"e1").get(30)

    a, b, c = Collect(early, poison=b"boom"), Collect(late), Collect(announced, last=True)
    followers = TopicFollowers(Settings(bootstrap=kafka_bootstrap), [a, b, c], poll_s=0.1,
                               recheck_s=0.3).start()
    try:
        wait_for(lambda: a.values == [b"e1"] and c.values == [b"a3"], 30, "the existing topics")
        assert b.absences >= 1 and b.values == []           # not there yet: looked for, nothing read
        wait_for(lambda: b.absences >= 2, 30, "the missing topic looked for again")

        create(kafka_bootstrap, late)
        for v in (b"boom", b"e2"):                           # the failing record is skipped, the next one read
            producer.send(early, v).get(30)
        producer.send(late, b"l1").get(30)
        producer.send(announced, b"a4").get(30)
        wait_for(lambda: b.values == [b"l1"], 30, "the topic created later")
        wait_for(lambda: a.values == [b"e1", b"e2"] and c.values == [b"a3", b"a4"], 30, "the records after")
        assert a.polls > 0 and followers.failures == 0
        assert whole_cluster == []                          # the missing topic was looked for by name only
        assert [t.name for t in threading.enumerate()].count("topic-followers") == 1
    finally:
        followers.stop(timeout=10)
        producer.close(timeout=5)
