"""The compiled decision (detector._native.decide): Engine.process_batch's second loop for an ordinary decision (scored
"ok", not a reused id, breaking no manifest clause, the breaker closed or open and not tripping, no alert episode
closing) in one call, its trace row appended too. The same event streams through an engine that takes it and one whose
second loop runs its Python lines only give the same decisions (records, freezes, incidents, transitions, episodes,
harm, z, x), the same releases, manual freezes and verdict records, the same traces (their rings as the store holds
them) and the same agent state bytes after every step; and the compiled step is what most events of a simulated fleet
take (so the comparison is not vacuous)."""
from __future__ import annotations

import dataclasses
from datetime import datetime, timezone
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from detector import engine as E
from detector.approvals import ApprovalBook
from detector.events import decode_event
from detector.manifest import ManifestBook, parse_manifest
from detector.policy import Policy, Thresholds, load_policy
from detector.timestamps import iso_utc
from detector.verdicts import Verdict

pytestmark = pytest.mark.skipif(E._decide is None or E._kernels is None, reason="the compiled kernel is not built")

REPO = Path(__file__).resolve().parents[2]
POLICY = load_policy(REPO / "examples" / "policy.toml")
#: a budget that a few rare actions exhaust, decaying within the streams' spans, and a short probation
TIGHT = dataclasses.replace(POLICY, thresholds=Thresholds(risk_budget=0.3, budget_floor=0.3, budget_half_life_s=900.0,
                                                          probation_s=600.0, probation_min_events=2))
T0 = datetime(2026, 3, 2, 9, 0, tzinfo=timezone.utc).timestamp()
KERNEL = E._decide
ADMIT = E._admit


class Counting:
    """decide or admit, counting its calls and what it took (both take the index to start from fourth)."""

    def __init__(self, kernel):
        self.kernel, self.calls, self.taken = kernel, 0, 0

    def __call__(self, *args):
        self.calls += 1
        got = self.kernel(*args)
        self.taken += got - args[3]
        return got


def outcome(d) -> tuple:
    return (d.duplicate, d.record, d.freeze, d.incident, d.transition, d.episodes, d.harm, d.reused_id,
            d.approval_refused, None if d.z is None else list(d.z), None if d.x is None else list(d.x), d.violations,
            d.dest_classes)


def make(monkeypatch, compiled, policy=POLICY, **kw):
    """An engine whose loops take the compiled kernels named in ``compiled`` ("decide": the second loop's, "admit":
    the first loop's; counted), the others never (not there when it is made)."""
    counters = {name: Counting(kernel) for name, kernel in (("decide", KERNEL), ("admit", ADMIT))}
    for name, counter in counters.items():
        monkeypatch.setattr(E, "_" + name, counter if name in compiled else None)
    eng = E.Engine(policy=policy, **kw)
    assert (eng._decided is not None) == ("decide" in compiled)
    assert (eng._admitted is not None) == ("admit" in compiled)
    return eng, counters


def run(monkeypatch, steps, compiled=("decide", "admit"), **kw):
    """The steps through an engine: a batch of events (every other one as a tuple, every fifth from an iterator);
    ("verdict", t): a benign verdict on each open episode; ("release", agent, t), ("freeze", agent, t): a human
    releases or freezes the agent; ("rest", agent, t): its trace ring rests; ("legacy", agent, t): its dedupe ring
    holds keys of state version 5. What each gave, with every agent's state bytes and trace after it."""
    eng, counters = make(monkeypatch, compiled, **kw)
    out = []
    for n, step in enumerate(steps):
        if isinstance(step, list):
            batch = iter(step) if n % 5 == 4 else tuple(step) if n % 2 else step
            got = [outcome(d) for d in eng.process_batch(batch)]
        elif step[0] == "verdict":
            got = []
            for agent in sorted(eng.agents):
                ep = eng.episodes.open_of(agent)
                if ep is not None:
                    got.append(eng.apply_verdict(Verdict(f"v-{agent}-{step[1]}", agent, ep, "benign", step[1])))
        elif step[0] == "release":
            got = eng.release(step[1], at=step[2], by="alice", reason="checked")
        elif step[0] == "rest":  # the agent's trace ring rests (a worker's idle agent)
            got = eng.traces.rest(step[1])
        elif step[0] == "legacy":  # as if loaded from a state of version 5
            got = step[1] in eng.agents
            if got:
                eng.agents[step[1]].legacy_keys = 3
        else:
            d = eng.freeze_manual(step[1], at=step[2], by="bob", reason="odd")
            got = None if d is None else outcome(d)
        out.append((step, got, {a: (eng.dump_agent(a), eng.traces.snapshot(a)) for a in sorted(eng.agents)},
                    rings(eng.traces)))
    return out, counters, eng


