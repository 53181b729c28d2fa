"""Acknowledgements of freeze and release commands, on ``agent-control-acks``: who enacted what, when.

Two parties acknowledge a command once they have enacted it:

- a runtime's FreezeGuard (``kind: guard``), once the command changed what its
  ``may_proceed`` answers: a frozen agent's next task and tool call are held. A
  :class:`GuardAcker` attaches to a :class:`streams.clients.guard.FreezeGuard` as a listener;
  commands the guard folds while it is still catching up on the topic (history)
  are not acknowledged, only those that arrive once it is current;
- the actuator (``kind: actuator``), once every other sink took the command (the
  orchestrator's webhook answered 2xx): :class:`AckSink` is the actuator's last
  sink, so its acknowledgement means the webhook is done.

A record (key ``agent_id``, so it shares the partition of the agent's commands
when the topics have as many partitions)::

    {"format": "flowbreaker-ack/1", "kind": "guard" | "actuator", "command": "freeze" | "release",
     "agent_id": "...", "incident_id": "...", "at": "2026-03-02T09:00:00.123Z", "by": "runtime-host-1"}

``flowbreaker drill`` reads them to time the steps of a rehearsed freeze; anyone
may read them to see that a freeze reached the runtimes. An acknowledgement that
cannot be published is logged and dropped by the guard (the freeze itself is
enforced either way) and retried by the actuator (which commits the command only
after it).

>>> rec = ack_record("guard", {"command": "freeze", "agent_id": "a", "incident_id": "inc-1"}, by="rt-1", at=0.5)
>>> rec["kind"], rec["at"], parse_ack(json.dumps(rec).encode())["incident_id"]
('guard', '1970-01-01T00:00:00.500Z', 'inc-1')
>>> parse_ack(b'{"kind": "nobody"}') is None
True
"""

from __future__ import annotations

import json
import logging
import threading
import time
from datetime import datetime, timezone
from typing import Any, Mapping

from streams.clients.sink import Stopped

__all__ = ["ack_record", "parse_ack", "GuardAcker", "AckSink", "ACK_FORMAT", "KINDS"]

log = logging.getLogger("flowbreaker.acks")

ACK_FORMAT = "flowbreaker-ack/1"
KINDS = ("guard", "actuator")


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def ack_record(kind: str, command: Mapping[str, Any], *, by: str, at: float | None = None) -> dict:
    """The acknowledgement of ``command`` by ``by`` (a guard or actuator name) at ``at`` (epoch s, default now)."""
    return {"format": ACK_FORMAT, "kind": kind, "command": command.get("command"),
            "agent_id": command.get("agent_id"), "incident_id": command.get("incident_id"),
            "at": _iso(time.time() if at is None else at), "by": by}


def parse_ack(value: bytes | None) -> dict | None:
    """An acknowledgement record, or ``None`` for anything else (never raises)."""
    try:
        rec = json.loads(value or b"")
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    if not isinstance(rec, dict) or rec.get("kind") not in KINDS or rec.get("command") not in ("freeze", "release"):
        return None
    if not isinstance(rec.get("agent_id"), str) or not isinstance(rec.get("at"), str):
        return None
    return rec


def _producer(settings, client_id: str):
    from kafka import KafkaProducer

    return KafkaProducer(client_id=client_id, acks="all", linger_ms=0, max_block_ms=5000,
                         **settings.kafka_python_config())


class GuardAcker:
    """Publishes a ``guard`` acknowledgement for each command that changes a FreezeGuard's answer.

    ``GuardAcker(settings, by="runtime-1").attach(guard)``; ``close()`` flushes and stops.
    ``producer``: anything with kafka-python's ``send(topic, key=, value=)`` (tests pass their own).
    """

    def __init__(self, settings, *, by: str, producer: Any = None) -> None:
        self.topic = settings.topic("acks")
        self.by = by
        self._settings = settings
        self._producer = producer
        self._guard: Any = None
        self._lock = threading.Lock()
        self.sent = 0
        self.failed = 0

    def attach(self, guard) -> "GuardAcker":
        self._guard = guard
        if self._producer is None:  # connected now, so the first acknowledgement is not late by a connect
            try:
                self._producer = _producer(self._settings, "flowbreaker-guard-ack")
            except Exception as err:  # the broker is away: try again with the first command
                log.warning("guard acknowledgements: no producer yet (%r)", err)
        guard.add_listener(self._on_change)
        return self

    def _on_change(self, command: dict, frozen: bool) -> None:
        if self._guard is not None and not self._guard.ready:
            return  # still reading history: the command was enacted long ago, or superseded
        rec = ack_record("guard", command, by=self.by)
        try:
            with self._lock:
                if self._producer is None:
                    self._producer = _producer(self._settings, "flowbreaker-guard-ack")
                self._producer.send(self.topic, key=str(command["agent_id"]).encode(),
                                    value=json.dumps(rec).encode())
            self.sent += 1
        except Exception as err:  # the freeze is enforced regardless; only the acknowledgement is lost
            self.failed += 1
            log.warning("cannot publish the guard's acknowledgement of %s %s: %r", command.get("command"),
                        command.get("agent_id"), err)

    def close(self, timeout: float = 5.0) -> None:
        with self._lock:
            if self._producer is not None and hasattr(self._producer, "close"):
                self._producer.flush(timeout)
                self._producer.close(timeout=timeout)
                self._producer = None


class AckSink:
    """The actuator's last sink: an ``actuator`` acknowledgement once every sink before it took the command.

    It waits for the broker to take the record, retrying every ``retry_s`` until the actuator
    stops (then :class:`streams.clients.sink.Stopped`: the command stays uncommitted and is
    enacted again on the next start, as the actuator does for its other sinks).
    """

    name = "ack"

    def __init__(self, settings, *, by: str = "flowbreaker-actuator", producer: Any = None,
                 retry_s: float = 1.0, timeout_s: float = 10.0) -> None:
        self.topic = settings.topic("acks")
        self.by = by
        self._settings = settings
        self._producer = producer
        self.retry_s = retry_s
        self.timeout_s = timeout_s
        self.sent = 0

    def deliver(self, command: dict, raw: bytes, stop: threading.Event, *, verified: bool = True) -> None:
        rec = json.dumps(ack_record("actuator", command, by=self.by)).encode()
        while True:
            if stop.is_set():
                raise Stopped(f"stopped before acknowledging {command.get('incident_id')}:{command['command']}")
            try:
                if self._producer is None:
                    self._producer = _producer(self._settings, "flowbreaker-actuator-ack")
                fut = self._producer.send(self.topic, key=str(command["agent_id"]).encode(), value=rec)
                if hasattr(fut, "get"):
                    fut.get(timeout=self.timeout_s)
                self.sent += 1
                return
            except Exception as err:
                log.warning("cannot publish the actuator's acknowledgement: %r; retrying in %.1f s", err,
                            self.retry_s)
                if stop.wait(self.retry_s):
                    raise Stopped("stopped while acknowledging") from None

    def close(self, timeout: float = 5.0) -> None:
        if self._producer is not None and hasattr(self._producer, "close"):
            self._producer.close(timeout=timeout)
            self._producer = None
