"""Drill results on ``agent-drills``: the record ``flowbreaker drill`` publishes when it ends, and the
follower every worker runs to export the latest one as metrics (``DrillFailed``, ``DrillStale``).

A result is the drill's report (``flowbreaker-drill/1``, see ``streams/cli/drill.py``) keyed by the
drill agent. :func:`parse_result` accepts a record only with the format, a numeric ``finished_t``,
a boolean ``passed`` and a list of ``steps``; anything else is ``None`` (and counted by the
follower), never an exception. Shared by the drill command (writer) and the worker (reader), so
neither imports the other.
"""

from __future__ import annotations

import json
from typing import Callable

from streams.settings import Settings
from streams.topic_follow import Follower

__all__ = ["REPORT_FORMAT", "publish_result", "parse_result", "DrillFollower"]

REPORT_FORMAT = "flowbreaker-drill/1"


def publish_result(settings: Settings, report: dict, timeout: float = 30.0) -> None:
    """The result on ``agent-drills`` (key: the drill agent), for the workers' metrics."""
    from kafka import KafkaProducer

    producer = KafkaProducer(client_id="flowbreaker-drill", acks="all", **settings.kafka_python_config())
    try:
        producer.send(settings.topic("drills"), key=report["agent_id"].encode(),
                      value=json.dumps(report).encode()).get(timeout)
    finally:
        producer.close(timeout=5)


def parse_result(value: bytes | None) -> dict | None:
    """A drill result record, or ``None`` (never raises).

    >>> parse_result(b'{"format": "flowbreaker-drill/1", "finished_t": 5.0, "passed": true, "steps": []}')["passed"]
    True
    >>> parse_result(b"[1]") is None, parse_result(b'{"format": "x"}') is None
    (True, True)
    """
    try:
        rec = json.loads(value or b"")
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    if not isinstance(rec, dict) or rec.get("format") != REPORT_FORMAT:
        return None
    if not isinstance(rec.get("finished_t"), (int, float)) or not isinstance(rec.get("passed"), bool) \
            or not isinstance(rec.get("steps"), list):
        return None
    return rec


class DrillFollower(Follower):
    """Follows ``agent-drills`` (on the worker's :class:`~streams.topic_follow.TopicFollowers` thread) and calls
    ``on_result(record)`` with the latest drill (by ``finished_t``) each time a later one arrives. Bad records
    are skipped and counted."""

    def __init__(self, settings: Settings, *, on_result: Callable[[dict], None]) -> None:
        self.topic = settings.topic("drills")
        self.on_result = on_result
        self.latest_t = float("-inf")
        self.invalid = 0

    def handle(self, value: bytes | None) -> bool:
        rec = parse_result(value)
        if rec is None:
            self.invalid += 1
            return False
        if rec["finished_t"] <= self.latest_t:
            return False
        self.latest_t = rec["finished_t"]
        self.on_result(rec)
        return True

    def on_record(self, record) -> None:
        self.handle(record.value)
