"""A worker on the real broker: the live decisions are replay's decisions; bad events go to the DLQ.

One engine, two shells: events produced to ``agent-actions`` come out of
``agent-decisions`` as exactly the records ``flowbreaker replay`` writes for the
same events (same bytes), freezes come out once per incident on ``agent-control``
with their incident records on ``agent-incidents``, and a human release on
``agent-control`` puts the breaker on probation for the agent's next event.
"""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest

from worker_harness import (TopicReader, WorkerProc, decisions_by_event, event_messages, fleet, fleet_model,
                            produce, replay, wait_for)

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def worker_factory(kafka_bootstrap, unique_topic_prefix, tmp_path):
    started: list[WorkerProc] = []

    def make(**kw) -> WorkerProc:
        w = WorkerProc(kafka_bootstrap, unique_topic_prefix, f"{unique_topic_prefix}app",
                       tmp_path / f"w{len(started)}", **kw)
        started.append(w)
        return w.start()

    yield make
    for w in started:
        w.stop(timeout=30)


def test_live_decisions_are_the_replay_decisions_and_freezes_are_published_once(
        kafka_bootstrap, unique_topic_prefix, worker_factory, tmp_path, signing_keys):
    events = fleet()
    model = fleet_model(events, tmp_path / "train")
    expected = replay(events, tmp_path / "replay", extra=["--model", str(model)])
    assert 2000 <= len(events) <= 5000 and len(expected) == len(events)
    freezes_expected = {eid for eid, r in expected.items() if r["action_taken"] == "freeze"}
    assert len(freezes_expected) >= 3

    worker = worker_factory(extra=["--model", str(model)])
    worker.wait_ready(timeout=60)
    p = unique_topic_prefix
    produce(kafka_bootstrap, f"{p}agent-actions", event_messages(events))

    decisions = TopicReader(kafka_bootstrap, f"{p}agent-decisions")
    got = decisions_by_event(decisions.read_until(lambda ms: len(decisions_by_event(ms)) >= len(events),
                                                  timeout=90))
    missing = set(expected) - set(got)
    assert not missing, f"{len(missing)} events without a decision, e.g. {sorted(missing)[:5]}"
    assert set(got) == set(expected)
    for eid, copies in got.items():
        for raw in copies:  # byte-identical to the replay record
            assert json.loads(raw) == expected[eid], eid

    control = TopicReader(kafka_bootstrap, f"{p}agent-control")
    commands = [json.loads(m.value) for m in control.read_until(
        lambda ms: len(ms) >= len(freezes_expected), timeout=30)]
    freezes = [c for c in commands if c["command"] == "freeze"]
    by_incident = {c["incident_id"]: c for c in freezes}
    assert len(freezes) == len(by_incident) == len(freezes_expected)
    assert all(c["issued_by"] == "flowbreaker" for c in freezes)
    frozen_agents = {expected[e]["agent_id"] for e in freezes_expected}
    assert {c["agent_id"] for c in freezes} == frozen_agents

    incidents = TopicReader(kafka_bootstrap, f"{p}agent-incidents")
    records = [json.loads(m.value) for m in incidents.read_until(lambda ms: len(ms) >= len(by_incident), timeout=30)]
    assert {r["incident_id"] for r in records} == set(by_incident)
    for r in records:
        assert r["trigger_event_id"] in freezes_expected and r["trace"]

    # a human release puts the agent on probation; its next event is scored from there
    inc = freezes[0]
    agent = inc["agent_id"]
    last = max((e for e in events if e["agent_id"] == agent), key=lambda e: e["ts"])
    t_last = datetime.fromisoformat(last["ts"].replace("Z", "+00:00"))
    release = {"command": "release", "agent_id": agent, "incident_id": inc["incident_id"],
               "issued_at": (t_last + timedelta(minutes=5)).astimezone(timezone.utc).isoformat(),
               "reason": "checked with the operator", "issued_by": "alice@corp.example"}
    # a key holder's release (streams/clients/signing.py): unsigned ones are ignored; it comes after the freeze
    release = signing_keys.sign(dict(release, seq=inc["seq"] + 1))
    produce(kafka_bootstrap, f"{p}agent-control", [(agent.encode(), json.dumps(release).encode())])
    wait_for(lambda: worker.status()["releases"] >= 1, 30, "the release was not applied")
    follow = dict(last, event_id="after-release-1", ts=(t_last + timedelta(minutes=10)).isoformat(),
                  action="read", records=1, bytes=10, destinations=[], sensitivity="internal")
    for k in ("approval_id", "parent_event_id"):
        follow.pop(k, None)
    produce(kafka_bootstrap, f"{p}agent-actions", event_messages([follow]))
    got2 = decisions_by_event(decisions.read_until(lambda ms: "after-release-1" in decisions_by_event(ms), 30))
    rec = json.loads(got2["after-release-1"][0])
    assert rec["breaker_state"] in ("half_open", "closed"), rec

    metrics = worker.metrics()
    assert "flowbreaker_freezes_total" in metrics and "flowbreaker_releases_total 1.0" in metrics
    assert worker.stop(timeout=30) == 0, worker.stderr_tail()
    for r in (decisions, control, incidents):
        r.close()


