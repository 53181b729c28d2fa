"""A restarted worker knows every frozen agent it owns before any of them acts (issue 21, item 7).

One worker decides a simulated fleet whose incidents freeze agents (with a model, as in
test_recovery), is stopped, and a second worker of the same app takes its partitions:
it rebuilds its agents from the changelog and, since a frozen agent does not act, wakes
none of them. Its ``flowbreaker_agents_frozen`` gauge, the per-agent series
``flowbreaker_agent_frozen{agent_id, incident_id}`` and ``flowbreaker_agent_breaker_state``
and ``/status``'s ``agents_frozen`` must name the agents whose last decision left them open,
with the incidents of their freezes on ``agent-control``, as the first worker did and as ``/v1/breakers``
lists them. Before the fix they read 0 until each frozen agent acted or was released.
"""
from __future__ import annotations

import json

import pytest
from prometheus_client.parser import text_string_to_metric_families

from api_harness import TOKEN, call, write_tokens
from worker_harness import (TopicReader, WorkerProc, decisions_by_event, event_messages, fleet, fleet_model, produce,
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


def test_a_restarted_worker_shows_the_agents_frozen_before_it_started_without_them_acting(
        kafka_bootstrap, unique_topic_prefix, tmp_path):
    events = fleet()
    model = fleet_model(events, tmp_path / "train")
    p = unique_topic_prefix
    extra = ["--model", str(model), "--tokens", str(write_tokens(tmp_path / "tokens.toml"))]
    first = WorkerProc(kafka_bootstrap, p, f"{p}app", tmp_path / "w1", flush_interval=0.5, extra=extra)
    second = WorkerProc(kafka_bootstrap, p, f"{p}app", tmp_path / "w2", flush_interval=0.5, extra=extra)
    decisions = control = None
    try:
        first.start().wait_ready(timeout=90)
        decisions = TopicReader(kafka_bootstrap, f"{p}agent-decisions")
        produce(kafka_bootstrap, f"{p}agent-actions", event_messages(events))
        decisions.read_until(lambda ms: len(decisions_by_event(ms)) >= len(events), timeout=120)
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
