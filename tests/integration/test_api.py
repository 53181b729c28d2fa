"""The control-plane API against two running workers on the real broker (the cluster conftest.py shares).

Every route, role and error path; routing to the owner of the agent's partition
(requests are sent to the worker that does *not* own the agent, and answered);
manual freeze and release through the agent's table state and ``agent-control``;
the two-person rule; feedback on ``agent-feedback``; and the audit trail: every
state-changing call made here is found on ``agent-audit`` with who, what, when,
why and result, and no token appears in it.
"""
from __future__ import annotations

import hashlib
import json
import time
from collections import Counter

import pytest

from api_harness import (NAME, TOKEN, AuditMark, Cluster, call, event, exfil, read_topic, records, seed, wait_for)
from worker_harness import produce

pytestmark = pytest.mark.timeout(240)

#: every state-changing call made by these tests: (who, what, status, agent_id)
CALLS: list[tuple[str, str, int, str | None]] = []
#: ... of which refused as unauthenticated or forbidden: summarised per client in the audit trail, (who, result)
REFUSED: list[tuple[str, str]] = []


def act(cluster: Cluster, worker: int, method: str, path: str, role: str | None, body=None, *, what: str,
        agent: str | None = None, token: str | None = None, headers=None):
    tok = token if token is not None else (TOKEN[role] if role else None)
    r = call(method, cluster.url(worker) + path, tok, body, headers=headers)
    who = NAME[role] if role and r.status != 401 else "anonymous"
    code = ((r.json or {}).get("error") or {}).get("code") if r.status >= 400 else None
    if code in ("unauthenticated", "forbidden"):
        REFUSED.append((who, code))
    else:
        CALLS.append((who, what, r.status, agent))
    return r


@pytest.fixture(scope="module")
def shared(two_worker_cluster):
    """The two-worker cluster conftest.py shares, and a mark on its audit trail taken before this module's first
    call: the records after it are this module's (the workers summarise refused calls per
    ``cluster.refusal_window_s``)."""
    return two_worker_cluster, AuditMark(two_worker_cluster)


@pytest.fixture(scope="module")
def cluster(shared):
    return shared[0]


@pytest.fixture(scope="module")
def audit(shared) -> AuditMark:
    return shared[1]


@pytest.fixture(scope="module")
def agents(cluster):
    names = {"w0": cluster.agent_on(0, "api-w0"), "w1": cluster.agent_on(1, "api-w1"),
             "freeze": cluster.agent_on(1, "api-frz"), "crit": cluster.agent_on(0, "api-crit"),
             "plain": cluster.agent_on(1, "api-plain"), "fb": cluster.agent_on(0, "api-fb"),
             "auto": cluster.agent_on(1, "api-auto")}
    seed(cluster, names.values())
    return names


def other(cluster: Cluster, agent: str) -> int:
    """The worker that does not own ``agent`` (requests there are forwarded)."""
    return 1 - cluster.owner_index(agent)


# ---------------------------------------------------------------------- the document and the gate
EXPECTED_PATHS = {"/v1/openapi.json", "/v1/agents/{agent_id}", "/v1/breakers", "/v1/incidents/{incident_id}",
                  "/v1/agents/{agent_id}/freeze", "/v1/agents/{agent_id}/release", "/v1/whoami",
                  "/v1/decisions/{event_id}/feedback", "/v1/check", "/v1/approvals", "/v1/approvals/{approval_id}",
                  "/v1/approvals/{approval_id}/approve", "/v1/approvals/{approval_id}/deny", "/v1/fallbacks",
                  "/v1/episodes", "/v1/episodes/{episode_id}/verdict"}


def test_the_openapi_document_is_served_without_a_token_and_describes_every_route(cluster):
    for i in (0, 1):
        r = call("GET", cluster.url(i) + "/v1/openapi.json")
        assert r.status == 200
        doc = r.json
        assert doc["openapi"].startswith("3.") and set(doc["paths"]) == EXPECTED_PATHS
        for path, ops in doc["paths"].items():
            for op in ops.values():
                if path != "/v1/openapi.json":
                    assert op["security"] == [{"bearer": []}] and op["x-roles"], path
                    assert {"401", "403"} <= set(op["responses"]), path


