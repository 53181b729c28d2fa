"""The control plane under attack, on the real broker (issue 10, items 3, 4, 5, 8, 9).

A worker (with its API), the actuator (webhook to a tiny orchestrator on
127.0.0.1) and a FreezeGuard run while the test, as an attacker with produce
rights on every topic, writes poison records (not JSON, deep nesting, wrong
types, huge strings, bad UTF-8, empty values) to every control-side topic
(``agent-control``, ``agent-incidents``, ``agent-approvals``, ``model-updates``,
``agent-feedback``, ``agent-audit``) and forged releases to ``agent-control``.
It checks that:

- every component skips and counts the poison and keeps going: a real freeze
  is then seen by the guard, the actuator and every API route; a guard started
  afterwards becomes ready; the worker's control index never restarts;
- a forged release (made-up incident and ``issued_by`` the worker's own name,
  unsigned, badly signed, signed by another key, or genuine but for an older
  incident) is ignored by the guard, the actuator and the worker, and
  ``/v1/breakers`` and ``/v1/agents/{id}`` keep telling the same story;
- ``flowbreaker release`` works with poison on the topic, as a key holder and
  through the API with a lead's token, and is audited;
- a re-freeze after a release is a second webhook delivery with its own
  ``Idempotency-Key``;
- 2,000 unauthenticated calls write a bounded number of audit records whose
  counts add up to 2,000;
- a guard whose reader crashes, or stops reading, holds every agent and
  recovers on its own;
- a restarted worker answers ``/v1/breakers`` with the poison still on the topics.

Every wait is bounded; processes are stopped by their own pid.
"""
from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from api_harness import NAME, TOKEN, Cluster, call, metric, read_topic, seed, wait_for
from worker_harness import Orchestrator, WorkerProc, produce, stop_process

pytestmark = pytest.mark.timeout(400)

REPO_DIR = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-c", "import sys; from streams.cli.main import main; sys.exit(main())"]
REFUSAL_WINDOW_S = 3.0
FLOOD = 2000

POISON = [
    b"not json {",
    b'{"a":' * 1000,                                                   # deep nesting: RecursionError in a decoder
    b"[" * 3000 + b"]" * 3000,
    b'{"command": "freeze", "agent_id": 12345}',                       # wrong types
    b'{"command": ["release"], "agent_id": {"x": 1}, "incident_id": 7, "rev": "x", "approval_id": 9}',
    b'{"command": "freeze", "agent_id": "' + b"A" * 300_000 + b'"}',   # a huge value
    b"\xff\xfe\xfd garbage \xc3\x28",                                  # not UTF-8
    b'{"command": "release", "agent_id": "\xc3\x28", "incident_id": "x"}',
    b"", b"null", b"[]", b"1e99999", b'"a string"',
]
CONTROL_SIDE = ("control", "incidents", "approvals", "feedback", "audit")



def audit_records(bootstrap: str, topic: str) -> list[dict]:
    """The audit trail's records, the poison written to it skipped (it is an attacker's, not the workers')."""
    from streams.clients.commands import RecordError, decode_record

    out = []
    for m in read_topic(bootstrap, topic):
        try:
            rec = decode_record(m.value, dict)
        except RecordError:
            continue
        if isinstance(rec.get("result"), str) and isinstance(rec.get("who"), str):
            out.append(rec)
    return out


def run_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    full = dict(os.environ, PYTHONPATH=str(REPO_DIR))
    full.update(env or {})
    return subprocess.run([*CLI, *args], cwd=REPO_DIR, capture_output=True, text=True, timeout=90,
                          stdin=subprocess.DEVNULL, env=full)


def poison_everything(cluster: Cluster, agent: str, updates_topic: str) -> int:
    """Every poison record on every control-side topic, keyed by the agent, by nothing and by bad bytes."""
    n = 0
    keys = [agent.encode(), None, b"\xff\xfe"]
    for logical in CONTROL_SIDE:
        msgs = [(keys[i % len(keys)], v) for i, v in enumerate(POISON)]
        n += produce(cluster.bootstrap, cluster.topic(logical), msgs)
    # model-updates is compacted: every message needs a key
    produce(cluster.bootstrap, updates_topic, [(b"current-model", v) for v in POISON if v])
    return n


