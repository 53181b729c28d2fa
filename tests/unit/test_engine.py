"""The engine (detector/engine.py) and the pre-action gate (detector/gate.py).

Contract tests over the one stateful class that decides: seeded determinism,
batch-size independence, duplicates, state round trip, input not mutated,
unknown fields tolerated, the exact decision record and freeze command of the
outside contract (sections 3 and 4), and detection end to end on simulated data.
"""
from __future__ import annotations

import copy
import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from detector.breaker import CLOSED, HALF_OPEN, OPEN
from detector.engine import ONLINE_MODEL_VERSION, YOUNG_N, Engine
from detector.events import EventError, decode_event
from detector.gate import Gate
from detector.policy import load_policy
from models import simulate as sim
from models.store import TrainedModel
from models.train import fit

REPO = Path(__file__).resolve().parents[2]
POLICY = load_policy(REPO / "examples" / "policy.toml")
RECORD_FIELDS = {"event_id", "agent_id", "ts", "score", "severity", "reasons", "action_taken", "breaker_state",
                 "model_version"}
FREEZE_FIELDS = {"command", "agent_id", "incident_id", "issued_at", "reason", "issued_by"}
T0 = datetime(2026, 3, 2, 9, 0, tzinfo=timezone.utc)


# --------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def fleet():
    """A small simulated fleet: (history dicts, later dicts, labels). Hour profiles and a new agent included."""
    events, labels = sim.simulate(n_agents=8, days=6, seed=5)
    history, rest = sim.split_history(events, labels)
    return history, rest, labels


@pytest.fixture(scope="module")
def model(fleet):
    history, _, _ = fleet
    card, arrays = fit([decode_event(e) for e in history], POLICY, seed=0, n_estimators=30)
    return TrainedModel(card, arrays)


@pytest.fixture(scope="module")
def later(fleet):
    return [decode_event(e) for e in fleet[1]]


def outcomes(decisions):
    return [(d.duplicate, d.record, d.freeze, d.incident, d.transition) for d in decisions]


def ev(at: float = 0.0, **kw):
    d = {"event_id": f"e{at}", "ts": (T0 + timedelta(seconds=at)).isoformat().replace("+00:00", "Z"),
         "agent_id": "agent-a", "operator_id": "op-1", "tool": "hr_db.query", "action": "read",
         "resource": "hr://personnel/1", "sensitivity": "internal", "records": 1}
    d.update(kw)
    return decode_event(d)


def exfil(at: float, **kw):
    kw = {"event_id": f"x{at}", "tool": "mail.send", "action": "send", "resource": "hr://personnel",
          "sensitivity": "restricted", "records": 500, "destinations": ["email:eve@evil.example"],
          "task_id": "T-exfil", "requested_by": "mallory", "instruction_hash": "h-2", **kw}
    return ev(at, **kw)


def routine(n: int = 40, every: float = 60.0, **kw):
    return [ev(k * every, task_id=f"T-{k // 4}", parent_event_id=f"e{(k - 1) * every}" if k else None,
               instruction_hash="h-1", **kw) for k in range(n)]


# --------------------------------------------------------------------------- contract tests

@pytest.mark.parametrize("with_model", [False, True])
def test_the_same_input_gives_the_same_decisions_in_fresh_engines(later, model, with_model):
    m = model if with_model else None
    a = Engine(policy=POLICY, model=m).process_batch(later)
    b = Engine(policy=POLICY, model=m).process_batch(later)
    assert outcomes(a) == outcomes(b)
    assert any(d.record["severity"] != "ok" for d in a)


@pytest.mark.parametrize("with_model", [False, True])
def test_decisions_do_not_depend_on_batch_size(later, model, with_model):
    m = model if with_model else None
    one = Engine(policy=POLICY, model=m)
    reference = outcomes([one.process(e) for e in later])
    for size in (7, 64, len(later)):
        eng = Engine(policy=POLICY, model=m)
        got = []
        for k in range(0, len(later), size):
            got += eng.process_batch(later[k:k + size])
        assert outcomes(got) == reference, size