def rings(store) -> list:
    """The trace store's rings as it holds them: most recently active last, each with its blocks, sealed or not."""
    return [(a, r if type(r) is bytes else (r.blocks, r.packed, r.live)) for a, r in store._rings.items()]


def batches(events, size):
    return [events[i:i + size] for i in range(0, len(events), size)]


@pytest.mark.parametrize("trained", [True, False])
def test_the_simulated_fleet_decides_the_same_with_and_without_the_compiled_decision(fleet, monkeypatch, trained):
    model, later = fleet
    steps = batches(later, 97)
    without, _, _ = run(monkeypatch, steps, (), model=model if trained else None)
    for compiled in (("decide", "admit"), ("decide",), ("admit",)):
        with_c, counters, _ = run(monkeypatch, steps, compiled, model=model if trained else None)
        assert with_c == without
        decisions = [o for _, got, _, _ in with_c for o in got]
        # the compiled decision is the common one (the rest: alerts, freezes, open episodes, duplicates), and so is
        # the compiled first loop (the rest: each agent's first event, and the batches given as an iterator: 1 in 5)
        if "decide" in compiled:
            assert counters["decide"].taken >= 0.8 * sum(not o[0] for o in decisions)
        if "admit" in compiled:
            from_iterators = sum(len(s) for n, s in enumerate(steps) if n % 5 == 4)
            assert counters["admit"].taken >= 0.95 * (len(later) - from_iterators)
    assert any(o[1] and o[1]["severity"] != "ok" for o in decisions)  # alerts are compared too


def test_the_compiled_loops_are_not_built_in_pure_python(monkeypatch):
    # FLOWBREAKER_PURE_PYTHON=1: no kernels, so no compiled loops (the engine's _decided and _admitted are None)
    monkeypatch.setattr(E, "_decide", None)
    monkeypatch.setattr(E, "_admit", None)
    eng = E.Engine(policy=POLICY)
    assert eng._decided is None and eng._admitted is None


def test_thresholds_it_does_not_take_leave_the_python_lines(monkeypatch):
    # thresholds that are not all floats (a Thresholds made in code), and thresholds other than those it was set
    # up for (a policy swapped in later), are the Python lines'
    eng, counters = make(monkeypatch, ("decide",))
    counter = counters["decide"]
    assert E._decide_consts(E.Engine(policy=Policy(thresholds=Thresholds(risk_budget=2)))) is None
    ev = decode_event({"event_id": "e1", "ts": "2026-03-02T09:00:00Z", "agent_id": "a", "operator_id": "o",
                       "tool": "t", "action": "read", "resource": "r://x", "sensitivity": "internal"})
    eng.policy = TIGHT
    eng.process(ev)
    assert counter.calls == 0
    eng.policy = POLICY
    eng.process(ev.replace(event_id="e2"))
    assert counter.calls == 1


# --------------------------------------------------------------------------- generated streams

# the manifest and the values the streams draw from: test_read_fused's (tests/unit is on the path: pytest's
# default import mode; test file names are unique, tests/unit/test_suite_layout.py)
from test_read_fused import ACTIONS, DESTS, MANIFEST, RECORDS, SENS, TOOLS, WHO, fleet, routine  # noqa: E402, F401