def _routes(agent: str) -> list[tuple[str, str, str, str | None, object]]:
    """(method, path, permission, audit what, body) of every protected route."""
    return [
        ("GET", f"/v1/agents/{agent}", "read", None, None),
        ("GET", "/v1/breakers?state=open", "read", None, None),
        ("GET", "/v1/incidents/inc-none", "read", None, None),
        ("POST", f"/v1/agents/{agent}/freeze", "freeze", "freeze", {"reason": "probe"}),
        ("POST", f"/v1/agents/{agent}/release", "release", "release", {"reason": "probe"}),
        ("POST", "/v1/decisions/ev-1/feedback", "feedback", "feedback",
         {"agent_id": agent, "verdict": "confirmed", "reason": "probe"}),
        ("POST", "/v1/check", "check", None, event(agent, 1)),
        ("GET", "/v1/approvals?state=pending", "read", None, None),
        ("GET", "/v1/approvals/apr-none", "approval_status", None, None),
        ("POST", "/v1/approvals/apr-none/approve", "approve", "approve", {"reason": "probe"}),
        ("POST", "/v1/approvals/apr-none/deny", "approve", "deny", {"reason": "probe"}),
        ("POST", "/v1/fallbacks", "report_fallback", "check_fallback",
         {"fallbacks": [{"agent_id": agent, "verdict": "allow", "cause": "timeout"}]}),
        ("GET", "/v1/episodes?state=open", "read", None, None),
        ("POST", "/v1/episodes/ep-none/verdict", "feedback", "verdict", {"verdict": "benign", "reason": "probe"}),
    ]


ROLES = {"read": {"viewer", "analyst", "lead"}, "freeze": {"analyst", "lead"}, "release": {"lead"},
         "feedback": {"analyst", "lead"}, "check": {"runtime"}, "approve": {"analyst", "lead"},
         "approval_status": {"viewer", "analyst", "lead", "runtime"}, "report_fallback": {"runtime"}}


def test_every_route_answers_401_without_a_valid_token_and_403_to_a_role_without_the_permission(cluster, agents):
    agent = agents["w0"]
    for method, path, perm, what, body in _routes(agent):
        # refused before the body is read: only an agent named in the path is known to the audit record
        target = agent if what in ("freeze", "release") else None

        def send(role=None, token=None, headers=None):
            if what is None:  # a read: not audited
                tok = token if token is not None else (TOKEN[role] if role else None)
                return call(method, cluster.url(1) + path, tok, body, headers=headers)
            return act(cluster, 1, method, path, role, body, what=what, agent=target, token=token, headers=headers)

        for bad in ("not-a-token", TOKEN["lead"] + "x", ""):
            r = send(token=bad)
            assert r.status == 401, (method, path, bad, r)
            assert r.headers.get("WWW-Authenticate", "").startswith("Bearer")
            assert r.json["error"]["code"] == "unauthenticated"
        assert send().status == 401
        assert send(headers={"Authorization": "Basic " + TOKEN["lead"]}).status == 401
        for role in ("viewer", "analyst", "lead", "runtime"):
            if role in ROLES[perm]:
                continue
            r = send(role)
            assert r.status == 403, (method, path, role, r)
            assert r.json["error"]["code"] == "forbidden" and role in r.json["error"]["message"]
    # nothing above froze anything
    assert call("GET", cluster.url(0) + f"/v1/agents/{agent}", TOKEN["viewer"]).json["breaker"]["state"] == "closed"


# ---------------------------------------------------------------------- reads and routing
def test_any_worker_answers_for_any_agent_by_forwarding_to_the_owner(cluster, agents):
    for agent in (agents["w0"], agents["w1"]):
        owner = cluster.owner_index(agent)
        for i in (0, 1):
            r = call("GET", cluster.url(i) + f"/v1/agents/{agent}", TOKEN["viewer"])
            assert r.status == 200, r
            body = r.json
            assert body["agent_id"] == agent and body["operator_id"] == "ops-team"
            assert body["breaker"]["state"] == "closed" and body["risk"]["budget"] > 0
            assert body["baseline"]["observations"] > 0 and "event_volume" in body["baseline"]["features"]
            assert body["last_decisions"] and body["last_decisions"][0]["event_id"] == f"{agent}-e11"
            if i != owner:
                assert r.headers["X-Flowbreaker-Owner"] == cluster.url(owner)
    for i in (0, 1):
        r = call("GET", cluster.url(i) + "/v1/agents/nobody-ever", TOKEN["analyst"])
        assert r.status == 404 and r.json["error"]["code"] == "unknown_agent"
        assert call("GET", cluster.url(i) + "/v1/agents/" + "x" * 129, TOKEN["analyst"]).status == 400
        assert call("GET", cluster.url(i) + "/v1/incidents/inc-nope", TOKEN["viewer"]).status == 404


