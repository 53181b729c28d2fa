"""Engine.freeze_manual: a human's freeze has the outcome of an automatic one (breaker open, one incident)."""
from __future__ import annotations

from detector.engine import AgentState, Engine
from detector.events import decode_event

T0 = 1772442000.0  # 2026-03-02T09:00:00Z


def ev(i: int, **kw):
    e = {"event_id": f"e{i}", "ts": f"2026-03-02T08:{i:02d}:00Z", "agent_id": "a", "operator_id": "ops",
         "requested_by": "carol", "task_id": "t1", "instruction_hash": "h1", "tool": "crm.query",
         "action": "read", "resource": "crm://x", "sensitivity": "internal", "records": 2}
    e.update(kw)
    return decode_event(e)


def engine_with_history(n: int = 5) -> Engine:
    eng = Engine()
    for i in range(n):
        eng.process(ev(i))
    return eng


def test_a_manual_freeze_opens_the_breaker_with_a_contract_freeze_command_and_an_incident():
    eng = engine_with_history()
    d = eng.freeze_manual("a", at=T0, by="alice", reason="odd exports", severity="critical")
    assert eng.breaker_state("a") == "open" and d.transition == ("closed", "open") and d.event is None
    assert d.freeze == {"command": "freeze", "agent_id": "a", "incident_id": d.freeze["incident_id"],
                        "issued_at": "2026-03-02T09:00:00Z", "reason": "odd exports", "issued_by": "alice"}
    iid = d.freeze["incident_id"]
    assert iid.startswith("man-") and eng.agents["a"].breaker.incident_id == iid
    inc = d.incident
    assert (inc["incident_id"], inc["severity"], inc["frozen_by"], inc["manual"]) == (iid, "critical", "alice", True)
    att = inc["attribution"]
    assert att["operator_id"] == "ops" and att["requested_by"] == "carol" and att["instruction_hash"] == "h1"
    assert att["task_events"] == [f"e{i}" for i in range(5)] and len(inc["trace"]) == 5


def test_the_incident_id_is_stable_for_the_same_agent_time_and_person():
    ids = {engine_with_history().freeze_manual("a", at=T0, by="alice", reason="x").freeze["incident_id"]
           for _ in range(2)}
    other = engine_with_history().freeze_manual("a", at=T0, by="bob", reason="x").freeze["incident_id"]
    assert len(ids) == 1 and other not in ids


def test_an_unknown_or_already_frozen_agent_is_not_frozen_again():
    eng = engine_with_history()
    assert eng.freeze_manual("nobody", at=T0, by="alice", reason="x") is None
    assert eng.freeze_manual("a", at=T0, by="alice", reason="x") is not None
    assert eng.freeze_manual("a", at=T0 + 1, by="bob", reason="again") is None


def test_a_frozen_agent_stays_frozen_through_its_next_actions_until_released():
    eng = engine_with_history()
    iid = eng.freeze_manual("a", at=T0, by="alice", reason="x").freeze["incident_id"]
    big = ev(30, action="send", sensitivity="restricted", records=5000, destinations=["email:x@evil.example"])
    d = eng.process(big)
    assert d.freeze is None and d.record["breaker_state"] == "open"  # no second incident
    assert eng.agents["a"].breaker.incident_id == iid
    cmd = eng.release("a", at=T0 + 60, by="bob", reason="reviewed")
    assert cmd["incident_id"] == iid and eng.breaker_state("a") == "half_open"


def test_the_frozen_state_survives_a_round_trip_through_the_changelog_format():
    eng = engine_with_history()
    iid = eng.freeze_manual("a", at=T0, by="alice", reason="x").freeze["incident_id"]
    st = AgentState.load(eng.dump_agent("a"))
    assert st.breaker.state == "open" and st.breaker.incident_id == iid and st.breaker.opened_t == T0
