"""What every worker folds from the control topics (streams/api/control_feed.py), without Kafka."""
from __future__ import annotations

import itertools

import json

from streams.clients.commands import ControlMetrics
from streams.api.control_feed import ControlFeed
from streams.clients.signing import KeyRing

KEYS = KeyRing({"k1": b"w" * 32}, active="k1")
_SEQ = itertools.count(1)


def signed(cmd: dict) -> dict:
    """Signed as its issuer would: with the next sequence number (contract section 4)."""
    return KEYS.sign(dict(cmd, seq=next(_SEQ)))


def freeze(agent, iid, at="2026-03-02T09:00:00Z", by="flowbreaker"):
    return {"command": "freeze", "agent_id": agent, "incident_id": iid, "issued_at": at, "reason": "r",
            "issued_by": by}


def release(agent, iid, at="2026-03-02T10:00:00Z", by="lee"):
    return {"command": "release", "agent_id": agent, "incident_id": iid, "issued_at": at, "reason": "ok",
            "issued_by": by}


T_RELEASE = 1772445600.0  # 2026-03-02T10:00:00Z


def test_the_latest_command_of_each_agent_wins_and_redeliveries_change_nothing():
    feed = ControlFeed.offline(probation_s=3600)
    feed.apply_control(0, 1, freeze("a", "inc-1"))
    feed.apply_control(0, 2, release("a", "inc-1"))
    feed.apply_control(0, 1, freeze("a", "inc-1"))          # redelivered: older offset
    feed.apply_control(1, 7, freeze("b", "inc-2", by="ann"))
    assert [b["agent_id"] for b in feed.breakers_in("open", now=T_RELEASE)] == ["b"]
    assert feed.breakers_in("open", now=T_RELEASE)[0]["by"] == "ann"
    half = feed.breakers_in("half_open", now=T_RELEASE + 10)
    assert [(b["agent_id"], b["by"], b["probation_until_t"]) for b in half] == [("a", "lee", T_RELEASE + 3600)]
    assert feed.breakers_in("half_open", now=T_RELEASE + 3601) == []  # probation over


def test_malformed_commands_are_counted_and_skipped():
    feed = ControlFeed.offline()
    for i, bad in enumerate((None, [], {"command": "pause", "agent_id": "a"}, {"command": "freeze"},
                             {"command": "freeze", "agent_id": 3})):
        feed.apply_control(0, i, bad)
    feed.apply_incident(b"not json")
    feed.apply_incident(b'{"no": "id"}')
    assert feed.invalid == 7 and feed.breakers == {}


def test_incidents_are_indexed_with_who_froze_them_and_the_records_are_bounded():
    feed = ControlFeed.offline()
    feed.max_incident_bytes = 1000
    manual = {"incident_id": "man-1", "agent_id": "a", "severity": "critical", "frozen_by": "lee", "manual": True,
              "trace": ["x" * 400]}
    feed.apply_incident(json.dumps(manual).encode())
    feed.apply_incident(None, {"incident_id": "inc-2", "agent_id": "b", "severity": "high", "trace": ["y" * 400]})
    assert feed.incident_meta("man-1")["frozen_by"] == "lee"
    assert feed.incident_meta("inc-2")["frozen_by"] == "flowbreaker"
    assert json.loads(feed.incident("inc-2"))["agent_id"] == "b"
    feed.apply_incident(None, {"incident_id": "inc-3", "agent_id": "c", "trace": ["z" * 400]})
    assert feed.incident("man-1") is None            # the oldest record went first ...
    assert feed.incident_meta("man-1")["severity"] == "critical"  # ... its summary stays (two-person rule)
    feed.apply_control(0, 0, freeze("a", "man-1", by="lee"))
    assert feed.breakers_in("open", now=0)[0]["severity"] == "critical"


# ---------------------------------------------------------------------- hostile records and forged commands

POISON = [b"not json", b'{"a":' * 1000, b"[" * 5000 + b"]" * 5000, b"\xff\xfe", b'{"incident_id": "\xff"}',
          b'{"incident_id": 7}', b'{"incident_id": "' + b"i" * 5_000_000 + b'"}', None, b"", b"null", b"[1]"]


def test_no_record_of_any_kind_stops_the_index_and_each_is_counted_with_its_topic_and_reason():
    from prometheus_client import CollectorRegistry, generate_latest

    reg = CollectorRegistry()
    feed = ControlFeed.offline(keys=KEYS)
    feed.metrics = ControlMetrics(reg)
    seen = []
    feed.on_approval = seen.append
    for i, bad in enumerate(POISON):
        feed._apply("control", 0, i, bad)
        feed._apply("incidents", 0, i, bad)
        feed._apply("approvals", 0, i, bad)
    feed._apply("approvals", 0, 99, b'{"approval_id": "apr-1", "state": "approved", "rev": "x", "agent_id": "a"}')
    assert feed.invalid == 3 * len(POISON) + 1 and seen == []
    feed._apply("control", 0, 100, signed(freeze("a", "inc-1")))
    assert [b["agent_id"] for b in feed.breakers_in("open", now=0)] == ["a"]
    text = generate_latest(reg).decode()
    assert 'flowbreaker_control_records_rejected_total{reason="too_deep",topic="control"} 1.0' in text
    assert 'flowbreaker_control_records_rejected_total{reason="too_large",topic="incidents"} 1.0' in text
    assert {t for t, _ in feed.rejected} == {"control", "incidents", "approvals"}


def test_only_signed_commands_change_the_index_and_a_release_must_name_the_open_incident():
    feed = ControlFeed.offline(probation_s=3600, keys=KEYS)
    feed.apply_control(0, 0, signed(freeze("a", "inc-1")))
    feed.apply_control(0, 1, release("a", "inc-made-up", by="flowbreaker"))    # forged: unsigned, made-up incident
    feed.apply_control(0, 2, release("a", "inc-1"))                             # unsigned
    feed.apply_control(0, 3, signed(release("a", "inc-0")))                  # signed, but a stale incident
    feed.apply_control(0, 4, freeze("b", "inc-2"))                              # an unsigned freeze: not a breaker
    assert [(b["agent_id"], b["state"]) for b in feed.breakers.values()] == [("a", "open")]
    assert feed.fold.outcomes["release_unverified"] == 2 and feed.fold.outcomes["release_stale"] == 1
    feed.apply_control(0, 5, signed(release("a", "inc-1")))
    assert feed.breaker("a")["state"] == "half_open"


def test_the_first_record_of_an_incident_says_who_froze_it():
    feed = ControlFeed.offline()
    feed.apply_incident(None, {"incident_id": "man-1", "agent_id": "a", "severity": "critical", "frozen_by": "lee"})
    feed.apply_incident(None, {"incident_id": "man-1", "agent_id": "a", "severity": "low", "frozen_by": "mallory"})
    assert feed.incident_meta("man-1")["frozen_by"] == "lee" and feed.incident_meta("man-1")["severity"] == "critical"


def test_a_kafka_feed_needs_the_keys():
    import pytest

    with pytest.raises(ValueError, match="signing keys"):
        ControlFeed(object(), {}, {}, probation_s=1.0)
