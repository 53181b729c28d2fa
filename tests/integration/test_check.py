"""The pre-action check and approvals against two running workers on the real broker.

Every verdict path (allow, needs_approval, deny for a frozen agent), answered
by the worker that owns the agent whichever worker is asked, without changing
the agent's state; approvals: scope, expiry, denial, forged ids (rejected,
counted, audited); the runtime client: local frozen cache, waiting for an
approval, and fail-closed / fail-open with the fallbacks reported to the audit
trail.
"""
from __future__ import annotations

import socket
import threading
import time
import uuid

import pytest

import json

from api_harness import NAME, TOKEN, Cluster, call, event, exfil, metrics_sum, now_ts, records, seed, wait_for
from worker_harness import produce, replay
from streams.clients.check_client import CheckClient, CheckError

pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module")
def cluster(two_worker_cluster):
    """The two-worker cluster this module shares with its neighbours (conftest.py)."""
    return two_worker_cluster


@pytest.fixture(scope="module")
def agents(cluster):
    names = {"w0": cluster.agent_on(0, "chk-w0"), "w1": cluster.agent_on(1, "chk-w1"),
             "frozen": cluster.agent_on(0, "chk-frz"), "appr": cluster.agent_on(1, "chk-appr"),
             "client": cluster.agent_on(0, "chk-cli"), "signed": cluster.agent_on(1, "chk-sok"),
             "unsigned": cluster.agent_on(0, "chk-sbad")}
    seed(cluster, names.values())
    return names


def check(cluster: Cluster, worker: int, action: dict, role: str = "runtime"):
    return call("POST", cluster.url(worker) + "/v1/check", TOKEN[role], action)


def snapshot(cluster: Cluster, agent: str) -> dict:
    return call("GET", cluster.url(0) + f"/v1/agents/{agent}", TOKEN["viewer"]).json


def test_every_verdict_comes_from_the_owner_and_changes_nothing(cluster, agents):
    for agent in (agents["w0"], agents["w1"]):
        before = snapshot(cluster, agent)
        owner = cluster.owner_index(agent)
        for worker in (0, 1):
            r = check(cluster, worker, event(agent, 500))
            assert r.status == 200, r
            assert r.json == {"verdict": "allow", "score": r.json["score"], "reasons": [],
                              "approval_request_id": None, "approval_rejected": None}
            if worker != owner:
                assert r.headers["X-Flowbreaker-Owner"] == cluster.url(owner)
            r = check(cluster, worker, exfil(agent, 501))
            assert r.json["verdict"] == "needs_approval" and r.json["score"] > 0.9
            assert any("never-seen external" in x for x in r.json["reasons"])
            first = r.json["approval_request_id"]
            assert first.startswith("apr-")
            # the same kind of action asks again: the same open request, not a new one
            assert check(cluster, 1 - worker, exfil(agent, 502)).json["approval_request_id"] == first
        after = snapshot(cluster, agent)
        assert after == before  # a check reads the state, never writes it
    # a frozen agent is denied whatever the action
    agent = agents["frozen"]
    assert call("POST", cluster.url(1) + f"/v1/agents/{agent}/freeze", TOKEN["analyst"],
                {"reason": "hold for review"}).status == 200
    for worker in (0, 1):
        for action in (event(agent, 600), exfil(agent, 601), exfil(agent, 602, approval_id="apr-whatever")):
            r = check(cluster, worker, action)
            assert r.json["verdict"] == "deny" and "the agent is frozen" in r.json["reasons"], r
    # only the runtime role may check
    assert check(cluster, 0, event(agent, 603), role="lead").status == 403
    assert call("POST", cluster.url(0) + "/v1/check", None, event(agent, 603)).status == 401
    assert metrics_sum(cluster, "flowbreaker_check_verdicts_total", verdict="deny") >= 6


def _approve(cluster, worker, aid, role="analyst", reason="legitimate partner export", **kw):
    return call("POST", cluster.url(worker) + f"/v1/approvals/{aid}/approve", TOKEN[role], {"reason": reason, **kw})