# ---------------------------------------------------------------------- freeze and release
def _changelog_states(cluster: Cluster, agent: str) -> list[tuple[int, str]]:
    from detector.engine import AgentState
    from streams.worker.app import unpack_state

    out = []
    for m in read_topic(cluster.bootstrap, cluster.prefix + "app-agent-state-changelog"):
        if m.key in (agent.encode(), json.dumps(agent).encode()) and m.value:  # raw or JSON-serialised key
            _, _, state, _, _ = unpack_state(m.value)
            out.append((m.timestamp, AgentState.load(state).breaker.state))
    return out


def _commands(cluster: Cluster, agent: str) -> list[tuple[int, dict]]:
    return [(m.timestamp, json.loads(m.value)) for m in read_topic(cluster.bootstrap, cluster.topic("control"))
            if m.key == agent.encode()]


def test_a_manual_freeze_is_in_the_agent_state_before_its_command_and_a_lead_releases_it(cluster, agents,
                                                                                        signing_keys):
    agent = agents["freeze"]
    via = other(cluster, agent)
    r = act(cluster, via, "POST", f"/v1/agents/{agent}/freeze", "analyst", {"reason": "odd exports at night"},
            what="freeze", agent=agent)
    assert r.status == 200, r
    frozen = r.json
    iid = frozen["incident_id"]
    assert iid.startswith("man-") and frozen["state"] == "open" and frozen["frozen_by"] == NAME["analyst"]
    assert frozen["published"] is True
    r = act(cluster, 1 - via, "POST", f"/v1/agents/{agent}/freeze", "lead", {"reason": "again"}, what="freeze",
            agent=agent)
    assert r.status == 409 and r.json["error"]["incident_id"] == iid
    # the command went out, issued by the analyst; the table had the open breaker first
    cmds = wait_for(lambda: [c for c in _commands(cluster, agent) if c[1]["command"] == "freeze"], 10, "freeze cmd")
    ts_cmd, cmd = cmds[0]
    assert signing_keys.verify(cmd) == "ok"  # signed by the worker (streams/clients/signing.py)
    assert {k: v for k, v in cmd.items() if k != "signature"} == {
        "command": "freeze", "agent_id": agent, "incident_id": iid, "issued_at": frozen["issued_at"],
        "reason": "odd exports at night", "issued_by": NAME["analyst"], "seq": 1}  # the agent's first command
    opened = [ts for ts, state in _changelog_states(cluster, agent) if state == "open"]
    assert opened and min(opened) <= ts_cmd
    # every worker lists it, with the incident and its author
    for i in (0, 1):
        br = wait_for(lambda i=i: [b for b in call("GET", cluster.url(i) + "/v1/breakers?state=open",
                                                   TOKEN["viewer"]).json["breakers"] if b["agent_id"] == agent],
                      10, "breaker listed")
        assert br[0]["incident_id"] == iid and br[0]["by"] == NAME["analyst"] and br[0]["why"] == "odd exports at night"
        inc = call("GET", cluster.url(i) + f"/v1/incidents/{iid}", TOKEN["viewer"])
        assert inc.status == 200 and inc.json["frozen_by"] == NAME["analyst"] and inc.json["agent_id"] == agent
        assert inc.json["attribution"]["operator_id"] == "ops-team"
    assert call("GET", cluster.url(via) + f"/v1/agents/{agent}", TOKEN["viewer"]).json["breaker"]["state"] == "open"
    # release: the analyst may not, another incident id is refused, a lead may
    assert act(cluster, via, "POST", f"/v1/agents/{agent}/release", "analyst", {"reason": "fp"}, what="release",
               agent=agent).status == 403
    r = act(cluster, via, "POST", f"/v1/agents/{agent}/release", "lead", {"reason": "fp", "incident_id": "inc-x"},
            what="release", agent=agent)
    assert r.status == 409 and r.json["error"]["code"] == "other_incident"
    r = act(cluster, via, "POST", f"/v1/agents/{agent}/release", "lead",
            {"reason": "false positive: nightly batch", "incident_id": iid}, what="release", agent=agent)
    assert r.status == 200, r
    assert r.json["state"] == "half_open" and r.json["released_by"] == NAME["lead"] and r.json["published"]
    rel = wait_for(lambda: [c for _, c in _commands(cluster, agent) if c["command"] == "release"], 10, "release")
    assert rel[0]["issued_by"] == NAME["lead"] and rel[0]["incident_id"] == iid
    assert signing_keys.verify(rel[0]) == "ok" and rel[0]["seq"] == 2  # after its freeze (contract section 4)
    assert act(cluster, 1 - via, "POST", f"/v1/agents/{agent}/release", "lead", {"reason": "again"},
               what="release", agent=agent).status == 409
    assert call("GET", cluster.url(0) + f"/v1/agents/{agent}", TOKEN["viewer"]).json["breaker"]["state"] == "half_open"
    half = call("GET", cluster.url(1) + "/v1/breakers?state=half_open", TOKEN["viewer"]).json["breakers"]
    assert any(b["agent_id"] == agent and b["by"] == NAME["lead"] for b in half)
    assert all(b["agent_id"] != agent for b in
               call("GET", cluster.url(0) + "/v1/breakers", TOKEN["viewer"]).json["breakers"])


