"""Intake: what one record of ``agent-actions`` becomes before the engine sees it.

Every record is exactly one of:

1. **a dead letter**: it does not decode (:func:`detector.events.decode_event`),
   it is dated further ahead of the broker's time for the record than the
   allowed clock skew (:func:`detector.events.check_event_time`), or decoding
   failed in a way nobody foresaw (code ``internal``: a bug, but the record is
   still dead-lettered with its reason, never allowed to stop the stream);
2. **a re-route**: a valid event that sits on a partition other than its
   agent's *home partition* (the partition Kafka's default murmur2 partitioner
   gives the key ``agent_id``), because it was produced without a key, with
   another key, or with another partitioner. It is copied, byte for byte, to
   its home partition (key ``agent_id``, a header naming where it came from),
   and decided there;
3. **an event to decide**, on its home partition (a wrong or missing key that
   happened to land on the right partition is decided in place, and counted).

Why re-route rather than decide where it landed
-----------------------------------------------
An agent's state (baselines, breaker, dedupe ring) lives with exactly one
worker: the owner of its home partition, whose changelog partition holds it
and whose control partition carries its freezes and releases. An event decided
on another partition would be scored by a second worker against a second,
diverging copy of that state (two breakers, two incident ids, a changelog key
written from two partitions), or by no state at all. Re-routing keeps one
writer per agent; the price is one extra produce for a mis-keyed event and
that its position among the agent's events is where the copy lands. A crash
between the copy and the commit of the original sends a second, identical
copy: a true duplicate, which the agent's dedupe ring skips.

Producers must therefore partition with murmur2 (Java, kafka-python, aiokafka
do by default; librdkafka-based clients need ``partitioner=murmur2_random``);
anything else still works, at the cost of a re-route per event, and shows in
``flowbreaker_miskeyed_events_total{reason="wrong_partition"}``.

>>> home_partition("hr-agent-1", 8), key_problem(None, "a"), key_problem(b"b", "a"), key_problem(b"a", "a")
(5, 'no_key', 'wrong_key', None)
"""

from __future__ import annotations

import logging
import time

from aiokafka.partitioner import murmur2

from detector.events import ActionEvent, EventError, check_event_time, decode_event

__all__ = ["home_partition", "key_problem", "reference_time", "admit", "MiskeyLog", "REROUTED_HEADER",
           "LOG_APPEND_TIME"]

log = logging.getLogger("flowbreaker.worker")

#: header on a re-routed copy: ``topic/partition/offset`` of the original record
REROUTED_HEADER = "flowbreaker-rerouted-from"
#: Kafka's ``timestamp_type`` of a record stamped by the broker (``message.timestamp.type=LogAppendTime``)
LOG_APPEND_TIME = 1


def home_partition(agent_id: str, partitions: int) -> int:
    """The partition Kafka's default partitioner gives the key ``agent_id`` (UTF-8) among ``partitions``."""
    return (murmur2(agent_id.encode("utf-8")) & 0x7FFFFFFF) % partitions


def key_problem(key: bytes | None, agent_id: str | bytes) -> str | None:
    """``None`` when the record's key is the event's ``agent_id`` (or its UTF-8 bytes, when the caller has them
    already), else ``'no_key'`` or ``'wrong_key'``."""
    if not key:
        return "no_key"
    return None if key == (agent_id if type(agent_id) is bytes else agent_id.encode("utf-8")) else "wrong_key"


def reference_time(timestamp: float | None, timestamp_type: int | None, now: float) -> float:
    """The time an event's ``ts`` is bounded against: the broker's append time of its record.

    With ``message.timestamp.type=LogAppendTime`` (what ``flowbreaker topics``
    sets on ``agent-actions``) the broker stamps each record and producers
    cannot choose it; the same record always gets the same verdict, also when
    it is redelivered. On a topic left at ``CreateTime`` the producer sets the
    timestamp, so the worker's clock caps it: a forged far-future timestamp
    cannot widen the bound.
    """
    if timestamp is None:
        return now
    if timestamp_type == LOG_APPEND_TIME:
        return timestamp
    return min(timestamp, now)


def admit(value: bytes | None, *, reference: float, max_skew: float) -> ActionEvent:
    """The valid event in a record's value, or :class:`EventError` with the reason; never anything else."""
    try:
        if not value:
            raise EventError("not_json", "", "message has no value")
        ev = decode_event(value)
        check_event_time(ev, reference, max_skew)
        return ev
    except EventError:
        raise
    except Exception as exc:  # a decoder bug must cost one dead letter, not the stream
        raise EventError("internal", "", f"decoding failed unexpectedly: {type(exc).__name__}: {exc}"[:500]) \
            from exc


class MiskeyLog:
    """Names mis-keyed events in the worker's log: the first at once, then at most one line per
    ``every`` seconds with the count of those not named (a bad producer can send millions)."""

    def __init__(self, every: float = 10.0, clock=time.monotonic) -> None:
        self.every = every
        self._clock = clock
        self._last = -float("inf")
        self.unnamed = 0

    def note(self, reason: str, agent_id: str, topic: str, partition: int, offset: int, home: int,
             rerouted: bool) -> bool:
        """Log this event if the rate allows; True if it was logged."""
        now = self._clock()
        if now - self._last < self.every:
            self.unnamed += 1
            return False
        self._last = now
        more = f" ({self.unnamed} more mis-keyed events since the last report)" if self.unnamed else ""
        self.unnamed = 0
        what = {"no_key": "has no key", "wrong_key": "is not keyed by its agent_id",
                "wrong_partition": "is keyed right but not on its agent's partition"}.get(reason, reason)
        then = f"re-routed to partition {home}" if rerouted else "decided in place (it is on the agent's partition)"
        log.warning("mis-keyed event: %s[%d]@%d of agent %r %s; %s%s", topic, partition, offset, agent_id, what,
                    then, more)
        return True
