"""The read admit takes itself (detector._native.admit's ad_read): Engine._read's first lines (what the agent's peers
adopted, its pending items (detector._native.pending_quiet), the extraction, the fused read) run in C for the plain
case, without the Python frame of _read, which is called back for anything else. The same event streams through an
engine that takes it and through engines whose _read runs its Python lines (a subclass's _read calling Engine._read,
and an engine without any kernel under _read) give the same decisions, verdict records and agent state bytes after
every batch; the new path is what most events of a simulated fleet take (counted: the Python frames of _read that are
left), and the generated streams reach what it must get right (peers' adoptions, pending items met again, the fused
read leaving an action to the Python lines). The pending items' kernel is held to its reference, _py_pending_quiet."""
from __future__ import annotations

import dataclasses
import math
import sys
from array import array

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from detector import engine as E
from detector.features import K_DEST, K_PRINCIPAL, K_TOOL, item_key
from detector.manifest import ManifestBook, parse_manifest
from detector.policy import Thresholds
from detector.verdicts import Verdict

# the fleet, the policy, the generated streams and the history before them: test_read_fused's (tests/unit is on the
# path: pytest's default import mode; test file names are unique, tests/unit/test_suite_layout.py)
from test_read_fused import HISTORY, MANIFEST, POLICY, batches, fleet, outcome, streams  # noqa: F401

try:  # (also with FLOWBREAKER_PURE_PYTHON=1, where the engine does not take it: its kernel is held to the reference)
    from detector import _native
except ImportError:
    _native = None
built = pytest.mark.skipif(_native is None, reason="the compiled kernel is not built")
#: the engine's tests: the kernels the engine takes
engine_kernels = pytest.mark.skipif(E._admit is None or E._k_quiet is None or E._read_tail is None,
                                    reason="the engine runs the pure-Python references")

#: peers' adoptions on: a new item two agents of an operator took up without evidence of harm is not news for a third
PEERS = dataclasses.replace(POLICY, thresholds=dataclasses.replace(POLICY.thresholds, peer_adopters=2.0))
READ_CODE = E.Engine._read.__code__


class Forced(E.Engine):
    """An engine whose _read is not Engine._read (the same lines, called from a subclass's): admit calls it back for
    every event, as it did before it took _read's first lines itself."""

    def _read(self, st, ev, book, **kw):
        return super()._read(st, ev, book, **kw)


class Frames:
    """The Python frames of Engine._read while it is entered (sys.setprofile): how many, and how many were given the
    observation (the fused read left the action to _read's lines after it)."""

    def __init__(self):
        self.calls = self.given = 0

    def __call__(self, frame, event, arg):
        if event == "call" and frame.f_code is READ_CODE:
            self.calls += 1
            self.given += frame.f_locals.get("obs") is not None

    def __enter__(self):
        sys.setprofile(self)
        return self

    def __exit__(self, *exc):
        sys.setprofile(None)


def make(monkeypatch, how: str, **kw):
    """An engine taking the new path ("admit"), one whose _read is a subclass's ("forced"), or one without kernels
    under _read ("lines": no admit, extraction, fused read or pending items' kernel when it is made and runs)."""
    if how == "lines":
        for name in ("_admit", "_extract", "_read_tail", "_k_quiet"):
            monkeypatch.setattr(E, name, None)
    eng = (Forced if how == "forced" else E.Engine)(**kw)
    assert (eng._admitted is None) == (how == "lines")
    return eng


def run(monkeypatch, steps, how: str, **kw):
    """The steps (a batch of events, or ("verdict", t): a benign verdict on each open episode) through an engine; what
    each gave with every agent's state bytes after it, the Python frames of _read, and what the streams reached."""
    with monkeypatch.context() as m:
        eng = make(m, how, **kw)
        out, reached = [], set()
        with Frames() as frames:
            for step in steps:
                if isinstance(step, tuple):
                    for agent in sorted(eng.agents):
                        ep = eng.episodes.open_of(agent)
                        if ep is not None:
                            out.append(eng.apply_verdict(Verdict(f"v-{agent}-{step[1]}", agent, ep, "benign",
                                                                 step[1])))
                else:
                    if any(eng._adopted.values()):
                        reached.add("peers")
                    if any(s.pending for s in eng.agents.values()):
                        reached.add("pending")
                    out.append([outcome(d) for d in eng.process_batch(step)])
                out.append({a: eng.dump_agent(a) for a in sorted(eng.agents)})
    return out, frames, reached


