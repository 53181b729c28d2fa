"""Intended-use manifests on the real broker: the pre-action check of a running worker enforces them (from
--manifests files, then a newer version published on agent-manifests, which every worker follows; a bad record
there is skipped and counted), and flowbreaker audit reads a time range of agent-actions and the manifests on
agent-manifests."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from datetime import datetime, timedelta, timezone

import pytest

from api_harness import TOKEN, call, metric, wait_for, write_tokens
from worker_harness import REPO_DIR, WorkerProc, produce

pytestmark = pytest.mark.timeout(300)
CLI = [sys.executable, "-m", "streams.cli.main"]

MANIFEST_V1 = """version = 1
agent = "{agent}"
[tools]
allow = ["crm.query", "mail.send"]
[destinations]
classes = ["internal"]
[sensitivity]
max_sent = "confidential"
on_violation = "deny"
"""
MANIFEST_V2 = """version = 2
agent = "{agent}"
[tools]
allow = ["crm.query", "mail.send"]
[destinations]
allow = ["email:*@partner.example"]
classes = ["internal"]
[sensitivity]
max_sent = "confidential"
on_violation = "deny"
"""


def ts(minutes_ago: float = 0.0) -> str:
    t = datetime.now(timezone.utc) - timedelta(minutes=minutes_ago)
    return t.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def action(agent: str, i: int, minutes_ago: float = 0.0, **kw) -> dict:
    ev = {"event_id": f"{agent}-{i}", "ts": ts(minutes_ago), "agent_id": agent, "operator_id": "ops",
          "tool": "crm.query", "action": "read", "resource": "crm://accounts/1", "sensitivity": "internal",
          "records": 2}
    ev.update(kw)
    return ev


def cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO_DIR))
    return subprocess.run([*CLI, *args], cwd=REPO_DIR, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def setup(kafka_bootstrap, tmp_path_factory):
    from streams.kafka_admin import ensure_topics
    from streams.settings import Settings

    tmp = tmp_path_factory.mktemp("manifests")
    prefix = f"it-man-{uuid.uuid4().hex[:8]}-"
    ensure_topics(Settings(bootstrap=kafka_bootstrap, topic_prefix=prefix))
    agent = "man-bot-1"
    mdir = tmp / "manifests"
    mdir.mkdir()
    (mdir / f"{agent}.toml").write_text(MANIFEST_V1.format(agent=agent))
    worker = WorkerProc(kafka_bootstrap, prefix, prefix + "app", tmp / "w",
                        extra=["--tokens", str(write_tokens(tmp / "tokens.toml")), "--manifests", str(mdir)])
    try:
        worker.start()
        worker.wait_ready(1, timeout=90)
        url = f"http://127.0.0.1:{worker.web_port}"
        wait_for(lambda: call("GET", url + "/v1/breakers", TOKEN["viewer"]).status == 200, 60, "the API",
                 procs=[worker])
        msgs = [(a.encode(), json.dumps(action(a, i, minutes_ago=5)).encode()) for a in (agent, "free-bot-1")
                for i in range(12)]
        produce(kafka_bootstrap, prefix + "agent-actions", msgs)
        for a in (agent, "free-bot-1"):
            wait_for(lambda a=a: call("GET", url + f"/v1/agents/{a}", TOKEN["viewer"]).status == 200, 30,
                     f"agent {a} known", procs=[worker])
        yield {"agent": agent, "url": url, "worker": worker, "prefix": prefix, "tmp": tmp,
               "kafka": ["--bootstrap", kafka_bootstrap, "--topic-prefix", prefix], "bootstrap": kafka_bootstrap}
    finally:
        worker.stop(timeout=20)


def check(s: dict, body: dict) -> dict:
    r = call("POST", s["url"] + "/v1/check", TOKEN["runtime"], body)
    assert r.status == 200, r
    return r.json


def send(agent: str, i: int, dest: str, sensitivity: str = "internal") -> dict:
    return action(agent, i, tool="mail.send", action="send", sensitivity=sensitivity, destinations=[dest])


def test_the_check_enforces_the_manifest_naming_the_clause_and_follows_a_newer_version(setup):
    s, agent = setup, setup["agent"]
    ok = check(s, send(agent, 100, "email:bob@corp.example"))
    assert ok["verdict"] == "allow", ok
    held = check(s, send(agent, 101, "email:buyer@partner.example"))
    assert held["verdict"] == "needs_approval" and held["approval_request_id"], held
    assert held["reasons"][0].startswith(f"outside its intended use (agent {agent} v1), destinations: ")
    denied = check(s, send(agent, 102, "email:bob@corp.example", sensitivity="restricted"))
    assert denied["verdict"] == "deny"
    assert any("sensitivity.max_sent" in r for r in denied["reasons"])
    tool = check(s, action(agent, 103, tool="shell.exec", action="delete", resource="host://x"))
    assert tool["verdict"] == "needs_approval" and "tools: tool 'shell.exec'" in tool["reasons"][0]
    # an agent without a manifest behaves as before
    assert check(s, send("free-bot-1", 100, "email:bob@corp.example"))["verdict"] == "allow"
    text = s["worker"].metrics()
    assert metric(text, "flowbreaker_scope_violations_total", where="check", clause="destinations") >= 1
    assert metric(text, "flowbreaker_scope_violations_total", where="check", clause="sensitivity.max_sent",
                  on_violation="deny") >= 1
    assert metric(text, "flowbreaker_manifests_loaded") == 1

    # a bad record on the topic is skipped and counted; then version 2 widens the destinations
    produce(s["bootstrap"], s["prefix"] + "agent-manifests", [(f"agent:{agent}".encode(), b"version = \n[")])
    v2 = s["tmp"] / "v2"
    v2.mkdir()
    (v2 / "m.toml").write_text(MANIFEST_V2.format(agent=agent))
    pub = cli("manifest", "publish", str(v2), *s["kafka"])
    assert pub.returncode == 0, pub.stderr
    wait_for(lambda: check(s, send(agent, 104, "email:buyer@partner.example"))["verdict"] == "allow", 30,
             "version 2 in force", procs=[s["worker"]])
    assert metric(s["worker"].metrics(), "flowbreaker_manifest_records_skipped_total") == 1
    again = check(s, send(agent, 105, "email:eve@evil.example"))
    assert again["verdict"] == "needs_approval" and f"agent {agent} v2" in again["reasons"][0]


def test_audit_reads_a_period_of_the_topic_with_the_manifests_on_the_topic(setup):
    s = setup
    bot = "audit-bot-1"
    (s["tmp"] / "audit-m").mkdir()
    (s["tmp"] / "audit-m" / "a.toml").write_text(
        f'version = 1\nagent = "{bot}"\n[tools]\nallow = ["crm.query", "mail.send", "vault.read"]\n'
        '[destinations]\nclasses = ["internal"]\n')
    assert cli("manifest", "publish", str(s["tmp"] / "audit-m"), *s["kafka"]).returncode == 0
    events = [action(bot, i, minutes_ago=90 - i) for i in range(5)]                       # previous period
    events += [action(bot, 10 + i, minutes_ago=30 - i) for i in range(5)]                 # this period
    events += [action(bot, 20, minutes_ago=20, tool="shell.exec"),
               send(bot, 21, "email:eve@evil.example") | {"ts": ts(19)}]
    produce(s["bootstrap"], s["prefix"] + "agent-actions",
            [(e["agent_id"].encode(), json.dumps(e).encode()) for e in events])
    since = ts(60)
    report = s["tmp"] / "audit"
    done = cli("audit", *s["kafka"], "--since", since, "--until", "now", "--agent", bot, "--report", str(report))
    assert done.returncode == 0, done.stderr
    out = json.loads((report / "audit.json").read_text())
    a = out["agents"][0]
    assert a["agent_id"] == bot and a["manifest"] == f"agent {bot} v1"
    assert a["actions"] == 7 and a["out_of_scope"]["by_clause"] == {"tools": 1, "destinations": 1}
    assert [g["grant"] for g in a["unused_grants"]] == ["vault.read", "class internal"]  # its one send went out
    assert a["drift"]["actions"] == {"previous": 5, "current": 7}
    assert a["drift"]["new"]["tools"] == ["mail.send", "shell.exec"]
    assert (report / "audit.html").exists() and (report / "out_of_scope.png").exists()
    # least privilege from the same topic range
    suggested = s["tmp"] / "suggested"
    done = cli("manifest", "suggest", "--from-topic", s["prefix"] + "agent-actions", *s["kafka"], "--since", since,
               "--agent", bot, "--out", str(suggested))
    assert done.returncode == 0, done.stderr
    text = (suggested / f"{bot}.toml").read_text()
    assert 'allow = ["crm.query", "mail.send", "shell.exec"]' in text and '"email:eve@evil.example"' in text


def test_in_the_stream_an_out_of_scope_action_is_alerted_with_its_clause(setup):
    from worker_harness import TopicReader

    s, agent = setup, setup["agent"]
    bad = action(agent, 200, tool="shell.exec", action="exec", resource="host://x")
    fine = action(agent, 201)
    produce(s["bootstrap"], s["prefix"] + "agent-actions",
            [(agent.encode(), json.dumps(e).encode()) for e in (bad, fine)])
    reader = TopicReader(s["bootstrap"], s["prefix"] + "agent-decisions")
    try:
        got = reader.read_until(lambda ms: {json.loads(m.value)["event_id"] for m in ms} >= {bad["event_id"],
                                                                                               fine["event_id"]}, 30)
    finally:
        reader.close()
    recs = {json.loads(m.value)["event_id"]: json.loads(m.value) for m in got}
    r = recs[bad["event_id"]]
    assert r["severity"] != "ok" and r["reasons"][0]["feature"] == "out_of_scope", r
    assert "tools: tool 'shell.exec' is not among its tools" in r["reasons"][0]["detail"]
    assert not any(x["feature"] == "out_of_scope" for x in recs[fine["event_id"]]["reasons"])
    text = s["worker"].metrics()
    assert metric(text, "flowbreaker_scope_violations_total", where="stream", clause="tools") >= 1
