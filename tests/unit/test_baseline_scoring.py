"""Baselines (detector/baseline.py) and calibrated scores with reasons (detector/scoring.py)."""
from __future__ import annotations

import math
import random
from math import expm1, log1p

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from detector.baseline import FLOORS, Z95, Baseline, Prior
from detector.features import FEATURE_NAMES, FEATURES, N_FEATURES
from detector.scoring import P_FLOOR, REASON_Z, Calibration, explain, score_of


def learnt(values, prior: Prior | None = None) -> Baseline:
    b = Baseline.from_prior(prior or Prior.generic())
    for v in values:
        b.learn([v] * N_FEATURES)
    return b


def lognormal_sample(mu: float, sigma: float, n: int, seed: int) -> list[float]:
    """Values whose log1p is normal(mu, sigma), clipped at 0."""
    rng = random.Random(seed)
    return [expm1(max(rng.gauss(mu, sigma), 0.0)) for _ in range(n)]


# --------------------------------------------------------------------------- learning

@pytest.mark.parametrize("mu,sigma", [(3.0, 1.0), (5.0, 0.5), (2.0, 1.5)])
def test_learning_converges_to_the_median_and_the_95th_percentile(mu, sigma):
    b = learnt(lognormal_sample(mu, sigma, 8000, seed=1))
    q95 = mu + Z95 * sigma
    for i in range(N_FEATURES):
        assert b.loc[i] == pytest.approx(mu, abs=0.2 * sigma), FEATURE_NAMES[i]
        assert b.loc[i] + Z95 * b.scale[i] == pytest.approx(q95, abs=0.3 * sigma), FEATURE_NAMES[i]
        assert b.scale[i] == pytest.approx(sigma, rel=0.25), FEATURE_NAMES[i]


def test_learning_a_constant_settles_on_it_with_a_small_scale():
    b = learnt([1.0] * 500)
    for i in range(N_FEATURES):
        assert b.loc[i] == pytest.approx(log1p(1.0), abs=0.05)
    assert max(b.deviations([1.0] * N_FEATURES)) < 0.5


def test_an_outlier_moves_the_profile_no_more_than_an_ordinary_high_value():
    history = lognormal_sample(3.0, 1.0, 300, seed=2)
    a, b = learnt(history), learnt(history)
    a.learn([expm1(a.loc[i] + Z95 * a.scale[i] + 0.01) for i in range(N_FEATURES)])  # just above each q95
    b.learn([1e15] * N_FEATURES)  # absurd
    assert list(a.loc) == list(b.loc)
    assert list(a.scale) == list(b.scale)


@settings(max_examples=200, deadline=None)
@given(st.floats(0, 1e18))
def test_one_value_moves_the_location_by_at_most_one_step(x):
    b = learnt(lognormal_sample(2.0, 1.0, 100, seed=3))
    before_loc, before_scale, n = list(b.loc), list(b.scale), b.n
    b.learn([x] * N_FEATURES)
    alpha = max(1.0 / (n + 1), 0.002)
    for i in range(N_FEATURES):
        step = alpha * 2.0 * max(before_scale[i], FLOORS[i])
        assert abs(b.loc[i] - before_loc[i]) <= step + 1e-12
        assert b.scale[i] >= 0.0


def test_a_profile_round_trips_through_its_tuple():
    b = learnt(lognormal_sample(2.0, 1.0, 50, seed=4))
    c = Baseline.from_tuple(b.to_tuple())
    assert (list(c.loc), list(c.scale), c.n) == (list(b.loc), list(b.scale), b.n)


def test_the_generic_prior_is_wide_and_worth_a_few_observations():
    p = Prior.generic()
    assert len(p.loc) == len(p.scale) == N_FEATURES
    assert all(s >= 2.0 and s >= f for s, f in zip(p.scale, FLOORS))
    assert 0 < p.weight <= 50


# --------------------------------------------------------------------------- deviations

def test_deviations_are_robust_z_in_log1p_units():
    b = Baseline.from_prior(Prior(loc=(1.0,) * N_FEATURES, scale=(2.0,) * N_FEATURES, weight=10.0))
    z = b.deviations([expm1(5.0)] * N_FEATURES)
    for i in range(N_FEATURES):
        assert z[i] == pytest.approx((5.0 - 1.0) / max(2.0, FLOORS[i]))


