"""What every worker folds from the control topics (streams/index.py), without Kafka."""
from __future__ import annotations

import json

from streams.index import ControlFeed


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
    for bad in (None, [], {"command": "pause", "agent_id": "a"}, {"command": "freeze"}, {"command": "freeze",
                                                                                          "agent_id": 3}):
        feed.apply_control(0, 0, bad)
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
