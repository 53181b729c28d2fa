"""Analysts' verdicts on ``agent-verdicts``: signing, checking, publishing and dumping them.

A verdict (:class:`detector.verdicts.Verdict`: ``benign`` or ``confirmed``, on an incident or an alert
episode of one agent) is published as its record (:func:`detector.verdicts.verdict_record`, schema
``flowbreaker-verdict/1``) with a ``signature`` made with the command signing keys
(:mod:`streams.clients.signing`), keyed by ``agent_id``. Every worker follows the topic and applies the
verdicts of the agents it holds (:mod:`streams.worker.verdict_follow`); ``flowbreaker verdicts dump``
writes them to a file for ``flowbreaker replay --verdicts``, so the stream and a replay apply the same ones.

What the signature covers: every field of the record (``KeyRing.sign`` signs a record's canonical
encoding, every field but ``signature``), so changing any field of a signed verdict (its kind, its
target, its time, who gave it) breaks the signature. A verdict has no ``command`` field: no guard or
actuator can take it for a freeze or a release. Only :meth:`KeyRing.sign` and :meth:`KeyRing.verify`
are used, so verdicts follow the key ring's algorithm and rotation.

When it works, when it fails:

- :func:`check` never raises: it answers ``None`` for a record whose signature verifies, else a reason
  from :data:`REJECTIONS` (a bounded set: a metric label).
- :func:`decode` raises :class:`VerdictRejected` (with ``reason``) for bytes that are not a signed,
  valid verdict record.

>>> from streams.clients.signing import KeyRing
>>> from detector.verdicts import Verdict
>>> ring = KeyRing({"k1": bytes(32)}, active="k1")
>>> rec = sign(ring, Verdict(verdict_id="vrd-1", agent_id="a", target="inc-1", verdict="benign", at=1e9,
...                          by="alice", reason="routine"))
>>> check(ring, rec) is None, check(ring, dict(rec, verdict="confirmed")), check(ring, dict(rec, signature=None))
(True, 'bad_signature', 'unsigned')
>>> decode(json.dumps(rec).encode(), ring).target
'inc-1'
"""

from __future__ import annotations

import json
import time
from typing import Any, Iterable, Mapping

from detector.verdicts import Verdict, parse_verdict, verdict_id_for, verdict_record

__all__ = ["new_verdict", "sign", "check", "decode", "publish", "read_topic", "VerdictRejected",
           "REJECTIONS", "KINDS", "MAX_RECORD_BYTES"]

KINDS = ("benign", "confirmed")
#: why a record on agent-verdicts was not applied (bounded: a metric label)
REJECTIONS = ("not_json", "invalid", "unsigned", "malformed_signature", "unknown_key", "bad_signature")
#: a verdict record is well under 4 KB (reason at most 1,000 characters); anything larger is not one
MAX_RECORD_BYTES = 64 * 1024


class VerdictRejected(ValueError):
    """A record on ``agent-verdicts`` that is not applied; ``reason`` is one of :data:`REJECTIONS`."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def new_verdict(*, agent_id: str, target: str, verdict: str, by: str, reason: str,
                at: float | None = None) -> Verdict:
    """A new verdict given now (or ``at``), with the stable id :func:`detector.verdicts.verdict_id_for`."""
    at = time.time() if at is None else at
    return parse_verdict({"verdict_id": verdict_id_for(agent_id, target, verdict, at, by), "agent_id": agent_id,
                          "target": target, "verdict": verdict, "at": at, "by": by, "reason": reason})


def sign(keys: Any, verdict: Verdict) -> dict:
    """The verdict's record with its ``signature`` (raises the key ring's error without an active key)."""
    return keys.sign(verdict_record(verdict))


def check(keys: Any, rec: Mapping[str, Any]) -> str | None:
    """None when the record's signature verifies with ``keys``, else why not (one of :data:`REJECTIONS`)."""
    try:
        answer = keys.verify(rec)
    except (TypeError, ValueError):  # a value the canonical encoding cannot carry
        return "invalid"
    if answer == "ok":
        return None
    return answer if answer in REJECTIONS else "bad_signature"


def decode(raw: bytes | None, keys: Any) -> Verdict:
    """The verdict in one ``agent-verdicts`` record, if signed and valid; else :class:`VerdictRejected`."""
    if raw is None or len(raw) > MAX_RECORD_BYTES:
        raise VerdictRejected("invalid", "no value" if raw is None else f"larger than {MAX_RECORD_BYTES} bytes")
    try:
        rec = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise VerdictRejected("not_json", "not JSON") from None
    if not isinstance(rec, dict):
        raise VerdictRejected("invalid", "not an object")
    why = check(keys, rec)
    if why is not None:
        raise VerdictRejected(why, f"signature {why}")
    try:
        return parse_verdict({k: v for k, v in rec.items() if k != "signature"})
    except ValueError as err:
        raise VerdictRejected("invalid", str(err)) from None


def publish(settings: Any, records: Iterable[Mapping[str, Any]], *, timeout: float = 30.0) -> list:
    """Publish signed verdict records on ``agent-verdicts`` (key ``agent_id``) with kafka-python; returns
    their record metadata once the broker acknowledged every one (raises kafka's errors otherwise)."""
    from kafka import KafkaProducer

    producer = KafkaProducer(client_id="flowbreaker-verdicts", acks="all", max_block_ms=int(timeout * 1000),
                             request_timeout_ms=int(timeout * 1000), **settings.kafka_python_config())
    try:
        futures = [producer.send(settings.topic("verdicts"), key=str(r["agent_id"]).encode(),
                                 value=json.dumps(r, separators=(",", ":")).encode()) for r in records]
        producer.flush(timeout)
        return [f.get(timeout=timeout) for f in futures]
    finally:
        producer.close(timeout=timeout)


def read_topic(settings: Any, keys: Any, *, timeout: float = 30.0) -> tuple[list[Verdict], dict[str, int]]:
    """Every verdict on ``agent-verdicts`` now, signed and valid, in the order of their time (``at``, then
    ``verdict_id``), and the records left out by reason. Reads each partition to the end offset seen at start."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(group_id=None, enable_auto_commit=False, client_id="flowbreaker-verdicts-dump",
                             **settings.kafka_python_config())
    topic = settings.topic("verdicts")
    try:
        deadline = time.monotonic() + timeout
        parts = consumer.partitions_for_topic(topic)
        while not parts:
            if time.monotonic() > deadline:
                raise TimeoutError(f"topic {topic} has no partitions (flowbreaker topics creates it)")
            time.sleep(0.2)
            parts = consumer.partitions_for_topic(topic)
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        ends = consumer.end_offsets(tps)
        out: dict[str, Verdict] = {}
        left_out: dict[str, int] = {}
        while any(consumer.position(tp) < ends[tp] for tp in tps):
            if time.monotonic() > deadline:
                raise TimeoutError(f"reading {topic} took longer than {timeout:.0f}s")
            for _tp, recs in consumer.poll(timeout_ms=500).items():
                for r in recs:
                    try:
                        v = decode(r.value, keys)
                    except VerdictRejected as err:
                        left_out[err.reason] = left_out.get(err.reason, 0) + 1
                        continue
                    out.setdefault(v.verdict_id, v)  # a copy of a verdict is the same verdict
        return sorted(out.values(), key=lambda v: (v.at, v.verdict_id)), left_out
    finally:
        consumer.close(autocommit=False)