def test_a_duplicate_event_id_is_scored_once_and_changes_nothing(later):
    plain, doubled = Engine(policy=POLICY), Engine(policy=POLICY)
    head, tail = later[:300], later[300:600]
    plain.process_batch(head)
    doubled.process_batch(head)
    again = doubled.process_batch(head[-10:])
    assert all(d.duplicate and d.record == {} and d.freeze is None for d in again)
    assert outcomes(plain.process_batch(tail)) == outcomes(doubled.process_batch(tail))


def test_a_duplicate_inside_one_batch_is_recognised():
    eng = Engine()
    e = ev(0)
    first, second = eng.process_batch([e, e])
    assert not first.duplicate and first.record["event_id"] == e.event_id
    assert second.duplicate


def test_dump_and_load_of_agent_state_gives_identical_later_decisions(later, model):
    cut = len(later) // 2
    whole = Engine(policy=POLICY, model=model)
    whole.process_batch(later[:cut])
    resumed = Engine(policy=POLICY, model=model)
    for agent in list(whole.agents):
        blob = whole.dump_agent(agent)
        assert isinstance(blob, bytes)
        resumed.load_agent(agent, blob)
    a, b = whole.process_batch(later[cut:]), resumed.process_batch(later[cut:])
    # traces are not part of the agent state, so incidents differ in their trace only
    assert [(d.duplicate, d.record, d.freeze) for d in a] == [(d.duplicate, d.record, d.freeze) for d in b]


def test_dump_of_an_unknown_agent_is_none():
    assert Engine().dump_agent("nobody") is None


def test_agent_state_stays_small():
    eng = Engine(policy=POLICY)
    eng.process_batch(routine(200) + [exfil(20_000)])
    # issue 18 added pending novelty (at most 512 bytes), kind profiles (at most 336) and, after a benign
    # verdict, its caps (200): 2 KiB before, still bounded
    assert len(eng.dump_agent("agent-a")) <= 2048 + 512 + 336 + 200


def test_the_input_event_and_its_dict_are_not_mutated(fleet, model):
    raws = copy.deepcopy(fleet[1][:400])
    events = [decode_event(r) for r in raws]
    before = [e.to_dict() for e in events]
    eng = Engine(policy=POLICY, model=model)
    eng.process_batch(events)
    Gate(eng).verdict(events[-1])
    assert raws == fleet[1][:400]
    assert [e.to_dict() for e in events] == before


def test_unknown_event_fields_are_tolerated_and_change_no_decision(fleet):
    raws = fleet[1][:400]
    extended = [{**r, "x_vendor": {"trace": [1, 2]}, "confidence": 0.3} for r in raws]
    a = Engine(policy=POLICY).process_batch([decode_event(r) for r in raws])
    b = Engine(policy=POLICY).process_batch([decode_event(json.dumps(r).encode()) for r in extended])
    assert outcomes(a) == outcomes(b)


def test_the_decision_record_has_exactly_the_contract_fields(later, model):
    decisions = Engine(policy=POLICY, model=model).process_batch(later)
    severities = set()
    for d, e in zip(decisions, later):
        rec = d.record
        assert set(rec) == RECORD_FIELDS
        assert (rec["event_id"], rec["agent_id"], rec["ts"]) == (e.event_id, e.agent_id, e.ts)
        assert isinstance(rec["score"], float) and 0.0 <= rec["score"] <= 1.0
        assert rec["severity"] in ("ok", "low", "medium", "high", "critical")
        assert rec["action_taken"] in ("none", "alert", "freeze")
        assert rec["breaker_state"] in (CLOSED, OPEN, HALF_OPEN)
        assert rec["model_version"] == model.version
        assert (rec["reasons"] == []) == (rec["severity"] == "ok")
        for r in rec["reasons"]:
            assert set(r) == {"feature", "value", "baseline", "detail"}
            assert isinstance(r["detail"], str) and r["detail"]
        json.dumps(rec)
        severities.add(rec["severity"])
    assert {"ok", "medium"} <= severities