def test_approvals_are_scoped_time_limited_and_forged_ids_are_rejected(cluster, agents):
    agent = agents["appr"]
    dest = ["email:partner@ext-partner.example"]
    action = exfil(agent, 700, destinations=dest, records=40, sensitivity="confidential")
    r = check(cluster, 0, action)
    assert r.json["verdict"] == "needs_approval", r
    aid = r.json["approval_request_id"]
    for worker in (0, 1):
        listed = call("GET", cluster.url(worker) + "/v1/approvals?state=pending", TOKEN["viewer"]).json["approvals"]
        rec = next(a for a in listed if a["approval_id"] == aid)
        assert rec["agent_id"] == agent and rec["destinations"] == dest and rec["max_records"] == 40
        assert rec["requested_by"] == NAME["runtime"]
    assert call("GET", cluster.url(1) + f"/v1/approvals/{aid}", TOKEN["runtime"]).json["state"] == "pending"
    # the runtime and a viewer may not approve; an analyst may, once
    assert _approve(cluster, 0, aid, role="runtime").status == 403
    assert _approve(cluster, 0, aid, role="viewer").status == 403
    r = _approve(cluster, 1 - cluster.owner_index(agent), aid)
    assert r.status == 200 and r.json["state"] == "approved" and r.json["decided_by"] == NAME["analyst"]
    assert r.json["valid_until"]
    again = _approve(cluster, 0, aid)
    assert again.status == 409 and again.json["error"]["code"] == "not_pending"
    # inside the scope: allowed
    for worker in (0, 1):
        ok = check(cluster, worker, dict(action, event_id=f"{agent}-ok{worker}", approval_id=aid))
        assert ok.json["verdict"] == "allow" and ok.json["approval_rejected"] is None, ok
        fewer = check(cluster, worker, dict(action, event_id=f"{agent}-few{worker}", records=10, approval_id=aid))
        assert fewer.json["verdict"] == "allow"
    # outside it: rejected, judged as if it carried none (so it needs an approval of its own)
    for change in ({"records": 41}, {"destinations": dest + ["email:other@ext-partner.example"]},
                   {"tool": "ftp.put"}, {"sensitivity": "restricted"}):
        r = check(cluster, 0, dict(action, event_id=f"{agent}-oos", approval_id=aid, **change))
        assert r.json["approval_rejected"] == "out_of_scope" and r.json["verdict"] == "needs_approval", (change, r)
        assert r.json["approval_request_id"] not in (None, aid)
    # only approvals this system issued count: a change ticket, the genuine id upper-cased or with a leading
    # space is no approval (forged: deny), and so is an apr- id nobody issued
    for i, other in enumerate(("CHG-1", "APR-2026-10442", aid.upper(), " " + aid)):
        r = check(cluster, i % 2, dict(action, event_id=f"{agent}-ext{i}", approval_id=other))
        assert r.json["verdict"] == "deny" and r.json["approval_rejected"] == "forged", (other, r)
    forged = "apr-" + uuid.uuid4().hex
    r = check(cluster, 1, dict(action, event_id=f"{agent}-forged", approval_id=forged))
    assert r.json == {**r.json, "verdict": "deny", "approval_rejected": "forged"}
    # expired: an approval given for one second
    short = check(cluster, 0, exfil(agent, 701, destinations=["email:short@ext-partner.example"], records=40,
                                    sensitivity="confidential")).json["approval_request_id"]
    assert _approve(cluster, 0, short, ttl_s=1).status == 200
    time.sleep(1.3)
    r = check(cluster, 0, exfil(agent, 702, destinations=["email:short@ext-partner.example"], records=40,
                                sensitivity="confidential", approval_id=short))
    assert r.json["approval_rejected"] == "expired" and r.json["verdict"] == "needs_approval"
    # denied: stays denied
    deny_id = check(cluster, 1, exfil(agent, 703, destinations=["email:nope@ext-partner.example"])).json[
        "approval_request_id"]
    r = call("POST", cluster.url(0) + f"/v1/approvals/{deny_id}/deny", TOKEN["lead"], {"reason": "not a partner"})
    assert r.status == 200 and r.json["state"] == "denied"
    r = check(cluster, 0, exfil(agent, 704, destinations=["email:nope@ext-partner.example"], approval_id=deny_id))
    assert r.json["verdict"] == "deny" and r.json["approval_rejected"] == "denied"
    assert call("POST", cluster.url(0) + f"/v1/approvals/{forged}/approve", TOKEN["analyst"],
                {"reason": "x"}).status == 404
    assert any(a["approval_id"] == aid for a in call("GET", cluster.url(1) + "/v1/approvals?state=approved",
                                                     TOKEN["lead"]).json["approvals"])
    assert any(a["approval_id"] == short for a in call("GET", cluster.url(0) + "/v1/approvals?state=expired",
                                                       TOKEN["viewer"]).json["approvals"])
    # counted ...
    for reason in ("out_of_scope", "forged", "expired", "denied"):
        assert metrics_sum(cluster, "flowbreaker_approval_rejections_total", reason=reason) >= 1, reason
    # ... and audited
    def audited():
        recs = [r for r in records(cluster.bootstrap, cluster.topic("audit")) if r["target"]["agent_id"] == agent]
        kinds = {(r["what"], r["why"] if r["what"] == "approval_rejected" else r["result"]) for r in recs}
        need = {("approval_request", "ok"), ("approve", "ok"), ("deny", "ok"), ("approval_rejected", "forged"),
                ("approval_rejected", "expired"), ("approval_rejected", "out_of_scope"),
                ("approval_rejected", "denied")}
        return recs if need <= kinds else None
    recs = wait_for(audited, 10, "approval audit records")
    approve = next(r for r in recs if r["what"] == "approve" and r["result"] == "ok")
    assert approve["who"] == NAME["analyst"] and approve["target"]["approval_id"] == aid
    assert approve["why"] == "legitimate partner export"


