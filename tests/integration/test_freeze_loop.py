"""The freeze loop on the real broker: runtime -> worker -> agent-control -> guard / actuator -> release.

One worker, the actuator (webhook to a tiny orchestrator on 127.0.0.1 plus its
log sink) and the reference runtime run as subprocesses on the session's
broker, with this test's own topic prefix. The test feeds the runtime's task
queue: normal work for a few agents, then an exfiltration task for one of them.
It checks that the freeze reaches the runtime and the actuator, that the frozen
agent executes nothing more (no further tool call of the incident task, no new
task) while the others go on, and that ``flowbreaker release`` resumes it.
Every wait is bounded; processes are stopped by their own pid.
"""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest

from worker_harness import Orchestrator, stop_process

REPO_DIR = Path(__file__).resolve().parents[2]
POLICY = REPO_DIR / "examples" / "policy.toml"
FLEET_AGENTS, FLEET_SEED = 12, 0
#: a flowbreaker sub-command in a subprocess (``-c`` loads the CLI once, as ``streams.cli.main``)
CLI = [sys.executable, "-c", "import sys; from streams.cli.main import main; sys.exit(main())"]

pytestmark = pytest.mark.timeout(240)

# ---------------------------------------------------------------------- helpers

def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Proc:
    """A ``flowbreaker`` sub-command as a subprocess, output in files; stopped by its own pid."""

    def __init__(self, name: str, args: list[str], logdir: Path) -> None:
        self.name = name
        self.args = [*CLI, *args]
        self.out = logdir / f"{name}.out"
        self.err = logdir / f"{name}.err"
        self.proc: subprocess.Popen | None = None

    def start(self) -> "Proc":
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        env["PYTHONPATH"] = str(REPO_DIR) + os.pathsep + env.get("PYTHONPATH", "")
        with open(self.out, "wb") as out, open(self.err, "wb") as err:
            self.proc = subprocess.Popen(self.args, cwd=REPO_DIR, env=env, stdin=subprocess.DEVNULL,
                                         stdout=out, stderr=err)
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stdout(self) -> str:
        return self.out.read_text(errors="replace") if self.out.exists() else ""

    def tail(self, n: int = 30) -> str:
        text = self.err.read_text(errors="replace") if self.err.exists() else ""
        return f"---- {self.name} stderr\n" + "\n".join(text.splitlines()[-n:])

    def stop(self, timeout: float = 20.0) -> int | None:
        if self.proc is None:
            return None
        return stop_process(self.proc, timeout)


def wait_for(what: str, check, timeout: float, procs=(), every: float = 0.2):
    """Poll ``check()`` until it returns something truthy; fail with the processes' logs after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        for p in procs:
            if not p.alive():
                pytest.fail(f"{p.name} exited ({p.proc.returncode}) while waiting for {what}\n{p.tail()}")
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}\n" + "\n".join(p.tail() for p in procs))
        time.sleep(every)


def read_journal(path: Path) -> list[dict]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            pass  # a line being written
    return out


def read_topic(bootstrap: str, topic: str, timeout: float = 20.0) -> list:
    """Every record of ``topic`` up to its current end, in partition order."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                             auto_offset_reset="earliest")
    try:
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        ends = consumer.end_offsets(tps)
        records = []
        deadline = time.monotonic() + timeout
        while any(consumer.position(tp) < ends[tp] for tp in tps):
            if time.monotonic() > deadline:
                raise TimeoutError(f"could not read {topic} to its end")
            for recs in consumer.poll(timeout_ms=200).values():
                records.extend(recs)
        return sorted(records, key=lambda r: (r.partition, r.offset))
    finally:
        consumer.close(autocommit=False)



def train_model(workdir: Path) -> Path:
    """A model of the fleet's normal work: four clean simulated days, trained as an operator would."""
    from streams.cli.main import main

    history, model = workdir / "history.jsonl", workdir / "model"
    assert main(["simulate", "--out", str(history), "--agents", str(FLEET_AGENTS), "--seed", str(FLEET_SEED),
                 "--days", "4", "--incidents", "none", "--no-lookalikes"]) == 0
    assert main(["train", "--input", str(history), "--policy", str(POLICY), "--out", str(model), "--quiet"]) == 0
    return model


