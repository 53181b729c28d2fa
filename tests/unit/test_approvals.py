"""Approvals: scope and expiry (detector/approvals.py), the store every worker keeps (streams/api/approvals.py)."""
from __future__ import annotations

import copy

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from detector.approvals import (ApprovalError, decide, effective_state, fingerprint, request, validate)
from detector.events import SENSITIVITIES, decode_event
from streams.api.approvals import ApprovalStore, new_approval_id

DESTS = ["email:partner@ext.example", "email:ops@ext.example"]


def proposed(**kw):
    ev = {"event_id": "e1", "ts": "2026-03-02T09:00:00Z", "agent_id": "fin-1", "operator_id": "ops",
          "tool": "mail.send", "action": "send", "resource": "crm://export", "sensitivity": "confidential",
          "records": 40, "destinations": list(DESTS)}
    ev.update(kw)
    return decode_event(ev)


def approved(ttl_s=900.0, now=100.0):
    req = request(proposed(), approval_id="apr-1", now=now, reasons=["novel destination"], score=0.8,
                  requested_by="runtime-1")
    return decide(req, approve=True, by="alice", reason="quarterly export", now=now + 10, ttl_s=ttl_s)


def test_a_request_records_the_scope_of_the_proposed_action():
    req = request(proposed(), approval_id="apr-9", now=100.0, reasons=["r"], score=0.81234, requested_by="rt")
    assert req["state"] == "pending" and req["rev"] == 1 and req["approval_id"] == "apr-9"
    assert (req["agent_id"], req["tool"], req["action"], req["sensitivity"]) == ("fin-1", "mail.send", "send",
                                                                                  "confidential")
    assert req["destinations"] == sorted(DESTS) and req["max_records"] == 40
    assert req["requested_by"] == "rt" and req["score"] == 0.8123 and req["expires_t"] == 100.0 + 3600.0
    assert req["requested_at"] == "1970-01-01T00:01:40.000Z"


def test_an_approval_covers_the_same_action_and_anything_narrower_until_it_expires():
    a = approved()
    assert validate(a, proposed(), now=200.0) is None
    assert validate(a, proposed(records=1, destinations=DESTS[:1]), now=200.0) is None
    assert validate(a, proposed(sensitivity="internal", destinations=[]), now=200.0) is None
    assert validate(a, proposed(), now=110.0 + 900.0) is None      # the last covered instant
    assert validate(a, proposed(), now=110.0 + 900.001) == "expired"


@pytest.mark.parametrize("change", [
    {"agent_id": "fin-2"}, {"tool": "ftp.put"}, {"action": "write"}, {"records": 41},
    {"sensitivity": "restricted"}, {"destinations": DESTS + ["email:eve@evil.example"]},
    {"destinations": ["email:eve@evil.example"]},
])
def test_anything_wider_than_the_approval_is_out_of_scope(change):
    assert validate(approved(), proposed(**change), now=200.0) == "out_of_scope"


def test_forged_pending_and_denied_ids_do_not_cover_anything():
    req = request(proposed(), approval_id="apr-1", now=100.0, reasons=[], score=0.5, requested_by="rt")
    assert validate(None, proposed(), now=100.0) == "forged"
    assert validate(req, proposed(), now=101.0) == "pending"
    assert validate(req, proposed(), now=100.0 + 3601) == "expired"  # nobody decided in time
    denied = decide(req, approve=False, by="bob", reason="no", now=110.0)
    assert denied["state"] == "denied" and denied["valid_until_t"] is None
    assert validate(denied, proposed(), now=120.0) == "denied"


def test_a_request_is_decided_once_and_never_after_it_expired():
    req = request(proposed(), approval_id="apr-1", now=100.0, reasons=[], score=0.5, requested_by="rt")
    snapshot = copy.deepcopy(req)
    ok = decide(req, approve=True, by="alice", reason="fine", now=110.0, ttl_s=60)
    assert req == snapshot  # the input is not mutated
    assert ok["rev"] == 2 and ok["decided_by"] == "alice" and ok["valid_until_t"] == 170.0
    with pytest.raises(ApprovalError, match="approved"):
        decide(ok, approve=False, by="bob", reason="late", now=120.0)
    with pytest.raises(ApprovalError, match="expired"):
        decide(req, approve=True, by="alice", reason="late", now=100.0 + 3601)
    assert effective_state(ok, 171.0) == "expired"