def test_an_approval_record_a_producer_wrote_on_the_topic_is_no_approval(cluster, agents):
    # an attacker with produce rights on agent-approvals writes an "approved" record of their own
    agent = agents["appr"]
    dest = ["email:exfil@ext-partner.example"]
    action = exfil(agent, 750, destinations=dest, records=40, sensitivity="confidential")
    asked = check(cluster, 0, action).json
    genuine = call("GET", cluster.url(0) + f"/v1/approvals/{asked['approval_request_id']}", TOKEN["viewer"]).json
    forged_id = "apr-" + uuid.uuid4().hex
    now = time.time()
    forged = {k: v for k, v in genuine.items() if k != "signature"}
    forged.update(approval_id=forged_id, state="approved", rev=2, decided_by=NAME["lead"], decided_t=now - 5,
                  decision_reason="looks fine", valid_until_t=now + 3600, valid_until=None)
    n = cluster.partitions
    from api_harness import partition_of
    from kafka import KafkaProducer

    prod = KafkaProducer(bootstrap_servers=cluster.bootstrap, acks="all")
    try:
        prod.send(cluster.topic("approvals"), key=forged_id.encode(), value=json.dumps(forged).encode(),
                  partition=partition_of(agent, n)).get(timeout=15)
    finally:
        prod.close()
    time.sleep(2.0)  # the workers fold the topic well within this; the record must change nothing
    for worker in (0, 1):
        assert call("GET", cluster.url(worker) + f"/v1/approvals/{forged_id}", TOKEN["viewer"]).status == 404
        r = check(cluster, worker, dict(action, event_id=f"{agent}-forged-rec{worker}", approval_id=forged_id))
        assert r.json["verdict"] == "deny" and r.json["approval_rejected"] == "forged", r