def test_without_a_model_the_record_says_online_only():
    assert Engine().process(ev(0)).record["model_version"] == ONLINE_MODEL_VERSION


# --------------------------------------------------------------------------- freeze and release

def _frozen_engine():
    eng = Engine(policy=POLICY, trace_length=50)
    normal = eng.process_batch(routine(40))
    assert all(d.freeze is None for d in normal)
    d = eng.process(exfil(2500))
    return eng, d


def test_a_bulk_restricted_send_to_a_never_seen_address_freezes_the_agent():
    eng, d = _frozen_engine()
    assert d.record["action_taken"] == "freeze"
    assert d.record["severity"] == "critical"
    assert d.record["breaker_state"] == OPEN
    assert eng.breaker_state("agent-a") == OPEN
    assert d.transition == (CLOSED, OPEN)
    features = [r["feature"] for r in d.record["reasons"]]
    assert "novel_outbound" in features and "task_exfil" in features


def test_a_freeze_gives_exactly_one_freeze_command_with_the_contract_fields():
    eng, d = _frozen_engine()
    cmd = d.freeze
    assert set(cmd) == FREEZE_FIELDS
    assert cmd["command"] == "freeze" and cmd["issued_by"] == "flowbreaker"
    assert cmd["agent_id"] == "agent-a" and cmd["issued_at"] == d.event.ts
    assert cmd["incident_id"].startswith("inc-") and cmd["reason"]
    more = eng.process_batch([exfil(2500 + k, event_id=f"more-{k}") for k in range(1, 20)])
    assert all(m.freeze is None and m.record["action_taken"] != "freeze" for m in more)
    assert all(m.record["breaker_state"] == OPEN for m in more)


def test_a_freeze_produces_an_incident_with_trace_and_attribution():
    eng, d = _frozen_engine()
    inc = d.incident
    assert inc["incident_id"] == d.freeze["incident_id"]
    assert inc["trigger_event_id"] == d.event.event_id and inc["agent_id"] == "agent-a"
    trace = inc["trace"]
    assert len(trace) == 41 and trace[-1]["event_id"] == d.event.event_id
    assert all("payload" not in t and "content" not in t for t in trace)
    att = inc["attribution"]
    assert att["operator_id"] == "op-1" and att["requested_by"] == "mallory"
    assert att["instruction_hash"] == "h-2" and att["task_id"] == "T-exfil"
    assert att["task_events"] == [d.event.event_id]
    assert att["instruction_hashes_seen"] == ["h-1", "h-2"]
    assert att["requesters_seen"] == ["mallory"]
    json.dumps(inc)


def test_the_parent_chain_follows_parent_event_ids_through_the_trace():
    eng = Engine(policy=POLICY)
    eng.process_batch(routine(40))
    d = eng.process(exfil(2500, parent_event_id="e2340.0"))
    assert d.incident["attribution"]["parent_chain"] == [d.event.event_id, "e2340.0", "e2280.0", "e2220.0"] + \
        [f"e{k * 60.0}" for k in range(36, -1, -1)]


def test_the_trace_is_bounded():
    eng = Engine(policy=POLICY, trace_length=10)
    eng.process_batch(routine(40))
    d = eng.process(exfil(2500))
    assert len(d.incident["trace"]) == 10


def test_release_moves_a_frozen_agent_to_half_open_with_a_release_command():
    eng, d = _frozen_engine()
    cmd = eng.release("agent-a", at=T0 + timedelta(hours=1), by="alice@corp.example", reason="checked")
    assert set(cmd) == FREEZE_FIELDS
    assert cmd == {"command": "release", "agent_id": "agent-a", "incident_id": d.freeze["incident_id"],
                   "issued_at": "2026-03-02T10:00:00Z", "reason": "checked", "issued_by": "alice@corp.example"}
    assert eng.breaker_state("agent-a") == HALF_OPEN
    nxt = eng.process(ev(6 * 3600))  # windows have forgotten the exfiltration; probation lasts a day
    assert nxt.record["breaker_state"] == HALF_OPEN and nxt.record["action_taken"] == "none"