def test_the_two_person_rule_a_critical_manual_freeze_is_released_by_another_lead(cluster, agents):
    crit, plain = agents["crit"], agents["plain"]
    via = other(cluster, crit)
    r = act(cluster, via, "POST", f"/v1/agents/{crit}/freeze", "lead", {"reason": "live exfiltration",
                                                                          "severity": "critical"},
            what="freeze", agent=crit)
    assert r.status == 200, r
    r = act(cluster, via, "POST", f"/v1/agents/{crit}/release", "lead", {"reason": "my call"}, what="release",
            agent=crit)
    assert r.status == 403 and r.json["error"]["code"] == "two_person_rule"
    assert call("GET", cluster.url(0) + f"/v1/agents/{crit}", TOKEN["viewer"]).json["breaker"]["state"] == "open"
    r = act(cluster, 1 - via, "POST", f"/v1/agents/{crit}/release", "lead2", {"reason": "reviewed, contained"},
            what="release", agent=crit)
    assert r.status == 200 and r.json["released_by"] == NAME["lead2"]
    # not critical: the lead who froze it may release it
    assert act(cluster, 0, "POST", f"/v1/agents/{plain}/freeze", "lead", {"reason": "precaution"}, what="freeze",
               agent=plain).status == 200
    assert act(cluster, 1, "POST", f"/v1/agents/{plain}/release", "lead", {"reason": "done"}, what="release",
               agent=plain).status == 200


