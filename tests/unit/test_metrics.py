"""streams.worker.metrics: names, labels, bounds; a fresh registry per test."""

from __future__ import annotations

import math

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from streams.worker.metrics import MAX_FEATURES, Metrics


class FakeEvent:
    def __init__(self, agent_id="a1", action="read", sensitivity="internal",
                 records=0, bytes=0, destinations=()):
        self.agent_id = agent_id
        self.action = action
        self.sensitivity = sensitivity
        self.records = records
        self.bytes = bytes
        self.destinations = list(destinations)


class FakeDecision:
    def __init__(self, agent_id="a1", score=0.1, severity="ok", reasons=(),
                 action_taken="none", breaker_state="closed", transition=None,
                 freeze=None, dest_classes=()):
        self.record = {
            "event_id": "e", "agent_id": agent_id, "ts": "2025-01-01T00:00:00Z",
            "score": score, "severity": severity, "reasons": list(reasons),
            "action_taken": action_taken, "breaker_state": breaker_state,
            "model_version": "v1",
        }
        self.transition = transition
        self.freeze = freeze
        self.dest_classes = tuple(dest_classes)


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


@pytest.fixture
def registry():
    return CollectorRegistry()


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def metrics(registry, clock):
    return Metrics(registry, top_k=3, max_frozen=2, process_metrics=False, clock=clock)


def value(registry, name, **labels):
    return registry.get_sample_value(name, labels)


def series(registry, name):
    """Label dicts of the samples of metric family ``name``."""
    return [
        s.labels for f in registry.collect() for s in f.samples if s.name == name
    ]


def freeze_of(agent, incident="inc-1"):
    return {"command": "freeze", "agent_id": agent, "incident_id": incident,
            "issued_at": "2025-01-01T00:00:00Z", "reason": "r", "issued_by": "flowbreaker"}


def reason(feature, value=10.0, baseline=2.0):
    return {"feature": feature, "value": value, "baseline": baseline, "detail": "d"}


def test_every_metric_name_follows_the_naming_rules(metrics):
    metrics.observe(FakeEvent(), FakeDecision(), 0.01)
    families = list(text_string_to_metric_families(metrics.render().decode()))
    assert families
    for family in families:
        assert family.name.startswith("flowbreaker_"), family.name
        if family.type == "counter":
            assert all(s.name.endswith("_total") for s in family.samples), family.name
        if family.type == "histogram" and "latency" in family.name:
            assert family.name.endswith("_seconds")


def test_no_metric_but_the_bounded_agent_gauges_has_an_agent_id_label(metrics):
    allowed = {
        "flowbreaker_agent_risk_score", "flowbreaker_agent_frozen",
        "flowbreaker_agent_breaker_state", "flowbreaker_agent_feature_value",
        "flowbreaker_agent_feature_baseline",
    }
    for i in range(10):
        metrics.observe(
            FakeEvent(agent_id=f"a{i}"),
            FakeDecision(agent_id=f"a{i}", score=0.9, severity="high",
                         action_taken="alert", reasons=[reason("fan_out")]),
            0.01,
        )
    metrics.refresh_topk()
    for family in text_string_to_metric_families(metrics.render().decode()):
        for sample in family.samples:
            if "agent_id" in sample.labels:
                assert family.name in allowed


def test_an_observed_action_is_counted_by_action_and_sensitivity(metrics, registry):
    metrics.observe(FakeEvent(action="send", sensitivity="restricted"), FakeDecision(), 0.01)
    metrics.observe(FakeEvent(action="send", sensitivity="restricted"), FakeDecision(), 0.01)
    assert value(registry, "flowbreaker_actions_total", action="send", sensitivity="restricted") == 2
    assert value(registry, "flowbreaker_actions_total", action="read", sensitivity="public") == 0


def test_values_outside_the_contract_are_counted_as_other(metrics, registry):
    metrics.observe(FakeEvent(action="teleport", sensitivity="secret"), FakeDecision(severity="weird"), 0.01)
    assert value(registry, "flowbreaker_actions_total", action="other", sensitivity="other") == 1
    assert value(registry, "flowbreaker_decisions_total", severity="other", action_taken="none") == 1


