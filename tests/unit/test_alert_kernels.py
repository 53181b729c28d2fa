"""The compiled alert path (detector/_score.c: explain, iso_ms) against its pure-Python references, to the last byte.

``detector._score.explain`` is detector/scoring.py's ``_py_explain`` (an alert's reasons: which features, in which
order, their rounded values and baselines, the sentences with the numbers formatted as ``_fmt`` does), and
``detector._score.iso_ms`` is detector/timestamps.py's ``_py_iso_ms`` (an instant as episodes write it, milliseconds
and ``Z``: CPython's fromtimestamp rounding, half to even at the microsecond, then truncated to milliseconds). Where
the kernel does not take an input (an int, a short row, an instant outside the years 1 to 9999, NaN) it calls the
reference, so the outcome is the reference's in every case: the same text, the same floats, the same exception.
The kernels are set up here from the module itself, so these tests hold them to the references whichever the
environment runs (``FLOWBREAKER_PURE_PYTHON=1`` too); the engine test swaps them in and out of the Python lines of
``Engine.process_batch`` and compares every decision, episode record and trace."""
from __future__ import annotations

import math
import struct
from array import array
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from detector import engine as E
from detector import episodes as EP
from detector import scoring, timestamps
from detector.events import decode_event
from detector.features import FEATURES, N_FEATURES
from detector.scoring import _py_explain
from detector.timestamps import _py_iso_ms
# tests/unit is on the path (pytest's default import mode; test file names are unique)
from test_decide_fused import TIGHT, batches, run, streams
from test_read_fused import fleet  # noqa: F401

try:
    from detector import _score as K
except ImportError:  # no compiler: nothing compiled to compare
    K = None

pytestmark = pytest.mark.skipif(K is None or not hasattr(K, "explain"), reason="detector._score is not built")

if K is not None and hasattr(K, "explain"):
    K.explain_setup(_py_explain, tuple(f.name for f in FEATURES),
                    tuple(scoring._template_parts(f.detail) for f in FEATURES), scoring.REASON_Z,
                    scoring.REASON_NEGLOG, round)
    K.iso_setup(_py_iso_ms)

FIRST = datetime(1, 1, 1, tzinfo=timezone.utc).timestamp()  # the kernel's range: years 1 to 9999
END = datetime(9999, 12, 31, 23, 59, 59, tzinfo=timezone.utc).timestamp() + 1.0


def outcome(f, *args, **kw):
    """What f gives: its result as repr shows it (every float's digits, -0.0 and nan included) with the types of the
    reasons' values, or the exception it raises (type and message)."""
    try:
        got = f(*args, **kw)
    except Exception as err:  # noqa: BLE001 - the reference's exception is the outcome to match
        return ("raises", type(err), str(err))
    types = [tuple(type(v) for v in r.values()) for r in got] if isinstance(got, list) else type(got)
    return repr(got), types


# --------------------------------------------------------------------------- iso_ms

def _bits(n: int) -> float:
    return struct.unpack("<d", struct.pack("<Q", n))[0]


@st.composite
def near_boundaries(draw):
    """An instant on or next to a millisecond's or a microsecond's half (where fromtimestamp rounds), anywhere from
    before year 1 to after year 9999, stepped a few doubles either way."""
    sec = draw(st.one_of(st.integers(-2 ** 31, 2 ** 34), st.integers(int(FIRST) - 3, int(FIRST) + 3),
                         st.integers(int(END) - 3, int(END) + 3), st.integers(-3, 3)))
    ms = draw(st.integers(0, 999))
    off = draw(st.sampled_from([0.0, 0.0005, -0.0005, 0.0000005, -0.0000005, 0.0000015, 0.9999995, -0.9999995,
                                0.999999, 0.0000004999]))
    t = sec + ms / 1000 + off
    for _ in range(draw(st.integers(0, 3))):
        t = math.nextafter(t, draw(st.sampled_from([math.inf, -math.inf])))
    return t


