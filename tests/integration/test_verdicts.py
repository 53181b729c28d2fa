"""Analysts' verdicts on the real broker: a ``benign`` verdict given through the API reaches every worker,
teaches the agent at once, and a replay with the same verdicts decides byte for byte as the stream did.

Two workers with a model trained on a simulated fleet's first day. The fleet's second day runs up to a
routine action of the finance agent that the model alerts on (an alert episode opens, published on
``agent-alerts``). An analyst gives the episode a ``benign`` verdict through the worker that does *not*
own the agent; the verdict goes signed on ``agent-verdicts``; both workers read it, the owner applies it.
The same routine action again is then decided ``none``. ``flowbreaker verdicts dump`` writes the topic's
verdicts to a file, and ``flowbreaker replay --verdicts`` of the same events gives the same decision
records, byte for byte; without the verdicts the replay alerts on the action again (the verdict is what
changed the decision).

The fleet is moved by whole weeks so that its events are in the past and the action that follows the
verdict is dated now (a verdict takes effect in event time: after every event before it, before every
event after it), with the same weekdays and hours as simulated.
"""
from __future__ import annotations

import json
import math
import subprocess
import sys
import time

import pytest

from api_harness import TOKEN, Cluster, call
from detector.timestamps import instant, iso_utc
from worker_harness import (POLICY, REPO_DIR, TopicReader, decisions_by_event, event_messages, fleet, fleet_model,
                            produce, wait_for)

pytestmark = pytest.mark.timeout(400)

#: the simulated fleet's action the model alerts on (found by replaying fleet(6, 2, seed 3)): a routine
#: erp.query of fin-agent-001, alerted for its event volume
ALERTED = 397
WEEK = 7 * 86400.0


def moved_fleet() -> list[dict]:
    """The fleet up to and including the alerted action, moved by whole weeks to end in the past. Without
    approval ids: the stream checks them against agent-approvals, a plain replay takes them at their word
    (``replay --approvals`` is for that), and this test is about verdicts."""
    events = [{k: v for k, v in e.items() if k != "approval_id"}
              for e in fleet(n_agents=6, days=2, seed=3, incidents=[])[: ALERTED + 1]]
    last = instant(events[-1]["ts"])
    weeks = math.floor((time.time() - 600 - last) / WEEK)
    shift = weeks * WEEK
    return [dict(e, ts=iso_utc(instant(e["ts"]) + shift)) for e in events]


def run_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "streams.cli.main", *args], cwd=REPO_DIR, capture_output=True,
                          text=True, timeout=timeout)


def status(cluster: Cluster, i: int) -> dict:
    return cluster.workers[i].status()


@pytest.fixture(scope="module")
def setup(kafka_bootstrap, tmp_path_factory):
    """Two workers with the fleet's model, on topics of their own."""
    import uuid

    tmp = tmp_path_factory.mktemp("verdicts")
    prefix = f"it-verdicts-{uuid.uuid4().hex[:8]}-"
    events = moved_fleet()
    model = fleet_model(events, tmp / "train")
    cluster = Cluster(kafka_bootstrap, prefix, tmp, n=2, extra=["--model", str(model)]).start()
    yield cluster, events, model, prefix
    cluster.stop()


