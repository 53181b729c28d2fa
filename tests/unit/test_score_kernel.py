"""The compiled scoring (detector/_score.c) against its pure-Python references, bit for bit.

The kernel is the same IEEE double operations in the same order as the references (models/store.py
``Forest._py_means``, detector/scoring.py ``Calibration._py_pvalue``, detector/evidence.py
``_py_strength`` and ``_py_fisher``): every number must be equal to the last bit, and where the
reference raises or takes another path the kernel hands it over, so the outcome is the reference's.
``detector.scoring._score = None`` switches all of it off (as ``FLOWBREAKER_PURE_PYTHON=1`` does at import);
the kernel's objects are built here from the module itself, so these tests hold it to the references
whichever the environment runs.
"""
from __future__ import annotations

import copy
import json
import math
import os
import pickle
import subprocess
import sys
from array import array
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from detector import evidence, native, scoring
from detector.engine import Engine
from detector.events import decode_event
from detector.evidence import _py_fisher, _py_strength, fisher, strength
from detector.features import N_FEATURES
from detector.policy import load_policy
from detector.scoring import Calibration
from models import simulate as sim
from models.store import Forest, TrainedModel
from models.train import fit

REPO = Path(__file__).resolve().parents[2]
POLICY = load_policy(REPO / "examples" / "policy.toml")

_score = pytest.importorskip("detector._score", reason="the kernel is not built")


def bits(xs) -> bytes:
    """Every float to its 8 bytes: equality of these is equality to the last bit (-0.0, NaN included)."""
    return array("d", xs).tobytes()


def compiled(forest: Forest):
    return _score.Forest(forest.feature, forest.threshold, forest.path, forest.depth)


def curve(cal: Calibration):
    return _score.Curve(cal.thresholds, cal.tails, cal.beta)


EVIDENCE = _score.Evidence(tuple((idx, evidence._KIND_CODES[kind]) for idx, kind in evidence._IDX),
                           evidence.MIN_RARITY)


def outcome(fn):
    """What a call gives: its value's bits and type, or the type of what it raised."""
    try:
        v = fn()
    except Exception as err:  # noqa: BLE001  the reference's own errors are part of its behaviour
        return "raised", type(err)
    if isinstance(v, tuple):
        return "value", tuple(type(x) for x in v), bits([float(x) for x in v])
    return "value", type(v), bits([v])


@pytest.fixture()
def pure(monkeypatch):
    """Within the test, the references run (as with FLOWBREAKER_PURE_PYTHON=1)."""
    def switch_off():
        monkeypatch.setattr(scoring, "_score", None)
    return switch_off


def test_the_install_builds_the_kernel_and_the_scoring_runs_it():
    assert scoring._score is _score or os.environ.get(native.PURE_PYTHON_ENV) == "1"
    if scoring._score is not None:
        assert Calibration.laplace()._curve is not None
        assert evidence._compiled is not None


def test_the_environment_variable_forces_the_pure_python_scoring():
    probe = ("from detector import scoring, evidence; import sys; "
             "sys.exit(0 if scoring._score is None and evidence._compiled is None "
             "and scoring.Calibration.laplace()._curve is None else 1)")
    env = {**os.environ, "PYTHONPATH": str(REPO), native.PURE_PYTHON_ENV: "1"}
    assert subprocess.run([sys.executable, "-c", probe], cwd=REPO, env=env, timeout=60).returncode == 0
    env.pop(native.PURE_PYTHON_ENV)
    assert subprocess.run([sys.executable, "-c", probe], cwd=REPO, env=env, timeout=60).returncode == 1