@settings(max_examples=3000, deadline=None)
@given(st.one_of(st.floats(), st.floats(-1e11, 3e11), st.floats(FIRST - 2, FIRST + 2), st.floats(END - 2, END + 2),
                 st.integers(0, 2 ** 64 - 1).map(_bits), near_boundaries()))
@example(0.0)
@example(-0.0)
@example(-0.5)
@example(-0.0000005)
@example(0.0000005)
@example(0.0000015)
@example(1772442000.0005)
@example(1772442000.9999995)
@example(FIRST)
@example(FIRST - 0.0000005)
@example(FIRST - 0.0000006)
@example(END - 0.0000005)
@example(END - 0.0000006)
@example(1e12)
@example(-1e12)
@example(1e300)
@example(math.inf)
@example(-math.inf)
@example(math.nan)
def test_iso_ms_is_the_reference_for_every_float(t):
    assert outcome(K.iso_ms, t) == outcome(_py_iso_ms, t)


@given(st.one_of(st.integers(-2 ** 70, 2 ** 70), st.datetimes(timezones=st.just(timezone.utc)),
                 st.datetimes(timezones=st.just(timezone(timedelta(hours=5, minutes=30)))),
                 st.text(max_size=3), st.none()))
def test_iso_ms_hands_what_is_not_a_float_to_the_reference(t):
    assert outcome(K.iso_ms, t) == outcome(_py_iso_ms, t)


def test_iso_ms_writes_what_iso_utc_writes():
    assert K.iso_ms(1772442000.25) == timestamps.iso_utc(1772442000.25) == "2026-03-02T09:00:00.250Z"
    assert K.iso_ms(-0.0000005) == "1970-01-01T00:00:00.000Z"  # half of a microsecond: to even (0)
    assert K.iso_ms(-0.0000015) == "1969-12-31T23:59:59.999Z"  # to even (-2 us): truncated to the millisecond
    assert K.iso_ms(FIRST) == "0001-01-01T00:00:00.000Z"
    with pytest.raises(ValueError):  # the reference's: year 10000 is out of range
        K.iso_ms(END)


# --------------------------------------------------------------------------- explain

_VALUES = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.sampled_from(
    [0.0, -0.0, 2.0, 2.5, 3.0, 2.4999999999999996, 1.9999999999999998, 10.0, 9.999999, 99.99999999, 100.0, 99.95,
     0.0005, 0.00049999999999999996, 1234.5675, 1e16, 709.0, 710.0, 5e-324]), st.floats(-5.0, 20.0))


@st.composite
def rows(draw, n=N_FEATURES):
    """A feature row: an array('d') (the engine's), or a list or tuple (floats, sometimes an int or a short row)."""
    vals = draw(st.lists(_VALUES, min_size=n, max_size=n))
    kind = draw(st.integers(0, 9))
    if kind < 6:
        return array("d", vals)
    if kind == 6 and vals:
        vals[draw(st.integers(0, n - 1))] = draw(st.integers(-3, 300))
    if kind == 7:
        vals = vals[:draw(st.integers(0, n))]
    return tuple(vals) if kind == 8 else vals


@st.composite
def reasons_inputs(draw):
    """z and r with many features over the thresholds (ties in r and z included), x, loc (or None), extra, limit."""
    n = N_FEATURES
    z = draw(rows())
    r = draw(rows())
    if draw(st.booleans()) and isinstance(z, array) and isinstance(r, array):  # most features named, with ties
        for i in range(n):
            z[i] = draw(st.sampled_from([2.5, 3.0, 3.0, 7.25, 2.4]))
            r[i] = draw(st.sampled_from([2.0, 2.0, 4.5, 1.5, 6.0]))
    x = draw(rows())
    loc = draw(st.one_of(st.none(), rows()))
    kw = {}
    if draw(st.booleans()):
        kw["extra"] = draw(st.one_of(st.none(), st.just([]), st.just([{"feature": "combination", "value": 1.0}]),
                                     st.just(({"feature": "t"},))))
    if draw(st.booleans()):
        kw["limit"] = draw(st.one_of(st.integers(-2, 30), st.just(True), st.just(2.0)))
    return z, r, x, loc, kw


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(reasons_inputs())
def test_explain_is_the_reference(args):
    z, r, x, loc, kw = args
    assert outcome(K.explain, z, r, x, loc, **kw) == outcome(_py_explain, z, r, x, loc, **kw)