def test_decisions_are_counted_by_severity_and_action_taken(metrics, registry):
    metrics.observe(FakeEvent(), FakeDecision(severity="high", action_taken="alert",
                                              reasons=[reason("x")]), 0.01)
    assert value(registry, "flowbreaker_decisions_total", severity="high", action_taken="alert") == 1


def test_score_and_latency_land_in_cumulative_histogram_buckets(metrics, registry):
    metrics.observe(FakeEvent(), FakeDecision(score=0.35), 0.02)
    metrics.observe(FakeEvent(), FakeDecision(score=0.97), 4.0)
    assert value(registry, "flowbreaker_decision_score_bucket", le="0.3") == 0
    assert value(registry, "flowbreaker_decision_score_bucket", le="0.4") == 1
    assert value(registry, "flowbreaker_decision_score_bucket", le="0.99") == 2
    assert value(registry, "flowbreaker_decision_score_bucket", le="+Inf") == 2
    assert value(registry, "flowbreaker_decision_score_count") == 2
    assert value(registry, "flowbreaker_decision_score_sum") == pytest.approx(1.32)
    assert value(registry, "flowbreaker_processing_latency_seconds_bucket", le="0.025") == 1
    assert value(registry, "flowbreaker_processing_latency_seconds_bucket", le="5.0") == 2
    assert value(registry, "flowbreaker_processing_latency_seconds_sum") == pytest.approx(4.02)


def test_a_score_on_a_bucket_bound_counts_in_that_bucket(metrics, registry):
    metrics.observe(FakeEvent(), FakeDecision(score=0.5), 0.01)
    assert value(registry, "flowbreaker_decision_score_bucket", le="0.5") == 1


def test_negative_or_nan_latency_counts_as_zero(metrics, registry):
    metrics.observe(FakeEvent(), FakeDecision(), -3.0)
    metrics.observe(FakeEvent(), FakeDecision(), math.nan)
    assert value(registry, "flowbreaker_processing_latency_seconds_bucket", le="0.001") == 2
    assert value(registry, "flowbreaker_processing_latency_seconds_sum") == 0


def test_volume_counts_once_per_destination_class_reached(metrics, registry):
    event = FakeEvent(action="send", sensitivity="confidential", records=40, bytes=5000,
                      destinations=["email:a@x", "email:b@x", "slack:#all", "email:c@corp"])
    decision = FakeDecision(dest_classes=("external", "external", "broadcast", "internal"))
    metrics.observe(event, decision, 0.01)
    for dest_class in ("external", "broadcast", "internal"):
        assert value(registry, "flowbreaker_records_total",
                     sensitivity="confidential", dest_class=dest_class) == 40
        assert value(registry, "flowbreaker_bytes_total",
                     sensitivity="confidential", dest_class=dest_class) == 5000
    assert value(registry, "flowbreaker_destinations_total", dest_class="external") == 2
    assert value(registry, "flowbreaker_destinations_total", dest_class="broadcast") == 1
    assert value(registry, "flowbreaker_event_destinations_bucket", le="2.0") == 0
    assert value(registry, "flowbreaker_event_destinations_bucket", le="5.0") == 1


def test_an_action_without_destinations_counts_its_volume_under_none(metrics, registry):
    metrics.observe(FakeEvent(records=7, bytes=70, sensitivity="restricted"), FakeDecision(), 0.01)
    assert value(registry, "flowbreaker_records_total", sensitivity="restricted", dest_class="none") == 7
    assert value(registry, "flowbreaker_event_destinations_count") == 0


def test_a_single_destination_takes_the_short_path_with_the_same_result(metrics, registry):
    metrics.observe(FakeEvent(records=2, bytes=9, destinations=["http:x"]),
                    FakeDecision(dest_classes=("external",)), 0.01)
    assert value(registry, "flowbreaker_records_total", sensitivity="internal", dest_class="external") == 2
    assert value(registry, "flowbreaker_destinations_total", dest_class="external") == 1


def test_an_unknown_destination_class_is_counted_as_other(metrics, registry):
    metrics.observe(FakeEvent(records=1, destinations=["a", "b"]),
                    FakeDecision(dest_classes=("external", "martian")), 0.01)
    assert value(registry, "flowbreaker_destinations_total", dest_class="other") == 1
    assert value(registry, "flowbreaker_records_total", sensitivity="internal", dest_class="other") == 1