def test_an_ordinary_action_right_after_a_release_does_not_refreeze_the_agent():
    eng, d = _frozen_engine()
    eng.release("agent-a", at=T0 + timedelta(minutes=50), by="alice", reason="checked")
    nxt = eng.process(ev(3060))
    assert nxt.record["action_taken"] != "freeze"
    assert not any(r["feature"].startswith("volume") for r in nxt.record["reasons"])


def test_release_of_an_agent_that_is_not_frozen_is_none():
    eng = Engine()
    assert eng.release("nobody", at=0.0, by="alice", reason="r") is None
    eng.process(ev(0))
    assert eng.release("agent-a", at=T0, by="alice", reason="r") is None
    assert eng.breaker_state("agent-a") == CLOSED


def test_half_open_closes_again_after_probation_time_and_enough_actions():
    eng, _ = _frozen_engine()
    eng.release("agent-a", at=(T0 + timedelta(hours=1)).timestamp(), by="alice", reason="ok")
    th = POLICY.thresholds
    for k in range(int(th.probation_min_events)):
        d = eng.process(ev(3600 + 600 * (k + 1)))
        assert d.record["breaker_state"] == HALF_OPEN
    d = eng.process(ev(3600 + th.probation_s + 60))
    assert d.transition == (HALF_OPEN, CLOSED) and d.record["breaker_state"] == CLOSED


def test_one_event_dated_far_in_the_future_does_not_end_probation():
    eng, _ = _frozen_engine()
    eng.release("agent-a", at=(T0 + timedelta(hours=1)).timestamp(), by="alice", reason="ok")
    far = decode_event({**ev(0).to_dict(), "event_id": "future", "ts": "2099-01-01T00:00:00Z"})
    d = eng.process(far)
    assert d.transition is None and eng.breaker_state("agent-a") == HALF_OPEN


def test_a_trip_after_a_release_is_a_new_incident_even_on_the_same_trigger():
    eng, first = _frozen_engine()
    eng.release("agent-a", at=T0 + timedelta(hours=1), by="alice", reason="checked")
    # the same trigger again (its id long out of the duplicate ring is not needed: same id, new content)
    again = eng.process(exfil(4000, event_id="x-again"))
    assert again.record["action_taken"] == "freeze"
    assert again.freeze["incident_id"] != first.freeze["incident_id"]
    assert again.incident["incident_id"] == again.freeze["incident_id"]


def test_an_event_id_reused_for_a_different_action_is_decided_and_flagged():
    eng = Engine(policy=POLICY)
    eng.process_batch(routine(40))
    harmful = exfil(2500, event_id=f"e{39 * 60.0}")  # the id of the last routine read
    d = eng.process(harmful)
    assert not d.duplicate and d.reused_id
    assert d.record["action_taken"] == "freeze"
    assert any(r["feature"] == "reused_event_id" for r in d.record["reasons"])
    # a quiet action reusing an id is still shown to an analyst
    eng2 = Engine(policy=POLICY)
    eng2.process_batch(routine(40))
    quiet = eng2.process(ev(2500, event_id=f"e{38 * 60.0}", records=2))
    assert quiet.reused_id and quiet.record["severity"] != "ok"
    # and the same event sent again is still a plain duplicate
    assert eng2.process(ev(2500, event_id=f"e{38 * 60.0}", records=2)).duplicate


