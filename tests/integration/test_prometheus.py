"""The SOC's view, proven against a real Prometheus: a worker under simulated traffic with incidents,
scraped by ``scripts/prometheus.sh``'s Prometheus; every dashboard query and alert rule runs through
Prometheus' HTTP API.

The test trains a model on a clean simulated history (``test_freeze_loop.train_model``), starts one worker
with it (its own web port) and a Prometheus scraping that port every 2 s (``dashboards/prometheus.yml``),
waits for the first scrape, then produces the next simulated day of the same fleet (four incidents that
freeze their agents), one malformed event and one repeated event over about ten seconds. Once Prometheus
has scraped the final counts it checks:

* every query of every committed dashboard (panel targets, annotations, the ``label_values`` variable)
  and every loaded alert rule's expression is accepted (``status: success``);
* every panel has data (a non-empty result with a finite value), except the few listed in
  ``MAY_BE_EMPTY`` with the reason this traffic cannot fill them; key panels show the incident (frozen
  agents, freezes, the frozen agent's breaker state and incident on the drill-down);
* the ``AgentFrozen`` alert fires, once per freeze the worker published on ``agent-control``, with the
  same agent and incident ids; ``WorkerDown`` does not;
* ``promtool check rules dashboards/alerts.yml`` passes.

Bounded: about 30 s after the broker is up; the worker and Prometheus are stopped by their own pid.
"""
from __future__ import annotations

import importlib.util
import json
import math
import os
import re
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from test_freeze_loop import FLEET_AGENTS, FLEET_SEED, train_model
from worker_harness import TopicReader, WorkerProc, event_messages, free_port, produce

pytestmark = pytest.mark.timeout(150)

REPO_DIR = Path(__file__).resolve().parents[2]
DASHBOARDS = REPO_DIR / "dashboards"
PROMETHEUS_SH = REPO_DIR / "scripts" / "prometheus.sh"
INCIDENTS = ["bulk_read_broadcast", "mass_fanout", "prompt_injection", "mass_delete"]
TRAFFIC_SECONDS = 10.0

#: (dashboard file, query location prefix) -> why it may be empty under this traffic; every other query
#: must return data
MAY_BE_EMPTY: dict[tuple[str, str], str] = {
    ("agent-drilldown.json", "annotation 'Breaker changes'"):
        "marks a breaker change within the last minute that Prometheus saw; the agent's series may have "
        "appeared already open (listed and frozen between two scrapes)",
    ("soc-overview.json", "panel 23 'Since the last freeze drill'"):
        "NaN until a worker has seen its first drill (flowbreaker drill); tests/integration/test_drill.py "
        "checks the drill metrics after one",
    ("soc-overview.json", "panel 24 'Last freeze drill'"): "NaN until the first drill, as panel 23",
}