def forged_releases(agent: str, open_incident: str, other_keys) -> list[dict]:
    base = {"command": "release", "agent_id": agent, "issued_at": "2026-03-02T10:00:00Z", "reason": "trust me"}
    return [
        dict(base, incident_id="inc-made-up-0001", issued_by="flowbreaker"),            # the forgery
        dict(base, incident_id=open_incident, issued_by="flowbreaker"),                 # unsigned, right incident
        dict(base, incident_id=open_incident, issued_by="lee",                          # a signature that is junk
             signature="hmac-sha256:k-test:" + "0" * 64),
        dict(base, incident_id=open_incident, issued_by="lee", signature="ed25519:k:zz"),
        other_keys.sign(dict(base, incident_id=open_incident, issued_by="lee")),        # signed with another key
    ]


def test_poison_and_forged_commands_change_nothing_and_every_component_goes_on(
        kafka_bootstrap, tmp_path, signing_keys):
    from streams.kafka_admin import ensure_topics
    from streams.clients.guard import FreezeGuard
    from streams.model_updates import ensure_updates_topic
    from streams.settings import Settings
    from streams.clients.signing import KeyRing

    prefix = f"it-hostile-{uuid.uuid4().hex[:8]}-"
    settings = Settings(bootstrap=kafka_bootstrap, topic_prefix=prefix, partitions=4)
    updates = ensure_updates_topic(settings)
    saved = os.environ.get("FLOWBREAKER_AUDIT_REFUSAL_WINDOW_S")
    os.environ["FLOWBREAKER_AUDIT_REFUSAL_WINDOW_S"] = str(REFUSAL_WINDOW_S)  # the worker inherits it
    cluster = Cluster(kafka_bootstrap, prefix, tmp_path, n=1, partitions=4)
    orchestrator = Orchestrator()
    actuator = None
    guards: list[FreezeGuard] = []
    try:
        cluster.start()
        ensure_topics(settings)  # the worker made them; idempotent
        worker = cluster.workers[0]
        url = cluster.url(0)
        a, b, c = "hostile-a", "hostile-b", "hostile-c"
        seed(cluster, [a, b])
        actuator = subprocess.Popen(
            [*CLI, "actuator", "--bootstrap", kafka_bootstrap, "--topic-prefix", prefix, "--group", prefix + "act",
             "--webhook", orchestrator.url, "--log-format", "json", "--backoff-initial", "0.1", "--no-ack"],
            cwd=REPO_DIR, env=dict(os.environ, PYTHONPATH=str(REPO_DIR)), stdin=subprocess.DEVNULL,
            stdout=open(tmp_path / "actuator.out", "wb"), stderr=open(tmp_path / "actuator.err", "wb"))
        guard = FreezeGuard(kafka_bootstrap, keys=signing_keys, topic=cluster.topic("control"), max_staleness_s=2.0,
                            check_every_s=0.25)
        guards.append(guard)
        guard.start()
        assert guard.wait_ready(60)

        def actuator_alive():
            assert actuator.poll() is None, (tmp_path / "actuator.err").read_text()[-3000:]

        # --- poison on every control-side topic, while everything runs
        poison_everything(cluster, a, updates)
        wait_for(lambda: guard.invalid >= len(POISON), 30, "the guard to skip the poison")
        assert guard.error is None and guard.restarts == 0 and guard.current

        # --- a real freeze is still seen by everyone
        r = call("POST", url + f"/v1/agents/{a}/freeze", TOKEN["analyst"], {"reason": "odd exports"})
        assert r.status == 200, r
        inc1 = r.json["incident_id"]
        wait_for(lambda: not guard.may_proceed(a) and guard.open_incident(a) == inc1, 20, "the guard to see the freeze")
        assert guard.freeze_verified(a)
        wait_for(lambda: orchestrator.commands(a), 30, "the actuator to enact the freeze")
        actuator_alive()
        later = FreezeGuard(kafka_bootstrap, keys=signing_keys, topic=cluster.topic("control"))
        guards.append(later)
        later.start()
        assert later.wait_ready(30) and later.open_incident(a) == inc1  # a new guard becomes ready, poison or not

        # --- forged releases: ignored by the guard, the actuator and the worker
        stale = signing_keys.sign({"command": "release", "agent_id": a, "incident_id": "man-an-older-one",
                                   "seq": guard.highest_seq(a),  # signed, but not newer than the freeze: a replay
                                   "issued_at": "2026-03-02T10:00:00Z", "reason": "old", "issued_by": "lee"})
        forged = forged_releases(a, inc1, KeyRing({"k-test": os.urandom(32)}, active="k-test")) + [stale]
        before = dict(guard.outcomes)
        produce(kafka_bootstrap, cluster.topic("control"), [(a.encode(), json.dumps(f).encode()) for f in forged])
        wait_for(lambda: sum(guard.outcomes.values()) - sum(before.values()) >= len(forged), 20,
                 "the guard to read the forged releases")
        assert guard.outcomes["release_unverified"] - before.get("release_unverified", 0) == len(forged) - 1
        assert guard.outcomes["replayed"] - before.get("replayed", 0) == 1
        assert not guard.may_proceed(a) and guard.open_incident(a) == inc1
        wait_for(lambda: worker.status()["releases_ignored"] >= len(forged), 20, "the worker to ignore them")
        time.sleep(1.0)  # the actuator had as long as the worker
        assert [cmd for cmd, _, _ in orchestrator.commands(a)] == ["freeze"]
        breakers = call("GET", url + "/v1/breakers?state=open", TOKEN["viewer"]).json["breakers"]
        assert [(x["agent_id"], x["incident_id"]) for x in breakers if x["agent_id"] == a] == [(a, inc1)]
        assert call("GET", url + "/v1/breakers?state=half_open", TOKEN["viewer"]).json["count"] == 0
        agent_view = call("GET", url + f"/v1/agents/{a}", TOKEN["viewer"]).json["breaker"]
        assert agent_view["state"] == "open" and agent_view["incident_id"] == inc1
        actuator_alive()

        # --- a key holder's release (flowbreaker release, signed) of the open incident works, poison or not
        rel = run_cli("release", a, "--reason", "checked with the operator", "--by", "lou",
                      "--bootstrap", kafka_bootstrap, "--topic-prefix", prefix, "--timeout", "30",
                      env={"FLOWBREAKER_API_TOKEN": ""})
        assert rel.returncode == 0, rel.stderr
        assert f"released {a} (incident {inc1}) by lou" in rel.stdout
        wait_for(lambda: guard.may_proceed(a), 20, "the guard to obey the signed release")
        wait_for(lambda: call("GET", url + f"/v1/agents/{a}", TOKEN["viewer"]).json["breaker"]["state"]
                 == "half_open", 20, "the worker to put the agent on probation")
        half = call("GET", url + "/v1/breakers?state=half_open", TOKEN["viewer"]).json["breakers"]
        assert [(x["agent_id"], x["by"]) for x in half] == [(a, "lou")]
        wait_for(lambda: [cmd for cmd, _, _ in orchestrator.commands(a)] == ["freeze", "release"], 20,
                 "the actuator to enact the release")

        # --- a re-freeze is a new incident: a second delivery with its own idempotency key (item 5)
        r = call("POST", url + f"/v1/agents/{a}/freeze", TOKEN["lead"], {"reason": "again"})
        assert r.status == 200, r
        inc2 = r.json["incident_id"]
        assert inc2 != inc1
        wait_for(lambda: len(orchestrator.commands(a)) == 3, 20, "the second freeze at the webhook")
        assert orchestrator.commands(a) == [("freeze", inc1, f"{inc1}:freeze"), ("release", inc1, f"{inc1}:release"),
                                            ("freeze", inc2, f"{inc2}:freeze")]

        # --- flowbreaker release through the API (a lead's token), audited
        assert call("POST", url + f"/v1/agents/{b}/freeze", TOKEN["analyst"], {"reason": "check"}).status == 200
        token_file = tmp_path / "lead.token"
        token_file.write_text(TOKEN["lead"] + "\n")
        viewer_file = tmp_path / "viewer.token"
        viewer_file.write_text(TOKEN["viewer"] + "\n")
        denied = run_cli("release", b, "--reason", "not mine to release", "--token-file", str(viewer_file),
                         "--url", url)
        assert denied.returncode == 2 and len(denied.stderr.strip().splitlines()) == 1, denied.stderr
        ok = run_cli("release", b, "--reason", "false positive", "--token-file", str(token_file), "--url", url)
        assert ok.returncode == 0, ok.stderr
        assert f"released {b}" in ok.stdout and f"by {NAME['lead']}" in ok.stdout
        wait_for(lambda: guard.may_proceed(b), 20, "the guard to obey the API's release")

        # --- a flood of unauthenticated calls: bounded audit growth, nothing lost from the count
        t0 = time.monotonic()
        conn = http.client.HTTPConnection("127.0.0.1", worker.web_port, timeout=10)
        statuses = set()
        for i in range(FLOOD):
            try:
                conn.request("POST", f"/v1/agents/{a}/freeze", body=b'{"reason": "flood"}',
                             headers={"Content-Type": "application/json", "Authorization": f"Bearer nope-{i}"})
                resp = conn.getresponse()
                resp.read()
                statuses.add(resp.status)
            except (http.client.HTTPException, OSError):
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", worker.web_port, timeout=10)
        conn.close()
        flood_s = time.monotonic() - t0
        assert statuses == {401}

        def flood_audit():
            recs = [r for r in audit_records(kafka_bootstrap, cluster.topic("audit"))
                    if r["result"] == "unauthenticated" and r["who"] == "anonymous"]
            total = sum(r["count"] if r["what"] == "refused_calls" else 1 for r in recs)
            return recs if total == FLOOD else None

        recs = wait_for(flood_audit, 2 * REFUSAL_WINDOW_S + 20, "the flood's audit summaries")
        bound = 2 * (flood_s / REFUSAL_WINDOW_S + 2)
        print(f"flood: {FLOOD} unauthenticated calls in {flood_s:.1f} s -> {len(recs)} audit records")
        assert len(recs) <= bound, (len(recs), flood_s)
        assert all(r["client"] == "127.0.0.1" for r in recs)
        text = worker.metrics()
        assert metric(text, "flowbreaker_audit_refusals_summarised_total") >= FLOOD - len(recs)

        # --- everyone counted the poison, by topic and reason; nothing restarted
        st = worker.status()
        assert st["control_rejected"] >= len(POISON) and st["control_feed_restarts"] == 0
        for topic in ("control", "incidents", "approvals", "model_updates"):
            assert metric(text, "flowbreaker_control_records_rejected_total", topic=topic) >= len(POISON) - 2, topic
        assert metric(text, "flowbreaker_control_records_rejected_total", topic="control", reason="too_deep") >= 2
        assert metric(text, "flowbreaker_control_signatures_total", reader="index", verdict="bad_signature") >= 1
        assert guard.restarts == 0 and sum(guard.rejected.values()) == guard.invalid
        actuator_alive()

        # --- a guard whose reader crashes holds every agent, then recovers on its own
        guard._consumer.close()  # the reader's consumer dies under it
        wait_for(lambda: not guard.may_proceed(c), 5, "the guard to hold everyone", every=0.02)
        wait_for(lambda: guard.may_proceed(c), 30, "the guard to recover")
        assert guard.restarts >= 1 and not guard.may_proceed(a)  # and it still knows who is frozen

        # --- ... and one that stops reading (a paused consumer) holds everyone once stale, then recovers
        consumer = guard._consumer
        consumer.pause(*consumer.assignment())
        produce(kafka_bootstrap, cluster.topic("control"), [(c.encode(), json.dumps(signing_keys.sign(
            {"command": "freeze", "agent_id": c, "incident_id": "inc-c-1", "seq": 1,
             "issued_at": "2026-03-02T10:00:00Z",
             "reason": "test", "issued_by": "flowbreaker"})).encode())])
        wait_for(lambda: not guard.may_proceed(b), 10, "the stale guard to hold everyone", every=0.05)
        wait_for(lambda: guard.current and not guard.may_proceed(c) and guard.may_proceed(b), 40,
                 "the guard to catch up again")

        # --- a restarted worker answers /v1/breakers, poison still on the topics
        code = worker.stop(timeout=30)
        assert code == 0, worker.stderr_tail()
        again = WorkerProc(kafka_bootstrap, prefix, prefix + "app", tmp_path / "w0", session_timeout=6.0,
                           flush_interval=1.0, extra=["--tokens", str(cluster.tokens)], web_port=worker.web_port)
        cluster.workers[0] = again
        again.start()
        again.wait_ready(1, timeout=90)
        listed = wait_for(lambda: call("GET", url + "/v1/breakers?state=open", TOKEN["viewer"]).status == 200
                          and call("GET", url + "/v1/breakers?state=open", TOKEN["viewer"]).json["breakers"],
                          60, "/v1/breakers after a restart")
        # the signed freezes in force (inc-c-1 was signed with the deployment's key, as a worker signs)
        assert {(x["agent_id"], x["incident_id"]) for x in listed} == {(a, inc2), (c, "inc-c-1")}
        assert call("GET", url + f"/v1/agents/{a}", TOKEN["viewer"]).json["breaker"]["incident_id"] == inc2
        st = wait_for(lambda: (lambda s: s if s["control_feed_caught_up"] else None)(again.status()), 20,
                      "the restarted worker's control index")
        assert st["control_feed_restarts"] == 0 and st["control_feed_skipped"] >= 3 * len(POISON) - 6
        actuator_alive()
    finally:
        for g in guards:
            g.stop()
        if actuator is not None:
            stop_process(actuator, 20)
        cluster.stop()
        orchestrator.close()
        if saved is None:
            os.environ.pop("FLOWBREAKER_AUDIT_REFUSAL_WINDOW_S", None)
        else:
            os.environ["FLOWBREAKER_AUDIT_REFUSAL_WINDOW_S"] = saved