def exfiltration_task(agent, task_id: str) -> dict:
    """A bulk read of restricted personnel records, then sends of them to never-seen external addresses,
    1.5 s apart at the runtime's speed: the freeze must land between two of them."""
    base = {"operator_id": agent.operator_id, "instruction_hash": agent.instruction_hash}
    steps = [dict(base, tool="hr_db.export", action="read", resource="hr://personnel/records",
                  sensitivity="restricted", records=5000, bytes=4_000_000, delay_s=0.0)]
    for i, dest in enumerate(("drop@anonbox.example", "x@dropmail.example", "y@tutamail.example",
                              "z@protonmail.example", "w@anonbox.example")):
        steps.append(dict(base, tool="email.send", action="send", resource="hr://personnel/records",
                          sensitivity="restricted", records=5000, bytes=4_000_000,
                          destinations=[f"email:{dest}"], parent=0, delay_s=15.0))
    return {"task_id": task_id, "agent_id": agent.agent_id, "kind": "exfiltration", "steps": steps}


# ---------------------------------------------------------------------- the test

def test_an_incident_freezes_the_agent_which_executes_nothing_more_until_a_release(
        kafka_bootstrap, unique_topic_prefix, tmp_path):
    from kafka import KafkaProducer

    from models.simulate import Fleet
    from streams.kafka_admin import ensure_topics
    from streams.demo.simulated_runtime import task_to_dict
    from streams.settings import Settings

    t_start = time.monotonic()
    model = train_model(tmp_path)
    prefix = unique_topic_prefix
    settings = Settings(bootstrap=kafka_bootstrap, topic_prefix=prefix)
    topics = settings.topics()
    ensure_topics(settings)
    kafka = ["--bootstrap", kafka_bootstrap, "--topic-prefix", prefix]
    journal = tmp_path / "journal.jsonl"
    orchestrator = Orchestrator(path="/agents/freeze")

    worker = Proc("worker", ["worker", *kafka, "--app-id", f"{prefix}app", "--web-port", str(free_port()),
                             "--datadir", str(tmp_path / "worker"), "--policy", str(POLICY),
                             "--model", str(model)], tmp_path)
    actuator = Proc("actuator", ["actuator", *kafka, "--group", f"{prefix}actuator", "--webhook", orchestrator.url,
                                 "--log-format", "json", "--backoff-initial", "0.1"], tmp_path)
    runtime = Proc("runtime", ["runtime", *kafka, "--group", f"{prefix}runtime", "--speed", "10",
                               "--max-step-delay", "1.5", "--journal", str(journal), "--stats-every", "0"], tmp_path)
    procs = [worker, actuator, runtime]
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, linger_ms=2)

    def send_task(task: dict) -> None:
        producer.send(topics["tasks"], key=task["agent_id"].encode(), value=json.dumps(task).encode())
        producer.flush(10)

    def entries(event: str, agent: str | None = None, after: float = 0.0) -> list[dict]:
        return [e for e in read_journal(journal)
                if e["event"] == event and (agent is None or e.get("agent_id") == agent) and e["t"] >= after]

    try:
        for p in procs:
            p.start()
        wait_for("the worker to be ready", lambda: "flowbreaker worker ready" in worker.stdout(), 90, procs)
        wait_for("the runtime to be ready", lambda: entries("ready"), 60, procs)

        fleet = Fleet.make(n_agents=FLEET_AGENTS, seed=FLEET_SEED)  # the fleet the model was trained on
        rng = random.Random(11)
        target = next(a for a in fleet.agents if a.role == "hr_assistant")
        others = [a for a in fleet.agents if a is not target][:2]
        now = datetime.now(timezone.utc)

        # normal work first: the agents get a baseline
        warmup = [task_to_dict(fleet.normal_task(a, now, rng)) for a in (target, *others) for _ in range(2)]
        for task in warmup:
            send_task(task)
        wait_for("the warm-up tasks to finish", lambda: len(entries("task_finished")) >= len(warmup), 60, procs)

        # the incident, with more work queued behind it for the same agent and for the others
        incident = exfiltration_task(target, "tsk-exfil-1")
        send_task(incident)
        queued_behind = [task_to_dict(fleet.normal_task(target, now, rng)) for _ in range(3)]
        for task in queued_behind:
            send_task(task)

        frozen = wait_for("the runtime to see the freeze", lambda: entries("frozen", target.agent_id), 45, procs)[0]
        incident_id = frozen["incident_id"]
        assert frozen["issued_by"] == "flowbreaker"
        assert incident_id

        for task in (task_to_dict(fleet.normal_task(a, now, rng)) for a in others for _ in range(2)):
            send_task(task)
        time.sleep(6.0)  # the frozen agent has work waiting; the others keep working

        # --- while frozen: nothing more from the target
        after_freeze = frozen["t"]
        assert entries("task_started", target.agent_id, after=after_freeze) == []
        aborted = entries("task_aborted", target.agent_id)
        finished = {e["task_id"] for e in entries("task_finished", target.agent_id)}
        assert "tsk-exfil-1" not in finished
        assert [e["task_id"] for e in aborted] == ["tsk-exfil-1"], "the freeze must stop the incident mid-task"
        held = {e["task_id"] for e in entries("task_held", target.agent_id)}
        assert {t["task_id"] for t in queued_behind} <= held
        assert any(e["agent_id"] != target.agent_id for e in entries("task_finished", after=after_freeze)), \
            "the other agents must keep working"

        # in agent-actions: no action of the target after the event that tripped the breaker
        incidents = [json.loads(r.value) for r in read_topic(kafka_bootstrap, topics["incidents"])]
        record = next(i for i in incidents if i.get("incident_id") == incident_id)
        trigger = record["trigger_event_id"]
        actions = [json.loads(r.value) for r in read_topic(kafka_bootstrap, topics["actions"])]
        mine = [a["event_id"] for a in actions if a["agent_id"] == target.agent_id]
        assert trigger in mine
        assert mine[mine.index(trigger) + 1:] == [], "the frozen agent acted after the freeze"
        assert trigger.startswith("rt-tsk-exfil-1.")

        # the actuator enacted the freeze: webhook with the idempotency key, and its log line
        wait_for("the webhook to receive the freeze", lambda: orchestrator.requests, 20, procs)
        headers, body = orchestrator.requests[0]
        assert body["command"] == "freeze" and body["agent_id"] == target.agent_id
        assert headers["Idempotency-Key"] == f"{incident_id}:freeze"

        # --- a human releases it
        release = subprocess.run(
            [*CLI, "release", target.agent_id, "--reason", "checked with the operator",
             "--by", "alice", *kafka, "--timeout", "30"],
            cwd=REPO_DIR, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
            env=dict(os.environ, PYTHONPATH=str(REPO_DIR)))
        assert release.returncode == 0, release.stderr
        assert f"released {target.agent_id} (incident {incident_id}) by alice" in release.stdout

        released = wait_for("the runtime to see the release", lambda: entries("released", target.agent_id), 30,
                            procs)[0]
        assert released["issued_by"] == "alice"
        resumed = wait_for(
            "the held tasks to run after the release",
            lambda: len(entries("task_finished", target.agent_id, after=released["t"])) >= len(queued_behind),
            60, procs)
        assert resumed
        started_again = entries("task_started", target.agent_id, after=released["t"])
        assert {e["task_id"] for e in started_again} >= {t["task_id"] for t in queued_behind}
        assert all(e["resumed"] for e in started_again if e["task_id"] in held)
        assert "tsk-exfil-1" not in {e["task_id"] for e in started_again}, "an aborted task is not resumed"

        # the worker put the agent on probation; the actuator enacted the release too
        def probation_decisions():
            recs = [json.loads(r.value) for r in read_topic(kafka_bootstrap, topics["decisions"])]
            return [d for d in recs if d["agent_id"] == target.agent_id and d["breaker_state"] == "half_open"]

        assert wait_for("decisions of the released agent on probation", probation_decisions, 30, procs)
        wait_for("the webhook to receive the release", lambda: len(orchestrator.requests) >= 2, 20, procs)
        headers, body = orchestrator.requests[1]
        assert body["command"] == "release" and body["issued_by"] == "alice"
        assert headers["Idempotency-Key"] == f"{incident_id}:release"
        logged = [json.loads(line)["enacted"] for line in actuator.stdout().splitlines() if line.strip()]
        assert [(c["command"], c["agent_id"]) for c in logged] == [("freeze", target.agent_id),
                                                                   ("release", target.agent_id)]
    finally:
        producer.close(timeout=10)
        codes = {p.name: p.stop() for p in reversed(procs)}
        orchestrator.close()
    assert codes["runtime"] == 0 and codes["actuator"] == 0, codes
    counts = runtime.stdout()
    assert target.agent_id in counts  # the per-agent counts are printed at exit
    assert time.monotonic() - t_start < 180


