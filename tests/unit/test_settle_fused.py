"""Engine._settle compiled (detector/_native.c rt_settle, which read_tail calls C to C for an action that was not
learned or met something new) and its two loops as kernels of their own (pending_count: Engine._py_pending;
peers_count: Engine._py_peers). The same event streams through an engine whose fused read settles in C and one whose
fused read calls the method give the same decisions, agent state bytes and peers' counts; the compiled settle is
what those actions take (the method is then all but never called); and each kernel gives what its reference gives,
on generated arguments, or None having changed nothing."""
from __future__ import annotations

import dataclasses
from array import array
from collections import OrderedDict
from types import SimpleNamespace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from detector import engine as E
from detector.baseline import Prior
from detector.manifest import ManifestBook, parse_manifest

# the policy, manifest, history, streams and helpers of test_read_fused (tests/unit is on the path: pytest's default
# import mode; test file names are unique, tests/unit/test_suite_layout.py)
from test_read_fused import HISTORY, MANIFEST, POLICY, batches, fleet, step_outputs, streams  # noqa: F401

pytestmark = pytest.mark.skipif(E._read_tail is None or E._k_pending is None or E._k_peers is None,
                                reason="the compiled kernels are not built")


#: the example policy with peers' adoptions counted (an item two of an operator's agents took up is adopted)
PEERS = dataclasses.replace(POLICY, thresholds=dataclasses.replace(POLICY.thresholds, peer_adopters=2.0))
#: and one where pending items settle in the fused read too: few actions teach the profile (medium 0.3), none is
#: harmful by its evidence alone (gate 2.0), and 10 minutes settle an item (a never-seen destination, which stays
#: novel while pending, then settles in read_tail when it comes back with an action that was not learned)
SETTLING = dataclasses.replace(POLICY, thresholds=dataclasses.replace(
    POLICY.thresholds, medium=0.3, gate_evidence=2.0, settle_s=600.0, peer_adopters=2))


def counting(monkeypatch, names) -> dict[str, list[int]]:
    """Engine's methods of those names, counting their calls (one list per name: its count)."""
    counts = {}
    for name in names:
        def call(self, *args, fn=getattr(E.Engine, name), n=counts.setdefault(name, [0])):
            n[0] += 1
            return fn(self, *args)
        monkeypatch.setattr(E.Engine, name, call)
    return counts


def run(monkeypatch, steps, compiled: bool, cls=E.Engine, **kw):
    """The steps (a batch of events, or ("verdict", t): a benign verdict on each open episode) through an engine whose
    fused read settles in C (compiled) or calls Engine._settle; what each gave, with every agent's state bytes and the
    engine's peers' counts after it; and the calls of _settle, _py_pending and _py_peers."""
    monkeypatch.setattr(E, "_settle_fused", compiled)
    counts = counting(monkeypatch, ("_settle", "_py_pending", "_py_peers"))
    eng = cls(**kw)
    assert eng._fused is not None
    out = []
    for step in steps:
        out += step_outputs(eng, step)
        out.append((list(eng._peer_items.items()), {op: sorted(s) for op, s in eng._adopted.items()}))
    return out, {k: v[0] for k, v in counts.items()}, eng


@pytest.mark.parametrize("trained", [True, False])
@pytest.mark.parametrize("policy", [POLICY, PEERS, SETTLING], ids=["no-peers", "peers", "settling"])
def test_the_simulated_fleet_settles_the_same_in_c_and_in_the_method(fleet, monkeypatch, trained, policy):
    model, later = fleet
    steps = batches(later, 97)
    kw = dict(policy=policy, model=model if trained else None)
    compiled, calls_c, eng = run(monkeypatch, steps, True, **kw)
    method, calls_py, _ = run(monkeypatch, steps, False, **kw)
    assert compiled == method
    # the method settles hundreds of the fleet's actions; compiled, read_tail takes nearly all of them itself (the
    # rest: the Python lines of _read, for pending items met again and long tasks crossing, which are many more when
    # pending items settle)
    assert calls_py["_settle"] >= 200
    assert calls_c["_settle"] <= (0.5 if policy is SETTLING else 0.05) * calls_py["_settle"]
    # and what it takes reaches every step: pending novelty counted and settled in C, and the peers' counts
    assert calls_py["_py_pending"] == 0 and calls_c["_py_pending"] == 0  # the method's _pending: pending_count
    assert any(st.pending for st in eng.agents.values())
    if policy is not POLICY:
        assert calls_py["_py_peers"] == 0 and calls_c["_py_peers"] == 0
        assert eng._peer_items and any(eng._adopted.values())
        assert any(e[0] for e in eng._peer_items.values()) and any(not e[0] for e in eng._peer_items.values())