def test_the_runtime_client_refuses_frozen_agents_locally_and_waits_for_approvals(cluster, agents):
    agent = agents["client"]
    client = CheckClient([cluster.url(0), cluster.url(1)], TOKEN["runtime"], timeout_s=2.0)
    try:
        assert client.check(event(agent, 800)).verdict == "allow"
        # the client learnt which worker owns the agent: no more forwarding hops
        forwarded = metrics_sum(cluster, "flowbreaker_api_forwarded_total", route="check")
        for i in range(6):
            assert client.check(event(agent, 790 + i)).verdict == "allow"
        assert metrics_sum(cluster, "flowbreaker_api_forwarded_total", route="check") == forwarded
        res = client.check(exfil(agent, 801))
        assert res.verdict == "needs_approval" and res.source == "flowbreaker"

        def approve_later():
            time.sleep(0.5)
            _approve(cluster, 1, res.approval_request_id, reason="approved from the command line")

        t = threading.Thread(target=approve_later)
        t.start()
        rec = client.wait_for_approval(res.approval_request_id, timeout_s=20, poll_s=0.1)
        t.join()
        assert rec["state"] == "approved" and rec["decision_reason"] == "approved from the command line"
        assert client.check(exfil(agent, 802, approval_id=rec["approval_id"])).verdict == "allow"
        # frozen: the server says so once, then the client refuses without a call
        assert call("POST", cluster.url(0) + f"/v1/agents/{agent}/freeze", TOKEN["analyst"],
                    {"reason": "client test"}).status == 200
        assert client.check(event(agent, 803)).source == "flowbreaker"
        served = metrics_sum(cluster, "flowbreaker_api_requests_total", route="check")
        for i in range(5):
            r = client.check(event(agent, 804 + i))
            assert r.verdict == "deny" and r.source == "local"
        assert metrics_sum(cluster, "flowbreaker_api_requests_total", route="check") == served
        assert client.stats["local_denies"] == 5
        with pytest.raises(CheckError) as err:
            client.check({"agent_id": agents["w0"], "event_id": "bad"})  # not a valid action
        assert err.value.status == 400
    finally:
        client.close()