def test_an_approved_action_is_counted_but_never_the_cause_of_a_freeze():
    outcomes_ = {}
    for approval in (None, "APR-77"):
        eng = Engine(policy=POLICY)
        eng.process_batch(routine(40))
        d = eng.process(ev(2500, action="delete", records=5_000_000, approval_id=approval))
        outcomes_[approval] = (d, eng.breaker_state("agent-a"))
    (plain, plain_state), (approved, approved_state) = outcomes_[None], outcomes_["APR-77"]
    assert plain.record["action_taken"] == "freeze" and plain_state == OPEN  # the same action unapproved
    assert approved.freeze is None and approved.record["action_taken"] != "freeze" and approved_state == CLOSED
    assert approved.record["severity"] != "ok"  # still scored and explained
    assert [r["feature"] for r in approved.record["reasons"]][-1] == "approved"
    assert "APR-77" in approved.record["reasons"][-1]["detail"]


@pytest.mark.parametrize("field", ["records", "bytes"])
def test_any_decodable_event_is_decided_without_an_exception(field):
    raw = json.dumps({**ev(0).to_dict(), field: 10**400}).encode()
    try:
        event = decode_event(raw)
    except EventError:
        return  # rejected at the door is fine too
    d = Engine().process(event)
    assert 0.0 <= d.record["score"] <= 1.0


# --------------------------------------------------------------------------- gate

def test_the_gate_denies_any_outward_action_of_a_frozen_agent():
    eng, _ = _frozen_engine()
    gate = Gate(eng)
    assert gate.verdict(ev(2600, action="send", destinations=["slack:#eng"])) == "deny"
    assert gate.verdict(ev(2600, action="delete")) == "deny"
    assert gate.verdict(exfil(2600, approval_id="APR-1")) == "deny"


def test_a_restricted_bulk_send_to_a_never_seen_external_address_needs_approval():
    eng = Engine(policy=POLICY)
    eng.process_batch(routine(40))
    assert Gate(eng).verdict(exfil(2500)) == "needs_approval"
    assert Gate(Engine(policy=POLICY)).verdict(exfil(0)) == "needs_approval"


def test_the_same_send_with_an_approval_is_allowed():
    eng = Engine(policy=POLICY)
    eng.process_batch(routine(40))
    assert Gate(eng).verdict(exfil(2500, approval_id="APR-1")) == "allow"


def test_an_ordinary_internal_message_is_allowed():
    eng = Engine(policy=POLICY)
    eng.process_batch(routine(40, action="send", destinations=["slack:@bob"], sensitivity="internal"))
    assert Gate(eng).verdict(ev(2450, action="send", destinations=["slack:@bob"])) == "allow"


def test_a_read_gets_no_verdict_and_a_delete_does():
    gate = Gate(Engine(policy=POLICY))
    assert gate.verdict(ev(0)) is None
    assert gate.verdict(ev(0, action="write")) is None
    assert gate.verdict(ev(0, action="delete")) in ("allow", "needs_approval", "deny")


def test_asking_the_gate_changes_nothing_in_the_engine(later):
    plain, asked = Engine(policy=POLICY), Engine(policy=POLICY)
    gate = Gate(asked)
    for e in later[:500]:
        gate.check(e)
        a, b = plain.process(e), asked.process(e)
        assert (a.record, a.freeze) == (b.record, b.freeze)


@pytest.mark.parametrize("with_model", [False, True])
@pytest.mark.parametrize("on_the_brink", [False, True])
def test_assess_gives_the_score_and_harm_of_the_decision_the_stream_then_makes(later, model, with_model,
                                                                              on_the_brink):
    """The pre-action check and the stream score with one pipeline: for every event of the fleet, what
    ``assess`` says just before is what ``process_batch`` then decides (its score, its evidence of harm,
    its deviations). ``on_the_brink`` puts each agent's profile one learnt action short of established
    (weight YOUNG_N - 1) before each of its events: the stream judges the evidence of harm on the weight
    after learning from the action, so a check that judged it on the weight before would disagree."""
    eng = Engine(policy=POLICY, model=model if with_model else None)
    compared = alerts = harmful = 0
    for e in later:
        st = eng.agents.get(e.agent_id)
        if on_the_brink and st is not None:
            st.baseline.n = YOUNG_N - 1.0
        score, _, z, state, harm = eng.assess(e)
        d = eng.process_batch([e])[0]
        if d.duplicate or d.reused_id:  # the stream raises a reused id's score; a duplicate is not scored
            continue
        assert (round(score, 4), harm, z) == (d.record["score"], d.harm, d.z), e.event_id
        assert d.transition is not None or d.record["breaker_state"] == state, e.event_id
        compared += 1
        alerts += d.record["severity"] != "ok"
        harmful += harm > 0.0
    assert compared > 1000 and alerts > 0 and harmful > 0  # the comparison covered rare and harmful actions