# ---------------------------------------------------------------------- feedback
def test_feedback_on_a_decision_is_kept_on_agent_feedback(cluster, agents):
    agent = agents["fb"]
    via = other(cluster, agent)
    r = act(cluster, via, "POST", f"/v1/decisions/{agent}-e3/feedback", "analyst",
            {"agent_id": agent, "verdict": "false_positive", "reason": "approved migration"}, what="feedback",
            agent=agent)
    assert r.status == 200, r
    assert r.json["by"] == NAME["analyst"] and r.json["event_id"] == f"{agent}-e3"
    r = act(cluster, 1 - via, "POST", f"/v1/decisions/{agent}-e4/feedback", "lead",
            {"agent_id": agent, "verdict": "confirmed", "reason": "real"}, what="feedback", agent=agent)
    assert r.status == 200
    fb = wait_for(lambda: [x for x in records(cluster.bootstrap, cluster.topic("feedback")) if x["agent_id"] == agent]
                  if len([x for x in records(cluster.bootstrap, cluster.topic("feedback"))
                          if x["agent_id"] == agent]) >= 2 else None, 10, "feedback records")
    assert sorted(fb[0]) == ["agent_id", "at", "by", "event_id", "reason", "verdict"]
    assert {(x["event_id"], x["verdict"], x["by"]) for x in fb} == {
        (f"{agent}-e3", "false_positive", NAME["analyst"]), (f"{agent}-e4", "confirmed", NAME["lead"])}
    assert act(cluster, via, "POST", "/v1/decisions/e/feedback", "analyst",
               {"agent_id": "nobody-ever", "verdict": "confirmed", "reason": "x"}, what="feedback",
               agent="nobody-ever").status == 404
    r = act(cluster, via, "POST", "/v1/decisions/e/feedback", "analyst",
            {"agent_id": agent, "verdict": "maybe", "reason": "x"}, what="feedback", agent=agent)
    assert r.status == 400 and "verdict" in r.json["error"]["message"]
    r = act(cluster, via, "POST", "/v1/decisions/e/feedback", "analyst", {"agent_id": agent, "verdict": "confirmed"},
            what="feedback", agent=agent)
    assert r.status == 400 and "reason" in r.json["error"]["message"]


# ---------------------------------------------------------------------- hostile input
def test_bad_input_gets_a_clear_4xx_and_secrets_never_come_back(cluster, agents):
    agent = agents["w0"]
    secret = TOKEN["lead"]
    bodies = []

    def post(path, body, role="analyst", what="freeze", a=agent):
        r = act(cluster, 1, "POST", path, role, body, what=what, agent=a)
        bodies.append(r.raw)
        return r

    freeze = f"/v1/agents/{agent}/freeze"
    r = post(freeze, b'{"reason": "x",')
    assert r.status == 400 and r.json["error"]["code"] == "invalid_json"
    assert "not valid JSON" in r.json["error"]["message"]
    assert post(freeze, b"[1, 2]").json["error"]["message"] == "request body must be a JSON object"
    assert post(freeze, b"").status == 400
    assert post(freeze, b"\xff\xfe").status == 400
    r = post(freeze, {"reason": "x" * 20_000})
    assert r.status == 413 and "larger than" in r.json["error"]["message"]
    r = post(freeze, {"reason": "x" * 1001})
    assert r.status == 400 and "at most 1000" in r.json["error"]["message"]
    r = post(freeze, {"reason": "   "})
    assert r.status == 400 and "blank" in r.json["error"]["message"]
    r = post(freeze, {"reason": "x", "severity": secret})
    assert r.status == 400 and "severity" in r.json["error"]["message"]
    r = post(freeze, {"reason": "x", secret: 1})
    assert r.status == 400 and r.json["error"]["code"] == "unknown_field"
    r = post(freeze, {"reason": 12})
    assert r.status == 400
    r = post(f"/v1/agents/{agent}/release", {"reason": "x", "incident_id": "i" * 129}, role="lead", what="release")
    assert r.status == 400 and "incident_id" in r.json["error"]["message"]
    # the check: the action must be a valid contract event
    r = call("POST", cluster.url(0) + "/v1/check", TOKEN["runtime"], event(agent, 1, records=-3, tool=secret))
    bodies.append(r.raw)
    assert r.status == 400 and "records" in r.json["error"]["message"]
    r = call("POST", cluster.url(0) + "/v1/check", TOKEN["runtime"], b"x" * (1024 * 1024 + 10))
    assert r.status == 413
    for q in ("state=closed", "limit=0", "limit=abc", "limit=100000"):
        r = call("GET", cluster.url(0) + "/v1/breakers?" + q, TOKEN["viewer"])
        assert r.status == 400, q
    r = call("GET", cluster.url(0) + "/v1/approvals?state=bogus", TOKEN["viewer"])
    assert r.status == 400
    for raw in bodies:
        assert secret.encode() not in raw and hashlib.sha256(secret.encode()).hexdigest().encode() not in raw
    assert call("GET", cluster.url(0) + f"/v1/agents/{agent}", TOKEN["viewer"]).json["breaker"]["state"] == "closed"


