"""flowbreaker drill end to end on the real broker: a worker (with the API), the reference runtime (its
FreezeGuard acknowledges commands) and the actuator (webhook to a tiny orchestrator), as subprocesses.

A full drill passes with every step measured (the alert step is skipped: no Prometheus here), releases the
drill agent through the API and finds it on probation; the result reaches the workers' metrics; the drill
agent never shows up in the SOC's counts. With the orchestrator's webhook failing, the drill fails and
names the actuator's step.
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

from api_harness import TOKEN, call, metric, wait_for, write_tokens
from worker_harness import REPO_DIR, Orchestrator, WorkerProc, stop_process

pytestmark = pytest.mark.timeout(420)
CLI = [sys.executable, "-m", "streams.cli.main"]


class Proc:
    """A flowbreaker sub-command as our own subprocess (stopped by its pid), output in files."""

    def __init__(self, name: str, args: list[str], logdir: Path) -> None:
        self.name, self.args = name, [*CLI, *args]
        self.out, self.err = logdir / f"{name}.out", logdir / f"{name}.err"
        self.proc: subprocess.Popen | None = None

    def start(self) -> "Proc":
        env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONPATH=str(REPO_DIR))
        with open(self.out, "wb") as out, open(self.err, "wb") as err:
            self.proc = subprocess.Popen(self.args, cwd=REPO_DIR, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                         stderr=err)
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stderr_tail(self, n: int = 30) -> str:
        text = self.err.read_text(errors="replace") if self.err.exists() else ""
        return f"---- {self.name}\n" + "\n".join(text.splitlines()[-n:])

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, 20)



@pytest.fixture(scope="module")
def deployment(kafka_bootstrap, tmp_path_factory):
    """A worker with the API and a runtime with its FreezeGuard, on fresh topics."""
    from streams.kafka_admin import ensure_topics
    from streams.settings import Settings

    tmp = tmp_path_factory.mktemp("drill")
    prefix = f"it-drill-{uuid.uuid4().hex[:8]}-"
    ensure_topics(Settings(bootstrap=kafka_bootstrap, topic_prefix=prefix))
    tokens = write_tokens(tmp / "tokens.toml")
    lead = tmp / "lead.token"
    lead.write_text(TOKEN["lead"] + "\n")
    kafka = ["--bootstrap", kafka_bootstrap, "--topic-prefix", prefix]
    worker = WorkerProc(kafka_bootstrap, prefix, prefix + "app", tmp / "w", extra=["--tokens", str(tokens)])
    runtime = Proc("runtime", ["runtime", *kafka, "--group", f"{prefix}runtime", "--stats-every", "0"], tmp)
    try:
        worker.start()
        runtime.start()
        worker.wait_ready(1, timeout=90)
        url = f"http://127.0.0.1:{worker.web_port}"
        wait_for(lambda: call("GET", url + "/v1/breakers", TOKEN["viewer"]).status == 200, 60, "the API",
                 procs=[worker])
        wait_for(lambda: "runtime ready" in runtime.err.read_text(errors="replace"), 60, "the runtime",
                 procs=[worker, runtime])
        yield {"kafka": kafka, "prefix": prefix, "url": url, "lead": lead, "tmp": tmp, "worker": worker,
               "runtime": runtime, "bootstrap": kafka_bootstrap}
    finally:
        runtime.stop()
        worker.stop(timeout=20)


def drill(d: dict, agent: str, report: Path, wait: float = 60) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO_DIR))
    return subprocess.run([*CLI, "drill", *d["kafka"], "--agent", agent, "--url", d["url"], "--token-file",
                           str(d["lead"]), "--report", str(report), "--wait", str(wait)],
                          cwd=REPO_DIR, env=env, capture_output=True, text=True, timeout=wait * 3 + 60)


def test_a_full_drill_passes_every_step_and_leaves_the_agent_on_probation(deployment):
    d = deployment
    hook = Orchestrator()
    actuator = Proc("actuator", ["actuator", *d["kafka"], "--group", f"{d['prefix']}act-ok", "--webhook", hook.url,
                                 "--backoff-initial", "0.1"], d["tmp"])
    try:
        actuator.start()
        report_dir = d["tmp"] / "report-ok"
        done = drill(d, "flowbreaker-drill-1", report_dir)
        assert done.returncode == 0, done.stderr + done.stdout + actuator.stderr_tail()
        report = json.loads((report_dir / "drill.json").read_text())
        steps = {s["step"]: s for s in report["steps"]}
        assert report["passed"] and report["failed_step"] is None
        for name, s in steps.items():
            if name == "alert":
                assert s["status"] == "skipped"
            else:
                assert s["status"] == "pass" and s["seconds"] is not None and s["seconds"] >= 0, s
        assert steps["freeze_command"]["seconds"] >= steps["decision"]["seconds"] - 1.0
        assert "runtime:" in steps["guard_ack"]["detail"] and "flowbreaker-actuator" in \
            steps["actuator_webhook"]["detail"]
        assert hook.posts >= 2  # the freeze and the release reached the orchestrator
        md = (report_dir / "drill.md").read_text()
        assert md.startswith(f"# Freeze drill {report['drill_id']}: PASSED")
        # released through the API: on probation now
        agent = call("GET", d["url"] + "/v1/agents/flowbreaker-drill-1", TOKEN["viewer"]).json
        assert agent["breaker"]["state"] == "half_open"
        # the workers follow agent-drills: the last drill's time and result are metrics
        text = wait_for(lambda: (lambda t: t if metric(t, "flowbreaker_drill_last_success") == 1 else None)(
            d["worker"].metrics()), 30, "the drill result in the metrics", procs=[d["worker"]])
        assert abs(metric(text, "flowbreaker_drill_last_run_timestamp_seconds") - report["finished_t"]) < 1
        assert metric(text, "flowbreaker_drill_step_seconds", step="decision") == pytest.approx(
            steps["decision"]["seconds"])
        # a rehearsal, not an incident: no SOC count saw it
        assert metric(text, "flowbreaker_freezes_total") == 0
        assert metric(text, "flowbreaker_decisions_total", action_taken="freeze") == 0
        assert metric(text, "flowbreaker_drill_decisions_total", action_taken="freeze") == 1
        assert "flowbreaker_agent_frozen{" not in text
    finally:
        actuator.stop()
        hook.close()


def test_a_drill_with_a_failing_webhook_fails_naming_the_actuators_step(deployment):
    d = deployment
    hook = Orchestrator(status=503)
    actuator = Proc("actuator", ["actuator", *d["kafka"], "--group", f"{d['prefix']}act-bad", "--webhook", hook.url,
                                 "--backoff-initial", "0.1", "--backoff-max", "0.5"], d["tmp"])
    try:
        actuator.start()
        report_dir = d["tmp"] / "report-bad"
        # the drill waits --wait seconds for the webhook step, and as long again for the release's: 10 s each is
        # ample for the steps that pass (well under a second here: see the full drill above)
        done = drill(d, "flowbreaker-drill-2", report_dir, wait=10)
        assert done.returncode == 1, done.stderr + done.stdout
        assert "FAILED at actuator_webhook" in done.stderr
        report = json.loads((report_dir / "drill.json").read_text())
        steps = {s["step"]: s for s in report["steps"]}
        assert report["failed_step"] == "actuator_webhook" and not report["passed"]
        assert steps["actuator_webhook"]["status"] == "fail" and "webhook" in steps["actuator_webhook"]["detail"]
        for ok in ("decision", "freeze_command", "guard_ack", "release", "release_guard_ack", "probation"):
            assert steps[ok]["status"] == "pass", steps[ok]
        assert hook.posts >= 1  # it kept trying
        text = wait_for(lambda: (lambda t: t if metric(t, "flowbreaker_drill_last_success") == 0 else None)(
            d["worker"].metrics()), 30, "the failed drill in the metrics", procs=[d["worker"]])
        assert metric(text, "flowbreaker_drill_last_success") == 0
    finally:
        actuator.stop()
        hook.close()
