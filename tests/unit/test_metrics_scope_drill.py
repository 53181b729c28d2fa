"""Metrics of intended-use manifests and drills (streams/worker/metrics.py): scope violations with bounded labels;
drill agents counted apart from every SOC count; the last drill's result."""
from __future__ import annotations

import math

import pytest
from prometheus_client import CollectorRegistry

from detector.manifest import Violation
from streams.worker.metrics import Metrics


class Event:
    def __init__(self, agent_id, action="send", sensitivity="restricted", records=5, bytes=500):
        self.agent_id, self.action, self.sensitivity = agent_id, action, sensitivity
        self.records, self.bytes, self.destinations = records, bytes, ["email:x@y"]


class Decision:
    def __init__(self, agent_id, severity="critical", action_taken="freeze", transition=("closed", "open"),
                 violations=()):
        self.record = {"event_id": "e", "agent_id": agent_id, "ts": "2026-03-02T09:00:00Z", "score": 0.99,
                       "severity": severity, "reasons": [{"feature": "volume", "value": 1, "baseline": 0,
                                                          "detail": ""}],
                       "action_taken": action_taken, "breaker_state": "open", "model_version": "v"}
        self.transition = transition
        self.freeze = {"incident_id": "inc-1"} if action_taken == "freeze" else None
        self.dest_classes = ("external",)
        self.violations = list(violations)


@pytest.fixture
def reg():
    return CollectorRegistry()


@pytest.fixture
def m(reg):
    return Metrics(reg, process_metrics=False)


def val(reg, name, **labels):
    return reg.get_sample_value(name, labels)


def test_scope_violations_are_counted_by_where_clause_and_verdict(m, reg):
    v = [Violation("tools", "needs_approval", "d", "agent a v1"), Violation("destinations", "deny", "d", "x")]
    m.observe(Event("a"), Decision("a", "medium", "alert", None, violations=v), 0.01)
    m.scope_violations("check", v[:1])
    m.scope_violations("check", [Violation("not-a-clause", "deny", "d", "x")])  # never a new series
    assert val(reg, "flowbreaker_scope_violations_total", where="stream", clause="tools",
               on_violation="needs_approval") == 1
    assert val(reg, "flowbreaker_scope_violations_total", where="stream", clause="destinations",
               on_violation="deny") == 1
    assert val(reg, "flowbreaker_scope_violations_total", where="check", clause="tools",
               on_violation="needs_approval") == 1
    series = [s for f in reg.collect() if f.name == "flowbreaker_scope_violations" for s in f.samples
              if s.name.endswith("_total")]
    assert len(series) == 40


def test_a_drill_agents_freeze_stays_out_of_the_soc_counts_and_alerts(m, reg):
    m.observe(Event("flowbreaker-drill-1"), Decision("flowbreaker-drill-1"), 0.01)
    m.refresh_topk()
    assert val(reg, "flowbreaker_freezes_total", severity="critical") == 0
    assert val(reg, "flowbreaker_decisions_total", severity="critical", action_taken="freeze") == 0
    assert val(reg, "flowbreaker_actions_total", action="send", sensitivity="restricted") == 0
    assert val(reg, "flowbreaker_agents_frozen") == 0
    assert val(reg, "flowbreaker_agent_frozen", agent_id="flowbreaker-drill-1", incident_id="inc-1") is None
    assert val(reg, "flowbreaker_drill_decisions_total", action_taken="freeze") == 1
    assert val(reg, "flowbreaker_drill_agent_frozen", agent_id="flowbreaker-drill-1") == 1
    m.release("flowbreaker-drill-1")
    m.refresh_topk()
    assert val(reg, "flowbreaker_drill_agent_frozen", agent_id="flowbreaker-drill-1") is None
    assert val(reg, "flowbreaker_releases_total") == 0


def test_a_real_agents_freeze_is_still_counted(m, reg):
    m.observe(Event("support-1"), Decision("support-1"), 0.01)
    m.refresh_topk()
    assert val(reg, "flowbreaker_freezes_total", severity="critical") == 1
    assert val(reg, "flowbreaker_agent_frozen", agent_id="support-1", incident_id="inc-1") == 1


def test_recovered_frozen_drill_agents_are_listed_apart(m, reg):
    m.set_frozen({"flowbreaker-drill-1": "inc-1", "a": "inc-2"})
    m.refresh_topk()
    assert val(reg, "flowbreaker_agents_frozen") == 1
    assert val(reg, "flowbreaker_drill_agent_frozen", agent_id="flowbreaker-drill-1") == 1


def test_the_last_drill_is_exported_and_nan_before_the_first(m, reg):
    assert math.isnan(val(reg, "flowbreaker_drill_last_run_timestamp_seconds"))
    assert math.isnan(val(reg, "flowbreaker_drill_last_success"))
    m.set_drill({"finished_t": 1772442000.5, "passed": False,
                 "steps": [{"step": "decision", "seconds": 0.2}, {"step": "actuator_webhook", "seconds": None},
                           {"step": "bogus", "seconds": 1.0}]})
    assert val(reg, "flowbreaker_drill_last_run_timestamp_seconds") == 1772442000.5
    assert val(reg, "flowbreaker_drill_last_success") == 0
    assert val(reg, "flowbreaker_drill_step_seconds", step="decision") == 0.2
    assert math.isnan(val(reg, "flowbreaker_drill_step_seconds", step="actuator_webhook"))
    assert val(reg, "flowbreaker_drill_step_seconds", step="bogus") is None


def test_manifest_gauges(m, reg):
    m.set_manifests(7)
    m.manifest_skipped()
    assert val(reg, "flowbreaker_manifests_loaded") == 7
    assert val(reg, "flowbreaker_manifest_records_skipped_total") == 1