def test_the_fingerprint_ignores_counts_and_destination_order_but_not_the_kind_of_action():
    assert fingerprint(proposed()) == fingerprint(proposed(records=1, destinations=list(reversed(DESTS))))
    assert fingerprint(proposed()) != fingerprint(proposed(tool="ftp.put"))
    assert fingerprint(proposed()) != fingerprint(proposed(destinations=DESTS[:1]))


@settings(max_examples=200, deadline=None)
@given(records=st.integers(0, 40), dests=st.sets(st.sampled_from(DESTS)),
       sens=st.sampled_from(SENSITIVITIES[:3]), dt=st.floats(0, 900))
def test_every_action_inside_the_scope_and_time_is_covered(records, dests, sens, dt):
    ev = proposed(records=records, destinations=sorted(dests), sensitivity=sens)
    assert validate(approved(), ev, now=110.0 + dt) is None


@settings(max_examples=200, deadline=None)
@given(extra=st.integers(1, 10 ** 9), dt=st.floats(0, 900))
def test_one_record_more_than_approved_is_never_covered(extra, dt):
    assert validate(approved(), proposed(records=40 + extra), now=110.0 + dt) == "out_of_scope"


# ---------------------------------------------------------------------- the store
def test_the_store_keeps_the_newest_revision_of_each_approval():
    store = ApprovalStore()
    req = request(proposed(), approval_id="apr-1", now=100.0, reasons=[], score=0.5, requested_by="rt")
    ok = decide(req, approve=True, by="alice", reason="fine", now=110.0)
    assert store.apply(ok) and not store.apply(req)  # a redelivered older record changes nothing
    assert store.get("apr-1")["state"] == "approved"
    assert not store.apply({"no": "id"})


def test_an_open_request_is_reused_for_the_same_kind_of_action_with_no_more_records():
    store = ApprovalStore()
    req = request(proposed(), approval_id="apr-1", now=100.0, reasons=[], score=0.5, requested_by="rt")
    store.apply(req)
    assert store.pending_like(proposed(records=10), now=200.0)["approval_id"] == "apr-1"
    assert store.pending_like(proposed(records=41), now=200.0) is None
    assert store.pending_like(proposed(tool="ftp.put"), now=200.0) is None
    assert store.pending_like(proposed(), now=100.0 + 3601) is None  # expired
    store.apply(decide(req, approve=True, by="a", reason="ok", now=150.0))
    assert store.pending_like(proposed(), now=200.0) is None  # decided: no longer open


def test_listing_filters_by_effective_state_and_agent_newest_first():
    store = ApprovalStore()
    for i, agent in enumerate(("a1", "a2", "a1")):
        store.apply(request(proposed(agent_id=agent, event_id=f"e{i}"), approval_id=f"apr-{i}", now=100.0 + i,
                            reasons=[], score=0.5, requested_by="rt"))
    assert [a["approval_id"] for a in store.listing("pending", now=105.0)] == ["apr-2", "apr-1", "apr-0"]
    assert [a["approval_id"] for a in store.listing(None, now=105.0, agent_id="a1", limit=1)] == ["apr-2"]
    assert [a["state"] for a in store.listing(None, now=100.0 + 3700)] == ["expired"] * 3
    assert store.listing("approved", now=105.0) == []


def test_the_store_is_bounded_and_a_failed_change_can_be_undone():
    store = ApprovalStore(max_items=3)
    recs = [request(proposed(event_id=f"e{i}", tool=f"t{i}"), approval_id=f"apr-{i}", now=100.0, reasons=[],
                    score=0.5, requested_by="rt") for i in range(5)]
    for r in recs:
        store.apply(r)
    assert len(store) == 3 and store.get("apr-0") is None and store.get("apr-4") is not None
    ok = decide(recs[4], approve=True, by="a", reason="ok", now=110.0)
    store.apply(ok)
    store.restore(recs[4])
    assert store.get("apr-4")["state"] == "pending"
    assert store.pending_like(proposed(event_id="x", tool="t4"), now=120.0)["approval_id"] == "apr-4"
    store.discard("apr-4")
    assert store.get("apr-4") is None and store.pending_like(proposed(tool="t4"), now=120.0) is None


def test_approval_ids_are_unguessable():
    ids = {new_approval_id() for _ in range(1000)}
    assert len(ids) == 1000 and all(i.startswith("apr-") and len(i) == 36 for i in ids)