def test_deviations_use_the_feature_floor_when_the_scale_is_smaller():
    b = Baseline.from_prior(Prior(loc=(0.0,) * N_FEATURES, scale=(0.0,) * N_FEATURES, weight=10.0))
    z = b.deviations([expm1(1.0)] * N_FEATURES)
    assert z == pytest.approx([1.0 / f for f in FLOORS])


def test_a_value_below_the_profile_has_a_negative_deviation():
    b = Baseline.from_prior(Prior(loc=(3.0,) * N_FEATURES, scale=(1.0,) * N_FEATURES, weight=10.0))
    assert all(v < 0 for v in b.deviations([0.0] * N_FEATURES))


# --------------------------------------------------------------------------- calibration and score

def test_score_is_zero_for_common_and_one_for_one_in_a_million():
    assert score_of(1.0) == 0.0
    assert score_of(P_FLOOR) == 1.0
    assert score_of(1e-12) == 1.0
    assert score_of(1e-3) == pytest.approx(0.5)


@settings(max_examples=300, deadline=None)
@given(st.floats(0.0, 1.0), st.floats(0.0, 1.0))
def test_score_is_in_unit_interval_and_never_rises_with_p(p, q):
    lo, hi = sorted((p, q))
    assert 0.0 <= score_of(lo) <= 1.0
    assert score_of(lo) >= score_of(hi)


_raw = st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=50, max_size=2000)


@settings(max_examples=150, deadline=None)
@given(_raw, st.floats(-2e6, 2e6), st.floats(-2e6, 2e6))
def test_fitted_pvalues_are_probabilities_that_never_rise_with_the_statistic(raw, a, b):
    cal = Calibration.fit(raw)
    lo, hi = sorted((a, b))
    p_lo, p_hi = cal.pvalue(lo), cal.pvalue(hi)
    assert 0.0 <= p_hi <= p_lo <= 1.0
    assert score_of(p_lo) <= score_of(p_hi)


@settings(max_examples=150, deadline=None)
@given(st.floats(-5, 50), st.floats(-5, 50))
def test_the_default_laplace_calibration_never_rises_with_the_statistic(a, b):
    cal = Calibration.laplace()
    lo, hi = sorted((a, b))
    assert 1.0 >= cal.pvalue(lo) >= cal.pvalue(hi) > 0.0


def test_fit_matches_the_empirical_tail_of_its_data():
    rng = random.Random(5)
    raw = [rng.expovariate(1.0) for _ in range(20_000)]
    cal = Calibration.fit(raw)
    for x in (0.5, 1.0, 2.0, 4.0):
        empirical = sum(v >= x for v in raw) / len(raw)
        assert cal.pvalue(x) == pytest.approx(empirical, rel=0.15)


def test_fit_with_too_little_data_falls_back_to_the_laplace_default():
    assert Calibration.fit([1.0] * 49) == Calibration.laplace()


def test_a_calibration_round_trips_through_its_dict():
    cal = Calibration.fit([float(i % 97) for i in range(1000)])
    assert Calibration.from_dict(cal.to_dict()) == cal


@pytest.mark.parametrize("bad", [
    {"thresholds": [2.0, 1.0], "tails": [1.0, 0.5], "beta": 1.0},
    {"thresholds": [1.0, 2.0], "tails": [1.0], "beta": 1.0},
    {"thresholds": [], "tails": [], "beta": 1.0},
    {"thresholds": [1.0], "tails": [1.0], "beta": 0.0},
])
def test_an_inconsistent_calibration_is_refused(bad):
    with pytest.raises(ValueError, match="calibration"):
        Calibration.from_dict(bad)


# --------------------------------------------------------------------------- reasons

def _z(**named) -> list[float]:
    z = [0.0] * N_FEATURES
    for name, v in named.items():
        z[FEATURE_NAMES.index(name)] = v
    return z


