"""Read a time range of a Kafka topic: history for ``flowbreaker train --from-topic``.

:func:`read_range` yields the messages of every partition of a topic whose
Kafka timestamp is in ``[since, until)``, partition by partition in offset
order (all of an agent's actions are on one partition, so each agent's actions
come in order). Offsets are found with ``offsets_for_times``: the first offset
at or after ``since`` and the first at or after ``until``, clipped to the end of
the partition as it was when reading began, so the read is bounded even on a
topic that keeps growing. Messages inside the offset range whose timestamps
fall outside ``[since, until)`` (producers with skewed clocks) are dropped.

The range is by message timestamp (the producer's ``CreateTime``, or the
broker's ``LogAppendTime``), which for a live runtime is within moments of the
action's ``ts``; a topic refilled later from an archive has append-time
timestamps instead, so select such a topic by the refill time.

:func:`parse_instant` reads ``--since``/``--until``: RFC 3339 (a missing offset
means UTC), a date (UTC midnight), or ``now``.

>>> parse_instant("2026-03-02T09:00:00+01:00")
1772438400000
>>> parse_instant("2026-03-02") == parse_instant("2026-03-02T00:00:00Z")
True
>>> parse_instant("yesterday")
Traceback (most recent call last):
...
ValueError: not an RFC 3339 timestamp, a date or 'now': 'yesterday'
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Iterator

from detector.timestamps import instant

__all__ = ["parse_instant", "read_range", "plan_range", "RangePlan", "TopicMissing", "RangeTooLarge"]


class TopicMissing(LookupError):
    """The topic does not exist (or is not visible to this client)."""


class RangeTooLarge(ValueError):
    """The range holds more messages than the caller allowed."""


def parse_instant(text: str, *, now_ms: int | None = None) -> int:
    """Milliseconds since the epoch of an RFC 3339 timestamp, a date or ``now``."""
    t = text.strip()
    if t.lower() == "now":
        return int(time.time() * 1000) if now_ms is None else now_ms
    try:
        return int(round(instant(t, assume_utc=True) * 1000))
    except ValueError:
        raise ValueError(f"not an RFC 3339 timestamp, a date or 'now': {text!r}") from None


@dataclass
class RangePlan:
    """Per partition, the offsets ``[start, stop)`` to read."""

    topic: str
    since_ms: int
    until_ms: int | None
    offsets: dict[int, tuple[int, int]]

    @property
    def total(self) -> int:
        """An upper bound of the messages in the range."""
        return sum(max(0, b - a) for a, b in self.offsets.values())


def plan_range(consumer, topic: str, since_ms: int, until_ms: int | None) -> RangePlan:
    """Find each partition's offset range with ``offsets_for_times`` (bounded by today's end)."""
    from kafka import TopicPartition

    parts = consumer.partitions_for_topic(topic)
    if not parts:
        raise TopicMissing(topic)
    tps = [TopicPartition(topic, p) for p in sorted(parts)]
    end = consumer.end_offsets(tps)
    first = consumer.offsets_for_times({tp: since_ms for tp in tps})
    last = consumer.offsets_for_times({tp: until_ms for tp in tps}) if until_ms is not None else {}
    offsets = {}
    for tp in tps:
        start = first[tp].offset if first.get(tp) is not None else end[tp]
        stop = last[tp].offset if last.get(tp) is not None else end[tp]
        offsets[tp.partition] = (start, min(stop, end[tp]))
    return RangePlan(topic, since_ms, until_ms, offsets)


def read_range(config: dict, topic: str, *, since_ms: int, until_ms: int | None = None,
               max_messages: int | None = None, progress: Callable[[int, int], None] | None = None,
               idle_timeout_s: float = 30.0, connect_timeout_s: float = 30.0,
               client_id: str = "flowbreaker-history") -> Iterator[bytes]:
    """Values of ``topic``'s messages with timestamps in ``[since_ms, until_ms)``.

    ``config`` is kafka-python client configuration (``Settings.kafka_python_config()``).
    Raises :class:`TopicMissing`, :class:`RangeTooLarge` (before reading anything, when
    the range's upper bound exceeds ``max_messages``) or ``TimeoutError`` when a partition
    stops delivering for ``idle_timeout_s`` before its range is read.
    ``progress(done, total)`` is called now and then with messages read so far.
    """
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(client_id=client_id, group_id=None, enable_auto_commit=False,
                             auto_offset_reset="earliest", bootstrap_timeout_ms=int(connect_timeout_s * 1000), **config)
    try:
        plan = plan_range(consumer, topic, since_ms, until_ms)
        total = plan.total
        if max_messages is not None and total > max_messages:
            raise RangeTooLarge(f"{topic} holds up to {total} messages in that range, more than {max_messages}")
        todo = {TopicPartition(topic, p): ab for p, ab in plan.offsets.items() if ab[1] > ab[0]}
        if progress is not None:
            progress(0, total)
        if not todo:
            return
        consumer.assign(list(todo))
        for tp, (start, _) in todo.items():
            consumer.seek(tp, start)
        done = 0
        last_report = time.monotonic()
        last_data = time.monotonic()
        while todo:
            batch = consumer.poll(timeout_ms=500, max_records=2000)
            if batch:
                last_data = time.monotonic()
            for tp, recs in batch.items():
                rng = todo.get(tp)
                if rng is None:
                    continue
                for rec in recs:
                    if rec.offset >= rng[1]:
                        break
                    done += 1
                    if since_ms <= rec.timestamp and (until_ms is None or rec.timestamp < until_ms):
                        yield rec.value
            for tp in list(todo):
                if consumer.position(tp) >= todo[tp][1]:
                    del todo[tp]
                    consumer.pause(tp)
            if progress is not None and (not todo or time.monotonic() - last_report >= 1.0):
                last_report = time.monotonic()
                progress(done, total)
            if todo and time.monotonic() - last_data > idle_timeout_s:
                raise TimeoutError(f"{topic}: no messages for {idle_timeout_s:.0f}s with "
                                   f"{sum(b - consumer.position(tp) for tp, (_, b) in todo.items())} still to read")
    finally:
        consumer.close()