def test_a_benign_verdict_reaches_every_worker_and_the_same_routine_action_is_then_decided_none(
        kafka_bootstrap, setup, tmp_path):
    cluster, events, model, p = setup
    alerted = events[-1]
    agent = alerted["agent_id"]
    owner = cluster.owner_index(agent)
    other = 1 - owner
    produce(kafka_bootstrap, f"{p}agent-actions", event_messages(events))
    decisions = TopicReader(kafka_bootstrap, f"{p}agent-decisions")
    got = decisions_by_event(decisions.read_until(lambda ms: len(decisions_by_event(ms)) >= len(events), 120))
    assert len(got) == len(events)
    first = json.loads(got[alerted["event_id"]][0])
    assert first["action_taken"] == "alert", first

    # the episode, as the worker that does not own the agent lists it (from agent-alerts)
    def episode():
        r = call("GET", cluster.url(other) + f"/v1/episodes?agent_id={agent}", TOKEN["viewer"])
        eps = [e for e in (r.json or {}).get("episodes", []) if alerted["event_id"] in e["event_ids"]]
        return eps[0] if r.status == 200 and eps else None
    ep = wait_for(episode, 30, "the alert episode listed by the other worker", procs=cluster.workers)
    assert ep["state"] == "open" and ep["agent_id"] == agent and ep["actions"] >= 1

    # a viewer may not judge; an analyst may, through the worker that does not own the agent
    r = call("POST", cluster.url(other) + f"/v1/episodes/{ep['episode_id']}/verdict", TOKEN["viewer"],
             {"verdict": "benign", "reason": "month-end report"})
    assert r.status == 403
    r = call("POST", cluster.url(other) + f"/v1/episodes/{ep['episode_id']}/verdict", TOKEN["analyst"],
             {"verdict": "benign", "reason": "month-end report"})
    assert r.status == 200, r
    given = r.json
    assert given["verdict"] == "benign" and given["by"] == "ann" and given["published"]

    # every worker read it: the owner applied it, the other left it to the owner
    wait_for(lambda: status(cluster, owner).get("verdict_outcomes", {}).get("applied", 0) >= 1
             and status(cluster, other).get("verdict_outcomes", {}).get("not_held", 0) >= 1, 30,
             "the verdict applied by the owner and seen by the other worker", procs=cluster.workers)
    metrics = cluster.workers[owner].metrics()
    assert 'flowbreaker_verdicts_applied_total{verdict="benign"} 1.0' in metrics
    assert 'flowbreaker_episodes_total{event="opened"}' in metrics
    # the episode's record now carries the verdict, on every worker's listing
    for i in (0, 1):
        wait_for(lambda i=i: (call("GET", cluster.url(i) + f"/v1/episodes?agent_id={agent}", TOKEN["viewer"])
                              .json["episodes"][0].get("verdict") or {}).get("verdict_id") == given["verdict_id"],
                 30, f"worker {i} listing the episode with its verdict")

    # the same routine action again, after the verdict: decided none
    again = dict(alerted, event_id=alerted["event_id"] + "-again",
                 ts=iso_utc(max(time.time(), instant(given["at"]) + 1.0)))
    produce(kafka_bootstrap, f"{p}agent-actions", event_messages([again]))
    got = decisions_by_event(decisions.read_until(lambda ms: again["event_id"] in decisions_by_event(ms), 60))
    second = json.loads(got[again["event_id"]][0])
    assert second["action_taken"] == "none", second

    # replay with the verdicts on the topic: the same bytes, decision by decision
    dump = tmp_path / "verdicts.jsonl"
    done = run_cli("verdicts", "dump", "--out", str(dump), "--bootstrap", kafka_bootstrap, "--topic-prefix", p)
    assert done.returncode == 0, done.stderr
    assert [json.loads(line)["verdict_id"] for line in dump.read_text().splitlines()] == [given["verdict_id"]]
    src = tmp_path / "events.jsonl"
    src.write_text("".join(json.dumps(e) + "\n" for e in events + [again]))
    for flags, name in ((["--verdicts", str(dump)], "with.jsonl"), ([], "without.jsonl")):
        out = tmp_path / name
        done = run_cli("replay", "--input", str(src), "--out", str(out), "--quiet", "--policy", str(POLICY),
                       "--model", str(model), *flags)
        assert done.returncode == 0, done.stderr
    replayed = {json.loads(line)["event_id"]: line.encode() for line in
                (tmp_path / "with.jsonl").read_text().splitlines()}
    stream = decisions_by_event(decisions.drain(quiet=1.0, timeout=10))
    assert set(replayed) == set(stream)
    for eid, copies in stream.items():
        assert all(raw == replayed[eid] for raw in copies), (eid, copies, replayed[eid])
    without = {json.loads(line)["event_id"]: json.loads(line) for line in
               (tmp_path / "without.jsonl").read_text().splitlines()}
    assert without[again["event_id"]]["action_taken"] == "alert"
    decisions.close()