def test_an_engine_of_another_class_settles_in_the_method(fleet, monkeypatch):
    # a subclass may settle otherwise: the compiled settle leaves it to the method (and changes nothing first)
    class Mine(E.Engine):
        pass

    model, later = fleet
    steps = batches(later[:600], 97)
    mine, calls, _ = run(monkeypatch, steps, True, cls=Mine, policy=PEERS, model=model)
    theirs, calls_py, _ = run(monkeypatch, steps, False, policy=PEERS, model=model)
    assert mine == theirs
    assert calls["_settle"] == calls_py["_settle"] >= 20


def test_thresholds_of_other_types_settle_in_the_method(fleet, monkeypatch):
    # a threshold the compiled settle does not take as a number (a str the method fails on is not tried: a bool)
    model, later = fleet
    odd = dataclasses.replace(POLICY, thresholds=dataclasses.replace(POLICY.thresholds, settle_uses=True))
    steps = batches(later[:600], 97)
    compiled, calls, _ = run(monkeypatch, steps, True, policy=odd, model=model)
    method, calls_py, _ = run(monkeypatch, steps, False, policy=odd, model=model)
    assert compiled == method
    assert calls["_settle"] == calls_py["_settle"] >= 20


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=streams(), trained=st.booleans(), peers=st.sampled_from([0.0, 1.0, 2.0, 3]),
       settling=st.sampled_from([{}, SETTLING.thresholds.__dict__]))
def test_generated_streams_settle_the_same_in_c_and_in_the_method(fleet, monkeypatch, steps, trained, peers, settling):
    policy = dataclasses.replace(POLICY, thresholds=dataclasses.replace(POLICY.thresholds, **{
        **{k: settling[k] for k in ("medium", "gate_evidence", "settle_s") if k in settling}, "peer_adopters": peers}))
    book = ManifestBook([parse_manifest(MANIFEST, "c.toml")])
    steps = batches(HISTORY, 64) + steps
    kw = dict(policy=policy, model=fleet[0] if trained else None, manifests=book)
    compiled, calls_c, _ = run(monkeypatch, steps, True, **kw)
    method, calls_py, _ = run(monkeypatch, steps, False, **kw)
    assert compiled == method
    assert calls_c["_settle"] <= calls_py["_settle"]


def test_the_settle_is_compiled_only_with_the_kernels(monkeypatch):
    # FLOWBREAKER_PURE_PYTHON=1: no kernels, so no fused read to settle in, and _pending and _peers run their lines
    monkeypatch.setattr(E, "_read_tail", None)
    assert E.Engine(policy=POLICY)._fused is None
    monkeypatch.setattr(E, "_k_pending", None)
    monkeypatch.setattr(E, "_k_peers", None)
    calls = counting(monkeypatch, ("_py_pending", "_py_peers"))
    eng = E.Engine(policy=PEERS)
    st_ = E.AgentState(Prior.generic(), "o")
    eng._pending(st_, [7], 1.0, False, PEERS.thresholds)
    eng._peers(SimpleNamespace(operator_id="o", agent_id="a"), [7], False, PEERS.thresholds)
    assert calls["_py_pending"] == calls["_py_peers"] == [1]


# --------------------------------------------------------------------------- pending_count against _py_pending

KEYS = st.sampled_from([1, 2, 3, (2 << 32) | 5, (3 << 32) | 9, (4 << 32) | 0xFFFFFFFF, 2 ** 35 - 1])
TIMES = st.sampled_from([0.0, 1.0, 600.0, 1799.0, 1800.0, 1801.0, 3600.0, 1e9, -5.0, float("inf")])


