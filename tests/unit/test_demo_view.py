"""What the live demo prints (streams/demo/live.py's SocView): one time zone, short lines, labelled numbers.

Fed with records shaped like the worker's and the runtime journal's, with a fixed clock.
"""
from __future__ import annotations

import re

from streams.demo.live import WIDTH, SocView, clip, wrap
from streams.demo.simulated_runtime import FreezeGuard, Runtime

T0 = 1772442000.0  # 2026-03-02T09:00:00Z


def view() -> tuple[SocView, list[str]]:
    out: list[str] = []
    return SocView(write=out.append, clock=lambda: T0), out


def incident(offset: str = "+01:00") -> dict:
    long = "x" * 300
    trace = [{"event_id": f"e{i}", "ts": f"2026-03-02T10:0{i}:00.000{offset}", "action": "send", "tool": "mail.send",
              "resource": f"hr://personnel/{long}", "sensitivity": "restricted", "records": 40,
              "destinations": ["email:a@x.example", "email:b@x.example", "email:c@x.example"],
              "destination_count": 3, "score": 0.9} for i in range(6)]
    return {"incident_id": "inc-1", "agent_id": "hr-agent-003", "opened_at": f"2026-03-02T10:05:00.000{offset}",
            "trigger_event_id": "e5", "score": 0.97, "severity": "critical",
            "reasons": [{"feature": "task_exfil", "detail": "restricted data sent out " + long}],
            "attribution": {"operator_id": "team-hr", "requested_by": None, "task_id": "t1",
                            "instruction_hash": "sha256:" + "f" * 64, "parent_chain": ["e5", "e4", "e3"]},
            "trace": trace}


def test_every_line_fits_in_the_width_and_every_time_is_utc():
    v, out = view()
    v.on_incident(incident("+01:00"))
    v.on_decision({"agent_id": "hr-agent-003", "action_taken": "alert", "severity": "high", "score": 0.88,
                   "reasons": [{"feature": "volume_1h", "detail": "d" * 400}]})
    assert all(len(line) <= WIDTH for line in out), [len(x) for x in out]
    times = [t for line in out for t in re.findall(r"\b\d\d:\d\d:\d\d\b", line)]
    # the event said 10:05 at +01:00: shown as 09:05 UTC, like the stamps (09:00:00)
    assert "09:05:00" in times and "10:05:00" not in times and "09:00:00" in times
    assert any("09:05:00 UTC" in line for line in out)


def test_the_same_trace_in_another_offset_prints_the_same_lines():
    a, out_a = view()
    b, out_b = view()
    a.on_incident(incident("+01:00"))
    inc = incident("+01:00")
    for e in inc["trace"]:  # the same instants written in UTC
        e["ts"] = e["ts"].replace("T10:", "T09:").replace("+01:00", "Z")
    inc["opened_at"] = "2026-03-02T09:05:00.000Z"
    b.on_incident(inc)
    assert out_a == out_b


def test_a_held_action_shows_its_reason_or_says_there_was_none_and_one_short_approve_command():
    v, out = view()
    held = {"event": "action_held", "agent_id": "fin-agent-002", "approval_id": "apr-" + "a" * 32, "action": "send",
            "tool": "sftp.upload", "sensitivity": "confidential", "records": 1840, "destination_count": 1,
            "destinations": ["sftp:files.partner.example/q1"], "score": 0.93,
            "reasons": ["sensitive data from this task to a never-seen external or broadcast destination"]}
    v.on_journal(held)
    v.on_journal({**held, "reasons": [], "score": 0.5})
    assert all(len(line) <= WIDTH for line in out)
    whys = [line for line in out if line.strip().startswith("why:")]
    assert whys[0].endswith("never-seen external or broadcast destination (score 0.93)")
    assert whys[1].strip() == "why: score 0.50, no reason given by the check"
    commands = [line for line in out if "flowbreaker approvals" in line]
    assert len(commands) == 2 and all(f"approve apr-{'a' * 32} --reason '...'" in c for c in commands)
    assert not any("--token-file" in line or "deny" in line for line in out)


