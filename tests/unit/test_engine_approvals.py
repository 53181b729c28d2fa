"""Approval ids are checked inside the engine, so the worker and ``replay --approvals`` decide alike."""
from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime, timedelta, timezone

import pytest

from detector.approvals import ApprovalBook, decide, request
from detector.engine import Engine
from detector.events import decode_event
from detector.gate import ALLOW, NEEDS_APPROVAL, Gate
from detector.policy import Policy

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=timezone.utc)
POLICY = Policy.from_dict({"internal_domains": ["corp.example"]})


def ev(at: float, **kw):
    d = {"event_id": f"e{at}", "ts": (T0 + timedelta(seconds=at)).isoformat().replace("+00:00", "Z"),
         "agent_id": "agent-a", "operator_id": "op-1", "tool": "hr_db.query", "action": "read",
         "resource": "hr://personnel/1", "sensitivity": "internal", "records": 1, "task_id": f"T{int(at) // 240}"}
    d.update(kw)
    return decode_event(d)


def export(at: float, approval_id: str | None):
    return ev(at, event_id=f"x{at}", tool="mail.send", action="send", resource="hr://personnel",
              sensitivity="restricted", records=500, destinations=["email:auditor@external.example"],
              approval_id=approval_id)


def routine():
    return [ev(60.0 * k) for k in range(40)]


def approved_book(at: float) -> ApprovalBook:
    proposed = export(at, None)
    now = proposed.t
    req = request(proposed, approval_id="apr-1", now=now - 300, reasons=["novel"], score=0.9, requested_by="rt")
    book = ApprovalBook()
    book.apply(req)
    book.apply(decide(req, approve=True, by="lead", reason="yearly audit", now=now - 200, ttl_s=3600))
    return book


def run(engine: Engine, last):
    engine.process_batch(routine())
    return engine.process(last)


def test_an_approval_that_covers_the_action_signs_it_off():
    d = run(Engine(policy=POLICY, approvals=approved_book(2500)), export(2500, "apr-1"))
    assert d.approval_refused is None and d.record["action_taken"] != "freeze"


def test_a_forged_own_approval_id_is_refused_and_the_action_scored_as_unapproved():
    d = run(Engine(policy=POLICY, approvals=ApprovalBook()), export(2500, "apr-made-up"))
    assert d.approval_refused == "forged"
    assert d.record["action_taken"] == "freeze"
    assert any(r["feature"] == "approval_refused" for r in d.record["reasons"])
    # without an approvals source the same id is taken at its word (offline replay, documented)
    d = run(Engine(policy=POLICY), export(2500, "apr-made-up"))
    assert d.approval_refused is None and d.record["action_taken"] != "freeze"


def test_an_approval_used_beyond_its_scope_or_before_it_was_given_is_refused():
    book = approved_book(2500)
    bigger = export(2500, "apr-1").replace(records=501)
    assert run(Engine(policy=POLICY, approvals=book), bigger).approval_refused == "out_of_scope"
    early = export(2500 - 1000, "apr-1")  # ran before the lead approved it (minus the grace)
    assert Engine(policy=POLICY, approvals=book).process(early).approval_refused == "pending"


@pytest.mark.parametrize("aid", ["CHG-1", "APR-1", " apr-1", "apr-1 ", "Apr-1"])
def test_an_id_this_system_did_not_issue_is_no_approval_it_neither_allows_nor_suppresses_a_freeze(aid):
    # a change ticket, the genuine id upper-cased or padded: none of them is an approval flowbreaker issued
    book = approved_book(2500)
    d = run(Engine(policy=POLICY, approvals=book), export(2500, aid))
    assert d.approval_refused == "forged"
    assert d.record["action_taken"] == "freeze"
    eng = Engine(policy=POLICY, approvals=approved_book(2500))
    eng.process_batch(routine())
    assert Gate(eng).check(export(2500, aid))[0] == NEEDS_APPROVAL
    # the genuine id, exactly as issued, still signs the same action off
    assert run(Engine(policy=POLICY, approvals=approved_book(2500)), export(2500, "apr-1")).approval_refused is None


def test_taking_other_systems_ids_at_their_word_is_no_longer_an_option():
    with pytest.raises(TypeError):
        ApprovalBook(strict=False)  # type: ignore[call-arg]


def test_the_gate_holds_an_action_whose_approval_id_is_refused():
    eng = Engine(policy=POLICY, approvals=ApprovalBook())
    eng.process_batch(routine())
    assert Gate(eng).check(export(2500, "apr-made-up"))[0] == NEEDS_APPROVAL
    eng2 = Engine(policy=POLICY, approvals=approved_book(2500))
    eng2.process_batch(routine())
    assert Gate(eng2).check(export(2500, "apr-1"))[0] == ALLOW


def test_replay_with_an_approvals_dump_checks_ids_like_the_worker(tmp_path):
    events = tmp_path / "events.jsonl"
    rows = [e.to_dict() for e in routine()] + [export(2500, "apr-1").to_dict(), export(2600, "apr-forged").to_dict()]
    events.write_text("".join(json.dumps(r) + "\n" for r in rows))
    book = approved_book(2500)
    dump = tmp_path / "approvals.jsonl"
    dump.write_text(json.dumps(book.get("apr-1")) + "\nnot json\n")
    out = tmp_path / "decisions.jsonl"
    proc = subprocess.run([sys.executable, "-m", "streams.cli.main", "replay", "--policy", "examples/policy.toml",
                           "--input", str(events), "--out", str(out), "--approvals", str(dump)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "1 lines are not approval records" in proc.stderr
    recs = {r["event_id"]: r for r in map(json.loads, out.read_text().splitlines())}
    assert not any(r["feature"] == "approval_refused" for r in recs["x2500"]["reasons"])
    assert any(r["feature"] == "approval_refused" for r in recs["x2600"]["reasons"])


def test_a_worker_told_to_take_other_systems_ids_at_their_word_refuses_to_start():
    from streams.api.server import approvals_setting_error

    assert approvals_setting_error({}) is None and approvals_setting_error({"FLOWBREAKER_STRICT_APPROVALS": "yes"}) is None
    why = approvals_setting_error({"FLOWBREAKER_STRICT_APPROVALS": "0"})
    assert why is not None and "not supported" in why and "\n" not in why