@st.composite
def streams(draw):
    """A routine history for agents a, b and c (c under a manifest), then a drawn stream of ordinary and rare actions
    (new tools, deletes, sensitive data, outsiders, big volumes, never-seen destinations), approved ones, events sent
    again (duplicates) and ids reused for other actions, cut into drawn batches, with benign verdicts, releases and
    manual freezes between them."""
    n = draw(st.integers(10, 90))
    t = 300.0 * 160
    events: list = []
    sent: list[dict] = []
    steps: list = []
    for i in range(n):
        what = draw(st.integers(0, 27))
        if what in (0, 1, 2, 25, 27):  # between batches: a verdict, a release, a manual freeze, a trace ring resting,
            steps.append(events)        # a dedupe ring of state version 5
            events = []
            agent = draw(st.sampled_from("abc"))
            steps.append(("verdict", T0 + t) if what == 0 else
                         ({1: "release", 2: "freeze", 25: "rest", 27: "legacy"}[what], agent, T0 + t))
            continue
        if what == 3 and sent:  # an event sent again: a duplicate
            events.append(draw(st.sampled_from(sent)))
            continue
        agent = draw(st.sampled_from("aabc"))
        t += draw(st.sampled_from([1.0, 30.0, 300.0, 3600.0]))
        rare = draw(st.booleans())
        tool = draw(st.sampled_from(TOOLS)) if rare else "crm.read"
        dests = draw(st.lists(st.sampled_from(DESTS), max_size=3, unique=True)) if tool == "mail.send" else []
        if what == 26:  # more than the trace keeps of an action's destinations (10)
            tool, dests = "mail.send", [f"email:p{j}@corp.example" for j in range(12)]
        eid = f"{agent}-s{i}"
        if what == 4 and sent:  # an id reused for another action
            eid = draw(st.sampled_from(sent))["event_id"]
        e = {"event_id": eid, "ts": iso_utc(T0 + t), "agent_id": agent, "operator_id": "op-1", "tool": tool,
             "action": "send" if dests else (draw(st.sampled_from(ACTIONS)) if rare else "read"),
             "resource": draw(st.sampled_from(["crm://accounts/1", "crm://accounts/2", "hr://personnel/7",
                                               "docs://notes/1"])) if rare else "crm://accounts/1",
             "sensitivity": draw(st.sampled_from(SENS)) if rare else "internal",
             "records": draw(st.sampled_from(RECORDS)) if rare else 1, "destinations": dests}
        task = draw(st.sampled_from([None, "long", f"t{i // 3}", f"t{i}"]))
        who = draw(st.sampled_from(WHO)) if rare else None
        if task:
            e["task_id"] = task
        if who:
            e["requested_by"] = who
        if what == 5:
            e["approval_id"] = f"apr-{i}"
        events.append(e)
        sent.append(e)
        if draw(st.integers(0, 6)) == 0:
            steps.append(events)
            events = []
    steps.append(events)
    return [[decode_event(e) for e in s] if isinstance(s, list) else s for s in steps if s]


HISTORY = [decode_event(e) for a in "abc" for e in routine(a, 160, payees=None)]


def reached(out, seen: set) -> None:
    """Add to ``seen`` the paths a generated stream's decisions and commands reached."""
    for step, got, _, _ in out:
        if isinstance(step, list):
            for o in got:
                if o[0]:
                    seen.add("duplicate")
                    continue
                seen.update(k for k, hit in (("reused", o[7]), ("violation", o[11]), ("transition", o[4]),
                                                      ("ok while open", o[1]["breaker_state"] == "open"
                                                       and o[1]["severity"] == "ok")) if hit)
                if o[4]:
                    seen.add(o[4])
                if o[2]:  # a freeze: of an action that is not critical, the budget's
                    seen.add("freeze " + ("critical" if o[1]["severity"] == "critical" else "budget"))
                if any(r["feature"] == "approved" for r in o[1]["reasons"]):
                    seen.add("approved")
                if o[8]:
                    seen.add("approval refused")
        elif step[0] == "release" and got is not None:
            seen.add("release")
        elif step[0] == "freeze" and got is not None:
            seen.add("manual freeze")
        elif step[0] in ("rest", "legacy") and got:
            seen.add(step[0])


def test_generated_streams_decide_the_same_with_and_without_the_compiled_decision_and_reach_every_path(fleet,
                                                                                                   monkeypatch):
    # one test: the paths the examples reached are asserted after them, in the same process (pytest-xdist spreads
    # a module's tests over workers)
    seen: set = set()

    @settings(max_examples=80, deadline=None, derandomize=True)
    @given(steps=streams(), trained=st.booleans(), tight=st.booleans(), trace_agents=st.sampled_from([2, 5000]),
           screened=st.booleans(), compiled=st.sampled_from([("decide", "admit"), ("decide",), ("admit",)]))
    def check(steps, trained, tight, trace_agents, screened, compiled):
        model = fleet[0] if trained else None
        book = ManifestBook([parse_manifest(MANIFEST, "c.toml")])
        steps = batches(HISTORY, 64) + steps
        policy = TIGHT if tight else POLICY
        # screened: approval ids are checked (against a book that knows one of them), or taken at their word
        approvals = None
        if screened:
            approvals = ApprovalBook()
            approvals.apply({"approval_id": "apr-5", "rev": 1, "agent_id": "a", "state": "approved"})
        kw = dict(model=model, manifests=book, policy=policy, trace_agents=trace_agents, approvals=approvals)
        with_c, counters, _ = run(monkeypatch, steps, compiled, **kw)
        without, _, _ = run(monkeypatch, steps, (), **kw)
        assert with_c == without
        assert all(counters[name].taken > 0 for name in compiled)
        reached(with_c, seen)

    check()
    for path in ("duplicate", "reused", "violation", "approved", "release", "manual freeze", "rest", "legacy",
                 "approval refused", "freeze critical",
                 "freeze budget", ("closed", "open"), ("half_open", "closed"), ("half_open", "open"), "ok while open"):
        assert path in seen, path