def test_explain_orders_reasons_by_deviation_and_keeps_only_large_ones():
    z = _z(volume_1h=3.0, fanout_15m=9.0, deletes_15m=REASON_Z - 0.01, task_exfil=5.0)
    x = [float(i) for i in range(N_FEATURES)]
    loc = [log1p(2.0)] * N_FEATURES
    reasons = explain(z, z, x, loc)
    assert [r["feature"] for r in reasons] == ["fanout_15m", "task_exfil", "volume_1h"]


def test_explain_fills_feature_value_baseline_and_a_detail_sentence():
    z = _z(outbound_1h=7.5)
    x = [0.0] * N_FEATURES
    x[FEATURE_NAMES.index("outbound_1h")] = 12500.0
    loc = [log1p(14.0)] * N_FEATURES
    (r,) = explain(z, z, x, loc)
    assert set(r) == {"feature", "value", "baseline", "detail"}
    assert r["feature"] == "outbound_1h"
    assert r["value"] == 12500.0
    assert r["baseline"] == pytest.approx(14.0)
    assert "12,500" in r["detail"] and "14.0" in r["detail"] and "7.5 robust deviations" in r["detail"]
    assert "{" not in r["detail"]


def test_every_feature_has_a_detail_template_that_formats():
    z = [REASON_Z + i for i in range(N_FEATURES)]
    reasons = explain(z, z, [1.0] * N_FEATURES, [0.5] * N_FEATURES, limit=N_FEATURES)
    assert {r["feature"] for r in reasons} == {f.name for f in FEATURES}
    assert all("{" not in r["detail"] and r["detail"].endswith(".") for r in reasons)


def test_explain_gives_at_most_limit_reasons_then_the_extra_ones():
    z = [10.0] * N_FEATURES
    extra = [{"feature": "combination", "value": 1e-5, "baseline": 1.0, "detail": "rare."}]
    reasons = explain(z, z, [1.0] * N_FEATURES, [0.0] * N_FEATURES, extra=extra, limit=3)
    assert len(reasons) == 4
    assert reasons[-1]["feature"] == "combination"


def test_explain_without_a_profile_gives_only_the_extra_reasons():
    assert explain([10.0] * N_FEATURES, [10.0] * N_FEATURES, [1.0] * N_FEATURES, None) == []


def test_a_baseline_at_zero_is_reported_as_zero():
    (r,) = explain(_z(deletes_15m=4.0), _z(deletes_15m=4.0), [3.0] * N_FEATURES, [0.0] * N_FEATURES)
    assert r["baseline"] == 0.0
    assert "usually about 0" in r["detail"]


@settings(max_examples=100, deadline=None)
@given(st.lists(st.floats(-20, 20), min_size=N_FEATURES, max_size=N_FEATURES))
def test_reasons_are_always_sorted_by_deviation(z):
    assume(any(v >= REASON_Z for v in z))
    reasons = explain(z, z, [1.0] * N_FEATURES, [0.0] * N_FEATURES, limit=N_FEATURES)
    devs = [z[FEATURE_NAMES.index(r["feature"])] for r in reasons]
    assert devs == sorted(devs, reverse=True)
    assert all(d >= REASON_Z for d in devs)


def test_a_p_value_at_a_threshold_is_never_below_the_one_just_above_it():
    """At a threshold the interpolation ends at exp(log(t0) + (log(t1) - log(t0))), a unit in the last place
    below t1 = 0.5 for this t0, where the segment above starts at 0.5 itself: the p-values are kept within
    each segment's tails, so they never rise with the statistic (compiled curve and pure Python alike)."""
    cal = Calibration(thresholds=(0.0, 1.0, 2.0), tails=(0.8789772014701512, 0.5, 0.25), beta=1.0)
    for lo, hi in ((1.0, math.nextafter(1.0, 2.0)), (math.nextafter(1.0, 0.0), 1.0), (0.5, 1.5)):
        assert cal.pvalue(lo) >= cal.pvalue(hi) and cal._py_pvalue(lo) >= cal._py_pvalue(hi), (lo, hi)
        assert cal.pvalue(lo) == cal._py_pvalue(lo) and cal.pvalue(hi) == cal._py_pvalue(hi)
    assert cal.pvalue(1.0) == 0.5