def test_a_guard_started_late_reads_the_freezes_already_on_the_topic(kafka_bootstrap, unique_topic_prefix,
                                                                      signing_keys):
    from streams.kafka_admin import ensure_topics
    from streams.cli.release import publish_command, release_command
    from streams.clients.guard import FreezeGuard
    from streams.settings import Settings

    settings = Settings(bootstrap=kafka_bootstrap, topic_prefix=unique_topic_prefix)
    ensure_topics(settings, topics=["control"])
    def sign(command: dict, seq: int = 1) -> dict:  # each agent's first command, or its release (seq 2)
        return signing_keys.sign(dict(command, seq=seq))

    for i in range(6):
        publish_command(settings, sign({"command": "freeze", "agent_id": f"agent-{i}", "incident_id": f"inc-{i}",
                                        "issued_at": "2026-03-02T09:00:00Z", "reason": "t",
                                        "issued_by": "flowbreaker"}))
    publish_command(settings, sign(release_command("agent-2", "inc-2", by="alice", reason="ok"), 2))
    with FreezeGuard(kafka_bootstrap, topic=settings.topic("control")) as guard:
        assert set(guard.frozen()) == {"agent-0", "agent-1", "agent-3", "agent-4", "agent-5"}
        assert guard.may_proceed("agent-2") and not guard.may_proceed("agent-4")
        publish_command(settings, sign(release_command("agent-4", "inc-4", by="alice", reason="ok"), 2))
        deadline = time.monotonic() + 15
        while not guard.may_proceed("agent-4") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert guard.may_proceed("agent-4")


