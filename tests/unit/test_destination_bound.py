"""Per-event work is bounded for an event naming very many destinations (issue 21, item 8): an action may name
10,000 (contract section 1), but only the first ``CLASSIFIED_DESTINATIONS`` are classified against the policy;
the rest count in fan-out as external (or with their reach when listed under ``[broadcast]``)."""
from __future__ import annotations

from detector.engine import Engine
from detector.events import decode_event
from detector.features import CLASSIFIED_DESTINATIONS
from detector.policy import Policy


def _send(i: int, dests: list[str]):
    return decode_event({"event_id": f"e{i}", "ts": f"2026-03-02T09:{i // 60:02d}:{i % 60:02d}Z", "agent_id": "a",
                         "operator_id": "o", "tool": "mail.send", "action": "send", "resource": "crm://x",
                         "sensitivity": "internal", "records": 5, "destinations": dests})


def test_an_event_naming_ten_thousand_destinations_classifies_only_the_first_thousand():
    policy = Policy.from_dict({"internal_domains": ["corp.example"], "broadcast": {"slack:#all-hands": 48000}})
    eng = Engine(policy=policy)
    for i in range(20):
        eng.process(_send(i, ["email:bob@corp.example"]))
    before = len(policy._cache)
    dests = [f"email:user{k}@ext{k % 50}.example" for k in range(9_999)] + ["slack:#all-hands"]
    d = eng.process(_send(100, dests))
    assert len(policy._cache) - before <= CLASSIFIED_DESTINATIONS
    assert d.record["event_id"] == "e100"
    # decided, and fan-out counts every destination (the broadcast channel with its reach)
    assert any(r["feature"] in ("fanout_15m", "event_fanout") for r in d.record["reasons"])


def test_destinations_past_the_bound_count_as_external_unless_listed_as_broadcast():
    from detector.features import FeatureState, extract

    policy = Policy.from_dict({"internal_domains": ["corp.example"], "broadcast": {"slack:#all-hands": 48000}})
    internal = [f"email:u{k}@corp.example" for k in range(CLASSIFIED_DESTINATIONS)]
    o = extract(FeatureState(), _send(1, internal), policy)
    assert not o.outbound
    o = extract(FeatureState(), _send(1, internal + ["email:late@corp.example"]), policy)
    assert o.outbound and o.dest_classes[-1] == "external"  # unclassified: the safe side
    o = extract(FeatureState(), _send(1, internal + ["slack:#all-hands"]), policy)
    assert o.dest_classes[-1] == "broadcast"