@engine_kernels
@pytest.mark.parametrize("trained", [True, False])
def test_the_simulated_fleet_reads_in_admit_and_decides_as_the_python_lines(fleet, monkeypatch, trained):
    model, later = fleet
    steps = batches(later, 97)
    kw = dict(policy=PEERS, model=model if trained else None)
    taken, frames, _ = run(monkeypatch, steps, "admit", **kw)
    forced, forced_frames, _ = run(monkeypatch, steps, "forced", **kw)
    lines, _, _ = run(monkeypatch, steps, "lines", **kw)
    assert taken == forced
    assert taken == lines
    # every event went through _read's Python frame on the forced engine; on the other, only those admit leaves to the
    # Python lines of process_batch (each agent's first event) or of _read (what the fused read does not take)
    assert forced_frames.calls == len(later)
    assert frames.calls <= 0.1 * len(later)
    decisions = [o for batch in taken[::2] for o in batch]
    assert any(o[1]["severity"] != "ok" for o in decisions)  # alerts are compared too


@engine_kernels
def test_reads_call_the_pending_items_kernel(fleet, monkeypatch):
    # _read's own lines take the kernel too (detector._native.pending_quiet; the reference for what it leaves)
    calls = []
    kernel = E._k_quiet
    monkeypatch.setattr(E, "_k_quiet", lambda *a: calls.append(1) or kernel(*a))
    _, later = fleet
    run(monkeypatch, batches(later, 97), "forced", policy=PEERS)
    assert calls


@engine_kernels
def test_generated_streams_read_in_admit_as_the_python_lines_and_reach_its_paths(fleet, monkeypatch):
    # one test: the paths the examples reached are asserted after them, in the same process (pytest-xdist spreads
    # a module's tests over workers)
    seen: set = set()

    @settings(max_examples=50, deadline=None, derandomize=True)
    @given(steps=streams(), trained=st.booleans(), manifests=st.booleans(), peers=st.booleans())
    def check(steps, trained, manifests, peers):
        kw = dict(policy=PEERS if peers else POLICY, model=fleet[0] if trained else None,
                  manifests=ManifestBook([parse_manifest(MANIFEST, "c.toml")]) if manifests else None)
        steps = batches(HISTORY, 64) + steps
        taken, frames, reached = run(monkeypatch, steps, "admit", **kw)
        forced, forced_frames, _ = run(monkeypatch, steps, "forced", **kw)
        assert taken == forced
        n = sum(len(s) for s in steps if isinstance(s, list))
        assert forced_frames.calls == n
        if not manifests:  # (with manifests every read is _read's: admit leaves a book's to it)
            assert frames.calls <= 0.25 * n
            seen.update(reached)
            if frames.given:
                seen.add("left by the fused read")

    check()
    for path in ("peers", "pending", "left by the fused read"):
        assert path in seen, path


@engine_kernels
def test_generated_streams_decide_as_the_engine_without_kernels_under_read(fleet, monkeypatch):
    @settings(max_examples=15, deadline=None, derandomize=True)
    @given(steps=streams(), trained=st.booleans(), peers=st.booleans())
    def check(steps, trained, peers):
        kw = dict(policy=PEERS if peers else POLICY, model=fleet[0] if trained else None)
        steps = batches(HISTORY, 64) + steps
        assert run(monkeypatch, steps, "admit", **kw)[0] == run(monkeypatch, steps, "lines", **kw)[0]

    check()


