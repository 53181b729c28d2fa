"""Least-privilege suggestion from behaviour (detector/manifest_suggest.py): the rules, soundness on
the history it came from, unused grants and drift."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from detector.events import decode_event
from detector.manifest import ManifestBook, Usage, parse_manifest, render_manifest
from detector.manifest_suggest import drift, observe, suggest, unused_grants
from detector.policy import Policy

POLICY = Policy.from_dict({"internal_domains": ["corp.example"], "internal": ["slack:*"],
                           "broadcast": {"slack:#all-hands": 4800, "email:all@corp.example": 5000}})
T0 = datetime(2026, 3, 2, 9, 0, tzinfo=timezone.utc)


def ev(i=0, agent="a", **kw):
    base = {"event_id": f"e{i}", "ts": (T0 + timedelta(minutes=i)).isoformat(), "agent_id": agent,
            "operator_id": "ops", "tool": "crm.read", "action": "read", "resource": "crm://customers/C-1",
            "sensitivity": "internal"}
    base.update(kw)
    return decode_event(base)


def suggested(events, **kw):
    return suggest(observe(events, POLICY)[events[0].agent_id], policy=POLICY, **kw)


def test_tools_are_granted_exactly_and_resources_by_family():
    m = suggested([ev(0, tool="crm.read", resource="crm://customers/C-1"),
                   ev(1, tool="crm.write", resource="crm://customers/C-2/notes"),
                   ev(2, tool="kb.search", resource="kb://articles"),
                   ev(3, tool="mail.read", resource="email:x@client.example"),
                   ev(4, tool="mail.read", resource="email:y@client.example"),
                   ev(5, tool="mail.read", resource="email:z@other.example")])
    assert m.clauses["tools"]["allow"] == ("crm.read", "crm.write", "kb.search", "mail.read")
    assert m.clauses["resources"]["allow"] == ("crm://customers/*", "email:*@client.example", "email:z@other.example",
                                               "kb://articles")


def test_many_families_of_one_scheme_become_the_whole_scheme():
    evs = [ev(i, resource=f"https://site{i}.example/page") for i in range(10)]
    assert suggested(evs).clauses["resources"]["allow"] == ("https://*",)
    assert len(suggested(evs, wide_after=11).clauses["resources"]["allow"]) == 10


def test_destinations_group_by_domain_but_never_over_an_unused_broadcast_destination():
    sends = [ev(i, action="send", destinations=[d]) for i, d in enumerate(
        ["email:a@client.example", "email:b@client.example", "email:c@solo.example",
         "email:x@corp.example", "email:y@corp.example", "slack:#eng", "payee:acme"])]
    d = suggested(sends, class_after=99).clauses["destinations"]
    # *@corp.example would cover email:all@corp.example, a broadcast address it never used: kept exact
    assert d["allow"] == ("email:*@client.example", "email:c@solo.example", "email:x@corp.example",
                          "email:y@corp.example", "payee:acme", "slack:#eng")
    assert "classes" not in d
    d = suggested(sends, class_after=3).clauses["destinations"]
    assert d["classes"] == ("internal",)
    assert d["allow"] == ("email:*@client.example", "email:c@solo.example", "payee:acme")


def test_a_broadcast_destination_it_used_is_granted_exactly():
    d = suggested([ev(0, action="send", destinations=["slack:#all-hands"])]).clauses["destinations"]
    assert d["allow"] == ("slack:#all-hands",)


def test_sensitivity_principals_and_ceilings_follow_what_was_used():
    evs = [ev(0, sensitivity="restricted"),
           ev(1, action="send", sensitivity="confidential", records=30, bytes=100, destinations=["slack:@bob"],
              requested_by="alice@corp.example"),
           ev(2, action="send", sensitivity="internal", records=20, bytes=100, destinations=["slack:@bob"],
              requested_by="carol@corp.example"),
           ev(3, requested_by="dave@partner.example")]
    c = suggested(evs, margin=2.0).clauses
    assert c["sensitivity"] == {"max_read": "restricted", "max_sent": "confidential"}
    assert c["principals"] == {"allow": ("*@corp.example", "dave@partner.example"), "operator": True}
    assert c["ceilings"]["records_out_per_hour"] == 100 and c["ceilings"]["bytes_out_per_day"] == 400
    assert all(v.get("on_violation", "needs_approval") == "needs_approval" for v in c.values())


def test_an_agent_that_never_sends_gets_no_destinations_and_no_ceilings():
    c = suggested([ev(0)]).clauses
    assert c["destinations"] == {"allow": ()} and "ceilings" not in c and "max_sent" not in c["sensitivity"]
    assert c["principals"]["operator"] is True


def test_a_margin_below_one_is_refused():
    with pytest.raises(ValueError):
        suggested([ev(0)], margin=0.5)


# --------------------------------------------------------------------------- soundness

_tool = st.sampled_from(["crm.read", "mail.send", "git.push", "vault.read", "fs.delete"])
_res = st.sampled_from(["crm://customers/C-1", "crm://customers/C-2", "hr://personnel", "email:x@client.example",
                        "email:y@client.example", "repo://corp/x/y", "https://docs.example/a"])
_dest = st.sampled_from(["email:a@client.example", "email:b@client.example", "email:all@corp.example",
                         "email:x@corp.example", "slack:#all-hands", "slack:@bob", "http:https://paste.example/1",
                         "payee:acme", "iban:GB29NWBK60161331926819"])
_who = st.sampled_from([None, "ops", "alice@corp.example", "bob@corp.example", "eve@evil.example"])


@st.composite
def histories(draw):
    n = draw(st.integers(1, 40))
    t = 0.0
    out = []
    for i in range(n):
        t += draw(st.floats(0, 7200))
        out.append(decode_event({
            "event_id": f"e{i}", "ts": (T0 + timedelta(seconds=t)).isoformat(), "agent_id": "a",
            "operator_id": "ops", "tool": draw(_tool), "action": draw(st.sampled_from(["read", "send", "delete"])),
            "resource": draw(_res), "sensitivity": draw(st.sampled_from(["public", "internal", "confidential",
                                                                         "restricted"])),
            "records": draw(st.integers(0, 500)), "bytes": draw(st.integers(0, 10**6)),
            "destinations": draw(st.lists(_dest, max_size=3)), "requested_by": draw(_who)}))
    return out


@settings(max_examples=150, deadline=None)
@given(histories(), st.integers(1, 4), st.floats(1.0, 3.0))
def test_the_history_a_manifest_was_suggested_from_breaks_none_of_its_clauses(history, min_group, margin):
    m = suggest(observe(history, POLICY)["a"], policy=POLICY, min_group=min_group, margin=margin)
    scope = ManifestBook([parse_manifest(render_manifest(m))]).scope_for("a")
    usage = Usage()
    for e in history:
        assert scope.check(e, usage, classify=POLICY.classify) == [], e
        if e.destinations:
            usage.add(e.t, e.records, e.bytes)
    assert unused_grants(scope, observe(history, POLICY)["a"], low_use=0.0) == []


# --------------------------------------------------------------------------- unused grants, drift

def test_unused_grants_lists_what_was_allowed_and_never_used():
    m = parse_manifest("""version = 1