# --------------------------------------------------------------------------- end to end

@pytest.fixture(scope="module")
def simulated_replay():
    """Train on a simulated fleet's clean history, replay its incident window (< 20 s)."""
    events, labels = sim.simulate(n_agents=40, days=7, seed=0)
    history, rest = sim.split_history(events, labels)
    card, arrays = fit([decode_event(e) for e in history], POLICY, seed=0, n_estimators=100)
    eng = Engine(policy=POLICY, model=TrainedModel(card, arrays))
    decisions = eng.process_batch([decode_event(e) for e in rest])
    frozen = {d.event.event_id for d in decisions if d.freeze is not None}
    return labels, frozen


def test_every_simulated_incident_kind_gets_a_freeze_on_one_of_its_events(simulated_replay):
    labels, frozen = simulated_replay
    missed = sorted({i["kind"] for i in labels["incidents"] if not frozen & set(i["event_ids"])})
    assert {i["kind"] for i in labels["incidents"]} == set(sim.INCIDENT_KINDS)
    assert missed == []


def test_no_simulated_look_alike_is_frozen(simulated_replay):
    labels, frozen = simulated_replay
    assert {m["kind"] for m in labels["lookalikes"]} == set(sim.LOOKALIKE_KINDS)
    wrongly = sorted({m["kind"] for m in labels["lookalikes"] if frozen & set(m["event_ids"])})
    assert wrongly == []


def test_a_duplicate_is_recognised_after_many_events_of_other_agents():
    eng = Engine()
    e = ev(0)
    eng.process(e)
    eng.process_batch([ev(k, agent_id=f"other-{k % 5}", event_id=f"o{k}") for k in range(1, 300)])
    eng.process_batch([ev(300 + k, event_id=f"own-{k}") for k in range(20)])  # fewer than the window of 32
    assert eng.process(e).duplicate


# --------------------------------------------------------------------------- model swap