def test_without_this_kernel_the_scoring_runs_the_references_and_says_so_once_on_stderr():
    probe = """
import sys
sys.modules["detector._score"] = None  # as when its build failed
from detector import evidence, native, scoring
assert native.kernels is not None and scoring._score is None and evidence._compiled is None
cal = scoring.Calibration.laplace()
print(cal._curve, round(cal.pvalue(3.0), 6), evidence.strength([2.0] * 25, moving=True, sensitive=True)[2])
"""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop(native.PURE_PYTHON_ENV, None)
    done = subprocess.run([sys.executable, "-c", probe], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["None", str(round(Calibration.laplace()._py_pvalue(3.0), 6)), "11"]
    assert done.stderr.count("detector._score is not built") == 1


# ------------------------------------------------------------------------- the forest's mean path lengths

def _means_both(forest: Forest, z: np.ndarray) -> tuple[bytes, bytes]:
    z = np.asarray(z, dtype=np.float64)
    h = np.empty(len(z))
    compiled(forest).means(np.ascontiguousarray(z), 10.0, h)
    return h.tobytes(), forest._py_means(z).tobytes()


# path lengths of every magnitude and sign, so that any other order of summation shows in the last bits
_length = st.one_of(st.floats(min_value=0.0, max_value=30.0), st.floats(min_value=-1e300, max_value=1e300),
                    st.floats(min_value=1e-300, max_value=1e-290), st.just(0.0), st.just(-0.0))


@settings(max_examples=200, deadline=None)
@given(st.lists(_length, min_size=1, max_size=700))
def test_the_mean_of_a_row_of_path_lengths_is_numpys_pairwise_mean_to_the_last_bit(lengths):
    # a forest of one-level trees whose root sends every row left (threshold +inf): the mean of the lengths
    T = len(lengths)
    path = np.zeros((T, 2))
    path[:, 0] = lengths
    path[:, 1] = 7.0
    forest = Forest(np.zeros((T, 1), dtype=np.int32), np.full((T, 1), np.inf), path, 256)
    with np.errstate(over="ignore", invalid="ignore"):  # sums beyond the largest double are part of the test
        got, want = _means_both(forest, np.zeros((3, 4)))
        assert want == np.repeat(np.array(lengths).mean(), 3).tobytes()
    assert got == want


# deviations: ordinary ones, exactly at the clip, beyond it, float32 rounding boundaries, NaN and infinities
_z = st.one_of(st.floats(min_value=-12.0, max_value=12.0), st.sampled_from([0.0, -0.0, 10.0, -10.0, 1e300, -1e300]),
               st.floats(allow_nan=True, allow_infinity=True), st.floats(width=32, min_value=-11.0, max_value=11.0))


@st.composite
def forests_and_rows(draw):
    depth = draw(st.integers(1, 5))
    T = draw(st.one_of(st.integers(1, 20), st.sampled_from([127, 128, 129, 136, 255, 300])))
    d = draw(st.integers(1, 6))
    inner = 2 ** depth - 1
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    feature = rng.integers(0, d, size=(T, inner)).astype(np.int32)
    # thresholds: arbitrary doubles, float32 values the rows can equal exactly, and padding (+inf)
    threshold = np.where(rng.random((T, inner)) < 0.5, rng.normal(0.0, 4.0, (T, inner)),
                         rng.normal(0.0, 4.0, (T, inner)).astype(np.float32).astype(np.float64))
    threshold[rng.random((T, inner)) < 0.3] = np.inf
    path = rng.random((T, inner + 1)) * 10.0 ** rng.integers(-3, 4, size=(T, inner + 1))
    rows = draw(st.lists(st.lists(_z, min_size=d, max_size=d), min_size=0, max_size=40))
    # some rows made of the thresholds themselves (ties go left)
    for _ in range(draw(st.integers(0, 5))):
        t = rng.integers(T)
        rows.append([float(threshold[t, rng.integers(inner)]) for _ in range(d)])
    z = np.array(rows, dtype=np.float64).reshape(len(rows), d)
    return Forest(feature, threshold, path, 256), z


@settings(max_examples=150, deadline=None)
@given(forests_and_rows())
def test_the_compiled_walk_and_mean_of_a_random_forest_equal_the_reference(case):
    forest, z = case
    with np.errstate(over="ignore", invalid="ignore"):  # rows of 1e300 do not fit float32
        got, want = _means_both(forest, z)
    assert got == want


def test_a_deviation_equal_to_a_threshold_goes_left_in_every_lane_of_the_walk():
    # one-level trees on feature t % 2 at a float32 value; 37 rows (two blocks of 16 walked side by side and 5
    # one by one), each either exactly at the thresholds or one float32 step above them
    c = np.float32(1.3)
    up = float(np.nextafter(c, np.float32(np.inf)))
    T = 5
    path = np.tile([2.0, 3.0], (T, 1))
    forest = Forest(np.array([[t % 2] for t in range(T)], dtype=np.int32), np.full((T, 1), float(c)), path, 256)
    at = np.arange(37) % 3 == 0
    z = np.where(at[:, None], float(c), up) * np.ones((37, 2))
    got, want = _means_both(forest, z)
    assert got == want == np.where(at, 2.0, 3.0).tobytes()


# the kernel compares the float32 rows with each threshold kept as the largest float32 not above it: thresholds
# at a float32 value, a double step either side of one, halfway between two, in the float32 subnormals, beyond
# the float32 range and infinite or NaN; rows at those floats and their float32 neighbours
_f32 = st.floats(width=32, allow_nan=False, allow_infinity=False)


@st.composite
def _edge_threshold(draw):
    c = float(draw(_f32))
    with np.errstate(over="ignore"):
        up = float(np.nextafter(np.float32(c), np.float32(np.inf)))
    return draw(st.sampled_from([
        c, float(np.nextafter(c, np.inf)), float(np.nextafter(c, -np.inf)), c + (up - c) / 2 if math.isfinite(up)
        else c, 1e-320, -1e-320, 2.0 ** -149, -(2.0 ** -150), 3.4028235677973366e38, 3.5e38, -3.5e38, 1e300,
        -1e300, np.inf, -np.inf, np.nan, 0.0, -0.0]))


@st.composite
def _edge_row_value(draw, thresholds):
    t = draw(st.sampled_from(thresholds))
    with np.errstate(over="ignore"):  # thresholds beyond the float32 range round to infinity
        f = np.float32(t) if not math.isnan(t) else np.float32(0.0)
        near = [float(np.nextafter(f, np.float32(np.inf))), float(np.nextafter(f, np.float32(-np.inf)))]
    return draw(st.sampled_from([t, float(f), *near, np.nan, np.inf, -np.inf, 1e300]))


@settings(max_examples=200, deadline=None)
@given(st.data(), st.sampled_from([10.0, np.inf, 1e-30, 3.5e38, 0.0, -0.0, -1.0, np.nan]))
def test_thresholds_between_floats_send_every_float_row_where_the_double_comparison_does(data, clip):
    depth, T, d = data.draw(st.integers(1, 4)), data.draw(st.integers(1, 12)), data.draw(st.integers(1, 3))
    inner = 2 ** depth - 1
    thresholds = data.draw(st.lists(_edge_threshold(), min_size=T * inner, max_size=T * inner))
    threshold = np.array(thresholds, dtype=np.float64).reshape(T, inner)
    feature = np.array(data.draw(st.lists(st.integers(0, d - 1), min_size=T * inner, max_size=T * inner)),
                       dtype=np.int32).reshape(T, inner)
    path = np.arange(T * (inner + 1), dtype=np.float64).reshape(T, inner + 1) * 1.5 + 0.25
    forest = Forest(feature, threshold, path, 256)
    n = data.draw(st.integers(1, 40))  # full blocks of 16 rows and a partial one
    z = np.array(data.draw(st.lists(_edge_row_value(thresholds), min_size=n * d, max_size=n * d)),
                 dtype=np.float64).reshape(n, d)
    with np.errstate(over="ignore", invalid="ignore"):
        zr = np.clip(z, -clip, clip).astype(np.float32).astype(np.float64)
        want = forest.path.ravel()[forest._py_leaves(zr)].mean(axis=1)
    h = np.empty(n)
    compiled(forest).means(z, clip, h)
    assert h.tobytes() == want.tobytes()


def test_a_forest_that_does_not_fit_the_rows_is_refused():
    rng = np.random.default_rng(3)
    feature, threshold, path = np.zeros((4, 7), dtype=np.int32), np.zeros((4, 7)), rng.random((4, 8))
    compiled = _score.Forest(feature, threshold, path, 3)
    with pytest.raises(ValueError):  # the depth does not match the layout
        _score.Forest(feature, threshold, path, 2)
    with pytest.raises(ValueError):  # out of another length
        compiled.means(np.zeros((2, 3)), 10.0, np.empty(3))
    with pytest.raises(TypeError):
        _score.Forest(feature.astype(np.int64), threshold, path, 3)
    for at in ((1, 2), (0, 0), (3, 6), (3, 5)):  # a feature the rows do not have
        bad = feature.copy()
        bad[at] = 3
        with pytest.raises(IndexError):
            _score.Forest(bad, threshold, path, 3).means(np.zeros((2, 3)), 10.0, np.empty(2))
    # a negative feature index: the compiled copy refuses it and the forest keeps the reference
    bad = feature.copy()
    bad[2, 1] = -1
    with pytest.raises(ValueError):
        _score.Forest(bad, threshold, path, 3)
    assert Forest(bad, threshold, path, 256)._compiled is None
    assert (Forest(feature, threshold, path, 256)._compiled is not None) == (scoring._score is not None)


def test_the_compiled_forest_keeps_only_what_a_walk_can_reach_and_the_arrays_cannot_change_under_it(replayed):
    forest = replayed[0].forest
    T, inner = forest.feature.shape
    one = compiled(forest)
    # the trained trees are mostly padding: a fifth of the complete trees' nodes and slots is kept
    assert one.nodes < 0.25 * T * (2 * inner + 1)
    with pytest.raises(ValueError):
        forest.threshold[0, 0] = 1.0
    again = copy.deepcopy(one)
    z = replayed[2][:50]
    a, b = np.empty(len(z)), np.empty(len(z))
    one.means(z, 10.0, a)
    again.means(z, 10.0, b)
    assert a.tobytes() == b.tobytes()


# ------------------------------------------------------------------------- calibrations

_raw = st.one_of(st.floats(min_value=-5.0, max_value=30.0), st.floats(allow_nan=True, allow_infinity=True),
                 st.integers(-3, 40))


@st.composite
def calibrations(draw):
    n = draw(st.integers(1, 12))
    thr = sorted(draw(st.lists(st.floats(min_value=-10.0, max_value=20.0), min_size=n, max_size=n)))
    tails = draw(st.lists(st.one_of(st.floats(min_value=1e-300, max_value=1.0), st.floats(min_value=1e-8, max_value=1e3)),
                          min_size=n, max_size=n))
    beta = draw(st.one_of(st.floats(min_value=1e-6, max_value=20.0), st.just(1 / 2 ** 0.5)))
    return Calibration(tuple(thr), tuple(tails), beta)


@settings(max_examples=300, deadline=None)
@given(calibrations(), st.lists(_raw, min_size=1, max_size=20), st.data())
def test_a_compiled_pvalue_equals_the_reference(cal, raws, data):
    c = curve(cal)
    # the thresholds themselves, and the points halfway between them, are where bisection decides
    raws += list(cal.thresholds) + [(a + b) / 2 for a, b in zip(cal.thresholds, cal.thresholds[1:])]
    raws.append(np.float64(data.draw(st.floats(min_value=-5.0, max_value=30.0))))
    for raw in raws:
        want = outcome(lambda: cal._py_pvalue(raw))
        got = c.pvalue(raw)
        if got is None:  # handed to the reference: only what is not a float, and NaN
            assert type(raw) is not float or math.isnan(raw)
        else:
            assert outcome(lambda: got) == want
        assert outcome(lambda: cal.pvalue(raw)) == want  # the product's way, whichever runs


@settings(max_examples=100, deadline=None)
@given(calibrations(), st.lists(st.floats(allow_nan=True, allow_infinity=True), max_size=40))
def test_the_pvalues_of_an_array_equal_the_reference_one_by_one(cal, raws):
    x = np.array(raws, dtype=np.float64)
    out = np.empty(len(x))
    if any(math.isnan(v) for v in raws):  # the reference decides NaN, and may raise (division by zero)
        assert curve(cal).pvalues(x, out) is False
        return
    assert curve(cal).pvalues(x, out) is True
    assert out.tobytes() == bits([cal._py_pvalue(float(v)) for v in x])
    cal.pvalues_into(x, out)
    assert out.tobytes() == bits([cal._py_pvalue(float(v)) for v in x])


def test_calibrations_the_kernel_does_not_take_keep_the_reference_and_its_errors():
    odd = [Calibration((0.0, 1.0), (1.0, 0.0), 1.0),        # a tail of 0: log raises between the thresholds
           Calibration((0, 1, 2), (1.0, 0.5, 0.25), 1.0),    # ints
           Calibration([0.0, 1.0], [1.0, 0.5], 1.0),         # lists, which could change later
           Calibration((1.0, 0.0), (1.0, 0.5), 1.0),         # unsorted
           Calibration((0.0, 1.0), (1.0, 0.5), -1.0)]        # a negative beta: exp may overflow
    for cal in odd:
        assert cal._curve is None
        for raw in (-1.0, 0.5, 1.0, 3.0, 2000.0):
            assert outcome(lambda: cal.pvalue(raw)) == outcome(lambda: cal._py_pvalue(raw))
    with pytest.raises(ValueError):
        odd[0].pvalue(0.5)


def test_a_calibration_copies_and_pickles_with_its_compiled_curve():
    cal = Calibration.laplace()
    for other in (copy.copy(cal), copy.deepcopy(cal), pickle.loads(pickle.dumps(cal))):
        assert other == cal and (other._curve is not None) == (scoring._score is not None)
        assert bits(other.pvalue(x) for x in (0.5, 3.3, 20.0)) == bits(cal._py_pvalue(x) for x in (0.5, 3.3, 20.0))


# ------------------------------------------------------------------------- evidence

_rarity = st.one_of(st.just(0.0), st.just(1.0), st.floats(min_value=0.0, max_value=12.0), st.just(-0.0),
                    st.floats(allow_nan=True, allow_infinity=True))


@settings(max_examples=400, deadline=None)
@given(st.lists(_rarity, min_size=N_FEATURES, max_size=N_FEATURES), st.booleans(), st.booleans(), st.booleans())
def test_the_compiled_strength_equals_the_reference(r, moving, sensitive, established):
    got = EVIDENCE.strength(r, moving, sensitive, established)
    assert got is not None
    assert outcome(lambda: got) == outcome(lambda: _py_strength(r, moving=moving, sensitive=sensitive,
                                                                 established=established))
    assert (outcome(lambda: strength(tuple(r), moving=moving, sensitive=sensitive))
            == outcome(lambda: _py_strength(r, moving=moving, sensitive=sensitive)))
    # r as an array('d') (what the engine's rarities kernel gives): the same numbers
    assert outcome(lambda: EVIDENCE.strength(array("d", r), moving, sensitive, established)) == outcome(lambda: got)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.one_of(_rarity, st.integers(0, 5)), min_size=N_FEATURES - 1, max_size=N_FEATURES),
       st.sampled_from([True, False, 1, 0, None, "yes"]), st.booleans())