def ev(i: int, agent: str = "a"):
    from detector.events import decode_event
    return decode_event({"event_id": f"{agent}-{i}", "ts": f"2026-03-02T09:{i:02d}:00Z", "agent_id": agent,
                         "operator_id": "o", "tool": "crm.read", "action": "read", "resource": "crm://x/1",
                         "sensitivity": "internal"})


@engine_kernels
def test_what_it_does_not_take_is_read_by_read(monkeypatch):
    # a subclass that keeps Engine._read takes the new path; an instance's own _read, and engine.py's _extract or
    # _read_tail replaced (read per event, as _read reads them), are honoured
    class Kept(E.Engine):
        pass

    eng = Kept(policy=POLICY)
    eng.process_batch([ev(0)])  # (the agent's first event: process_batch's Python lines)
    with Frames() as frames:
        eng.process_batch([ev(i) for i in range(1, 11)])
    assert frames.calls == 0
    calls = []
    eng._read = lambda *a, **kw: calls.append(1) or E.Engine._read(eng, *a, **kw)
    eng.process_batch([ev(i) for i in range(11, 14)])
    assert len(calls) == 3
    del eng._read
    tails = []
    kernel = E._read_tail
    monkeypatch.setattr(E, "_read_tail", lambda *a: tails.append(1) or kernel(*a))
    with Frames() as frames:
        eng.process_batch([ev(i) for i in range(14, 18)])
    assert (frames.calls, len(tails)) == (0, 4)
    monkeypatch.setattr(E, "_extract", None)
    with Frames() as frames:
        eng.process_batch([ev(i) for i in range(18, 21)])
    assert frames.calls == 3


# --------------------------------------------------------------------------- the pending items' kernel

_KEYS = st.one_of(
    st.builds(item_key, st.integers(0, 4), st.integers(0, 2**32 - 1)).map(float),  # what the engine writes
    st.sampled_from([item_key(K_DEST, 7), item_key(K_TOOL, 0), item_key(K_PRINCIPAL, 2**32 - 1)]).map(float),
    st.floats(-2.0**40, 2.0**40),  # fractions and negatives: int() towards zero, >> a floor division
    st.sampled_from([-1.0, -0.0, -(2.0**32), -(2.0**32) - 1.0, 2.0**34 + 0.5, 2.0**62, -(2.0**62)]),
)
_TAINT = st.sampled_from([0.0, -0.0, 1.0, 0.5, math.nan])


@st.composite
def pending(draw):
    """A pending array as the engine writes it (slots of _PW doubles), now and then with a key or a taint no engine
    writes."""
    slots = draw(st.lists(st.tuples(_KEYS, st.floats(0, 10), st.floats(0, 2e9), _TAINT), max_size=E.PENDING_SLOTS))
    return array("d", [v for s in slots for v in s])


@built
@settings(max_examples=400, deadline=None)
@given(p=pending())
def test_the_pending_items_kernel_is_its_reference(p):
    got = _native.pending_quiet(p, E._PW, K_DEST)
    ref = E._py_pending_quiet(p)
    assert got is not None  # every key here is one it takes
    assert got == ref and list(got) == list(ref)  # the same set, laid out alike (the same order)


@built
@settings(max_examples=200, deadline=None)
@given(p=pending(), extra=st.sampled_from([(), (1.0,), (1.0, 2.0, 0.0)]),
       odd=st.sampled_from([None, math.nan, math.inf, -math.inf, 2.0**70]))
def test_the_pending_items_kernel_leaves_what_it_does_not_take_to_its_reference(p, extra, odd):
    # a length that is not whole slots, or an untainted key int() does not take to 64 bits: None, the reference decides
    # (and raises where it raises); anything it answers is the reference's answer
    if odd is not None:
        p.extend((odd, 1.0, 0.0, 0.0))
    p.extend(extra)
    got = _native.pending_quiet(p, E._PW, K_DEST)
    try:
        ref = E._py_pending_quiet(p)
    except (ValueError, OverflowError, IndexError):
        assert got is None
        return
    if extra or odd is not None:
        assert got is None or (got == ref and list(got) == list(ref))
    else:
        assert got == ref
    if odd is not None and not extra:
        assert got is None