def test_swapping_the_model_keeps_agent_state_and_names_the_new_version_in_decisions():
    events = [decode_event(e) for e in sim.simulate(n_agents=6, days=2, seed=3, incidents=[])[0]]
    card, arrays = fit(events[: len(events) // 2], POLICY, seed=0, n_estimators=10)
    model = TrainedModel(card, arrays)
    eng = Engine(policy=POLICY)
    first = eng.process_batch(events[: len(events) // 2])
    assert {d.record["model_version"] for d in first if not d.duplicate} == {ONLINE_MODEL_VERSION}
    before = {a: st.dump() for a, st in eng.agents.items()}
    eng.swap_model(model)
    assert {a: st.dump() for a, st in eng.agents.items()} == before  # online state carried over
    later = eng.process_batch(events[len(events) // 2:])
    assert {d.record["model_version"] for d in later if not d.duplicate} == {model.version}
    eng.swap_model(None)
    assert eng.model_version == ONLINE_MODEL_VERSION


_p = st.one_of(st.floats(min_value=0.0, max_value=1.0), st.sampled_from((0.0, 1e-300, 1.0 / 3.0, 1.0, float("nan"))))


@settings(max_examples=500, deadline=None)
@given(_p, _p, _p)
def test_an_actions_score_is_the_bonferroni_corrected_least_of_its_three_rarities(p_stat, p_comb, p_harm):
    import struct

    from detector.engine import _score
    from detector.scoring import score_of

    want = score_of(min(1.0, 3.0 * min(p_stat, p_comb, p_harm)))
    got, extra = _score(p_stat, p_comb, p_harm)
    assert struct.pack("d", got) == struct.pack("d", want)
    assert (extra is not None) == (p_comb < p_stat and p_comb < 1e-3)
    assert _score(p_stat, None, p_harm) == (score_of(p_stat), None) or p_stat != p_stat


def test_the_duplicate_ring_keeps_each_events_content_key():
    # process_batch spells content_key out inline: the ring must hold exactly its value
    from detector.engine import _DEDUPE, content_key

    eng = Engine()
    evs = [decode_event({"event_id": f"e{i}", "ts": f"2026-03-02T09:0{i}:00Z", "agent_id": "a", "operator_id": "o",
                         "tool": "t", "action": "send", "resource": "r://x", "sensitivity": "internal",
                         "records": i, "destinations": [f"email:x{i}@y.example"] * i}) for i in range(5)]
    eng.process_batch(evs)
    st_ = eng.agents["a"]
    assert list(st_.seen_content[:5]) == [content_key(e) for e in evs] and len(st_.seen_content) == _DEDUPE
    assert all(k & 1 for k in st_.seen_content[:5])


def test_a_version_5_ring_tells_a_redelivery_from_a_reused_id_across_the_upgrade():
    """Version 5 kept the CRC-32 of an event's msgpack as its content key; version 6 keys its values
    (_py_content_key). After the upgrade, an event decided before it and delivered again is still a duplicate,
    an id reused for another action is still decided (the contract's dedupe), and once the ring has turned the
    state is written as version 6."""
    from array import array

    import msgspec

    from detector.engine import _DEDUPE, _STATE_VERSION, AgentState, _legacy_content_key

    def ev(i, **kw):
        return decode_event({"event_id": f"e{i}", "ts": f"2026-03-02T09:{i:02d}:00Z", "agent_id": "a",
                             "operator_id": "o", "tool": "t", "action": "read", "resource": "r://x",
                             "sensitivity": "internal", **kw})

    eng = Engine()
    eng.process_batch([ev(1), ev(2)])
    parts = msgspec.msgpack.decode(eng.dump_agent("a"))
    assert parts[0] == _STATE_VERSION == 6
    content = array("H", parts[7])
    content[0], content[1] = _legacy_content_key(ev(1)), _legacy_content_key(ev(2))  # as version 5 wrote them
    v5 = msgspec.msgpack.encode([5, *parts[1:7], content.tobytes(), *parts[8:]])
    assert AgentState.breaker_of(v5).to_tuple() == eng.agents["a"].breaker.to_tuple()

    up = Engine()
    up.load_agent("a", v5)
    redelivered, reused = up.process_batch([ev(1), ev(2, resource="r://elsewhere")])
    assert redelivered.duplicate and not reused.duplicate and reused.reused_id
    assert "reused_event_id" in [r["feature"] for r in reused.record["reasons"]]
    assert up.agents["a"].legacy_keys == _DEDUPE - 1  # the duplicate wrote nothing: one old key overwritten
    assert msgspec.msgpack.decode(up.dump_agent("a"))[0] == 5  # the ring may still hold a version-5 key
    up.process_batch([ev(i) for i in range(3, 3 + _DEDUPE)])
    assert msgspec.msgpack.decode(up.dump_agent("a"))[0] == 6

    same_as_v6 = Engine()  # the same ring read as version 6: its old keys are other content, so a reuse
    same_as_v6.load_agent("a", msgspec.msgpack.encode([6, *parts[1:7], content.tobytes(), *parts[8:]]))
    [d] = same_as_v6.process_batch([ev(1)])
    assert not d.duplicate and d.reused_id