agent = "a"
[tools]
allow = ["crm.*", "vault.*"]
[destinations]
allow = ["email:*@client.example"]
classes = ["internal", "external"]
[principals]
allow = ["*@corp.example", "*@partner.example"]
[sensitivity]
max_read = "restricted"
max_sent = "internal"
[ceilings]
records_out_per_hour = 1000
records_out_per_day = 40
""")
    evs = [ev(0), ev(1, action="send", records=20, destinations=["email:q@client.example"],
                   requested_by="bob@corp.example")]
    grants = {(g["clause"], g["grant"]) for g in unused_grants(ManifestBook([m]).scope_for("a"),
                                                                observe(evs, POLICY)["a"])}
    assert grants == {("tools", "vault.*"), ("destinations", "class internal"), ("destinations", "class external"),
                      ("principals", "*@partner.example"), ("sensitivity.max_read", "restricted"),
                      ("ceilings.records_out_per_hour", "1,000")}


def test_drift_names_what_is_new_and_what_was_dropped():
    before = observe([ev(0, tool="crm.read"), ev(1, action="send", records=10, destinations=["email:a@x.example"])],
                     POLICY)["a"]
    after = observe([ev(0, tool="vault.read", resource="vault://secrets/k"),
                     ev(1, tool="mail.send", action="send", records=30, destinations=["email:b@y.example"],
                        requested_by="eve@evil.example")], POLICY)["a"]
    d = drift(before, after)
    assert d["new"]["tools"] == ["mail.send", "vault.read"] and d["dropped"]["tools"] == ["crm.read"]
    assert d["new"]["resource_families"] == ["vault://secrets/*"]
    assert d["new"]["destination_groups"] == ["email:*@y.example"]
    assert d["new"]["principals"] == ["eve@evil.example"] and d["dropped"]["principals"] == []
    assert d["records_out"] == {"previous": 10, "current": 30, "ratio": 3.0}


def test_numbered_ids_group_by_their_stem_and_many_requesters_of_one_kind_by_their_kind():
    evs = [ev(i, action="send", destinations=[f"payment:credit_card_{1000 + i}"], requested_by=f"customer:c_{i}")
           for i in range(12)]
    c = suggested(evs).clauses
    assert c["destinations"]["allow"] == ("payment:credit_card_[0-9]*",)
    assert c["principals"]["allow"] == ("customer:*",)
    scope = ManifestBook([parse_manifest(render_manifest(suggested(evs)))]).scope_for("a")
    assert [v.clause for v in scope.check(ev(99, action="send", destinations=["payment:P-123456"],
                                             requested_by="customer:new"), classify=POLICY.classify)] \
        == ["destinations"]
    assert len(suggested(evs, wide_after=13).clauses["principals"]["allow"]) == 12