@st.composite
def pendings(draw):
    """A pending array as the engine leaves it (slots of key, uses, first t, tainted; keys distinct or not)."""
    n = draw(st.integers(0, E.PENDING_SLOTS))
    out = []
    for _ in range(n):
        out += [float(draw(KEYS) if draw(st.booleans()) else draw(st.integers(0, 40))),
                float(draw(st.integers(0, 5))), draw(TIMES), draw(st.sampled_from([0.0, 0.0, 1.0]))]
    return array("d", out)


def settled(st_, pending: array, keys, t, harmful, th, method):
    st_.pending = array("d", pending)
    method(st_, keys, t, harmful, th)
    return st_.pending.tobytes(), st_.features.to_tuple()


@settings(max_examples=400, deadline=None)
@given(pending=pendings(), keys=st.lists(st.one_of(KEYS, st.integers(0, 40)), max_size=20),
       t=TIMES, harmful=st.booleans(), uses=st.sampled_from([0.0, 1.0, 2.0, 3.0, 3, 5.5]),
       span=st.sampled_from([0.0, 1.0, 1800.0, 1800, float("inf"), -1.0]))
def test_pending_count_is_py_pending(pending, keys, t, harmful, uses, span):
    eng = E.Engine()
    th = SimpleNamespace(settle_uses=uses, settle_s=span)
    a, b = E.AgentState(Prior.generic(), "o"), E.AgentState(Prior.generic(), "o")
    got = E._k_pending(array("d", pending), keys, t, harmful, uses, span, E.PENDING_SLOTS)
    assert got is not None  # the engine's arguments: the kernel takes them
    assert settled(a, pending, keys, t, harmful, th, eng._pending) == settled(b, pending, keys, t, harmful, th,
                                                                           eng._py_pending)
    if len(pending) == 4 * E.PENDING_SLOTS and keys and not harmful:
        assert len(a.pending) == len(pending) or got  # a full array: eviction, or a settled item's slot freed


def test_pending_count_evicts_the_oldest_untainted_item_and_settles_in_order():
    p = array("d", [float(k) for i in range(E.PENDING_SLOTS) for k in (100 + i, 1.0, 50.0 - i, float(i % 2))])
    keys = [7, 100, 7]
    q = array("d", p)
    eng = E.Engine()
    st_ = E.AgentState(Prior.generic(), "o")
    st_.pending = q
    eng._py_pending(st_, list(keys), 4000.0, False, SimpleNamespace(settle_uses=2.0, settle_s=100.0))
    got = E._k_pending(p, keys, 4000.0, False, 2.0, 100.0, E.PENDING_SLOTS)
    # 7 took the oldest untainted item's slot (114's: the last even one, first used at 36.0); 100 settled at its
    # second use (its slot deleted); 7 again is its second use, too soon to settle
    assert p == q and got == [100]
    assert len(p) == 4 * (E.PENDING_SLOTS - 1)
    assert 114.0 not in p[0::4] and 100.0 not in p[0::4] and p[4 * 13:4 * 14].tolist() == [7.0, 2.0, 4000.0, 0.0]


@pytest.mark.parametrize("args", [
    (array("d", [1.0, 1.0, float("nan"), 0.0]), [1], 5.0, False, 3.0, 1800.0),  # a NaN pending
    (array("d", [1.0, 1.0, 2.0]), [1], 5.0, False, 3.0, 1800.0),  # not whole slots
    (array("d", [1.0, 1.0, 2.0, 0.0] * (E.PENDING_SLOTS + 1)), [1], 5.0, False, 3.0, 1800.0),  # too many
    (array("f", [1.0, 1.0, 2.0, 0.0]), [1], 5.0, False, 3.0, 1800.0),  # not doubles
    (array("d", [1.0, 1.0, 2.0, 0.0]), [-1], 5.0, False, 3.0, 1800.0),  # a key not an item's
    (array("d", [1.0, 1.0, 2.0, 0.0]), [2 ** 53], 5.0, False, 3.0, 1800.0),
    (array("d", [1.0, 1.0, 2.0, 0.0]), [1.0], 5.0, False, 3.0, 1800.0),
    (array("d", [1.0, 1.0, 2.0, 0.0]), (1,), 5.0, False, 3.0, 1800.0),  # not a list
    (array("d", [1.0, 1.0, 2.0, 0.0]), [1], float("nan"), False, 3.0, 1800.0),
    (array("d", [1.0, 1.0, 2.0, 0.0]), [1], 5, False, 3.0, 1800.0),  # t not a float
    (array("d", [1.0, 1.0, 2.0, 0.0]), [1], 5.0, 1, 3.0, 1800.0),  # harmful not a bool
    (array("d", [1.0, 1.0, 2.0, 0.0]), [1], 5.0, False, True, 1800.0),  # a threshold not a number
    (array("d", [1.0, 1.0, 2.0, 0.0]), [1], 5.0, False, 3.0, 2 ** 60),
    (array("d", [1.0, 1.0, 2.0, 0.0]), [1], 5.0, False, 3.0, "1800"),
])
def test_pending_count_leaves_what_it_does_not_take_untouched(args):
    p = args[0]
    before = p.tobytes()
    assert E._k_pending(*args, E.PENDING_SLOTS) is None
    assert p.tobytes() == before