def test_alerts_are_counted_by_severity_and_leading_feature(metrics, registry):
    metrics.observe(FakeEvent(), FakeDecision(severity="high", action_taken="alert",
                                              reasons=[reason("external_send"), reason("volume")]), 0.01)
    metrics.observe(FakeEvent(), FakeDecision(severity="critical", action_taken="freeze",
                                              reasons=[reason("volume")]), 0.01)
    metrics.observe(FakeEvent(), FakeDecision(severity="low", action_taken="none",
                                              reasons=[reason("volume")]), 0.01)
    assert value(registry, "flowbreaker_alerts_total", severity="high", feature="external_send") == 1
    assert value(registry, "flowbreaker_alerts_total", severity="critical", feature="volume") == 1
    assert value(registry, "flowbreaker_alerts_total", severity="low", feature="volume") is None


def test_an_alert_without_reasons_has_feature_none(metrics, registry):
    metrics.observe(FakeEvent(), FakeDecision(severity="medium", action_taken="alert"), 0.01)
    assert value(registry, "flowbreaker_alerts_total", severity="medium", feature="none") == 1


def test_feature_labels_are_capped_and_the_rest_become_other(metrics, registry):
    for i in range(MAX_FEATURES + 10):
        metrics.observe(FakeEvent(), FakeDecision(severity="high", action_taken="alert",
                                                  reasons=[reason(f"feature_{i}")]), 0.01)
    features = {labels["feature"] for labels in series(registry, "flowbreaker_alerts_total")}
    assert len(features) == MAX_FEATURES + 1
    assert value(registry, "flowbreaker_alerts_total", severity="high", feature="other") == 10


def test_a_freeze_counts_a_freeze_a_transition_and_lists_the_frozen_agent(metrics, registry):
    metrics.observe(
        FakeEvent(agent_id="bad"),
        FakeDecision(agent_id="bad", score=0.99, severity="critical", action_taken="freeze",
                     breaker_state="open", transition=("closed", "open"),
                     freeze=freeze_of("bad", "inc-7"), reasons=[reason("exfil")]),
        0.01,
    )
    metrics.refresh_topk()
    assert value(registry, "flowbreaker_freezes_total", severity="critical") == 1
    assert value(registry, "flowbreaker_breaker_transitions_total",
                 from_state="closed", to_state="open") == 1
    assert value(registry, "flowbreaker_agents_frozen") == 1
    assert value(registry, "flowbreaker_agent_frozen", agent_id="bad", incident_id="inc-7") == 1
    assert value(registry, "flowbreaker_agent_breaker_state", agent_id="bad") == 2


def test_a_release_unlists_the_agent_and_marks_it_half_open(metrics, registry):
    metrics.observe(FakeEvent(agent_id="bad"),
                    FakeDecision(agent_id="bad", score=0.99, severity="critical",
                                 action_taken="freeze", transition=("closed", "open"),
                                 freeze=freeze_of("bad")), 0.01)
    metrics.refresh_topk()
    metrics.release("bad")
    metrics.refresh_topk()
    assert value(registry, "flowbreaker_releases_total") == 1
    assert value(registry, "flowbreaker_agents_frozen") == 0
    assert series(registry, "flowbreaker_agent_frozen") == []
    assert value(registry, "flowbreaker_agent_breaker_state", agent_id="bad") == 1


def test_a_transition_out_of_open_unlists_the_agent(metrics, registry):
    metrics.observe(FakeEvent(agent_id="x"), FakeDecision(agent_id="x", transition=("closed", "open")), 0.01)
    metrics.observe(FakeEvent(agent_id="x"), FakeDecision(agent_id="x", transition=("open", "half_open")), 0.01)
    metrics.observe(FakeEvent(agent_id="x"), FakeDecision(agent_id="x", transition=("half_open", "closed")), 0.01)
    metrics.refresh_topk()
    assert value(registry, "flowbreaker_agents_frozen") == 0
    assert value(registry, "flowbreaker_breaker_transitions_total",
                 from_state="half_open", to_state="closed") == 1