def test_what_the_compiled_strength_does_not_take_goes_to_the_reference(r, moving, sensitive):
    got = EVIDENCE.strength(r, moving, sensitive, True)
    if got is not None:
        assert outcome(lambda: got) == outcome(lambda: _py_strength(r, moving=moving, sensitive=sensitive))
    # ints among the rarities, flags that are not bools, a row too short: the reference's result or error
    assert (outcome(lambda: strength(r, moving=moving, sensitive=sensitive))
            == outcome(lambda: _py_strength(r, moving=moving, sensitive=sensitive)))


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.floats(min_value=-400.0, max_value=400.0), st.floats(allow_nan=True, allow_infinity=True),
                 st.integers(-3, 50)),
       st.one_of(st.integers(-2, 40), st.just(1.0), st.just(True)))
def test_fisher_compiled_equals_the_reference(total, k):
    got = _score.fisher(total, k)
    if got is not None:
        assert outcome(lambda: got) == outcome(lambda: _py_fisher(total, k))
    else:  # handed to the reference: not a float and an int, or exp(-x) overflowing (it raises)
        assert type(total) is not float or type(k) is not int or -total * 2.302585092994046 > 709.0
    assert outcome(lambda: fisher(total, k)) == outcome(lambda: _py_fisher(total, k))