def test_the_demo_shows_freezes_and_stops_only_what_it_started(kafka_bootstrap, unique_topic_prefix, tmp_path):
    import re

    from kafka.admin import KafkaAdminClient

    # --duration counts from when the demo starts watching, after training, the components and its drill (which
    # start with the runtime); the first incident (a mass delete, which the stream freezes) comes --incident-after
    # seconds after the runtime starts, so after the drill; its freeze follows within seconds, and the status lines
    # every 3 s then show the agent frozen: about 15 s of the 24 watched
    args = [*CLI, "demo",
            "--bootstrap", kafka_bootstrap, "--topic-prefix", unique_topic_prefix, "--duration", "24",
            "--agents", "12", "--incident-after", "10", "--incident-every", "12", "--no-prometheus",
            "--workdir", str(tmp_path / "demo"), "--web-port", str(free_port()), "--status-every", "3"]
    env = dict(os.environ, PYTHONPATH=str(REPO_DIR), PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(args, cwd=REPO_DIR, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        out, _ = proc.communicate(timeout=180)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGINT)  # the demo stops its children itself
        out, _ = proc.communicate(timeout=90)
        pytest.fail(f"the demo did not stop by itself:\n{out[-3000:]}")
    assert proc.returncode == 0, out[-3000:]
    assert "kafka       already running" in out  # the session's broker: not started, so not stopped
    pids = [int(p) for p in re.findall(r"started, pid (\d+)", out)]
    assert len(pids) == 3, out[:2000]  # worker, actuator, runtime
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text().lower(), \
            f"pid {pid} still runs after the demo"
    assert re.search(r"\d+\.\d decisions/s", out)
    assert "INCIDENT inc-" in out and "FROZEN" in out, out[-3000:]
    # the runtime's event ids carry the run's id: its task feed repeats from run to run (issue 21, item 9)
    assert re.search(r"trigger +rt-\w+-tsk-", out), out[-3000:]
    assert re.search(r"last \d+ of the \d+ actions kept", out) and "attribution operator" in out
    assert re.search(r"\S+ +frozen for \d+ s: no action since the freeze", out), out[-2000:]
    # the console's address, with the demo lead's token in the fragment (issue 22)
    console = re.search(r"console +http://127\.0\.0\.1:(\d+)/console/#token=(\S+)", out)
    assert console and console.group(2) == (tmp_path / "demo" / "api" / "lead.token").read_text().strip(), out[:3000]
    assert f":{console.group(1)}/metrics" in out  # the worker's own web port
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap, request_timeout_ms=10000)
    try:
        assert f"{unique_topic_prefix}agent-actions" in admin.list_topics()  # the broker still runs
    finally:
        admin.close()