def load_generator():
    spec = importlib.util.spec_from_file_location("flowbreaker_dashboards", DASHBOARDS / "generate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


generate = load_generator()


# ---------------------------------------------------------------------- Prometheus

class Prometheus:
    """``scripts/prometheus.sh`` with its own port and data dir, and a small HTTP API client."""

    def __init__(self, datadir: Path, targets: str) -> None:
        self.port = free_port()
        self.datadir = datadir
        self.env = dict(os.environ, FLOWBREAKER_PROM_PORT=str(self.port), FLOWBREAKER_PROM_DIR=str(datadir),
                        FLOWBREAKER_PROM_TARGETS=targets, FLOWBREAKER_PROM_START_TIMEOUT="40",
                        FLOWBREAKER_PROM_STOP_TIMEOUT="10")
        self.url = f"http://127.0.0.1:{self.port}"
        self.pid: int | None = None

    def script(self, command: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run(["bash", str(PROMETHEUS_SH), command], env=self.env, cwd=REPO_DIR,
                              capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)

    def start(self) -> None:
        result = self.script("start")
        pid_file = self.datadir / "prometheus.pid"
        if pid_file.exists():
            self.pid = int(pid_file.read_text().strip())
        assert result.returncode == 0, f"prometheus.sh start failed:\n{result.stderr}"
        assert result.stdout.strip().splitlines()[-1] == self.url

    def stop(self) -> None:
        """The script stops our pid (SIGTERM, then SIGKILL); make sure of it by the pid we recorded."""
        try:
            self.script("stop", timeout=40)
        finally:
            if self.pid is not None and _alive(self.pid):
                os.kill(self.pid, 9)

    def log_tail(self, n: int = 20) -> str:
        log = self.datadir / "prometheus.log"
        return "\n".join(log.read_text(errors="replace").splitlines()[-n:]) if log.exists() else ""

    def get(self, path: str, **params) -> dict:
        """GET an API path; the decoded JSON body, also for 4xx answers (which carry ``status: error``)."""
        query = urllib.parse.urlencode(params, doseq=True)
        try:
            with urllib.request.urlopen(f"{self.url}{path}?{query}", timeout=10) as r:
                return json.loads(r.read())
        except urllib.error.HTTPError as err:
            return json.loads(err.read() or b'{"status": "error", "error": "empty body"}')

    def query(self, expr: str) -> dict:
        return self.get("/api/v1/query", query=expr)

    def vector(self, expr: str) -> list[dict]:
        answer = self.query(expr)
        assert answer["status"] == "success", (expr, answer)
        return answer["data"]["result"]

    def value(self, expr: str) -> float | None:
        """The single value of an instant query, None when empty."""
        result = self.vector(expr)
        return float(result[0]["value"][1]) if result else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return not Path(f"/proc/{pid}/status").exists() or "zombie" not in Path(f"/proc/{pid}/status").read_text()


def wait_for(what: str, check, timeout: float, diagnostics=lambda: "", every: float = 0.25):
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = check()
        except (OSError, ValueError, KeyError):  # not up yet
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}\n{diagnostics()}")
        time.sleep(every)


# ---------------------------------------------------------------------- traffic

def incident_day() -> list[dict]:
    """The day after the model's history, same fleet, with incidents (no look-alikes)."""
    from models.simulate import simulate

    events, labels = simulate(n_agents=FLEET_AGENTS, days=5, seed=FLEET_SEED, incidents=INCIDENTS,
                              incident_days_from=4, lookalikes=False)
    start = labels["history_end"]
    live = [e for e in events if e["ts"] >= start]
    assert len(labels["incidents"]) == len(INCIDENTS) and 500 <= len(live) <= 5000
    return live


def has_data(result: list[dict]) -> bool:
    """A non-empty instant vector with at least one finite value (Grafana shows NaN as no data)."""
    return any(math.isfinite(float(s["value"][1])) for s in result)


# ---------------------------------------------------------------------- the test

def test_every_panel_and_alert_rule_runs_on_a_real_prometheus_and_the_freeze_alert_fires(
        kafka_bootstrap, unique_topic_prefix, tmp_path):
    t0 = time.monotonic()
    promtool = shutil.which("promtool")
    assert promtool, "promtool is not installed (scripts/prometheus.sh install)"
    check = subprocess.run([promtool, "check", "rules", str(DASHBOARDS / "alerts.yml")],
                           capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr

    model = train_model(tmp_path)
    live = incident_day()
    prefix = unique_topic_prefix
    worker = WorkerProc(kafka_bootstrap, prefix, f"{prefix}app", tmp_path / "worker",
                        extra=["--model", str(model)])
    prom = Prometheus(tmp_path / "prometheus", f"127.0.0.1:{worker.web_port}")
    readers: list[TopicReader] = []

    def diagnostics() -> str:
        try:
            state = worker.status()
        except OSError as err:
            state = repr(err)
        return (f"---- worker status\n{state}\n---- worker stderr\n{worker.stderr_tail()}\n"
                f"---- prometheus log\n{prom.log_tail()}\n---- targets\n{prom.get('/api/v1/targets')}")

    try:
        worker.start()
        prom.start()
        worker.wait_ready(timeout=60)
        # one scrape before the traffic: counters then rise within Prometheus' range windows
        wait_for("Prometheus to scrape the worker",
                 lambda: prom.value('count(flowbreaker_worker_info{job="flowbreaker"})') == 1, 30, diagnostics)
        t_scraped = time.monotonic()

        # near the end (the panels' rate windows are one minute): a redelivery and an invalid event
        messages = event_messages(live)
        messages.insert(len(messages) - 40, messages[len(messages) - 41])  # repeated event id: skipped
        messages.insert(len(messages) - 20, (b"dlq-agent", b'{"event_id": "bad-1", ts: oops'))  # -> DLQ
        produce(kafka_bootstrap, f"{prefix}agent-actions", messages, rate=len(messages) / TRAFFIC_SECONDS)

        status = wait_for("the worker to decide every event",
                          lambda: (s := worker.status())["decisions"] >= len(live) and s["dlq"] >= 1
                          and s["duplicates"] >= 1 and s, 60, diagnostics)
        assert status["decisions"] == len(live) and status["freezes"] >= 1, status

        control = TopicReader(kafka_bootstrap, f"{prefix}agent-control")
        readers.append(control)
        commands = [json.loads(m.value) for m in control.read_until(
            lambda ms: len(ms) >= status["freezes"], timeout=30)]
        freezes = {(c["agent_id"], c["incident_id"]) for c in commands if c["command"] == "freeze"}
        assert len(freezes) == status["freezes"], commands

        # Prometheus has the final counts and has evaluated the rules on them
        wait_for("Prometheus to scrape the final counts",
                 lambda: prom.value("sum(flowbreaker_actions_total)") == len(live)
                 and prom.value("sum(flowbreaker_freezes_total)") == len(freezes), 30, diagnostics)
        firing = wait_for(
            "AgentFrozen to fire",
            lambda: len(f := [a for a in prom.get("/api/v1/alerts")["data"]["alerts"]
                              if a["labels"]["alertname"] == "AgentFrozen" and a["state"] == "firing"])
            >= len(freezes) and f, 30, diagnostics)
        assert {(a["labels"]["agent_id"], a["labels"]["incident_id"]) for a in firing} == freezes
        assert all(a["labels"]["severity"] == "critical" for a in firing)
        alerts_series = prom.vector('ALERTS{alertname="AgentFrozen", alertstate="firing"}')
        assert {(s["metric"]["agent_id"], s["metric"]["incident_id"]) for s in alerts_series} == freezes

        agent, incident = sorted(freezes)[0]
        report: list[str] = []
        empty: list[str] = []
        failed: list[str] = []
        shown: dict[tuple[str, str], list[dict]] = {}  # (dashboard uid, panel title) -> first target's result

        # every dashboard query
        dashboards = sorted((DASHBOARDS / "grafana").glob("*.json"))
        assert len(dashboards) == 3
        for path in dashboards:
            dash = json.loads(path.read_text(encoding="utf-8"))
            for where, expr in generate.queries(dash):
                name = f"{path.name}: {where}"
                m = re.fullmatch(r"label_values\((\w+),\s*(\w+)\)", expr)
                if m:  # a Grafana variable query: Prometheus' label values API
                    metric, label = m.groups()
                    answer = prom.get(f"/api/v1/label/{label}/values", **{"match[]": metric})
                    if answer["status"] != "success":
                        failed.append(f"{name}: {expr}: {answer}")
                        continue
                    values = answer["data"]
                    report.append(f"{name}: {values}")
                    assert agent in values, f"{name}: the frozen agent {agent} is not offered: {values}"
                    continue
                promql = generate.expand(expr, agent=agent)
                answer = prom.query(promql)
                if answer["status"] != "success":
                    failed.append(f"{name}: {promql}: {answer.get('errorType')}: {answer.get('error')}")
                    continue
                result = answer["data"]["result"]
                if where.startswith("panel "):
                    shown.setdefault((dash["uid"], where.split("'")[1]), result)
                report.append(f"{name}: {promql} -> {[(s['metric'], s['value'][1]) for s in result][:4]}")
                allowed = any(path.name == d and where.startswith(w) for d, w in MAY_BE_EMPTY)
                if not has_data(result) and not allowed:
                    empty.append(f"{name}: {promql} -> {result}")
        print("\n".join(report))
        assert not failed, "queries Prometheus rejected:\n" + "\n".join(failed)
        assert not empty, "panels without data under incident traffic:\n" + "\n".join(empty)

        # every loaded alert rule: healthy, and its expression runs
        groups = prom.get("/api/v1/rules")["data"]["groups"]
        rules = [r for g in groups for r in g["rules"]]
        assert sorted(r["name"] for r in rules) == sorted(r["alert"] for r in generate.ALERT_RULES)
        for r in rules:
            assert r["health"] == "ok", r
            answer = prom.query(r["query"])
            assert answer["status"] == "success", (r["name"], r["query"], answer)
        assert prom.vector('ALERTS{alertname="WorkerDown"}') == []

        # the panels show the incident, and count it right
        def one(uid: str, title: str) -> float:
            [sample] = shown[(uid, title)]
            return float(sample["value"][1])

        soc, drill, health = "flowbreaker-soc", "flowbreaker-agent", "flowbreaker-pipeline"
        assert one(soc, "Agents frozen now") == len(freezes)
        frozen_rows = {(s["metric"]["agent_id"], s["metric"]["incident_id"]) for s in shown[(soc, "Frozen agents now")]}
        assert frozen_rows == freezes
        assert {a for a, _ in freezes} <= {s["metric"]["agent_id"] for s in shown[(soc, "Riskiest agents now")]}
        flagged = prom.value('sum(flowbreaker_decisions_total{action_taken=~"alert|freeze"})')
        assert flagged >= len(freezes) and flagged == prom.value("sum(flowbreaker_alerts_total)")
        # the SOC counts alert episodes; counted from 0 (scraped before the traffic): an increase over the
        # range is at least the exact count
        opened = prom.value('sum(flowbreaker_episodes_total{event="opened"})')
        assert opened >= 1
        assert one(soc, "Alert episodes in range") >= opened - 1e-6, (one(soc, "Alert episodes in range"), opened)
        assert one(soc, "Freezes in range") >= len(freezes) - 1e-6
        assert sum(float(s["value"][1]) for s in shown[(soc, "Alert episodes")]) > 0
        assert one(drill, "Breaker state") == 2  # open
        assert [s["metric"]["incident_id"] for s in shown[(drill, "Open incident")]] == [incident]
        assert one(health, "Workers up") == 1 and one(health, "Throughput") > 0
        [model_row] = shown[(health, "Model in use")]
        assert model_row["metric"]["version"] == status["model_version"]
        dlq = {s["metric"]["code"]: float(s["value"][1]) for s in shown[(health, "Dead-lettered events by reason")]}
        assert dlq["not_json"] > 0 and sum(dlq.values()) == dlq["not_json"]
        assert one(health, "Duplicates") > 0
        assert prom.value('sum(flowbreaker_dlq_events_total{code="not_json"})') == 1
        assert prom.value("sum(flowbreaker_duplicates_total)") == 1
        print(f"scraped after {t_scraped - t0:.1f}s, checked after {time.monotonic() - t0:.1f}s")
    finally:
        for r in readers:
            r.close()
        prom.stop()
        code = worker.stop(timeout=30)
    assert prom.pid is None or not _alive(prom.pid)
    assert code == 0, worker.stderr_tail()
    assert time.monotonic() - t0 < 110