# ------------------------------------------------------------------------- the real trained model

@pytest.fixture(scope="module")
def replayed():
    """A model trained on a simulated fleet's history and the z rows of the rest as the engine reads them."""
    events, labels = sim.simulate(n_agents=8, days=6, seed=11)
    history, rest = sim.split_history(events, labels)
    card, arrays = fit([decode_event(e) for e in history], POLICY, seed=0)
    model = TrainedModel(card, arrays)
    rest = [decode_event(e) for e in rest]
    decisions = Engine(policy=POLICY, model=model).process_batch(rest)
    z = np.array([d.z for d in decisions if d.z is not None], dtype=np.float64)
    return model, rest, z


def test_the_trained_models_combination_pvalues_equal_the_reference(replayed, pure):
    model, _, z = replayed
    assert model.forest.feature.shape[0] == 100 and len(z) > 500
    batches = [z[i:i + 128] for i in range(0, len(z), 128)] + [z[:1], z[:7], z]
    means = [_means_both(model.forest, b) for b in batches]
    assert all(got == want for got, want in means)
    fast = [model.combination_pvalues(b).tobytes() for b in batches]
    pure()
    assert fast == [np.array([model.comb_calibration.pvalue(float(v)) for v in model.forest.score_samples(b)]).tobytes()
                    for b in batches]


