"""The fused read (detector._native.read_tail): Engine._read after _extract in one compiled call for an ordinary
action. The same event streams through an engine that takes it and one whose _read runs its Python lines only
give the same decisions (records, freezes, incidents, episodes, harm, z, x), the same verdict records and the same
agent state bytes after every batch; and the fused path is what most events of a simulated fleet take (so the
comparison is not vacuous)."""
from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from detector import engine as E
from detector.events import decode_event
from detector.manifest import ManifestBook, parse_manifest
from detector.policy import load_policy
from detector.timestamps import iso_utc
from detector.verdicts import Verdict
from models import simulate as sim
from models.store import TrainedModel
from models.train import fit

pytestmark = pytest.mark.skipif(E._read_tail is None or E._kernels is None, reason="the compiled kernel is not built")

REPO = Path(__file__).resolve().parents[2]
POLICY = load_policy(REPO / "examples" / "policy.toml")
T0 = datetime(2026, 3, 2, 9, 0, tzinfo=timezone.utc).timestamp()
KERNEL = E._read_tail


@pytest.fixture(scope="module")
def fleet():
    events, labels = sim.simulate(n_agents=8, days=4, seed=7)
    history, rest = sim.split_history(events, labels)
    card, arrays = fit([decode_event(e) for e in history], POLICY, seed=0, n_estimators=20)
    return TrainedModel(card, arrays), [decode_event(e) for e in rest]


class Counting:
    """read_tail, counting its calls and the readings it gave."""

    def __init__(self, kernel):
        self.kernel, self.calls, self.fused = kernel, 0, 0

    def __call__(self, *args):
        self.calls += 1
        got = self.kernel(*args)
        self.fused += got is not None
        return got


def outcome(d) -> tuple:
    return (d.duplicate, d.record, d.freeze, d.incident, d.transition, d.episodes, d.harm,
            None if d.z is None else list(d.z), None if d.x is None else list(d.x), d.violations, d.dest_classes)


def make(monkeypatch, fused: bool, **kw):
    """An engine whose _read takes the fused path (counted) or never does (read_tail not there when it is made)."""
    counter = Counting(KERNEL)
    monkeypatch.setattr(E, "_read_tail", counter if fused else None)
    eng = E.Engine(policy=POLICY, **kw)
    assert (eng._fused is not None) == fused
    return eng, counter


def run(monkeypatch, steps, fused: bool, **kw):
    """The steps (a batch of events, or ("verdict", t): a benign verdict on each open episode) through an engine;
    what each gave, with every agent's state bytes after it."""
    eng, counter = make(monkeypatch, fused, **kw)
    out = []
    for step in steps:
        out += step_outputs(eng, step)
    return out, counter


def step_outputs(eng, step) -> list:
    """What one step gave (a batch of events: its outcomes; ("verdict", t): a benign verdict on each open episode,
    each one's result), then every agent's state bytes after it."""
    out = []
    if isinstance(step, tuple):
        for agent in sorted(eng.agents):
            ep = eng.episodes.open_of(agent)
            if ep is not None:
                out.append(eng.apply_verdict(Verdict(f"v-{agent}-{step[1]}", agent, ep, "benign", step[1])))
    else:
        out.append([outcome(d) for d in eng.process_batch(step)])
    out.append({a: eng.dump_agent(a) for a in sorted(eng.agents)})
    return out


def batches(events, size):
    return [events[i:i + size] for i in range(0, len(events), size)]


@pytest.mark.parametrize("trained", [True, False])
def test_the_simulated_fleet_decides_the_same_with_and_without_the_fused_read(fleet, monkeypatch, trained):
    model, later = fleet
    steps = batches(later, 97)
    with_fused, counter = run(monkeypatch, steps, True, model=model if trained else None)
    without, _ = run(monkeypatch, steps, False, model=model if trained else None)
    assert with_fused == without
    # the fused path is the common one (the rest: items peers adopted, long tasks crossing)
    assert counter.calls == len(later)
    assert counter.fused >= 0.85 * len(later)
    decisions = [o for batch in with_fused[::2] for o in batch]
    assert any(o[1]["severity"] != "ok" for o in decisions)  # alerts are compared too


def test_the_fused_read_is_not_built_in_pure_python(monkeypatch):
    # FLOWBREAKER_PURE_PYTHON=1: no kernels, so no fused read (the engine's _fused is None, _read its lines)
    monkeypatch.setattr(E, "_read_tail", None)
    assert E.Engine(policy=POLICY)._fused is None


# --------------------------------------------------------------------------- generated streams