def frozen_by_exfil(cluster, bootstrap: str, p: str, agent: str, *, via: int) -> str:
    """Seed ``agent``, make it exfiltrate, wait until worker ``via``'s API lists its freeze; the incident id."""
    from api_harness import exfil, seed

    seed(cluster, [agent])
    produce(bootstrap, f"{p}agent-actions", event_messages([exfil(agent, 100)]))
    frozen = wait_for(lambda: [b for b in call("GET", cluster.url(via) + "/v1/breakers", TOKEN["viewer"]).json["breakers"]
                               if b["agent_id"] == agent], 30, "the automatic freeze", procs=cluster.workers)
    return frozen[0]["incident_id"]


def test_a_release_with_a_verdict_publishes_it_signed_and_the_owner_applies_it(kafka_bootstrap, setup, tmp_path):
    """flowbreaker release --verdict benign with a lead's token: the release through the API, the verdict signed
    on agent-verdicts and applied by the agent's owner (what it does to the breaker is the engine's:
    tests/unit)."""
    cluster, _, _, p = setup
    agent = cluster.agent_on(0, "vrel")
    incident = frozen_by_exfil(cluster, kafka_bootstrap, p, agent, via=1)
    applied_before = status(cluster, cluster.owner_index(agent))["verdict_outcomes"].get("applied", 0)
    token = tmp_path / "lead.token"
    token.write_text(TOKEN["lead"] + "\n")
    done = run_cli("release", agent, "--reason", "approved vendor run", "--verdict", "benign", "--token-file",
                   str(token), "--url", cluster.url(1), timeout=60)
    assert done.returncode == 0, done.stderr
    assert f"released {agent} (incident {incident}) by lee, verdict benign (vd-" in done.stdout
    recs = wait_for(lambda: [json.loads(m.value) for m in TopicReader(kafka_bootstrap, f"{p}agent-verdicts")
                             .read_until(lambda ms: any(json.loads(x.value)["target"] == incident for x in ms), 10)
                             if json.loads(m.value)["target"] == incident], 20, "the verdict on agent-verdicts")
    assert recs[0]["verdict"] == "benign" and recs[0]["by"] == "lee" and recs[0]["signature"].startswith("ed25519:")
    verdict_id = recs[0]["verdict_id"]
    assert f"verdict benign ({verdict_id})" in done.stdout

    owner = cluster.owner_index(agent)
    wait_for(lambda: status(cluster, owner)["verdict_outcomes"].get("applied", 0) >= applied_before + 1, 30,
             "the owner applying the release's verdict", procs=cluster.workers)


def test_a_key_holder_release_with_a_verdict_publishes_both_signed_and_the_owner_applies_the_verdict(
        kafka_bootstrap, setup):
    """flowbreaker release --by NAME --verdict confirmed, without a token (the signing key's holder): the signed
    release on agent-control, the signed verdict on agent-verdicts, applied by the agent's owner."""
    cluster, _, _, p = setup
    agent = cluster.agent_on(1, "vkey")
    incident = frozen_by_exfil(cluster, kafka_bootstrap, p, agent, via=0)
    owner = cluster.owner_index(agent)
    applied_before = status(cluster, owner)["verdict_outcomes"].get("applied", 0)
    done = run_cli("release", agent, "--reason", "exfiltration confirmed, key rotated", "--by", "lou", "--verdict",
                   "confirmed", "--bootstrap", kafka_bootstrap, "--topic-prefix", p, timeout=90)
    assert done.returncode == 0, done.stderr
    assert f"released {agent} (incident {incident}) by lou, verdict confirmed (vd-" in done.stdout
    recs = [json.loads(m.value) for m in TopicReader(kafka_bootstrap, f"{p}agent-verdicts").read_until(
        lambda ms: any(json.loads(x.value)["target"] == incident for x in ms), 20)]
    mine = [r for r in recs if r["target"] == incident]
    assert len(mine) == 1 and mine[0]["verdict"] == "confirmed" and mine[0]["by"] == "lou"
    assert mine[0]["signature"].startswith("ed25519:")
    wait_for(lambda: status(cluster, owner)["verdict_outcomes"].get("applied", 0) >= applied_before + 1, 30,
             "the owner applying the key holder's verdict", procs=cluster.workers)