def test_the_engines_decisions_with_a_trained_model_are_the_same_without_the_kernel(replayed, pure):
    model, rest, _ = replayed

    def records():
        return [json.dumps(d.record, sort_keys=True) for d in Engine(policy=POLICY, model=model).process_batch(rest)]

    fast = records()
    pure()
    assert records() == fast


# ------------------------------------------------------------------------- a score to 4 places

_near_ties = st.integers(-10 ** 8, 10 ** 8).flatmap(
    lambda k: st.sampled_from([(k + 0.5) / 1e4, math.nextafter((k + 0.5) / 1e4, math.inf),
                               math.nextafter((k + 0.5) / 1e4, -math.inf), k / 1e4]))


@settings(max_examples=3000, deadline=None)
@given(st.one_of(st.floats(0.0, 1.0), st.floats(-2e4, 2e4), st.floats(allow_nan=True, allow_infinity=True),
                 _near_ties, st.floats(-1e-3, 1e-3)))
def test_round4_is_round_to_4_places_to_the_last_bit(x):
    assert bits([_score.round4(x)]) == bits([round(x, 4)]) == bits([scoring._py_round4(x)])


def test_round4_of_what_is_not_a_float_is_what_round_gives():
    assert _score.round4(3) == 3 and type(_score.round4(3)) is int
    assert _score.round4(True) == round(True, 4)
    with pytest.raises(TypeError):
        _score.round4("0.5")


