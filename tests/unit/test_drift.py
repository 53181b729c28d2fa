"""Tests of the feature drift measure (models/drift.py)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from detector.features import N_FEATURES
from detector.policy import load_policy
from models.drift import Binning, drift_table, feature_rows, psi, psi_rows

REPO = Path(__file__).resolve().parents[2]
DECILES = np.linspace(0, 1, 11)


def quantiles(rows):
    return np.quantile(rows, DECILES, axis=0)  # what `flowbreaker train` stores as train_quantiles


@pytest.fixture(scope="module")
def rng():
    return np.random.default_rng(7)


def test_a_sample_of_the_training_distribution_is_stable(rng):
    train = rng.lognormal(size=(20_000, 3))
    live = rng.lognormal(size=(5_000, 3))
    assert np.all(psi_rows(quantiles(train), live) < 0.02)


def test_a_shifted_distribution_is_flagged(rng):
    train = rng.normal(size=(20_000, 2))
    live = np.column_stack([rng.normal(1.0, 1.0, 5_000), rng.normal(0.0, 3.0, 5_000)])
    assert np.all(psi_rows(quantiles(train), live) > 0.25)


def test_a_mostly_zero_feature_with_the_same_share_of_zeros_is_stable(rng):
    # 97% zeros: the deciles are all 0 but the maximum; deciles cannot tell 90% from 97%
    def sample(n, p):
        return np.where(rng.random((n, 1)) < p, 0.0, rng.exponential(size=(n, 1)) + 0.1)

    q = quantiles(sample(20_000, 0.97))
    assert psi_rows(q, sample(5_000, 0.97))[0] < 0.01
    assert psi_rows(q, sample(5_000, 0.92))[0] < 0.01   # within what the deciles allow: a lower bound
    assert psi_rows(q, sample(5_000, 0.40))[0] > 0.25   # far outside it


def test_a_constant_feature_is_stable_until_it_moves(rng):
    q = quantiles(np.zeros((1000, 1)))
    assert psi_rows(q, np.zeros((100, 1)))[0] == pytest.approx(0.0, abs=1e-9)
    assert psi_rows(q, np.ones((100, 1)))[0] > 0.25      # above the training maximum


def test_counts_add_up_so_batches_can_be_accumulated(rng):
    train = rng.normal(size=(5000, 4))
    b = Binning.from_quantiles(quantiles(train))
    x, y = rng.normal(size=(300, 4)), rng.normal(0.5, 1, size=(200, 4))
    assert np.array_equal(b.counts(x) + b.counts(y), b.counts(np.vstack([x, y])))
    assert np.allclose(psi(b, b.counts(x) + b.counts(y)), psi_rows(quantiles(train), np.vstack([x, y])))
    assert np.isnan(psi(b, b.counts(np.zeros((0, 4))))).all()


def test_values_on_an_edge_fall_in_the_bin_below():
    b = Binning.from_quantiles(quantiles(np.arange(11.0)[:, None]))
    assert b.counts(np.array([[1.0], [1.0000001]]))[0, :3].tolist() == [1, 1, 0]  # (-inf, 1], (1, 2], (2, 3]


def test_malformed_quantiles_are_refused():
    with pytest.raises(ValueError, match="shape"):
        Binning.from_quantiles(np.zeros((10, 3)))
    with pytest.raises(ValueError, match="non-decreasing"):
        Binning.from_quantiles(np.linspace(1, 0, 11)[:, None])
    with pytest.raises(ValueError, match="rows must have shape"):
        Binning.from_quantiles(np.zeros((11, 3))).counts(np.zeros((4, 2)))


def test_drift_table_sorts_the_most_drifted_first():
    t = drift_table(np.array([0.05, 0.3, 0.15]), ["a", "b", "c"])
    assert [(r["feature"], r["status"]) for r in t] == [("b", "shifted"), ("c", "moderate"), ("a", "stable")]


class Prior:
    def __init__(self, hours):
        self.hours, self.sketches = hours, None


def test_feature_rows_of_the_training_history_reproduce_the_training_deciles():
    from models.simulate import simulate, split_history
    from models.store import TrainedModel
    from models.train import fit
    from detector.events import decode_event

    events, labels = simulate(n_agents=8, days=4, seed=2, incidents=[])
    history, _ = split_history(events, labels)
    evs = [decode_event(e) for e in history]
    policy = load_policy(REPO / "examples" / "policy.toml")
    card, arrays = fit(evs, policy, n_estimators=5)
    model = TrainedModel({**card, "checksum": ""}, arrays)
    # as training saw them: hour profiles, but sketches that start empty
    rows = feature_rows(evs, policy, prior_for=lambda a, o, t: Prior(model.prior_for(a, o, t).hours))
    assert rows.shape[1] == N_FEATURES
    assert np.allclose(quantiles(rows), arrays["train_quantiles"])
    # discrete features (counts of actions in a task) tie at decile edges: deciles are not exact shares
    assert np.all(psi_rows(arrays["train_quantiles"], rows) < 1e-2)


def exact_psi(train, live):
    """PSI on the same bins with the training shares counted exactly (not read off deciles)."""
    from models.drift import EPS

    b = Binning.from_quantiles(quantiles(train))
    ct, cl = b.counts(train), b.counts(live)
    out = []
    for f, e in enumerate(b.edges):
        k = len(e) + 1
        t, a = ct[f, :k] / ct[f, :k].sum() + EPS, cl[f, :k] / cl[f, :k].sum() + EPS
        out.append(float(np.sum((a - t) * np.log(a / t))))
    return np.array(out)


@pytest.mark.parametrize("seed", range(6))
def test_the_index_is_a_lower_bound_of_the_index_against_the_exact_training_shares(seed):
    r = np.random.default_rng(seed)

    def sample(n, zeros, tiny, scale):
        u = r.random(n)
        x = r.exponential(scale, n) + 0.05
        x[u < zeros + tiny] = r.uniform(0.011, 0.02, (u < zeros + tiny).sum())
        x[u < zeros] = 0.0
        return x[:, None]

    zeros, tiny = r.uniform(0.05, 0.6), r.uniform(0.0, 0.05)
    train = sample(20_000, zeros, tiny, 1.0)
    for live in (sample(5_000, zeros, tiny, 1.0), sample(5_000, zeros * 0.7, tiny, 1.3), sample(5_000, 0.9, 0.0, 1.0)):
        assert psi_rows(quantiles(train), live)[0] <= exact_psi(train, live)[0] + 0.01


def test_a_smaller_share_of_zeros_next_to_a_near_zero_decile_is_not_blown_up():
    # 39.5% zeros and 0.5% tiny values in training put the 40th percentile just above 0: the
    # (0, tiny] bin really holds 0.5%, not the 10% a naive reading of the deciles gives it
    r = np.random.default_rng(3)
    u = r.random(20_000)
    train = np.where(u < 0.395, 0.0, np.where(u < 0.4, 0.015, r.exponential(1.0, 20_000) + 0.05))[:, None]
    u = r.random(5_000)
    live = np.where(u < 0.28, 0.0, np.where(u < 0.287, 0.015, r.exponential(1.0, 5_000) + 0.05))[:, None]
    assert psi_rows(quantiles(train), live)[0] < 0.1
