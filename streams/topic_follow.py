"""Following small topics every worker reads whole: one thread, one consumer, no consumer group.

A worker reads three low-volume topics in full, outside the consumer group (every worker must see
every record): ``agent-manifests`` and ``agent-drills`` from the beginning, ``model-updates`` from
its last message (the current model). Each is read by a :class:`Follower`:

* ``topic``: the topic's name;
* ``position(consumer, tps)``: where reading starts (:func:`from_beginning`, or :func:`from_last`);
* ``on_record(record)``: one kafka-python ``ConsumerRecord``;
* ``after_poll(consumer)``: called after every poll (e.g. hand a changed book on);
* ``absent()``: the topic does not exist (yet).

:class:`TopicFollowers` runs them all on one daemon thread with one kafka-python consumer
(a thread and a consumer per topic cost the worker three threads polling for the GIL).

When it fails: the broker away or any consumer error: logged, the consumer closed, everything
re-read from the start positions after ``retry_s`` (followers keep what they folded and skip
what they have seen); a topic that does not exist is looked for again every ``recheck_s``, by
name (never by asking for every topic of the cluster), while the others are followed; a follower that raises on a record has that record logged and skipped,
the others go on. Nothing here takes the worker down.
"""

from __future__ import annotations

import abc
import logging
import threading
import time
from typing import Any, Iterable

__all__ = ["Follower", "TopicFollowers", "from_beginning", "from_last"]

log = logging.getLogger("flowbreaker.follow")


class Follower(abc.ABC):
    """A topic followed by :class:`TopicFollowers`; subclasses set ``topic`` and handle records."""

    topic: str = ""

    def position(self, consumer: Any, tps: list) -> None:
        """Where reading starts: the first record (override with :func:`from_last` for announcements)."""
        from_beginning(consumer, tps)

    @abc.abstractmethod
    def on_record(self, record: Any) -> None:
        """One kafka-python ``ConsumerRecord`` of ``topic``, in offset order per partition."""

    def after_poll(self, consumer: Any) -> None:
        """After every poll of the thread (every ``poll_s`` at least): nothing by default."""

    def absent(self) -> None:
        """The topic does not exist (yet): nothing by default."""


def from_beginning(consumer: Any, tps: list) -> None:
    """Read the partitions from their first record."""
    consumer.seek_to_beginning(*tps)


def from_last(consumer: Any, tps: list) -> None:
    """Read each partition from its last record (the current value of a single-partition announcement topic)."""
    for tp, end in consumer.end_offsets(tps).items():
        consumer.seek(tp, max(0, end - 1))


class TopicFollowers:
    """The followers' thread: ``start()``, ``stop()``; ``settings`` gives the Kafka connection."""

    def __init__(self, settings: Any, followers: Iterable[Follower], *, poll_s: float = 0.5, retry_s: float = 2.0,
                 recheck_s: float = 5.0, client_id: str = "flowbreaker-follow") -> None:
        self.settings = settings
        self.followers = {f.topic: f for f in followers}
        self.poll_s = poll_s
        self.retry_s = retry_s
        self.recheck_s = recheck_s
        self.client_id = client_id
        self.failures = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> "TopicFollowers":
        self._thread = threading.Thread(target=self._run, name="topic-followers", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._follow()
            except Exception as err:  # the broker went away: retry, never take the worker down
                self.failures += 1
                log.warning("following %s: %r; retrying", ", ".join(self.followers), err)
                self._stop.wait(self.retry_s)

    def _follow(self) -> None:
        from kafka import KafkaConsumer

        consumer = KafkaConsumer(group_id=None, enable_auto_commit=False, auto_offset_reset="earliest",
                                 client_id=self.client_id, **self.settings.kafka_python_config())
        lookup = _TopicLookup(self.settings, self.client_id)
        try:
            assigned: dict[str, list] = {}
            look_at = 0.0
            while not self._stop.is_set():
                if len(assigned) < len(self.followers) and time.monotonic() >= look_at:
                    self._assign_new(consumer, assigned, lookup)
                    look_at = time.monotonic() + self.recheck_s
                    if len(assigned) == len(self.followers):
                        lookup.close()  # every topic found: its connection is not needed any more
                if not assigned:
                    self._stop.wait(min(self.recheck_s, max(0.0, look_at - time.monotonic())))
                    continue
                for tp, records in consumer.poll(timeout_ms=int(self.poll_s * 1000)).items():
                    follower = self.followers[tp.topic]
                    for rec in records:
                        try:
                            follower.on_record(rec)
                        except Exception:  # noqa: BLE001 - one bad record or handler must not stop the others
                            log.exception("%s p%d@%d: the record could not be handled; skipped",
                                          tp.topic, tp.partition, rec.offset)
                for topic in assigned:
                    self.followers[topic].after_poll(consumer)
        finally:
            lookup.close()
            consumer.close(autocommit=False)

    def _assign_new(self, consumer: Any, assigned: dict[str, list], lookup: "_TopicLookup") -> None:
        """Add the topics that exist now to the assignment, each positioned by its follower."""
        from kafka import TopicPartition

        missing = [topic for topic in self.followers if topic not in assigned]
        found = lookup.partitions(missing)
        new: dict[str, list] = {}
        for topic in missing:
            parts = found.get(topic)
            if not parts:
                self.followers[topic].absent()
                continue
            new[topic] = [TopicPartition(topic, p) for p in sorted(parts)]
        if not new:
            return
        assigned.update(new)
        # kafka-python keeps the positions of partitions that stay assigned
        consumer.assign([tp for tps in assigned.values() for tp in tps])
        for topic, tps in new.items():
            self.followers[topic].position(consumer, tps)


class _TopicLookup:
    """The partitions of named topics, asked of the cluster by name (a metadata request for those topics only,
    never creating one). kafka-python's ``KafkaConsumer.partitions_for_topic`` asks for every topic of the
    cluster when it does not know one: a worker looking every ``recheck_s`` for a topic that does not exist
    yet (``model-updates`` before the first promotion) decoded the whole cluster's metadata each time, 18-61 ms
    of its interpreter lock with ~2,400 topics, beside the event loop that decides and answers checks. The
    admin connection is opened when first needed and closed once every topic is found."""

    def __init__(self, settings: Any, client_id: str) -> None:
        self.settings = settings
        self.client_id = client_id
        self._admin: Any = None

    def partitions(self, topics: list[str]) -> dict[str, list[int]]:
        """``{topic: partition ids}`` of the ``topics`` that exist (a topic that does not is left out)."""
        if not topics:
            return {}
        if self._admin is None:
            from kafka import KafkaAdminClient

            self._admin = KafkaAdminClient(client_id=self.client_id + "-lookup",
                                           **self.settings.kafka_python_config())
        return {t["name"]: [p["partition_index"] for p in t["partitions"]]
                for t in self._admin.describe_topics(topics) if t.get("error_code") == 0 and t.get("partitions")}

    def close(self) -> None:
        if self._admin is not None:
            admin, self._admin = self._admin, None
            try:
                admin.close()
            except Exception:  # noqa: BLE001 - closing a connection the broker already dropped
                pass