def test_the_frozen_list_is_capped_but_the_count_is_not(metrics, registry):
    for i in range(5):
        metrics.observe(FakeEvent(agent_id=f"f{i}"),
                        FakeDecision(agent_id=f"f{i}", transition=("closed", "open"),
                                     freeze=freeze_of(f"f{i}", f"inc-{i}")), 0.01)
    metrics.refresh_topk()
    assert value(registry, "flowbreaker_agents_frozen") == 5
    listed = series(registry, "flowbreaker_agent_frozen")
    assert [s["agent_id"] for s in listed] == ["f0", "f1"]  # max_frozen=2, longest frozen first


def test_set_frozen_replaces_the_frozen_list_after_a_rebalance(metrics, registry):
    metrics.observe(FakeEvent(agent_id="old"),
                    FakeDecision(agent_id="old", transition=("closed", "open")), 0.01)
    metrics.set_frozen({"recovered": "inc-9"})
    metrics.refresh_topk()
    assert series(registry, "flowbreaker_agent_frozen") == [
        {"agent_id": "recovered", "incident_id": "inc-9"}
    ]
    assert value(registry, "flowbreaker_agent_breaker_state", agent_id="recovered") == 2


def test_top_k_lists_only_the_riskiest_agents(metrics, registry):
    for i, score in enumerate([0.2, 0.9, 0.5, 0.7, 0.3]):
        metrics.observe(FakeEvent(agent_id=f"a{i}"), FakeDecision(agent_id=f"a{i}", score=score), 0.01)
    metrics.refresh_topk()
    listed = {s["agent_id"] for s in series(registry, "flowbreaker_agent_risk_score")}
    assert listed == {"a1", "a3", "a2"}  # top_k=3
    assert value(registry, "flowbreaker_agent_risk_score", agent_id="a1") == 0.9


def test_an_agent_keeps_its_peak_score_not_its_latest(metrics, registry):
    metrics.observe(FakeEvent(agent_id="a"), FakeDecision(agent_id="a", score=0.8), 0.01)
    metrics.observe(FakeEvent(agent_id="a"), FakeDecision(agent_id="a", score=0.1), 0.01)
    metrics.refresh_topk()
    assert value(registry, "flowbreaker_agent_risk_score", agent_id="a") == 0.8


def test_risk_decays_and_agents_that_fall_out_of_top_k_are_removed(metrics, registry, clock):
    for i in range(3):
        metrics.observe(FakeEvent(agent_id=f"old{i}"), FakeDecision(agent_id=f"old{i}", score=0.8), 0.01)
    metrics.refresh_topk()
    clock.now += 300.0  # one half-life: 0.8 -> 0.4
    for i in range(3):
        metrics.observe(FakeEvent(agent_id=f"new{i}"), FakeDecision(agent_id=f"new{i}", score=0.6), 0.01)
    metrics.refresh_topk()
    listed = {s["agent_id"] for s in series(registry, "flowbreaker_agent_risk_score")}
    assert listed == {"new0", "new1", "new2"}
    assert value(registry, "flowbreaker_agent_risk_score", agent_id="old0") is None
    assert value(registry, "flowbreaker_agent_breaker_state", agent_id="old0") is None


def test_a_frozen_agent_keeps_its_risk_and_features_listed_beyond_top_k(metrics, registry, clock):
    metrics.observe(FakeEvent(agent_id="bad"),
                    FakeDecision(agent_id="bad", score=0.5, severity="critical", action_taken="freeze",
                                 reasons=[reason("exfil", 99.0, 1.0)], transition=("closed", "open"),
                                 freeze=freeze_of("bad")), 0.01)
    metrics.refresh_topk()
    clock.now += 3000.0  # ten half-lives
    for i in range(3):  # fill the top-K (3) with riskier agents
        metrics.observe(FakeEvent(agent_id=f"a{i}"), FakeDecision(agent_id=f"a{i}", score=0.9), 0.01)
    metrics.refresh_topk()
    assert len(series(registry, "flowbreaker_agent_risk_score")) == 4
    assert value(registry, "flowbreaker_agent_risk_score", agent_id="bad") == 0.5
    assert value(registry, "flowbreaker_agent_feature_value", agent_id="bad", feature="exfil") == 99
    metrics.release("bad")
    clock.now += 3000.0
    metrics.refresh_topk()
    assert value(registry, "flowbreaker_agent_risk_score", agent_id="bad") is None