MANIFEST = """\
version = 1
agent = "c"

[tools]
allow = ["crm.*", "mail.send"]

[destinations]
allow = ["email:*@corp.example"]

[ceilings]
records_out_per_hour = 200
on_violation = "needs_approval"
"""

TOOLS = ["crm.read", "crm.read", "crm.read", "docs.write", "mail.send", "newtool.run", "shell.exec"]
ACTIONS = ["read", "read", "write", "send", "delete"]
SENS = ["internal", "internal", "public", "confidential", "restricted"]
EXT = ["email:kim@client.example", "payee:acme", "email:lee@client.example"]  # external, known from the history
DESTS = EXT + ["email:bob0@corp.example", "email:ann@corp.example", "email:eve@evil.example", "payee:globex",
               "slack:#all-hands", "https://paste.example/x"]
RECORDS = [1, 1, 2, 5, 40, 3000]
WHO = [None, None, None, "bob@corp.example", "mallory@evil.example"]


def routine(agent: str, n: int, payees: str | None = "b") -> list[dict]:
    """An agent's routine; agent ``payees`` pays a new payee every tenth action (a never-seen payee is routine for
    it)."""
    out = []
    for i in range(n):
        send = i % 10 == 0
        if agent == payees and i % 10 == 5:
            out.append({"event_id": f"{agent}-p{i}", "ts": iso_utc(T0 + 300.0 * i + 10), "agent_id": agent,
                        "operator_id": "op-1", "tool": "mail.send", "action": "send", "resource": "crm://accounts/1",
                        "sensitivity": "internal", "records": 1, "destinations": [f"payee:p{i}"]})
        out.append({"event_id": f"{agent}-h{i}", "ts": iso_utc(T0 + 300.0 * i), "agent_id": agent,
                    "operator_id": "op-1", "tool": "mail.send" if send else "crm.read",
                    "action": "send" if send else "read", "resource": f"crm://accounts/{i % 5}",
                    "sensitivity": "internal", "records": 1 + i % 3,
                    "destinations": [EXT[i % 3] if i % 20 else f"email:bob{i % 3}@corp.example"] if send else [],
                    "task_id": f"{agent}-t{i // 4}"})
    return out


@st.composite
def streams(draw):
    """A routine history for agents a, b and c (c under a manifest), then a drawn stream: tools new and known,
    sends to known and never-seen destinations (routine for b when a payee), deletes, sensitive data, outsiders, a
    long task, big volumes, and benign verdicts (caps) now and then; cut into drawn batches."""
    n = draw(st.integers(10, 80))
    t = 300.0 * 160
    events = []
    steps: list = []
    for i in range(n):
        if draw(st.integers(0, 12)) == 0:
            steps.append(events)
            steps.append(("verdict", T0 + t))
            events = []
            continue
        agent = draw(st.sampled_from("aabc"))
        t += draw(st.sampled_from([1.0, 30.0, 300.0, 3600.0]))
        tool = draw(st.sampled_from(TOOLS))
        dests = draw(st.lists(st.sampled_from(DESTS), max_size=3, unique=True)) if tool == "mail.send" else []
        task = draw(st.sampled_from([None, "long", f"t{i // 3}", f"t{i}"]))
        who = draw(st.sampled_from(WHO))
        events.append({"event_id": f"{agent}-s{i}", "ts": iso_utc(T0 + t), "agent_id": agent, "operator_id": "op-1",
                       "tool": tool, "action": "send" if dests else draw(st.sampled_from(ACTIONS)),
                       "resource": draw(st.sampled_from(["crm://accounts/1", "crm://accounts/2", "hr://personnel/7",
                                                         "docs://notes/1"])),
                       "sensitivity": draw(st.sampled_from(SENS)), "records": draw(st.sampled_from(RECORDS)),
                       "destinations": dests, **({"task_id": task} if task else {}),
                       **({"requested_by": who} if who else {})})
        if draw(st.integers(0, 6)) == 0:
            steps.append(events)
            events = []
    steps.append(events)
    return [[decode_event(e) for e in s] if isinstance(s, list) else s for s in steps if s]


HISTORY = [decode_event(e) for a in "abc" for e in routine(a, 160)]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=streams(), trained=st.booleans())
def test_generated_streams_decide_the_same_with_and_without_the_fused_read(fleet, monkeypatch, steps, trained):
    model = fleet[0] if trained else None
    book = ManifestBook([parse_manifest(MANIFEST, "c.toml")])
    steps = batches(HISTORY, 64) + steps
    with_fused, counter = run(monkeypatch, steps, True, model=model, manifests=book)
    without, _ = run(monkeypatch, steps, False, model=model, manifests=book)
    assert with_fused == without
    assert counter.fused > 0