# ------------------------------------------------------------------------- an action's score and harm at once

_p = st.one_of(st.floats(0.0, 1.0), st.sampled_from([0.0, 1.0, 1e-6, 1e-3, 5e-7, float("nan"), 2.0, -0.5]),
               st.floats(1e-9, 1e-2), st.floats(allow_nan=True, allow_infinity=True))
_bounds = st.sampled_from([(0.9, 0.75, 0.5, 0.3, scoring.P_FLOOR), (1.0, 0.8, 0.6, 0.35, scoring.P_FLOOR),
                          (0.5, 0.5, 0.5, 0.5, scoring.P_FLOOR)])  # P_FLOOR: score_of's, which the reference uses


@settings(max_examples=2000, deadline=None)
@given(_p, st.one_of(st.none(), _p), _p, _bounds)
def test_scored_equals_the_reference_bit_for_bit(p_stat, p_comb, p_harm, bounds):
    from dataclasses import replace

    from detector.engine import _bounds, _py_scored
    from detector.policy import Thresholds

    th = replace(Thresholds(), critical=bounds[0], high=bounds[1], medium=bounds[2], low=bounds[3])
    assert _bounds(th) == bounds
    got = _score.scored(p_stat, p_comb, p_harm, bounds)
    ref = _py_scored(p_stat, p_comb, p_harm, th)
    assert got is not None and bits(got[:2]) == bits(ref[:2]) and got[2:] == ref[2:]