def test_risk_below_the_floor_is_forgotten(metrics, clock):
    metrics.observe(FakeEvent(agent_id="a"), FakeDecision(agent_id="a", score=0.5), 0.01)
    metrics.refresh_topk()
    clock.now += 300.0 * 10  # 0.5 / 1024 < 0.01
    metrics.refresh_topk()
    assert metrics._risk == {}


def test_the_tracked_agents_are_capped(registry, clock):
    m = Metrics(registry, top_k=2, max_tracked=5, process_metrics=False, clock=clock)
    for i in range(50):
        m.observe(FakeEvent(agent_id=f"a{i}"), FakeDecision(agent_id=f"a{i}", score=0.5 + i / 100), 0.01)
    m.refresh_topk()
    assert len(m._risk) == 5
    assert {s["agent_id"] for s in series(registry, "flowbreaker_agent_risk_score")} == {"a49", "a48"}


def test_top_k_agents_expose_their_leading_features_against_baseline(metrics, registry):
    metrics.observe(
        FakeEvent(agent_id="a"),
        FakeDecision(agent_id="a", score=0.9, severity="high", action_taken="alert",
                     reasons=[reason("records_1h", 400.0, 12.0), reason("new_destination", "yes", None),
                              reason("fan_out", 30, 2), reason("fourth", 1, 1)]),
        0.01,
    )
    metrics.refresh_topk()
    assert value(registry, "flowbreaker_agent_feature_value", agent_id="a", feature="records_1h") == 400
    assert value(registry, "flowbreaker_agent_feature_baseline", agent_id="a", feature="records_1h") == 12
    assert value(registry, "flowbreaker_agent_feature_value", agent_id="a", feature="fan_out") == 30
    assert value(registry, "flowbreaker_agent_feature_value", agent_id="a", feature="new_destination") is None
    assert value(registry, "flowbreaker_agent_feature_value", agent_id="a", feature="fourth") is None


def test_dlq_counts_by_code_and_unknown_codes_become_other(metrics, registry):
    metrics.dlq("timestamp")
    metrics.dlq("made_up")
    assert value(registry, "flowbreaker_dlq_events_total", code="timestamp") == 1
    assert value(registry, "flowbreaker_dlq_events_total", code="other") == 1
    assert value(registry, "flowbreaker_dlq_events_total", code="not_json") == 0
    assert len(series(registry, "flowbreaker_dlq_events_total")) == 13


def test_duplicates_are_counted(metrics, registry):
    metrics.duplicate()
    assert value(registry, "flowbreaker_duplicates_total") == 1


def test_lag_is_per_partition_and_revoked_partitions_disappear(metrics, registry):
    metrics.set_lag(0, 10)
    metrics.set_lag(3, 250)
    metrics.set_assignment([3])
    assert value(registry, "flowbreaker_consumer_lag", partition="3") == 250
    assert value(registry, "flowbreaker_consumer_lag", partition="0") is None
    assert value(registry, "flowbreaker_assigned_partitions") == 1


def test_model_info_and_training_time_are_exposed(metrics, registry):
    assert math.isnan(value(registry, "flowbreaker_model_trained_timestamp_seconds"))
    metrics.set_model("m-2025-01-01", "2025-01-01T00:00:00Z")
    assert value(registry, "flowbreaker_model_info", version="m-2025-01-01",
                 trained_at="2025-01-01T00:00:00Z") == 1
    assert value(registry, "flowbreaker_model_trained_timestamp_seconds") == 1735689600
    metrics.set_model("m2", "2025-02-01T00:00:00+01:00")
    assert len(series(registry, "flowbreaker_model_info")) == 1
    assert value(registry, "flowbreaker_model_trained_timestamp_seconds") == 1738364400


def test_an_unreadable_training_time_is_nan_so_no_stale_alert_fires(metrics, registry):
    metrics.set_model("m", "yesterday")
    assert math.isnan(value(registry, "flowbreaker_model_trained_timestamp_seconds"))


