"""Idle agents leave memory and rest in the table; they wake with the state they had (issue 10, item 13).

A worker with ``--rest-after 1`` decides a first wave of events, lets every
agent rest, decides a second wave (each agent woken from its resting value),
is killed with ``kill -9``, and a new worker (changelog recovery, compaction of
the recovered values) decides a third wave. Every decision must be the one
``flowbreaker replay`` gives for the whole stream.
"""
from __future__ import annotations

import json

import pytest

from worker_harness import TopicReader, WorkerProc, decisions_by_event, event_messages, fleet, produce, replay, wait_for

pytestmark = pytest.mark.timeout(300)


def test_agents_rest_when_idle_and_wake_with_their_state_also_after_a_crash(kafka_bootstrap, unique_topic_prefix,
                                                                            tmp_path):
    events = fleet()
    expected = replay(events, tmp_path / "replay")
    n = len(events)
    waves = [events[: n // 3], events[n // 3: 2 * n // 3], events[2 * n // 3:]]
    agents = {e["agent_id"] for e in events}
    p = unique_topic_prefix
    extra = ["--rest-after", "1"]
    first = WorkerProc(kafka_bootstrap, p, f"{p}app", tmp_path / "w1", flush_interval=0.5, extra=extra)
    second = WorkerProc(kafka_bootstrap, p, f"{p}app", tmp_path / "w2", flush_interval=0.5, extra=extra)
    decisions = None
    try:
        first.start().wait_ready(timeout=90)  # it creates the topics
        decisions = TopicReader(kafka_bootstrap, f"{p}agent-decisions")
        for i, wave in enumerate(waves[:2]):
            produce(kafka_bootstrap, f"{p}agent-actions", event_messages(wave))
            want = {e["event_id"] for w in waves[: i + 1] for e in w}
            decisions.read_until(lambda ms: want <= set(decisions_by_event(ms)), timeout=90)
            wait_for(lambda: first.status()["agents_loaded"] == 0, 30, "idle agents did not rest")
            st = first.status()
            assert st["agents_resting"] >= len({e["agent_id"] for w in waves[: i + 1] for e in w}), st
        first.kill()  # kill -9 while every agent rests
        second.start().wait_ready(timeout=90)
        produce(kafka_bootstrap, f"{p}agent-actions", event_messages(waves[2]))
        got = decisions_by_event(decisions.read_until(lambda ms: len(decisions_by_event(ms)) >= n, timeout=120))
        missing = set(expected) - set(got)
        assert not missing, f"{len(missing)} events never decided, e.g. {sorted(missing)[:5]}"
        for eid, copies in got.items():
            for raw in copies:  # woken agents decide exactly as if they had never left memory
                assert json.loads(raw) == expected[eid], eid
        wait_for(lambda: second.status()["agents_loaded"] == 0, 30, "idle agents did not rest after the restart")
        st = second.status()
        assert st["agents_resting"] >= len(agents) and st["rested"] >= 1, st
        assert second.stop(timeout=30) == 0, second.stderr_tail()
    finally:
        first.kill()
        second.stop(timeout=30)
        if decisions is not None:
            decisions.close()