BASE = {"event_id": "x", "ts": "2026-03-02T09:00:00Z", "agent_id": "dlq-agent", "operator_id": "o",
        "tool": "hr_db.query", "action": "read", "resource": "hr://personnel/records", "sensitivity": "internal"}


def _event(**changes) -> bytes:
    ev = dict(BASE)
    for k, v in changes.items():
        if v is ...:
            ev.pop(k)
        else:
            ev[k] = v
    return json.dumps(ev).encode()


MALFORMED = {  # expected code -> (raw message, expected field)
    "not_json": (b'{"event_id": "m1", ts: oops', ""),
    "not_object": (b'["m2", "2026-03-02T09:00:00Z"]', ""),
    "encoding": (b'{"event_id": "m3", "agent_id": "\xff\xfe"}', ""),
    "missing": (_event(event_id="m4", tool=...), "tool"),
    "type": (_event(event_id="m5", records="ten"), "records"),
    "enum": (_event(event_id="m6", action="exfiltrate"), "action"),
    "range": (_event(event_id="m7", bytes=-3), "bytes"),
    "timestamp": (_event(event_id="m8", ts="2026-03-02T09:00:00"), "ts"),
    "length": (_event(event_id="m9", resource="r" * 2000), "resource"),
}


def test_malformed_events_land_in_the_dlq_with_their_reason_and_the_worker_keeps_going(
        kafka_bootstrap, unique_topic_prefix, worker_factory, tmp_path):
    good = fleet(n_agents=4, days=1, incidents=[], incident_days_from=0)[:120]
    messages = []
    bad = list(MALFORMED.items())
    for i, (key, value) in enumerate(event_messages(good)):
        messages.append((key, value))
        if i % 10 == 5 and bad:
            code, (raw, _) = bad.pop(0)
            messages.append((b"dlq-agent", raw))
    messages.append((b"dlq-agent", b""))  # no value at all
    messages.extend(event_messages(good[-5:]))  # repeated event ids: scored once, no new decision
    assert not bad

    worker = worker_factory()
    worker.wait_ready(timeout=60)
    p = unique_topic_prefix
    produce(kafka_bootstrap, f"{p}agent-actions", messages)

    dlq = TopicReader(kafka_bootstrap, f"{p}agent-actions-dlq")
    dead = [(m.key, m.partition, json.loads(m.value)) for m in dlq.read_until(
        lambda ms: len(ms) >= len(MALFORMED) + 1, timeout=60)]
    assert len(dead) == len(MALFORMED) + 1
    by_code: dict[str, dict] = {}
    for key, _, rec in dead:
        assert set(rec) >= {"reason", "code", "field", "raw", "raw_encoding", "source"}
        assert rec["source"]["topic"] == f"{p}agent-actions" and key == b"dlq-agent"
        by_code.setdefault(rec["code"], rec)
    assert set(by_code) == set(MALFORMED) | {"not_json"}
    for code, (raw, field) in MALFORMED.items():
        rec = by_code[code]
        assert rec["field"] == field, rec
        assert rec["reason"], rec
        if code == "encoding":
            import base64

            assert rec["raw_encoding"] == "base64" and base64.b64decode(rec["raw"]) == raw
        else:
            assert rec["raw_encoding"] == "utf-8" and rec["raw"] == raw.decode()
    assert "records" not in by_code["range"]["reason"] and "bytes" in by_code["range"]["reason"]
    assert "no UTC offset" in by_code["timestamp"]["reason"]
    empty = [r for _, _, r in dead if r["raw"] == ""]
    assert len(empty) == 1 and empty[0]["code"] == "not_json"

    decisions = TopicReader(kafka_bootstrap, f"{p}agent-decisions")
    got = decisions_by_event(decisions.read_until(lambda ms: len(decisions_by_event(ms)) >= len(good), 60))
    assert set(got) == {e["event_id"] for e in good}
    decisions.drain(quiet=1.0, timeout=10)
    assert all(len(v) == 1 for v in decisions_by_event(decisions.messages).values())  # duplicates not re-decided

    wait_for(lambda: worker.status()["duplicates"] >= 5, 20, "duplicates not counted")
    metrics = worker.metrics()
    for code in MALFORMED:
        assert f'flowbreaker_dlq_events_total{{code="{code}"}}' in metrics
    assert 'flowbreaker_dlq_events_total{code="not_json"} 2.0' in metrics
    assert "flowbreaker_duplicates_total 5.0" in metrics
    assert worker.alive()
    assert worker.stop(timeout=30) == 0, worker.stderr_tail()
    dlq.close()
    decisions.close()