class _Silent:
    """A TCP port that accepts connections and never answers."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"

    def close(self) -> None:
        self.sock.close()


def test_without_an_answer_in_time_restricted_data_fails_closed_the_rest_open_and_it_is_audited(cluster, agents):
    agent = agents["w1"]
    silent = _Silent()
    dead = socket.socket()
    dead.bind(("127.0.0.1", 0))
    dead_url = f"http://127.0.0.1:{dead.getsockname()[1]}"
    dead.close()  # nothing listens there now
    client = CheckClient([silent.url], TOKEN["runtime"], timeout_s=0.2, report_urls=[cluster.url(0)],
                         report_every_s=3600)
    refused = CheckClient([dead_url], TOKEN["runtime"], timeout_s=0.2, report_urls=[cluster.url(1)],
                          report_every_s=3600)
    # the cluster is shared (conftest.py): the counters below are compared with their values before this test
    fallbacks = {v: metrics_sum(cluster, "flowbreaker_check_fallbacks_total", verdict=v) for v in ("deny", "allow")}
    timeouts = metrics_sum(cluster, "flowbreaker_check_fallbacks_total", verdict="deny", cause="timeout")
    try:
        t0 = time.monotonic()
        closed = client.check(exfil(agent, 900))                      # restricted
        opened = client.check(event(agent, 901))                      # internal
        assert time.monotonic() - t0 < 1.5
        assert (closed.verdict, closed.source, closed.fallback_cause) == ("deny", "fallback", "timeout")
        assert (opened.verdict, opened.source) == ("allow", "fallback")
        r = refused.check(event(agent, 902, sensitivity="confidential"))
        assert (r.verdict, r.fallback_cause) == ("allow", "unreachable")
        assert client.stats["fallback_deny"] == 1 and client.stats["fallback_allow"] == 1
        assert client.flush_reports() == 2 and refused.flush_reports() == 1
        recs = wait_for(lambda: [x for x in records(cluster.bootstrap, cluster.topic("audit"))
                                 if x["what"] == "check_fallback" and x["target"]["agent_id"] == agent]
                        if len([x for x in records(cluster.bootstrap, cluster.topic("audit"))
                                if x["what"] == "check_fallback" and x["target"]["agent_id"] == agent]) >= 3
                        else None, 10, "fallback audit records")
        assert {x["target"]["event_id"] for x in recs} == {f"{agent}-e900", f"{agent}-e901", f"{agent}-e902"}
        assert all(x["who"] == NAME["runtime"] for x in recs)
        assert any("deny" in x["detail"] and "restricted" in x["detail"] for x in recs)
        assert metrics_sum(cluster, "flowbreaker_check_fallbacks_total", verdict="deny", cause="timeout") \
            == timeouts + 1
        assert metrics_sum(cluster, "flowbreaker_check_fallbacks_total", verdict="deny") == fallbacks["deny"] + 1
        assert metrics_sum(cluster, "flowbreaker_check_fallbacks_total", verdict="allow") == fallbacks["allow"] + 2
    finally:
        client.close()
        refused.close()
        silent.close()


def test_fallback_reports_of_a_long_outage_all_arrive_in_chunks_the_server_takes(cluster, agents):
    # 250 fallbacks with long tool names: 100 of them are ~40 KB, over the 16 KiB a plain POST may carry
    agent = agents["w0"]
    silent = _Silent()
    client = CheckClient([silent.url], TOKEN["runtime"], timeout_s=0.05, report_urls=[cluster.url(1)],
                         report_every_s=3600)
    before = metrics_sum(cluster, "flowbreaker_check_fallbacks_total", verdict="allow", cause="timeout")
    try:
        tool = "mcp.partner_portal." + "x" * 200
        for i in range(250):
            assert client.check(event(agent, 3000 + i, tool=tool)).source == "fallback"
        assert client.flush_reports() == 250
        assert client.stats["reported"] == 250 and client.stats["dropped"] == 0 and not client._reports
        assert metrics_sum(cluster, "flowbreaker_check_fallbacks_total", verdict="allow", cause="timeout") \
            == before + 250
        ids = {f"{agent}-e{3000 + i}" for i in range(250)}
        wait_for(lambda: ids <= {x["target"].get("event_id") for x in records(cluster.bootstrap, cluster.topic("audit"))
                                 if x["what"] == "check_fallback"}, 20, "250 fallback audit records")
    finally:
        client.close()
        silent.close()


def test_the_stream_signs_off_only_actions_an_approval_covers(cluster, agents, tmp_path):
    signed, unsigned = agents["signed"], agents["unsigned"]
    ask = check(cluster, 0, exfil(signed, 1000, ts=now_ts()))
    assert ask.json["verdict"] == "needs_approval"
    aid = ask.json["approval_request_id"]
    assert _approve(cluster, 1, aid, reason="signed off for the stream test").status == 200
    good = exfil(signed, 1001, ts=now_ts(), approval_id=aid)
    forged = exfil(unsigned, 1001, ts=now_ts(), approval_id="apr-" + uuid.uuid4().hex)
    produce(cluster.bootstrap, cluster.topic("actions"),
            [(e["agent_id"].encode(), json.dumps(e).encode()) for e in (good, forged)])

    def decided():
        recs = {r["event_id"]: r for r in records(cluster.bootstrap, cluster.topic("decisions"))}
        return recs if good["event_id"] in recs and forged["event_id"] in recs else None

    recs = wait_for(decided, 20, "both decisions")
    ok, bad = recs[good["event_id"]], recs[forged["event_id"]]
    assert ok["action_taken"] != "freeze" and ok["breaker_state"] == "closed"
    assert all(r["feature"] != "approved" or "signed off" in r["detail"] for r in ok["reasons"])
    assert bad["action_taken"] == "freeze" and not any(r["feature"] == "approved" for r in bad["reasons"])
    audit = wait_for(lambda: [r for r in records(cluster.bootstrap, cluster.topic("audit"))
                              if r["what"] == "approval_rejected" and r["target"]["event_id"] == forged["event_id"]],
                     10, "stream rejection audited")
    assert audit[0]["who"] == "flowbreaker" and audit[0]["automatic"] and audit[0]["why"] == "forged"
    assert metrics_sum(cluster, "flowbreaker_stream_approvals_total", result="ok") >= 1
    assert metrics_sum(cluster, "flowbreaker_stream_approvals_total", result="forged") >= 1
    # replay = live: the same events with a dump of the approvals topic give the same decision records
    dump = tmp_path / "approvals.jsonl"
    dump.write_text("".join(json.dumps(r) + "\n" for r in records(cluster.bootstrap, cluster.topic("approvals"))))
    history = [event(a, i) for a in (signed, unsigned) for i in range(12)]  # what seed() produced
    again = replay(history + [good, forged], tmp_path / "replay", extra=["--approvals", str(dump)])
    assert again[good["event_id"]] == ok and again[forged["event_id"]] == bad
    # without the dump, replay takes the forged id at its word: the difference the approvals make
    naive = replay(history + [good, forged], tmp_path / "naive", approvals_as_workers=False)
    assert naive[forged["event_id"]]["action_taken"] != "freeze"