def test_scored_leaves_what_is_not_a_float_to_the_reference():
    b = (0.9, 0.75, 0.5, 0.3, 1e-6)
    assert _score.scored(1, 0.5, 1.0, b) is None and _score.scored(0.5, 1, 1.0, b) is None
    assert _score.scored(0.5, None, 1.0, b[:4]) is None and _score.scored(0.5, None, 1.0, (1,) + b[1:]) is None


@pytest.fixture(scope="module")
def harm_engines(replayed):
    """An engine without a model (the generic calibration, no evidence calibration) and one with the trained
    model (its statistic's and its evidence's calibrations)."""
    return Engine(policy=POLICY), Engine(policy=POLICY, model=replayed[0])


@settings(max_examples=1500, deadline=None)
@given(r=st.lists(_rarity, min_size=N_FEATURES, max_size=N_FEATURES), moving=st.booleans(), sensitive=st.booleans(),
       established=st.booleans(), trained=st.booleans())
def test_the_harm_pvalue_equals_the_engines_reference_bit_for_bit(harm_engines, r, moving, sensitive, established,
                                                                  trained):
    """detector._score.Evidence.harm_pvalue against Engine._py_harm_pvalue, with a trained model's calibrations
    and without a model, r as a list and as an array."""
    eng = harm_engines[trained]
    assert eng._harm_curves is not None and (eng._harm_curves[1] is not None) == trained
    ref = outcome(lambda: eng._py_harm_pvalue(r, moving, sensitive, established))
    for rr in (r, array("d", r)):
        got = EVIDENCE.harm_pvalue(rr, moving, sensitive, established, *eng._harm_curves)
        if got is None:  # a NaN, or fisher's overflow: the reference decides
            assert any(math.isnan(v) or math.isinf(v) for v in r)
        else:
            assert outcome(lambda: got) == ref


def test_the_harm_kernel_leaves_what_it_does_not_take_to_the_reference(harm_engines):
    eng = harm_engines[1]
    r = [5.0] * N_FEATURES
    assert EVIDENCE.harm_pvalue(r, 1, True, True, *eng._harm_curves) is None  # a flag not a bool
    assert EVIDENCE.harm_pvalue(r, True, True, True, eng._cal, None) is None  # a Calibration, not its curve
    assert EVIDENCE.harm_pvalue(r[:3], True, True, True, *eng._harm_curves) is None  # too short
    assert EVIDENCE.harm_pvalue([0.0] * N_FEATURES, True, True, True, *eng._harm_curves) == 1.0  # no evidence