def test_worker_info_is_one_series(metrics, registry):
    metrics.set_worker("worker-1")
    assert [s["worker"] for s in series(registry, "flowbreaker_worker_info")] == ["worker-1"]


def test_two_instances_without_a_registry_do_not_clash():
    a, b = Metrics(process_metrics=False), Metrics(process_metrics=False)
    assert a.registry is not b.registry


def test_process_metrics_are_included_by_default(registry):
    m = Metrics(registry)
    assert b"process_cpu_seconds_total" in m.render() or b"python_info" in m.render()


def test_render_refreshes_the_top_k(metrics):
    metrics.observe(FakeEvent(agent_id="z"), FakeDecision(agent_id="z", score=0.7), 0.01)
    assert b'flowbreaker_agent_risk_score{agent_id="z"} 0.7' in metrics.render()


def test_observe_does_not_mutate_its_inputs(metrics):
    event = FakeEvent(destinations=["a"])
    decision = FakeDecision(dest_classes=("external",), reasons=[reason("f")],
                            severity="high", action_taken="alert")
    before = (dict(event.__dict__), dict(decision.record))
    metrics.observe(event, decision, 0.01)
    assert (event.__dict__, decision.record) == before


def test_observing_routine_decisions_looks_up_no_labelled_child(metrics, monkeypatch):
    """The per-decision path reads its cells from caches: once an action, severity, class and alert were met,
    observing more of them calls no ``labels()`` (a lookup per call is what made observe cost 25x more once).
    What it costs is printed by ``python bench/bench_metrics.py``; tests do not time it."""
    from prometheus_client.metrics import MetricWrapperBase

    def pairs():
        for i in range(100):
            alert = i % 10 == 0
            yield (FakeEvent(agent_id=f"a{i}", records=3, action=("read", "send")[i % 2],
                             destinations=("x",) * (i % 3)),
                   FakeDecision(agent_id=f"a{i}", score=(i % 10) / 10, severity="high" if alert else "ok",
                                action_taken="alert" if alert else "none",
                                reasons=[{"feature": "novel_tool"}] if alert else (),
                                dest_classes=("external", "internal")[: i % 3]))

    for e, d in pairs():  # every child these decisions need, made once
        metrics.observe(e, d, 0.01)
    calls = []
    real = MetricWrapperBase.labels
    monkeypatch.setattr(MetricWrapperBase, "labels",
                        lambda self, *a, **k: calls.append(self._name) or real(self, *a, **k))
    for e, d in pairs():
        metrics.observe(e, d, 0.01)
    assert calls == []
    metrics.observe(FakeEvent(), FakeDecision(severity="medium", action_taken="alert",
                                              reasons=[{"feature": "first_seen_here"}]), 0.01)
    assert calls  # a new alert label is looked up (and the check above would see a lookup per call)


def test_a_batch_observed_at_once_exports_what_observing_its_decisions_one_by_one_does():
    """observe_batch inlines observe() for the common decision: the same fleet's decisions (alerts, freezes,
    duplicates, drill agents, several destination classes among them) give the same /metrics either way."""
    from detector.drill import DRILL_PREFIX
    from detector.engine import Engine
    from detector.events import decode_event
    from models.simulate import simulate
    import json

    events, _ = simulate(n_agents=12, days=3, seed=4, incidents=["mass_fanout", "bulk_read_broadcast"] * 3,
                         incident_days_from=1)
    events = [decode_event(json.dumps(e).encode()) for e in events[:3000]]
    events += [events[-1]]                                       # a duplicate
    events += [e.replace(agent_id=DRILL_PREFIX + e.agent_id) for e in events[:20]]  # drill agents
    decisions = Engine().process_batch(events)
    assert any(d.freeze for d in decisions) and any(len(d.dest_classes) > 1 for d in decisions)
    assert any(d.duplicate for d in decisions)
    clock = Clock()
    batch, single = (Metrics(CollectorRegistry(), process_metrics=False, clock=clock) for _ in range(2))
    now = max(e.t for e in events) + 0.25
    for k in range(0, len(decisions), 97):
        batch.observe_batch(decisions[k:k + 97], now)
    for d in decisions:
        if d.duplicate:
            single.duplicate()
        else:
            single.observe(d.event, d, now - d.event.t)
    assert batch.render() == single.render()