def test_status_lines_label_every_number_and_list_frozen_agents_one_per_line():
    v, out = view()
    v.on_decision({"agent_id": "a", "action_taken": "none"})
    v.on_command({"command": "freeze", "agent_id": "a", "incident_id": "inc-1", "issued_by": "flowbreaker"}, True)
    v.on_command({"command": "freeze", "agent_id": "b", "incident_id": "inc-2", "issued_by": "flowbreaker"}, True)
    lines = v.status_lines()
    assert len(lines) == 3 and all(len(x) <= WIDTH for x in lines)
    assert re.search(r"decisions/s \(last 10 s\) \| decisions 1 \| alerts 0 \| freezes 2 \| frozen now 2$", lines[0])
    assert "a " in lines[1] and "frozen for 0 s: no action since the freeze, 0 tasks waiting" in lines[1]


def test_clip_and_wrap_keep_lines_within_the_width():
    assert len(clip("y" * 500)) == WIDTH
    lines = wrap("topics      ", ", ".join(f"agent-topic-{i} (8)" for i in range(40)))
    assert len(lines) > 1 and all(len(x) <= WIDTH for x in lines)
    assert all(x.startswith(" " * 12) for x in lines[1:])


def test_the_runtimes_count_table_explains_its_columns():
    rt = Runtime(FreezeGuard(), lambda ev: None)
    text = rt.format_stats()
    for column in ("executed", "held", "aborted", "blocked", "resumed", "queued"):
        assert f"{column} =" in text
    assert all(len(line) <= WIDTH for line in text.splitlines())


class PendingChecker:
    """The pre-action check of a deployment where every outbound action needs an approval nobody gives."""

    def check(self, event):
        from streams.clients.check_client import CheckResult

        return CheckResult("needs_approval", score=0.9, reasons=["new destination"],
                           approval_request_id=f"apr-{event['agent_id']}")

    def approval(self, approval_id):
        return {"state": "pending"}


def test_the_runtimes_count_table_shows_an_agent_stuck_on_an_undecided_approval_as_waiting_not_ok():
    clock = [0.0]
    rt = Runtime(FreezeGuard(), lambda ev: None, speed=1000.0, checker=PendingChecker(), clock=lambda: clock[0])
    step = {"operator_id": "ops", "tool": "sftp.put", "action": "send", "resource": "crm://x",
            "sensitivity": "confidential", "destinations": ["sftp:partner.example"]}
    quiet = {"operator_id": "ops", "tool": "crm.query", "action": "read", "resource": "crm://x",
             "sensitivity": "internal"}
    from streams.demo.simulated_runtime import task_from_dict

    rt.submit(task_from_dict({"task_id": "t1", "agent_id": "fin-1", "steps": [step]}))
    rt.submit(task_from_dict({"task_id": "t2", "agent_id": "hr-1", "steps": [quiet]}))
    for _ in range(5):
        clock[0] += 0.5
        rt.tick()
    rows = {line.split()[0]: line.split(None, 7)[-1] for line in rt.format_stats().splitlines()[1:3]}
    assert rows == {"fin-1": "WAITING apr-fin-1", "hr-1": "ok"}
    assert all(len(line) <= WIDTH for line in rt.format_stats().splitlines())


def test_status_lines_list_agents_waiting_for_an_approval_until_it_is_decided():
    v, out = view()
    v.on_journal({"event": "action_held", "agent_id": "fin-agent-002", "approval_id": "apr-" + "b" * 32,
                  "action": "send", "tool": "sftp.put", "sensitivity": "confidential", "records": 4,
                  "destinations": ["sftp:x"], "destination_count": 1, "reasons": [], "score": 0.5})
    lines = v.status_lines()
    assert lines[0].endswith("| held 1, approved 0")
    assert len(lines) == 2 and "fin-agent-002" in lines[1] and f"for approval apr-{'b' * 32}" in lines[1]
    assert all(len(x) <= WIDTH for x in lines)
    v.on_journal({"event": "action_refused", "agent_id": "fin-agent-002", "approval_id": "apr-" + "b" * 32,
                  "state": "undecided", "task_id": "t1"})
    assert len(v.status_lines()) == 1
