"""Live drift of a worker's traffic against the model's training data, as a metric."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry

from detector.engine import Engine
from detector.events import decode_event
from detector.policy import Policy, load_policy
from models import simulate as sim
from models.store import TrainedModel
from models.train import fit
from streams.worker.drift_monitor import DriftMonitor
from streams.worker.metrics import Metrics

from pathlib import Path

POLICY = load_policy(Path(__file__).resolve().parents[2] / "examples" / "policy.toml")


@pytest.fixture(scope="module")
def trained():
    events = [decode_event(e) for e in sim.simulate(n_agents=8, days=3, seed=11, incidents=[])[0]]
    cut = len(events) // 2
    card, arrays = fit(events[:cut], POLICY, seed=0, n_estimators=5)
    return TrainedModel(card, arrays), events[cut:]


def psi_of(model, events, policy):
    mon = DriftMonitor(model)
    decisions = Engine(policy=policy, model=model).process_batch(events)
    mon.add([d.x for d in decisions if d.x is not None])
    return mon.psi()


def test_traffic_like_the_training_data_shows_little_drift_where_a_changed_world_shows_much(trained):
    model, later = trained
    same, changed = psi_of(model, later, POLICY), psi_of(model, later, Policy())
    for feature in ("outbound_15m", "outbound_1h", "external_destinations_1h"):
        assert same[feature] < 0.25 < changed[feature], feature
    # (1-hour windows start cold on a fresh engine, which the training rows never were: some drift there)


def test_a_changed_world_shows_up_as_drift_in_the_features_it_moves(trained):
    model, later = trained
    # without the policy every destination is external: outbound volume moves, deletes do not
    psi = psi_of(model, later, Policy())
    assert psi["outbound_1h"] > 0.25 and psi["deletes_15m"] < 0.1


def test_drift_without_a_model_is_not_measured():
    mon = DriftMonitor(None)
    mon.add([[0.0] * 18])
    assert mon.psi() is None


def test_drift_is_exported_per_feature():
    m = Metrics(CollectorRegistry())
    m.set_drift({"outbound_1h": 0.4, "rate_1m": 0.01})
    text = m.render().decode()
    assert 'flowbreaker_model_drift_psi{feature="outbound_1h"} 0.4' in text
