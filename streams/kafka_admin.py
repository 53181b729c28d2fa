"""Kafka topics of flowbreaker: creating them (``flowbreaker topics``, the worker, the demo) and
reading their partition counts; a kafka-python consumer group member that knows its topic before it joins
(:func:`group_consumer`).

:func:`ensure_topics` creates whatever is missing of the topics of
``streams.settings.TOPICS`` (``agent-actions``, ``agent-actions-dlq``, ``agent-decisions``,
``agent-control``, ``agent-incidents``, ``agent-verdicts``, ``agent-alerts``, ...) and returns
every topic's partition count. It is idempotent and safe to race: two workers starting together both
succeed, and an existing topic is left as it is (its partition count wins; the
caller decides whether a mismatch matters). The changelog topic of the workers'
state table is created by the workers themselves (faust), with the partition
count of ``agent-actions``.

``agent-actions``, ``agent-control`` and the changelog must have the same
number of partitions: the worker that owns partition *p* of the actions owns
partition *p* of the control topic (releases) and of the state changelog.

``agent-actions`` is created with ``message.timestamp.type=LogAppendTime``: the
broker stamps every record with its own clock, and the workers refuse an event
dated more than ``max_clock_skew`` (default 5 min) ahead of that stamp
(``streams/worker/intake.py``), so a producer cannot make an agent's clock jump to 2099
and end a breaker's probation. A topic created earlier keeps its setting; set it
with ``kafka-configs.sh --alter --entity-type topics --entity-name agent-actions
--add-config message.timestamp.type=LogAppendTime`` (until then the workers cap
the producer's timestamp with their own clock).

``agent-actions`` is also created with ``max.message.bytes`` = :data:`ACTIONS_MAX_MESSAGE_BYTES`
(1,114,112), so an event of the contract's 1 MiB fits with its key and framing; for a topic created
earlier, ``--add-config max.message.bytes=1114112``. Producers need ``max.request.size`` (kafka-python,
aiokafka: ``max_request_size``) of at least as much: the clients' default of 1,048,576 refuses such an
event before it leaves (the workers' producer allows 4 MiB).
"""

from __future__ import annotations

import time
from typing import Iterable, Mapping

from streams.settings import TOPICS, Settings

__all__ = ["ensure_topics", "describe_topics", "group_consumer", "KafkaUnavailable", "TOPIC_CONFIGS",
           "ACTIONS_MAX_MESSAGE_BYTES"]

#: ``max.message.bytes`` of ``agent-actions``: the contract's largest event (1 MiB, detector/events.py) with room
#: for its key (up to 512 bytes), headers and the record batch's framing; Kafka's default (1 MiB + 12) has none
ACTIONS_MAX_MESSAGE_BYTES = 1024 * 1024 + 64 * 1024

#: topic configs per logical topic (everything else: broker defaults)
TOPIC_CONFIGS: dict[str, dict[str, str]] = {
    # event time is bounded by the broker's clock; an event of the contract's 1 MiB fits with its key and framing
    "actions": {"message.timestamp.type": "LogAppendTime", "max.message.bytes": str(ACTIONS_MAX_MESSAGE_BYTES)},
    "dlq": {"retention.ms": str(30 * 24 * 3600 * 1000)},        # a month to look at bad producers
    "incidents": {"retention.ms": str(365 * 24 * 3600 * 1000)},  # forensic records: a year
    "control": {"retention.ms": str(90 * 24 * 3600 * 1000)},     # freezes and releases: audit trail
    "audit": {"retention.ms": str(365 * 24 * 3600 * 1000)},      # who did what in the control plane: a year
    "feedback": {"retention.ms": "-1"},                          # labels for retraining: kept
    "manifests": {"cleanup.policy": "compact"},                  # the latest manifest per agent and role
    "acks": {"retention.ms": str(30 * 24 * 3600 * 1000)},        # who enacted a command: a month
    "drills": {"retention.ms": str(365 * 24 * 3600 * 1000)},     # drill results: a year
    "verdicts": {"retention.ms": "-1"},                          # what analysts taught: replay applies it again
    "alerts": {"retention.ms": str(365 * 24 * 3600 * 1000)},     # alert episodes: a year, like incidents
}


class KafkaUnavailable(RuntimeError):
    """The broker did not answer in time (one line, for the command line)."""


def _admin(settings: Settings, timeout_s: float):
    from kafka.admin import KafkaAdminClient
    from kafka.errors import KafkaError

    deadline = time.monotonic() + timeout_s
    last: Exception | None = None
    while time.monotonic() < deadline:
        left_ms = max(1000, int((deadline - time.monotonic()) * 1000))
        try:
            return KafkaAdminClient(client_id=f"{settings.app_id}-admin", request_timeout_ms=int(timeout_s * 1000),
                                    bootstrap_timeout_ms=left_ms, **settings.kafka_python_config())
        except (KafkaError, OSError) as err:
            last = err
            time.sleep(0.5)
    raise KafkaUnavailable(f"no Kafka broker answered at {settings.bootstrap} within {timeout_s:.0f}s ({last})")