def test_explain_names_the_rarest_first_as_the_reference_does():
    z = array("d", [0.0] * N_FEATURES)
    r = array("d", [0.0] * N_FEATURES)
    x = array("d", [float(i) * 7.5 for i in range(N_FEATURES)])
    loc = array("d", [0.5] * N_FEATURES)
    for i, (zi, ri) in {3: (4.0, 3.0), 7: (3.0, 3.0), 12: (5.0, 3.0), 20: (9.0, 2.5), 1: (2.5, 2.0)}.items():
        z[i], r[i] = zi, ri
    got = K.explain(z, r, x, loc, extra=[{"feature": "x"}])
    assert got == _py_explain(z, r, x, loc, extra=[{"feature": "x"}])
    # rarest first (r), then the larger deviation (z): 12, 3 and 7 are as rare, 20 and 1 less
    assert [g["feature"] for g in got] == ["event_volume", "volume_1h", "fanout_15m", "task_novel_steps",
                                           "rate_15m", "x"]
    assert got[1]["detail"] == ("22.5 sensitivity-weighted records handled in the last hour; usually about 0.65 "
                                "(4.0 robust deviations above).")
    assert K.explain(z, r, x, None) == [] and K.explain(z, r, x, loc, limit=0) == []
    with pytest.raises(TypeError):  # the reference's: no such keyword
        K.explain(z, r, x, loc, other=1)


# --------------------------------------------------------------------------- the engine

class Counting:
    def __init__(self, f):
        self.f, self.calls, self.named = f, 0, 0

    def __call__(self, *args, **kw):
        self.calls += 1
        got = self.f(*args, **kw)
        self.named += bool(got) if isinstance(got, list) else 0
        return got


def run_with(monkeypatch, compiled: bool, steps, **kw):
    """test_decide_fused's run (every decision, state, trace and ring after each step) with the alert path's kernels
    in the Python lines of process_batch (compiled) or their references; the calls counted."""
    explain, iso = Counting(K.explain if compiled else _py_explain), Counting(K.iso_ms if compiled else _py_iso_ms)
    monkeypatch.setattr(E, "explain", explain)
    monkeypatch.setattr(EP, "iso_ms", iso)
    compiled_loops = ("decide", "admit") if E._decide is not None and E._admit is not None else ()
    out, _, eng = run(monkeypatch, steps, compiled_loops, **kw)
    return out, explain, iso


@pytest.mark.parametrize("trained", [True, False])
def test_the_engine_decides_the_same_with_the_compiled_alert_path(fleet, monkeypatch, trained):
    model, later = fleet
    steps = batches(later, 97)
    steps[3:3] = [("verdict", later[300].t), ("freeze", later[301].agent_id, later[301].t)]
    for policy in (None, TIGHT):
        kw = {"model": model if trained else None}
        if policy is not None:
            kw["policy"] = policy
        without, _, _ = run_with(monkeypatch, False, steps, **kw)
        with_k, explain, iso = run_with(monkeypatch, True, steps, **kw)
        assert with_k == without
        assert explain.named >= 5 and iso.calls >= 5  # the kernels ran, on alerts that name reasons


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow, HealthCheck.data_too_large])
@given(steps=streams())
def test_generated_streams_decide_the_same_with_the_compiled_alert_path(fleet, monkeypatch, steps):
    model, _ = fleet
    without, _, _ = run_with(monkeypatch, False, steps, model=model, policy=TIGHT)
    with_k, _, _ = run_with(monkeypatch, True, steps, model=model, policy=TIGHT)
    assert with_k == without


# --------------------------------------------------------------------------- the trace's entries

from detector import trace as TR  # noqa: E402

try:
    from detector import _native as NK
except ImportError:
    NK = None
