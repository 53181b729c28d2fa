"""What a record of agent-actions becomes before the engine sees it (streams/worker/intake.py)."""
from __future__ import annotations

import json
import logging

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kafka.partitioner.default import murmur2 as kafka_python_murmur2
from prometheus_client import CollectorRegistry

from detector.events import ERROR_CODES, EventError
from streams.worker.intake import LOG_APPEND_TIME, MiskeyLog, admit, home_partition, key_problem, reference_time
from streams.worker.metrics import Metrics

EVENT = {"event_id": "e1", "ts": "2026-03-02T09:00:00Z", "agent_id": "hr-agent-1", "operator_id": "o",
         "tool": "hr_db.query", "action": "read", "resource": "hr://x", "sensitivity": "internal"}
T = 1772442000.0  # EVENT's instant


@pytest.mark.parametrize("agent", ["hr-agent-1", "a", "support-bot-0042", "агент-7", "x" * 128])
@pytest.mark.parametrize("n", [1, 3, 8, 24])
def test_the_home_partition_is_the_one_kafkas_default_partitioner_gives_the_key(agent, n):
    key = agent.encode()
    assert home_partition(agent, n) == (kafka_python_murmur2(key) & 0x7FFFFFFF) % n


def test_a_key_is_right_only_when_it_is_the_agent_id_in_utf8():
    assert key_problem("агент".encode(), "агент") is None
    assert key_problem(None, "a") == key_problem(b"", "a") == "no_key"
    assert key_problem(b"b", "a") == key_problem("cafe\u0301".encode(), "caf\u00e9") == "wrong_key"
    assert key_problem("агент".encode(), "агент".encode()) is None and key_problem(b"b", b"a") == "wrong_key"


def test_the_reference_time_is_the_brokers_append_time_when_the_topic_uses_it():
    assert reference_time(T, LOG_APPEND_TIME, now=T + 999) == T
    assert reference_time(T, LOG_APPEND_TIME, now=T - 999) == T  # deterministic, whatever the worker's clock


def test_a_producer_chosen_timestamp_is_capped_by_the_workers_clock():
    assert reference_time(T + 10**9, 0, now=T) == T
    assert reference_time(T - 60, 0, now=T) == T - 60
    assert reference_time(None, None, now=T) == T


def test_admit_gives_the_event_or_the_reason():
    ev = admit(json.dumps(EVENT).encode(), reference=T, max_skew=300)
    assert ev.agent_id == "hr-agent-1"
    with pytest.raises(EventError) as info:
        admit(json.dumps(dict(EVENT, ts="2026-03-02T09:06:00Z")).encode(), reference=T, max_skew=300)
    assert info.value.code == "timestamp"
    with pytest.raises(EventError) as info:
        admit(None, reference=T, max_skew=300)
    assert (info.value.code, str(info.value)) == ("not_json", "message has no value")


def test_an_unforeseen_decoding_failure_is_a_dead_letter_with_code_internal():
    with pytest.raises(EventError) as info:
        admit(12345, reference=T, max_skew=300)  # type: ignore[arg-type]  (not bytes: msgspec's TypeError)
    assert info.value.code == "internal" and "TypeError" in str(info.value)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400) | st.lists(st.sampled_from([b"{", b"[", b'{"a":', b"]", b'"', b"\\"]),
                                          max_size=3000).map(b"".join))
def test_admit_never_raises_anything_but_event_error(raw):
    try:
        admit(raw, reference=T, max_skew=300)
    except EventError as err:
        assert err.code in ERROR_CODES + ("internal",)


def test_mis_keyed_events_are_named_at_once_then_at_most_once_per_period_with_a_count(caplog):
    now = [100.0]
    note = MiskeyLog(every=10.0, clock=lambda: now[0])
    caplog.set_level(logging.WARNING, logger="flowbreaker.worker")
    assert note.note("no_key", "agent-a", "agent-actions", 3, 41, 5, True)
    for i in range(50):
        assert not note.note("wrong_key", "agent-b", "agent-actions", 4, 42 + i, 1, False)
    now[0] += 10.0
    assert note.note("wrong_partition", "agent-c", "agent-actions", 6, 7, 2, True)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2
    assert "agent-actions[3]@41" in lines[0] and "'agent-a' has no key" in lines[0] and "partition 5" in lines[0]
    assert "'agent-c'" in lines[1] and "50 more mis-keyed events" in lines[1]


def test_mis_keyed_events_are_counted_by_reason_and_outcome_with_every_series_present():
    m = Metrics(CollectorRegistry(), process_metrics=False)
    m.miskeyed("no_key", True)
    m.miskeyed("wrong_key", False, n=2)
    m.miskeyed("something else", True)  # not a reason: not a new series
    text = m.render().decode()
    series = [line for line in text.splitlines() if line.startswith("flowbreaker_miskeyed_events_total{")]
    assert len(series) == 6
    assert 'flowbreaker_miskeyed_events_total{outcome="rerouted",reason="no_key"} 1.0' in series
    assert 'flowbreaker_miskeyed_events_total{outcome="decided",reason="wrong_key"} 2.0' in series