def describe_topics(settings: Settings, names: Iterable[str], *, timeout_s: float = 30.0) -> dict[str, int]:
    """Partition counts of those of ``names`` that exist."""
    admin = _admin(settings, timeout_s)
    try:
        return _partition_counts(admin, list(names))
    finally:
        admin.close()


def _partition_counts(admin, names: list[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    existing = set(admin.list_topics())
    want = [n for n in names if n in existing]
    if want:
        for t in admin.describe_topics(want):
            if t.get("error_code", 0) == 0 and t.get("partitions"):
                out[t.get("name") or t.get("topic")] = len(t["partitions"])
    return out


def ensure_topics(bootstrap: str | Settings, partitions: int | None = None, *, replication_factor: int | None = None,
                  topic_prefix: str = "", topics: Iterable[str] | None = None,
                  configs: Mapping[str, Mapping[str, str]] | None = None,
                  timeout_s: float = 30.0) -> dict[str, int]:
    """Create the missing flowbreaker topics; return ``{topic name: partition count}`` for all of them.

    ``bootstrap`` is a ``host:port[,...]`` string (PLAINTEXT) or a :class:`Settings`
    (security settings, prefix, partitions and replication factor are then taken
    from it unless given here). New topics get ``partitions`` (default 8)
    partitions and ``replication_factor`` (default 1) replicas. ``topics`` restricts the logical names (keys of
    ``streams.settings.TOPICS``). Raises :class:`KafkaUnavailable` when no broker
    answers within ``timeout_s``.
    """
    from kafka.errors import TopicAlreadyExistsError

    if isinstance(bootstrap, Settings):
        settings = bootstrap
        topic_prefix = topic_prefix or settings.topic_prefix
    else:
        settings = Settings(bootstrap=bootstrap)
    partitions = settings.partitions if partitions is None else partitions
    replication_factor = settings.replication_factor if replication_factor is None else replication_factor
    logical = list(topics) if topics is not None else list(TOPICS)
    unknown = [t for t in logical if t not in TOPICS]
    if unknown:
        raise ValueError(f"unknown flowbreaker topics: {', '.join(unknown)}")
    names = {lt: topic_prefix + TOPICS[lt] for lt in logical}
    all_configs = {**TOPIC_CONFIGS, **(configs or {})}

    admin = _admin(settings, timeout_s)
    try:
        have = _partition_counts(admin, list(names.values()))
        missing = {lt: n for lt, n in names.items() if n not in have}
        if missing:
            spec = {n: {"num_partitions": partitions, "replication_factor": replication_factor,
                        "configs": dict(all_configs.get(lt, {}))} for lt, n in missing.items()}
            try:
                admin.create_topics(spec, timeout_ms=int(timeout_s * 1000), wait_for_metadata=True)
            except TopicAlreadyExistsError:
                pass  # another process created one of them meanwhile: fine
            deadline = time.monotonic() + timeout_s
            while True:  # until every topic has metadata (leaders elected)
                have = _partition_counts(admin, list(names.values()))
                if len(have) == len(names) or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
            if len(have) != len(names):
                raise KafkaUnavailable("topics not ready in time: "
                                       + ", ".join(sorted(set(names.values()) - set(have))))
        return {n: have[n] for n in names.values()}
    finally:
        admin.close()


def group_consumer(settings: Settings, topic: str, *, group: str, listener=None, timeout_s: float = 30.0, **config):
    """A kafka-python ``KafkaConsumer`` in consumer group ``group``, subscribed to ``topic`` (with the
    ``ConsumerRebalanceListener`` ``listener``, if given), that knows the topic's partitions before it joins.

    A consumer that joins before its metadata names the topic's partitions is assigned nothing, and rejoins
    once the metadata arrives. kafka-python 3.0 can lose that second join: when a ``poll`` returns on its
    timeout while the SyncGroup is in flight, the next poll no longer sees a rejoin pending and the member
    stays "rebalancing" with no partitions until the broker expires it (measured on this machine's broker
    under CPU load: 3-6 of 50 new consumers stuck for more than 20 s; 0 of 60 when the metadata is read first).
    So the metadata is read here, before the subscription; the group is joined at the first ``poll``.
    Raises :class:`KafkaUnavailable` when the topic has no partitions within ``timeout_s``.
    """
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(group_id=group, **config, **settings.kafka_python_config())
    deadline = time.monotonic() + timeout_s
    while not consumer.partitions_for_topic(topic):
        if time.monotonic() > deadline:
            consumer.close(autocommit=False)
            raise KafkaUnavailable(f"topic {topic} has no partitions at {settings.bootstrap} after {timeout_s:.0f}s "
                                   "(flowbreaker topics creates flowbreaker's topics)")
        time.sleep(0.2)
    consumer.subscribe([topic], listener=listener)
    return consumer
