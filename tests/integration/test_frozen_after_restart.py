"""A restarted worker knows every frozen agent it owns before any of them acts (issue 21, item 7).

One worker decides a simulated fleet whose incidents freeze agents (with a model, as in
test_recovery), is stopped, and a second worker of the same app takes its partitions:
it rebuilds its agents from the changelog and, since a frozen agent does not act, wakes
none of them. Its ``flowbreaker_agents_frozen`` gauge, the per-agent series
``flowbreaker_agent_frozen{agent_id, incident_id}`` and ``flowbreaker_agent_breaker_state``
and ``/status``'s ``agents_frozen`` must name the agents whose last decision left them open,
with the incidents of their freezes on ``agent-control``, as the first worker did and as ``/v1/breakers``
lists them. Before the fix they read 0 until each frozen agent acted or was released.

The second test holds the open alert episodes to the same rule (issue 18): the restarted worker carries on
the episodes its agents had open (from the agents' states in the changelog) and, once event time moves
past their quiet time, closes each of them exactly once on agent-alerts. Before, they stayed open in the
SOC's view for ever.
"""
from __future__ import annotations

import json

import pytest
from prometheus_client.parser import text_string_to_metric_families

from datetime import timedelta

from api_harness import TOKEN, call, write_tokens
from worker_harness import (POLICY, TopicReader, WorkerProc, decisions_by_event, event_messages, fleet, fleet_model, produce,
                            wait_for)

pytestmark = pytest.mark.timeout(240)


def frozen_view(metrics_text: str) -> tuple[float, set[tuple[str, str]], dict[str, float]]:
    """(flowbreaker_agents_frozen, {(agent, incident)} of flowbreaker_agent_frozen, agent -> breaker state value)."""
    count, listed, states = None, set(), {}
    for family in text_string_to_metric_families(metrics_text):
        for s in family.samples:
            if s.name == "flowbreaker_agents_frozen":
                count = s.value
            elif s.name == "flowbreaker_agent_frozen" and s.value == 1.0:
                listed.add((s.labels["agent_id"], s.labels["incident_id"]))
            elif s.name == "flowbreaker_agent_breaker_state":
                states[s.labels["agent_id"]] = s.value
    assert count is not None, "no flowbreaker_agents_frozen in /metrics"
    return count, listed, states


def two_workers(bootstrap: str, p: str, tmp_path, model) -> tuple[WorkerProc, WorkerProc]:
    """Two workers of one app (the second started after the first stopped), with the model and API tokens."""
    extra = ["--model", str(model), "--tokens", str(write_tokens(tmp_path / "tokens.toml"))]
    return tuple(WorkerProc(bootstrap, p, f"{p}app", tmp_path / name, flush_interval=0.5, extra=extra)
                 for name in ("w1", "w2"))


def decide(worker: WorkerProc, bootstrap: str, p: str, events: list[dict]) -> TopicReader:
    """Start ``worker``, produce ``events`` and read until each is decided; the decisions' reader."""
    worker.start().wait_ready(timeout=90)
    decisions = TopicReader(bootstrap, f"{p}agent-decisions")
    produce(bootstrap, f"{p}agent-actions", event_messages(events))
    decisions.read_until(lambda ms: len(decisions_by_event(ms)) >= len(events), timeout=120)
    return decisions


