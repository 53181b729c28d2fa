"""Manifests in the stream (Engine with a ManifestBook): an out-of-scope action is alerted with the clause it
breaks first and spends the risk budget, a run of them opens the breaker; agents without a manifest decide as
before; usage for ceilings survives dump/load; the gate reads the engine's usage."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

from detector.engine import Engine
from detector.events import decode_event
from detector.gate import Gate
from detector.manifest import ManifestBook, ManifestGate, parse_manifest
from detector.policy import Policy

POLICY = Policy.from_dict({"internal_domains": ["corp.example"]})
T0 = datetime(2026, 3, 2, 9, 0, tzinfo=timezone.utc)
MANIFEST = """version = 1
agent = "bot"
[tools]
allow = ["crm.read", "mail.send"]
[ceilings]
records_out_per_hour = 100
"""


def ev(i: int, agent: str = "bot", **kw):
    base = {"event_id": f"{agent}-{i}", "ts": (T0 + timedelta(seconds=30 * i)).isoformat(), "agent_id": agent,
            "operator_id": "ops", "tool": "crm.read", "action": "read", "resource": "crm://customers/1",
            "sensitivity": "internal", "records": 1}
    base.update(kw)
    return decode_event(base)


def engine(with_book: bool = True) -> Engine:
    return Engine(policy=POLICY, manifests=ManifestBook([parse_manifest(MANIFEST)]) if with_book else None)


def warm(eng: Engine, agent: str = "bot", n: int = 150) -> int:
    eng.process_batch([ev(i, agent) for i in range(n)])
    return n


def test_an_out_of_scope_action_is_alerted_with_its_clause_first():
    eng = engine()
    n = warm(eng)
    d = eng.process(ev(n, tool="shell.exec", action="exec", resource="host://x"))
    rec = d.record
    assert [v.clause for v in d.violations] == ["tools"]
    assert rec["score"] >= eng.policy.thresholds.medium and rec["action_taken"] in ("alert", "freeze")
    assert rec["reasons"][0]["feature"] == "out_of_scope"
    assert "outside its intended use (agent bot v1): tools: tool 'shell.exec'" in rec["reasons"][0]["detail"]


def test_in_scope_actions_and_agents_without_a_manifest_decide_as_without_manifests():
    with_book, without = engine(), engine(with_book=False)
    events = [ev(i) for i in range(60)] + [ev(i, "other", tool="anything.at_all") for i in range(60)]
    a = [d.record for d in with_book.process_batch(events)]
    b = [d.record for d in without.process_batch(events)]
    assert a == b


def test_a_run_of_out_of_scope_actions_opens_the_breaker():
    eng = engine()
    n = warm(eng)
    # each spends (medium - budget floor) x its harm (0.35 for an exec of internal data) of the budget
    actions = [eng.process(ev(n + k, tool="shell.exec", action="exec", resource="host://x")).record["action_taken"]
               for k in range(50)]
    assert "freeze" in actions and actions.index("freeze") > 5  # never on one alone
    assert eng.breaker_state("bot") == "open"


def test_usage_for_ceilings_survives_a_dump_and_load():
    eng = engine()
    n = warm(eng)
    send = dict(tool="mail.send", action="send", records=60, destinations=["email:a@corp.example"])
    assert eng.process(ev(n, **send)).violations == []
    blob = eng.dump_agent("bot")
    restarted = engine()
    restarted.load_agent("bot", blob)
    d = restarted.process(ev(n + 1, **send))
    assert [v.clause for v in d.violations] == ["ceilings.records_out_per_hour"]


def test_the_gate_reads_the_engines_usage():
    eng = engine()
    n = warm(eng)
    eng.process(ev(n, tool="mail.send", action="send", records=90, destinations=["email:a@corp.example"]))
    g = ManifestGate(Gate(eng))
    proposed = ev(n + 1, tool="mail.send", action="send", records=20, destinations=["email:a@corp.example"])
    verdict, _, why, found = g.check_both(proposed)
    assert verdict == "needs_approval" and [v.clause for v in found] == ["ceilings.records_out_per_hour"]
    assert "110 records sent out in the last hour, above its ceiling of 100" in why[0]