# ---------------------------------------------------------------------- automatic freezes and incidents
def test_an_automatic_freeze_is_audited_and_its_incident_carries_the_attribution(cluster, agents):
    agent = agents["auto"]
    produce(cluster.bootstrap, cluster.topic("actions"),
            [(agent.encode(), json.dumps(exfil(agent, 100, parent_event_id=f"{agent}-e11")).encode())])
    br = wait_for(lambda: [b for b in call("GET", cluster.url(0) + "/v1/breakers", TOKEN["viewer"]).json["breakers"]
                           if b["agent_id"] == agent], 20, "automatic freeze")
    assert br[0]["by"] == "flowbreaker" and br[0]["severity"] == "critical"
    iid = br[0]["incident_id"]
    inc = call("GET", cluster.url(1) + f"/v1/incidents/{iid}", TOKEN["analyst"]).json
    att = inc["attribution"]
    assert att["operator_id"] == "ops-team" and att["requested_by"] == "mallory@corp.example"
    assert att["instruction_hash"] == "sha256:feedbeef" and att["task_id"] == f"{agent}-task-20"
    assert att["parent_chain"][:2] == [f"{agent}-e100", f"{agent}-e11"]
    assert inc["trace"][-1]["event_id"] == f"{agent}-e100"
    audit = wait_for(lambda: [r for r in records(cluster.bootstrap, cluster.topic("audit"))
                              if r["what"] == "freeze" and r["target"]["incident_id"] == iid], 10, "freeze audit")
    assert audit[0]["who"] == "flowbreaker" and audit[0]["automatic"] is True and audit[0]["result"] == "ok"
    assert audit[0]["target"]["agent_id"] == agent and audit[0]["why"]


# ---------------------------------------------------------------------- the audit trail (runs last)
def test_zz_every_state_changing_call_is_in_the_audit_trail_and_no_token_is(cluster, agents, audit):
    want = Counter(CALLS)
    assert want and all(w in ("freeze", "release", "feedback", "approve", "deny", "check_fallback")
                        for _, w, _, _ in want)
    refused = Counter(REFUSED)
    assert refused[("anonymous", "unauthenticated")] > 10 and refused[("vera", "forbidden")] > 3

    def got():
        recs = audit.records()  # this module's: written after its first call's mark
        have = Counter((r["who"], r["what"], r["status"], r["target"]["agent_id"])
                       for r in recs if not r["automatic"])
        # refused calls: a record for a client's first refusal in a window, a count for the rest of it
        counted = Counter()
        for r in recs:
            if r["result"] in ("unauthenticated", "forbidden"):
                counted[(r["who"], r["result"])] += r["count"] if r["what"] == "refused_calls" else 1
        missing = want - have
        return (recs, missing) if not missing and counted == refused else None

    deadline = time.monotonic() + 15 + 2 * cluster.refusal_window_s
    result = None
    while result is None and time.monotonic() < deadline:
        result = got()
        if result is None:
            time.sleep(0.5)
    if result is None:
        recs = audit.records()
        have = Counter((r["who"], r["what"], r["status"], r["target"]["agent_id"]) for r in recs)
        pytest.fail(f"audit records missing: {dict(want - have)}; refused calls {dict(refused)}")
    recs, _ = result
    for r in recs:
        assert r["at"].endswith("Z") and r["who"] and r["what"] and r["result"]
        if r["result"] == "ok" and r["what"] in ("freeze", "release", "feedback"):
            assert r["why"], r
    results = {(r["what"], r["status"]): r["result"] for r in recs}
    assert results.get(("release", 403)) in ("forbidden", "refused")
    summaries = [r for r in recs if r["what"] == "refused_calls"]
    assert summaries and all(r["client"] == "127.0.0.1" and r["count"] >= 1 for r in summaries)
    assert len([r for r in recs if r["result"] in ("unauthenticated", "forbidden")]) < sum(refused.values())
    assert any(r["result"] == "refused" and "two_person_rule" in (r["detail"] or "") for r in recs)
    raw = b"".join(m.value for m in read_topic(cluster.bootstrap, cluster.topic("audit")))  # the whole trail
    for token in TOKEN.values():
        assert token.encode() not in raw
        assert hashlib.sha256(token.encode()).hexdigest().encode() not in raw
    assert b"Bearer" not in raw
