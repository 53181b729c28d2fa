"""Replayed signed commands on the real broker (issue 21, item 1): an old command never changes what a consumer
holds.

A worker with its API, the actuator (webhook to a tiny orchestrator), the
reference runtime and a FreezeGuard run on the session's broker; the actuator,
the runtime and the guard hold only the public key file (they cannot sign).
The SOC freezes incident A, releases A and freezes incident B through the API.
Then the test, as an attacker with produce rights on ``agent-control`` and no
key, copies A's signed freeze and A's signed release off the topic and produces
them again, verbatim, in that order. It checks that the guard, the actuator's
webhook, the API's ``/v1/breakers`` (the worker's control index), the reference
runtime and a guard started afterwards all still hold the agent for B; then
that the genuine release of B is obeyed by every one of them.

Every wait is bounded; processes are stopped by their own pid.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from api_harness import TOKEN, Cluster, call, partition_of, read_topic, seed, wait_for
from worker_harness import Orchestrator, produce, stop_process

pytestmark = pytest.mark.timeout(300)

REPO_DIR = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-c", "import sys; from streams.cli.main import main; sys.exit(main())"]
PARTITIONS = 4


def start(name: str, args: list[str], tmp_path: Path) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(REPO_DIR), PYTHONUNBUFFERED="1")
    return subprocess.Popen([*CLI, *args], cwd=REPO_DIR, env=env, stdin=subprocess.DEVNULL,
                            stdout=open(tmp_path / f"{name}.out", "wb"), stderr=open(tmp_path / f"{name}.err", "wb"))


def journal(path: Path, event: str, agent: str) -> list[dict]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            e = json.loads(line)
        except ValueError:
            continue  # a line being written
        if e.get("event") == event and e.get("agent_id") == agent:
            out.append(e)
    return out


def task(agent: str, task_id: str) -> bytes:
    step = {"operator_id": "ops", "tool": "crm.query", "action": "read", "resource": "crm://accounts/q3",
            "sensitivity": "internal", "records": 3, "bytes": 2000, "delay_s": 0.0}
    return json.dumps({"task_id": task_id, "agent_id": agent, "kind": "normal", "steps": [step, step]}).encode()


def test_replayed_old_freeze_and_release_change_nothing_anywhere_and_the_genuine_release_after_them_is_obeyed(
        kafka_bootstrap, tmp_path, signing_keys):
    from streams.clients.guard import FreezeGuard
    from streams.clients.signing import KeyRing, public_key_file
    from streams.kafka_admin import ensure_topics
    from streams.settings import Settings

    prefix = f"it-replay-{uuid.uuid4().hex[:8]}-"
    settings = Settings(bootstrap=kafka_bootstrap, topic_prefix=prefix, partitions=PARTITIONS)
    cluster = Cluster(kafka_bootstrap, prefix, tmp_path, n=1, partitions=PARTITIONS)
    public = tmp_path / "verify-keys.toml"  # what every verifier holds: public keys only
    public.write_text(public_key_file(os.environ["FLOWBREAKER_SIGNING_KEYS"]))
    verify_only = KeyRing.from_file(public)
    assert not verify_only.can_sign
    kafka = ["--bootstrap", kafka_bootstrap, "--topic-prefix", prefix, "--signing-keys", str(public)]
    orchestrator = Orchestrator()
    runtime_journal = tmp_path / "journal.jsonl"
    procs: dict[str, subprocess.Popen] = {}
    guards: list[FreezeGuard] = []
    try:
        cluster.start()
        ensure_topics(settings)
        url = cluster.url(0)
        agent = "replay-target"
        # an agent on the same partition of agent-control: its freeze, produced after the replay, tells when a
        # consumer (in partition order) has read the replayed records
        marker = next(f"replay-marker-{i}" for i in range(1000)
                      if partition_of(f"replay-marker-{i}", PARTITIONS) == partition_of(agent, PARTITIONS))
        seed(cluster, [agent])
        procs["actuator"] = start("actuator", ["actuator", *kafka, "--group", prefix + "act", "--webhook",
                                               orchestrator.url, "--log-format", "json", "--backoff-initial", "0.1",
                                               "--no-ack"], tmp_path)
        procs["runtime"] = start("runtime", ["runtime", *kafka, "--group", prefix + "rt", "--speed", "10",
                                             "--journal", str(runtime_journal), "--stats-every", "0"], tmp_path)
        guard = FreezeGuard(kafka_bootstrap, keys=verify_only, topic=cluster.topic("control"), max_staleness_s=5.0,
                            check_every_s=0.25)
        guards.append(guard)
        guard.start()
        assert guard.wait_ready(60)

        def alive():
            for name, p in procs.items():
                assert p.poll() is None, f"{name} exited: " + (tmp_path / f"{name}.err").read_text()[-3000:]
            return True

        def open_breakers():
            r = call("GET", url + "/v1/breakers?state=open", TOKEN["viewer"])
            assert r.status == 200, r
            return {(b["agent_id"], b["incident_id"]) for b in r.json["breakers"]}

        # --- freeze A, release A, freeze B: the SOC through the API
        r = call("POST", url + f"/v1/agents/{agent}/freeze", TOKEN["analyst"], {"reason": "odd exports"})
        assert r.status == 200, r
        inc_a = r.json["incident_id"]
        wait_for(lambda: guard.open_incident(agent) == inc_a, 20, "the guard to see freeze A")
        r = call("POST", url + f"/v1/agents/{agent}/release", TOKEN["lead"], {"reason": "false positive"})
        assert r.status == 200, r
        wait_for(lambda: guard.may_proceed(agent), 20, "the guard to see release A")
        r = call("POST", url + f"/v1/agents/{agent}/freeze", TOKEN["analyst"], {"reason": "odd exports again"})
        assert r.status == 200, r
        inc_b = r.json["incident_id"]
        assert inc_b != inc_a
        wait_for(lambda: guard.open_incident(agent) == inc_b, 20, "the guard to see freeze B")
        wait_for(lambda: alive() and len(orchestrator.commands(agent)) == 3, 30, "the actuator to enact all three")
        wait_for(lambda: journal(runtime_journal, "frozen", agent)
                 and journal(runtime_journal, "frozen", agent)[-1].get("incident_id") == inc_b, 30,
                 "the runtime to hold the agent for B")
        assert wait_for(lambda: (agent, inc_b) in open_breakers(), 20, "/v1/breakers to list B")

        # --- the attack: A's signed freeze and release, copied off agent-control and produced again, in order
        control = [m for m in read_topic(kafka_bootstrap, cluster.topic("control")) if m.key == agent.encode()]
        by_kind = {(json.loads(m.value)["command"], json.loads(m.value)["incident_id"]): m.value for m in control}
        replay = [by_kind[("freeze", inc_a)], by_kind[("release", inc_a)]]
        assert all(signing_keys.verify(json.loads(v)) == "ok" for v in replay)  # genuine, signed commands
        runtime_work = len(journal(runtime_journal, "task_held", agent))
        produce(kafka_bootstrap, cluster.topic("control"), [(agent.encode(), v) for v in replay])
        marker_freeze = signing_keys.sign({"command": "freeze", "agent_id": marker, "incident_id": "inc-marker",
                                           "seq": 1, "issued_at": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                                                time.gmtime()),
                                           "reason": "marker", "issued_by": "flowbreaker"})
        produce(kafka_bootstrap, cluster.topic("control"), [(marker.encode(), json.dumps(marker_freeze).encode())])
        # work for the agent, queued behind the replay: a held agent must not start it
        produce(kafka_bootstrap, settings.topic("tasks"), [(agent.encode(), task(agent, "tsk-after-replay"))])

        wait_for(lambda: guard.is_frozen(marker), 20, "the guard to read past the replay")
        wait_for(lambda: alive() and orchestrator.commands(marker), 30, "the actuator to read past the replay")
        wait_for(lambda: journal(runtime_journal, "frozen", marker), 30, "the runtime to read past the replay")
        wait_for(lambda: (marker, "inc-marker") in open_breakers(), 20, "the index to read past the replay")

        # nobody let the agent go, and B is still the incident in force everywhere
        assert not guard.may_proceed(agent) and guard.open_incident(agent) == inc_b
        assert guard.outcomes["replayed"] >= 2
        assert [c for c, _, _ in orchestrator.commands(agent)] == ["freeze", "release", "freeze"]
        assert open_breakers() >= {(agent, inc_b)}
        assert call("GET", url + f"/v1/agents/{agent}", TOKEN["viewer"]).json["breaker"]["incident_id"] == inc_b
        assert [e.get("incident_id") for e in journal(runtime_journal, "released", agent)] == [inc_a]
        wait_for(lambda: len(journal(runtime_journal, "task_held", agent)) > runtime_work, 20,
                 "the runtime to hold the task queued after the replay")
        time.sleep(1.0)  # had the replayed release freed it, the held task would start now
        assert journal(runtime_journal, "task_started", agent) == []
        later = FreezeGuard(kafka_bootstrap, keys=verify_only, topic=cluster.topic("control"))
        guards.append(later)
        later.start()
        assert later.wait_ready(30) and later.open_incident(agent) == inc_b  # a guard started later, too

        # --- the genuine release of B after the replay is obeyed by everyone
        r = call("POST", url + f"/v1/agents/{agent}/release", TOKEN["lead"], {"reason": "checked"})
        assert r.status == 200, r
        wait_for(lambda: guard.may_proceed(agent) and later.may_proceed(agent), 20, "the guards to obey release B")
        wait_for(lambda: alive() and [c for c, _, _ in orchestrator.commands(agent)]
                 == ["freeze", "release", "freeze", "release"], 30, "the actuator to enact release B")
        assert orchestrator.commands(agent)[-1][1] == inc_b
        wait_for(lambda: (agent, inc_b) not in open_breakers(), 20, "/v1/breakers to drop B")
        wait_for(lambda: [e.get("incident_id") for e in journal(runtime_journal, "released", agent)]
                 == [inc_a, inc_b], 30, "the runtime to see release B")
        wait_for(lambda: journal(runtime_journal, "task_finished", agent), 30, "the held task to run")
        alive()
    finally:
        for g in guards:
            g.stop()
        for p in procs.values():
            stop_process(p, 20)
        cluster.stop()
        orchestrator.close()