ENTRIES = getattr(NK, "trace_entries", None)
needs_entries = pytest.mark.skipif(ENTRIES is None, reason="detector._native is not built")

_CELL = st.one_of(st.none(), st.text(max_size=4), st.integers(-5, 10 ** 12), st.floats(), st.booleans(),
                  st.lists(st.text(max_size=3), max_size=12), st.dictionaries(st.text(max_size=2), st.integers(),
                                                                               max_size=2))


@st.composite
def packed_rows(draw):
    """What a trace block decodes to: rows of 18 values (destinations a list, or something without len()), of 19
    (more than 10 destinations), of any other length, and things that are not lists (a dict kept whole)."""
    out = []
    for _ in range(draw(st.integers(0, 12))):
        kind = draw(st.integers(0, 9))
        if kind < 6:
            row = draw(st.lists(_CELL, min_size=18, max_size=18))
            if kind < 4:
                row[8] = draw(st.lists(st.text(max_size=3), max_size=10))
        elif kind == 6:
            row = draw(st.lists(_CELL, min_size=19, max_size=19))
        elif kind == 7:
            row = draw(st.lists(_CELL, max_size=22))
        else:
            row = draw(st.one_of(st.dictionaries(st.sampled_from(TR.TRACE_FIELDS), _CELL, max_size=3), st.text(),
                                 st.tuples(st.integers())))
        out.append(row)
    return out


def entries_outcome(f, rows):
    try:
        got = f(rows)
    except Exception as err:  # noqa: BLE001
        return ("raises", type(err), str(err))
    # the dicts with their keys' order, every value as repr shows it (nan, -0.0), and which objects they are
    return repr([list(e.items()) if isinstance(e, dict) else e for e in got]), [
        [id(v) for v in e.values()][:9] if isinstance(e, dict) else id(e) for e in got]


@needs_entries
@settings(max_examples=800, deadline=None)
@given(packed_rows())
def test_trace_entries_is_the_reference(rows):
    def kernel(rs):
        got = ENTRIES(rs, TR.TRACE_FIELDS)
        return [TR._entry(r) for r in rs] if got is None else got
    assert entries_outcome(kernel, rows) == entries_outcome(lambda rs: [TR._entry(r) for r in rs], rows)


@needs_entries
def test_trace_entries_leaves_what_it_does_not_take_to_the_reference():
    row = ["e"] * 18
    row[8] = None  # len(None): the reference's TypeError
    assert ENTRIES([row], TR.TRACE_FIELDS) is None
    assert ENTRIES((row,), TR.TRACE_FIELDS) is None and ENTRIES([row], TR.TRACE_FIELDS[:-1]) is None
    with pytest.raises(TypeError):
        TR._entries([row])
    row[8] = ["a", "b"]
    (e,) = ENTRIES([row], TR.TRACE_FIELDS)
    assert list(e) == list(TR.TRACE_FIELDS) and e["destination_count"] == 2 and e["severity"] == "e"


@needs_entries
@pytest.mark.parametrize("rest", [False, True])
def test_snapshots_are_the_same_with_and_without_trace_entries(monkeypatch, rest):
    def fill():
        store = TR.TraceStore(length=50)
        for i in range(130):
            agent = f"a{i % 3}"
            ev = decode_event({"event_id": f"e{i}", "ts": "2026-03-02T09:00:00Z", "agent_id": agent,
                               "operator_id": "o", "tool": "mail.send", "action": "send", "resource": "r://x",
                               "sensitivity": "internal", "destinations": [f"d{j}@x.example" for j in range(i % 14)]})
            store.add(agent, ev, 0.25, "ok", ["external"] * (i % 3))
            if i % 7 == 0:
                store.append(agent, {"event_id": f"x{i}", "note": "kept whole"})
            if rest and i % 40 == 39:
                store.rest(agent)
        return {a: store.snapshot(a) for a in ("a0", "a1", "a2", "none")}
    with_k = fill()
    monkeypatch.setattr(TR, "_k_entries", None)
    assert repr(fill()) == repr(with_k) and any(len(s) == 50 for s in with_k.values())