# --------------------------------------------------------------------------- peers_count against _py_peers

AGENTS = st.sampled_from(["a", "b", "c", "d", "é\udcff"])
OPS = st.sampled_from(["op-1", "op-2", "op-3"])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(calls=st.lists(st.tuples(AGENTS, OPS, st.lists(st.one_of(KEYS, st.integers(0, 12)), max_size=6),
                                st.booleans()), max_size=40),
       need=st.sampled_from([0.0, 1.0, 1.5, 2.0, 3.0, 2, -1.0]), items=st.sampled_from([3, 8, 20_000]),
       adopted=st.sampled_from([2, 5, 4_096]), operators=st.sampled_from([1, 2, 10_000]))
def test_peers_count_is_py_peers(monkeypatch, calls, need, items, adopted, operators):
    monkeypatch.setattr(E, "_PEER_ITEMS", items)
    monkeypatch.setattr(E, "_PEER_ADOPTED", adopted)
    monkeypatch.setattr(E, "_PEER_OPERATORS", operators)
    th = SimpleNamespace(peer_adopters=need)
    c, r = E.Engine(), E.Engine()
    for agent, op, keys, harmful in calls:
        ev = SimpleNamespace(agent_id=agent, operator_id=op)
        copies = OrderedDict((k, list(e)) for k, e in c._peer_items.items()), {o: set(s) for o, s in c._adopted.items()}
        assert E._k_peers(*copies, op, agent, keys, harmful, need, items, adopted, operators) is True  # the kernel's
        c._peers(ev, keys, harmful, th)
        r._py_peers(ev, keys, harmful, th)
        assert list(c._peer_items.items()) == list(r._peer_items.items())
        assert c._adopted == r._adopted


@pytest.mark.parametrize("change", ["items", "adopted", "entry", "tainted", "who", "set", "op", "key", "need",
                                    "harmful"])
def test_peers_count_leaves_what_it_does_not_take_untouched(change):
    items = OrderedDict({(E.stable_hash("o") << 40) | 5: [False, 1], (E.stable_hash("o") << 40) | 6: [False]})
    adopted = {"o": {9}}
    args = [items, adopted, "o", "a", [5, 6], False, 1.0, 100, 100, 100]
    if change == "items":
        args[0] = dict(items)
    elif change == "adopted":
        args[1] = OrderedDict(adopted)
    elif change == "entry":
        items[(E.stable_hash("o") << 40) | 6] = (False,)
    elif change == "tainted":
        items[(E.stable_hash("o") << 40) | 6] = [0]
    elif change == "who":
        items[(E.stable_hash("o") << 40) | 6] = [False, "a"]
    elif change == "set":
        adopted["o"] = frozenset()
    elif change == "op":
        args[2] = b"o"
    elif change == "key":
        args[4] = [5, -6]
    elif change == "need":
        args[6] = "1"
    else:
        args[5] = None
    before = (list(args[0].items()), dict(args[1]))
    assert E._k_peers(*args) is None
    assert (list(args[0].items()), dict(args[1])) == before


def test_peers_count_adopts_at_the_second_agent_and_taints():
    items, adopted = OrderedDict(), {}
    for agent, harmful in (("a", False), ("a", False), ("b", False), ("c", True)):
        assert E._k_peers(items, adopted, "o", agent, [5, 6], harmful, 2.0, 100, 100, 100) is True
    assert adopted == {"o": {5, 6}}
    assert all(e[0] is True and len(e) == 3 for e in items.values())
