"""kill -9 of a worker mid-stream, then a restart: nothing undecided, nothing decided twice differently,
breakers as they were, no incident frozen twice.

The worker is killed right after its first freeze command reaches ``agent-control``
(so the breaker that opened, and possibly the freeze's not-yet-confirmed outbox,
must survive), while events are still being produced. The restarted worker
(same app id, fresh process and data dir) rebuilds the agents from the
changelog and resumes from the committed offsets.
"""
from __future__ import annotations

import json
import threading
from collections import Counter

import pytest

from worker_harness import (TopicReader, WorkerProc, decisions_by_event, event_messages, fleet, fleet_model, produce,
                            replay)

pytestmark = pytest.mark.timeout(240)

RATE = 1000.0  # events/s: the stream lasts ~3 s; the kill lands after the first freeze, before its end


def test_a_worker_killed_mid_stream_is_replaced_without_losing_or_doubling_anything(
        kafka_bootstrap, unique_topic_prefix, tmp_path):
    events = fleet()
    model = fleet_model(events, tmp_path / "train")
    expected = replay(events, tmp_path / "replay", extra=["--model", str(model)])
    freezes_expected = {eid for eid, r in expected.items() if r["action_taken"] == "freeze"}
    first_freeze = min(i for i, e in enumerate(events) if e["event_id"] in freezes_expected)
    assert first_freeze < len(events) * 0.9 and len(freezes_expected) >= 3

    p = unique_topic_prefix
    app_id = f"{p}app"
    first = WorkerProc(kafka_bootstrap, p, app_id, tmp_path / "w1", flush_interval=2.0, extra=["--model", str(model)])
    second = WorkerProc(kafka_bootstrap, p, app_id, tmp_path / "w2", flush_interval=2.0, extra=["--model", str(model)])
    control = decisions = None
    try:
        first.start().wait_ready(timeout=60)
        sent = [0]
        producer_done = threading.Event()

        def feed():
            try:
                produce(kafka_bootstrap, f"{p}agent-actions", event_messages(events), rate=RATE,
                        on_sent=lambda n: sent.__setitem__(0, n))
            finally:
                producer_done.set()

        feeder = threading.Thread(target=feed, daemon=True)
        feeder.start()

        control = TopicReader(kafka_bootstrap, f"{p}agent-control")
        control.read_until(lambda ms: any(json.loads(m.value)["command"] == "freeze" for m in ms), timeout=60)
        assert control.messages, "no freeze before the kill"
        first.kill()  # kill -9
        seen_before_kill = {json.loads(m.value)["incident_id"] for m in control.messages
                            if json.loads(m.value)["command"] == "freeze"}
        killed_at = sent[0]
        assert killed_at < len(events), "the stream was over before the kill"

        second.start().wait_ready(timeout=90)
        decisions = TopicReader(kafka_bootstrap, f"{p}agent-decisions")
        got = decisions_by_event(decisions.read_until(lambda ms: len(decisions_by_event(ms)) >= len(events),
                                                      timeout=120))
        assert producer_done.wait(30)
        missing = set(expected) - set(got)
        assert not missing, f"{len(missing)} events never decided, e.g. {sorted(missing)[:5]}"

        # at-least-once: duplicates may exist, but every copy is the record replay gives
        for eid, copies in got.items():
            for raw in copies:
                assert json.loads(raw) == expected[eid], eid

        # breaker states intact: each agent's last decision (per-agent order) has replay's breaker state
        last_state = {}
        for m in sorted(decisions.messages, key=lambda m: (m.partition, m.offset)):
            rec = json.loads(m.value)
            last_state[rec["agent_id"]] = rec["breaker_state"]
        replay_last = {}
        for e in events:
            replay_last[e["agent_id"]] = expected[e["event_id"]]["breaker_state"]
        assert last_state == replay_last

        # one freeze command per incident, all of them there
        control.drain(quiet=2.0, timeout=20)
        freezes = [json.loads(m.value) for m in control.messages if json.loads(m.value)["command"] == "freeze"]
        per_incident = Counter(c["incident_id"] for c in freezes)
        assert max(per_incident.values()) == 1, per_incident
        assert len(per_incident) == len(freezes_expected)

        status = second.status()
        print(f"\nkilled after {killed_at} of {len(events)} events produced; restarted worker: "
              f"{json.dumps(status)}; decisions published {len(decisions.messages)} for {len(got)} events")
        # the freezes already published before the kill were found, not sent again; a freeze recorded in the
        # outbox but not yet published when the worker died is published by its successor (rule 3)
        republished = [line for line in second.stderr_tail(400).splitlines() if "republishing the 'freeze'" in line]
        assert len(republished) <= status["republished"]
        assert not [line for line in republished if any(f"incident {iid!r} " in line for iid in seen_before_kill)]
        assert second.stop(timeout=30) == 0, second.stderr_tail()
    finally:
        first.kill()
        second.stop(timeout=30)
        for r in (control, decisions):
            if r is not None:
                r.close()