@built
def test_the_pending_items_kernel_takes_only_arrays_of_doubles():
    assert _native.pending_quiet([0.0, 1.0, 0.0, 0.0], E._PW, K_DEST) is None
    assert _native.pending_quiet(array("q", [0, 1, 0, 0]), E._PW, K_DEST) is None
    assert _native.pending_quiet(array("d"), E._PW, K_DEST) == set()


def test_the_engine_takes_the_kernel_when_it_is_built():
    from detector import native
    assert E._k_quiet is getattr(native.kernels, "pending_quiet", None)


@built
@engine_kernels
def test_decisions_admit_makes_by_copy_are_the_constructors(fleet):
    # admit makes a decision as a copy of Decision(None) with its fields written (one record dict shared until the
    # decision's own is set): every field equals what the Python lines' Decision(...) gives, and no two decisions
    # (nor the template) end up with the same record dict
    import msgspec

    model, later = fleet
    kernel, lines = E.Engine(policy=POLICY, model=model), E.Engine(policy=POLICY, model=model)
    lines._admitted = None  # process_batch's own loop: Decision(ev, ...) for every event
    assert kernel._admitted is not None
    got, want = [], []
    for batch in batches(later, 97):
        got += kernel.process_batch(batch)
        want += lines.process_batch(batch)
    decided = [d for d in got if not d.duplicate]
    assert len(decided) > 1000
    assert [msgspec.structs.asdict(d) for d in got] == [msgspec.structs.asdict(d) for d in want]
    assert len({id(d.record) for d in decided}) == len(decided)
    assert all(d.record for d in decided)


@built
@engine_kernels
def test_records_whose_values_are_written_in_place_are_the_dicts_the_lines_make(fleet):
    # record_direct (CPython 3.11's dict layout, checked at import and at setup): an ordinary record's values are
    # written into its entries. The records equal the lines' key for key in order, each is tracked by the collector
    # as the lines' dict literal is (it holds a list), and each has its own list of reasons
    import gc
    import sys

    assert _native.record_direct is (sys.version_info[:2] == (3, 11))
    model, later = fleet
    kernel, lines = E.Engine(policy=POLICY, model=model), E.Engine(policy=POLICY, model=model)
    lines._admitted = lines._decided = None
    got, want = [], []
    for batch in batches(later[:3000], 128):
        got += [d for d in kernel.process_batch(batch) if not d.duplicate]
        want += [d for d in lines.process_batch(batch) if not d.duplicate]
    ordinary = [(g.record, w.record) for g, w in zip(got, want) if w.record["severity"] == "ok"]
    assert len(ordinary) > 1000
    for g, w in ordinary:
        assert list(g.items()) == list(w.items()) and gc.is_tracked(g) and gc.is_tracked(w)
    ordinary[0][0]["reasons"].append("x")
    assert all(g["reasons"] == [] for g, _ in ordinary[1:])


@built
@engine_kernels
def test_records_dropped_with_their_batch_come_back_as_new_ones(fleet):
    # record_new: a record only its ring holds (its batch dropped) is made again with the decision's values and the
    # template's others; one a caller still holds, or changed (a key added), never is
    model, later = fleet
    kernel, lines = E.Engine(policy=POLICY, model=model), E.Engine(policy=POLICY, model=model)
    lines._admitted = lines._decided = None
    got, want = [], []
    held = None
    for i, batch in enumerate(batches(later[:3000], 128)):
        decided = [d for d in kernel.process_batch(batch) if not d.duplicate]
        got += [list(d.record.items()) for d in decided]  # copies: the records themselves are dropped
        if i == 2:
            held = decided[0].record
            held_copy = list(held.items())
            decided[1].record["extra"] = 1  # a caller's change: that dict is not the template's any more
        want += [list(d.record.items()) for d in lines.process_batch(batch) if not d.duplicate]
    assert got == want
    assert list(held.items()) == held_copy