def test_tokens_follow_the_file_and_sighup_and_metrics_can_require_a_token(kafka_bootstrap, tmp_path):
    """Items 10 and 12: a removed token stops working within seconds; SIGHUP re-reads the file at once (here an
    edit the modification-time poll cannot see); with --metrics-auth, /metrics and /status need a token."""
    import hashlib
    import signal

    from api_harness import write_tokens

    prefix = f"it-tokens-{uuid.uuid4().hex[:8]}-"
    tokens = write_tokens(tmp_path / "tokens.toml")
    monitor = "tok-monitor-5a6b7c"
    with open(tokens, "a") as fh:
        fh.write(f'[[token]]\nname = "prom"\nrole = "monitor"\nsha256 = "{hashlib.sha256(monitor.encode()).hexdigest()}"\n')
    worker = WorkerProc(kafka_bootstrap, prefix, prefix + "app", tmp_path / "w", extra=["--tokens", str(tokens),
                                                                                     "--metrics-auth"])
    try:
        worker.start()
        worker.wait_ready(1, timeout=90)
        url = f"http://127.0.0.1:{worker.web_port}"
        wait_for(lambda: call("GET", url + "/v1/breakers", TOKEN["viewer"]).status == 200, 60, "the API")
        # --metrics-auth: a token of a role with the metrics permission
        for page in ("/metrics", "/status"):
            assert call("GET", url + page).status == 401
            assert call("GET", url + page, TOKEN["runtime"]).status == 403
            assert call("GET", url + page, monitor).status == 200
            assert call("GET", url + page, TOKEN["viewer"]).status == 200
        assert call("GET", url + "/v1/breakers", monitor).status == 403  # monitor reads nothing else
        # revoke the viewer's token by editing the file: refused within seconds, without a restart
        text = tokens.read_text()
        viewer_hash = hashlib.sha256(TOKEN["viewer"].encode()).hexdigest()
        revoked = text.replace(viewer_hash, "0" * 64)
        tokens.write_text(revoked)
        t0 = time.monotonic()
        wait_for(lambda: call("GET", url + "/v1/breakers", TOKEN["viewer"]).status == 401, 10, "the revocation")
        print(f"revoked token refused {time.monotonic() - t0:.2f} s after the edit")
        assert call("GET", url + "/v1/breakers", TOKEN["lead"]).status == 200
        # an edit of the same size with the old modification time: only SIGHUP notices it
        st = tokens.stat()
        with open(tokens, "r+") as fh:  # in place: same inode
            fh.write(revoked.replace("0" * 64, viewer_hash))
        os.utime(tokens, ns=(st.st_atime_ns, st.st_mtime_ns))
        time.sleep(2.5)  # two polls: nothing changed as far as they can tell
        assert call("GET", url + "/v1/breakers", TOKEN["viewer"]).status == 401
        os.kill(worker.proc.pid, signal.SIGHUP)  # our own child
        wait_for(lambda: call("GET", url + "/v1/breakers", TOKEN["viewer"]).status == 200, 10, "the SIGHUP reload")
        assert worker.alive()
    finally:
        worker.stop(timeout=30)