def test_a_restarted_worker_shows_the_agents_frozen_before_it_started_without_them_acting(
        kafka_bootstrap, unique_topic_prefix, tmp_path):
    events = fleet()
    p = unique_topic_prefix
    first, second = two_workers(kafka_bootstrap, p, tmp_path, fleet_model(events, tmp_path / "train"))
    decisions = control = None
    try:
        decisions = decide(first, kafka_bootstrap, p, events)
        last_state = {}  # an agent's records are on one partition, in its order
        for m in sorted(decisions.messages, key=lambda m: (m.partition, m.offset)):
            rec = json.loads(m.value)
            last_state[rec["agent_id"]] = rec["breaker_state"]
        open_at_end = {a for a, s in last_state.items() if s == "open"}
        assert len(open_at_end) >= 2, f"the fleet should leave agents frozen: {last_state}"
        wait_for(lambda: first.status()["agents_frozen"] == len(open_at_end), 30,
                 f"the first worker holding {len(open_at_end)} agents frozen", procs=[first])
        control = TopicReader(kafka_bootstrap, f"{p}agent-control")
        control.drain(quiet=2.0, timeout=30)
        incident = {}
        for m in sorted(control.messages, key=lambda m: (m.partition, m.offset)):
            cmd = json.loads(m.value)
            if cmd["command"] == "freeze":
                incident[cmd["agent_id"]] = cmd["incident_id"]
        want = {(a, incident[a]) for a in open_at_end}
        count, listed, _ = frozen_view(first.metrics())
        assert (count, listed) == (len(want), want)
        assert first.stop(timeout=30) == 0, first.stderr_tail()

        second.start().wait_ready(timeout=90)
        status = second.status()
        assert status["agents_loaded"] == 0, f"an agent woke, so this proves nothing: {status}"
        assert status["agents_frozen"] == len(want), status
        count, listed, states = frozen_view(second.metrics())
        assert count == len(want) and listed == want
        assert {a: states.get(a) for a in open_at_end} == {a: 2.0 for a in open_at_end}  # 2 = open
        # and the SOC's two views agree: the API's breakers (from agent-control) are the metrics' frozen agents
        url = f"http://127.0.0.1:{second.web_port}/v1/breakers?state=open"
        answer = wait_for(lambda: (r := call("GET", url, TOKEN["viewer"])).status == 200 and r, 30,
                          "/v1/breakers answering (503 while the worker reads agent-control)", procs=[second])
        assert {(b["agent_id"], b["incident_id"]) for b in answer.json["breakers"]} == want
        assert second.stop(timeout=30) == 0, second.stderr_tail()
    finally:
        first.stop(timeout=30)
        second.stop(timeout=30)
        for r in (decisions, control):
            if r is not None:
                r.close()


def test_a_restarted_worker_carries_on_the_open_alert_episodes_and_closes_each_once(
        kafka_bootstrap, unique_topic_prefix, tmp_path):
    from detector.timestamps import instant, iso_utc

    from detector.events import decode_event
    from models.store import load_engine

    events = fleet()
    model = fleet_model(events, tmp_path / "train")
    # the fleet up to a minute after its last alerted action (as replay decides it): that episode is open
    engine = load_engine(str(model), str(POLICY))
    last = max(e["ts"] for e, d in zip(events, engine.process_batch([decode_event(e) for e in events]))
               if d.record["action_taken"] != "none")
    events = [e for e in events if instant(e["ts"]) <= instant(last) + 60.0]
    p = unique_topic_prefix
    first, second = two_workers(kafka_bootstrap, p, tmp_path, model)
    decisions = alerts = None
    try:
        decisions = decide(first, kafka_bootstrap, p, events)
        alerts = TopicReader(kafka_bootstrap, f"{p}agent-alerts")
        alerts.drain(quiet=2.0, timeout=30)
        state = {}  # the last record of each episode
        for m in sorted(alerts.messages, key=lambda m: (m.partition, m.offset)):
            rec = json.loads(m.value)
            state[rec["episode_id"]] = rec["state"]
        still_open = {e for e, s in state.items() if s == "open"}
        assert still_open, f"the fleet should end with alert episodes open: {state}"
        assert first.status()["episodes_open"] == len(still_open)
        assert first.stop(timeout=30) == 0, first.stderr_tail()

        second.start().wait_ready(timeout=90)
        status = second.status()
        assert status["agents_loaded"] == 0, f"an agent woke, so this proves nothing: {status}"
        assert status["episodes_open"] == len(still_open), status
        # event time moves 2 h past the fleet's end: every episode's quiet time has passed
        late = dict(events[-1], agent_id="late-agent", event_id="late-agent-1", task_id="late-task",
                    ts=iso_utc(instant(events[-1]["ts"]) + timedelta(hours=2).total_seconds()))
        produce(kafka_bootstrap, f"{p}agent-actions", event_messages([late]))
        decisions.read_until(lambda ms: "late-agent-1" in decisions_by_event(ms), timeout=60)

        def closed() -> list[str]:
            alerts.poll()
            return [r["episode_id"] for r in (json.loads(m.value) for m in alerts.messages)
                    if r["state"] == "closed" and r["episode_id"] in still_open]

        wait_for(lambda: set(closed()) == still_open, 60, "the carried episodes closed", procs=[second])
        alerts.drain(quiet=3.0, timeout=30)
        assert sorted(closed()) == sorted(still_open), "each closed exactly once"
        assert second.stop(timeout=30) == 0, second.stderr_tail()
    finally:
        first.stop(timeout=30)
        second.stop(timeout=30)
        for r in (decisions, alerts):
            if r is not None:
                r.close()
