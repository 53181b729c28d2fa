"""``flowbreaker drill``: rehearse a freeze end to end on a live deployment, and report each step.

::

    flowbreaker drill --bootstrap HOST:PORT [--agent flowbreaker-drill-1] [--url API_URL] [--token-file FILE]
                      [--prometheus URL] [--report DIR]

It plays a synthetic incident as a designated drill agent (ids start with
``flowbreaker-drill-``, :mod:`detector.drill`; events carry ``"drill": true``): a
warm-up of small internal reads so the agent has a baseline, then a bulk read of
restricted data and sends of it to hundreds of external addresses (all at
``*.invalid``), then a burst of deletes. It times each step from the first
harmful event (the first send), reading the topics the deployment writes:

==================== ===================================================================
``decision``         its decision record on ``agent-decisions``
``freeze_command``   the drill agent's freeze command on ``agent-control``
``guard_ack``        a runtime's FreezeGuard acknowledged the freeze (``agent-control-acks``)
``actuator_webhook`` the actuator acknowledged it, i.e. its webhook answered 2xx
``alert``            Prometheus fires ``DrillAgentFrozen`` for the agent (with ``--prometheus``)
==================== ===================================================================

then releases the agent through the normal authenticated path (``POST
/v1/agents/{id}/release`` with a lead token) and times, from the release request:

===================== ==================================================================
``release``           the API's answer (the release command published)
``release_guard_ack`` a FreezeGuard lets the agent proceed again
``release_actuator``  the actuator enacted the release
``probation``         ``GET /v1/agents/{id}`` shows the breaker ``half_open`` (probation)
===================== ==================================================================

Each step passes when it happened within its target (settings
``drill_<step>_s``, env ``FLOWBREAKER_DRILL_<STEP>_S``; defaults in
:data:`DEFAULT_TARGETS_S`); a step that never happened within ``--wait`` seconds
fails with what was missing. ``alert`` is skipped without ``--prometheus``. The
report (``drill.json``, ``flowbreaker-drill/1``, and ``drill.md``) goes to
``--report`` (default ``var/drills/<drill id>``) and the result is published on
``agent-drills``, which every worker follows (:class:`streams.drill_results.DrillFollower`) to export the
last drill's time, result and step times as metrics (``DrillFailed`` and
``DrillStale`` alert on them).

Exit 0 when every step passed, 1 when one failed (the first failing step is
named on stderr), 2 for bad arguments (no token, an agent id outside the drill
prefix, an unreachable API).

A drill agent left frozen by an interrupted drill is released first (noted in
the report). Drill agents never touch real agents' baselines, the SOC's incident
counts or training data (see :mod:`detector.drill`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.error
import urllib.request
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable
from urllib.parse import quote

from detector.drill import DEFAULT_DRILL_AGENT, DRILL_PREFIX, is_drill
from streams.drill_results import REPORT_FORMAT, publish_result
from streams.settings import Settings, SettingsError, add_kafka_arguments

__all__ = ["configure_parser", "run", "run_drill", "script", "write_report", "STEPS", "DEFAULT_TARGETS_S",
           "targets_from"]

FREEZE_STEPS = ("decision", "freeze_command", "guard_ack", "actuator_webhook", "alert")
RELEASE_STEPS = ("release", "release_guard_ack", "release_actuator", "probation")
#: every step, in order (a bounded set: usable as a metric label)
STEPS = FREEZE_STEPS + RELEASE_STEPS
#: seconds each step may take (from the first harmful event, or from the release request)
DEFAULT_TARGETS_S = {"decision": 5.0, "freeze_command": 10.0, "guard_ack": 15.0, "actuator_webhook": 30.0,
                     "alert": 60.0, "release": 15.0, "release_guard_ack": 15.0, "release_actuator": 30.0,
                     "probation": 15.0}
WARMUP = 150
DRILL_OPERATOR = "flowbreaker-drill"


def targets_from(settings: Any) -> dict[str, float]:
    """Targets per step: ``settings.drill_<step>_s`` where set, else :data:`DEFAULT_TARGETS_S`."""
    out = {}
    for step, default in DEFAULT_TARGETS_S.items():
        v = getattr(settings, f"drill_{step}_s", None)
        out[step] = float(v) if v is not None else default
    return out


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# --------------------------------------------------------------------------- the synthetic incident
def script(agent: str, drill_id: str, at: float, *, warmup: int = WARMUP) -> tuple[list[dict], list[dict]]:
    """``(warm-up events, incident events)`` of one drill; ``at`` (epoch s) stamps them.

    >>> warm, incident = script("flowbreaker-drill-1", "d1", 0.0, warmup=2)
    >>> [e["action"] for e in warm], [e["action"] for e in incident][:3], incident[1]["event_id"]
    (['read', 'read'], ['read', 'send', 'send'], 'drill-d1-3')
    >>> all(e["drill"] is True for e in warm + incident)
    True
    """
    n = 0

    def ev(**kw: Any) -> dict:
        nonlocal n
        base = {"event_id": f"drill-{drill_id}-{n}", "ts": _iso(at + n * 0.001), "agent_id": agent,
                "operator_id": DRILL_OPERATOR, "requested_by": "flowbreaker-drill", "task_id": f"drill-{drill_id}",
                "tool": "drill.read", "action": "read", "resource": "drill://docs/0", "sensitivity": "internal",
                "records": 1, "bytes": 200, "drill": True}
        base.update(kw)
        n += 1
        return base

    warm = [ev(resource=f"drill://docs/{i % 5}", task_id=f"drill-{drill_id}-w{i}") for i in range(warmup)]
    read = ev(resource="drill://vault/customers", sensitivity="restricted", records=20_000, bytes=20_000_000)
    outs = [f"email:drill-{k}@exfil.invalid" for k in range(300)] + ["http:https://paste.invalid/drill"]
    sends = [ev(tool="drill.send", action="send", resource="drill://vault/customers", sensitivity="restricted",
                records=20_000, bytes=20_000_000, destinations=outs, parent_event_id=read["event_id"])
             for _ in range(3)]
    deletes = [ev(tool="drill.delete", action="delete", resource=f"drill://vault/customers/{k}", records=1_000)
               for k in range(20)]
    return warm, [read] + sends + deletes


# --------------------------------------------------------------------------- watching the topics
class _Watch:
    """Reads ``agent-decisions``, ``agent-control`` and ``agent-control-acks`` from their end offsets at
    start, keeping the drill agent's records with the monotonic time they were seen."""

    def __init__(self, settings: Settings, agent: str) -> None:
        from kafka import KafkaConsumer, TopicPartition

        self.agent = agent.encode("utf-8")
        self.names = {settings.topic("decisions"): "decision", settings.topic("control"): "control",
                      settings.topic("acks"): "ack"}
        self.consumer = KafkaConsumer(group_id=None, enable_auto_commit=False, client_id="flowbreaker-drill",
                                      **settings.kafka_python_config())
        tps = []
        for topic in self.names:
            parts = self.consumer.partitions_for_topic(topic)
            if not parts:
                raise RuntimeError(f"topic {topic} does not exist at {settings.bootstrap}")
            tps += [TopicPartition(topic, p) for p in sorted(parts)]
        self.consumer.assign(tps)
        for tp, end in self.consumer.end_offsets(tps).items():
            self.consumer.seek(tp, end)

    def poll(self, timeout_s: float = 0.2) -> list[tuple[str, dict, float]]:
        out = []
        for tp, records in self.consumer.poll(timeout_ms=int(timeout_s * 1000)).items():
            now = time.monotonic()
            kind = self.names[tp.topic]
            for rec in records:
                if rec.key != self.agent:
                    continue
                try:
                    value = json.loads(rec.value or b"")
                except (ValueError, UnicodeDecodeError, RecursionError):
                    continue
                if isinstance(value, dict):
                    out.append((kind, value, now))
        return out

    def close(self) -> None:
        self.consumer.close(autocommit=False)


class _Api:
    def __init__(self, url: str, token: str, timeout_s: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self.timeout_s = timeout_s

    def call(self, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"Authorization": f"Bearer {self.token}",
                                              "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                return resp.status, json.loads(resp.read() or b"{}")
        except urllib.error.HTTPError as err:
            try:
                payload = json.loads(err.read() or b"{}")
            except ValueError:
                payload = {}
            err.close()
            return err.code, payload

    def agent(self, agent: str) -> tuple[int, dict]:
        return self.call("GET", f"/v1/agents/{quote(agent, safe='')}")

    def release(self, agent: str, incident_id: str | None, reason: str) -> tuple[int, dict]:
        body: dict[str, Any] = {"reason": reason}
        if incident_id:
            body["incident_id"] = incident_id
        return self.call("POST", f"/v1/agents/{quote(agent, safe='')}/release", body)


def _alert_firing(prometheus: str, agent: str, timeout_s: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(prometheus.rstrip("/") + "/api/v1/alerts", timeout=timeout_s) as resp:
            data = json.loads(resp.read())
    except (urllib.error.URLError, OSError, ValueError):
        return False
    for a in (data.get("data") or {}).get("alerts") or ():
        labels = a.get("labels") or {}
        if labels.get("alertname") == "DrillAgentFrozen" and labels.get("agent_id") == agent \
                and a.get("state") == "firing":
            return True
    return False


# --------------------------------------------------------------------------- the drill
def run_drill(settings: Settings, *, agent: str, api: _Api, prometheus: str | None, targets: dict[str, float],
              wait_s: float, say: Callable[[str], None] = lambda s: None) -> dict:
    """Play one drill against the deployment; returns the report (see the module docstring)."""
    from kafka import KafkaProducer

    drill_id = time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + "-" + uuid.uuid4().hex[:6]
    started = time.time()
    notes: list[str] = []
    steps: dict[str, dict] = {s: {"step": s, "target_s": targets[s], "seconds": None, "status": "pending",
                                  "detail": ""} for s in STEPS}

    status, state = api.agent(agent)
    if status == 200 and (state.get("breaker") or {}).get("state") == "open":
        iid = state["breaker"].get("incident_id")
        code, answer = api.release(agent, iid, f"drill {drill_id}: release left over from an interrupted drill")
        notes.append(f"the drill agent was frozen (incident {iid}) from an earlier drill; released first "
                     f"(HTTP {code})")
        time.sleep(1.0)
    elif status not in (200, 404):
        raise _Unusable(f"the API at {api.url} answered {status} for the drill agent: {state.get('message') or state}")

    watch = _Watch(settings, agent)
    producer = KafkaProducer(client_id="flowbreaker-drill", acks="all", linger_ms=0,
                             **settings.kafka_python_config())
    topic = settings.topic("actions")
    try:
        warm, incident = script(agent, drill_id, time.time())
        say(f"drill {drill_id}: warm-up of {len(warm)} actions as {agent}")
        for e in warm:
            producer.send(topic, key=agent.encode(), value=json.dumps(e).encode())
        producer.flush(30)
        last_warm = warm[-1]["event_id"]
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            if any(k == "decision" and v.get("event_id") == last_warm for k, v, _ in watch.poll()):
                break
        else:
            notes.append(f"the warm-up's last decision did not come within {wait_s:.0f} s")
        trigger = incident[1]["event_id"]  # the first send: the first harmful action
        # restamp: the incident happens now
        now = time.time()
        for k, e in enumerate(incident):
            e["ts"] = _iso(now + k * 0.001)
        say(f"drill {drill_id}: incident ({len(incident)} actions; the first send is {trigger})")
        producer.send(topic, key=agent.encode(), value=json.dumps(incident[0]).encode()).get(30)
        t0 = time.monotonic()
        t0_wall = time.time()
        for e in incident[1:]:
            producer.send(topic, key=agent.encode(), value=json.dumps(e).encode())
        producer.flush(30)

        def done(step: str, at: float, detail: str) -> None:
            s = steps[step]
            if s["status"] == "pending":
                s["seconds"] = round(at - base[step], 3)
                s["status"] = "pass" if s["seconds"] <= s["target_s"] else "fail"
                s["detail"] = detail + ("" if s["status"] == "pass" else f"; later than the target of "
                                        f"{s['target_s']:g} s")
                say(f"  {step}: {s['seconds']:.3f} s ({s['status']})")

        base = {s: t0 for s in FREEZE_STEPS}
        incident_id = None
        acks: list[tuple[dict, float]] = []
        if prometheus is None:
            steps["alert"].update(status="skipped", detail="no --prometheus given")
        freeze_deadline = t0 + wait_s
        next_prom = 0.0
        while time.monotonic() < freeze_deadline and any(steps[s]["status"] == "pending" for s in FREEZE_STEPS):
            for kind, rec, at in watch.poll():
                if kind == "decision" and rec.get("event_id") == trigger:
                    done("decision", at, f"severity {rec.get('severity')}, score {rec.get('score')}, "
                                         f"action {rec.get('action_taken')}")
                elif kind == "control" and rec.get("command") == "freeze" and incident_id is None:
                    incident_id = rec.get("incident_id")
                    done("freeze_command", at, f"incident {incident_id}: {rec.get('reason')}")
                elif kind == "ack":
                    acks.append((rec, at))
            for rec, at in list(acks):
                if incident_id is not None and rec.get("incident_id") == incident_id and rec.get("command") == "freeze":
                    step = "guard_ack" if rec.get("kind") == "guard" else "actuator_webhook"
                    done(step, at, f"acknowledged by {rec.get('by')}")
            if prometheus is not None and steps["alert"]["status"] == "pending" and incident_id is not None \
                    and time.monotonic() >= next_prom:
                next_prom = time.monotonic() + 0.5
                if _alert_firing(prometheus, agent):
                    done("alert", time.monotonic(), "DrillAgentFrozen firing")
        missing = {"decision": f"no decision for {trigger} on {settings.topic('decisions')}",
                   "freeze_command": f"no freeze of {agent} on {settings.topic('control')}",
                   "guard_ack": "no FreezeGuard acknowledged the freeze (is a runtime with a guard and acks running?)",
                   "actuator_webhook": "the actuator did not acknowledge the freeze (is its webhook failing, or is "
                                       "it not running?)",
                   "alert": "Prometheus did not fire DrillAgentFrozen for the agent"}
        for s in FREEZE_STEPS:
            if steps[s]["status"] == "pending":
                steps[s].update(status="fail", detail=f"{missing[s]} within {wait_s:.0f} s")

        # ---------------------------------------------------------------- release
        if incident_id is None:
            for s in RELEASE_STEPS:
                steps[s].update(status="skipped", detail="nothing to release: the agent was not frozen")
        else:
            t1 = time.monotonic()
            base.update({s: t1 for s in RELEASE_STEPS})
            code, answer = api.release(agent, incident_id, f"drill {drill_id}")
            if code == 200:
                done("release", time.monotonic(), f"released by {answer.get('released_by')}, published "
                                                  f"{answer.get('published')}")
            else:
                steps["release"].update(status="fail", detail=f"the API refused the release: HTTP {code} "
                                                               f"{answer.get('code', '')} {answer.get('message', '')}")
            release_deadline = t1 + wait_s
            next_state = 0.0
            while code == 200 and time.monotonic() < release_deadline and any(
                    steps[s]["status"] == "pending" for s in RELEASE_STEPS):
                for kind, rec, at in watch.poll():
                    if kind == "ack":
                        acks.append((rec, at))
                for rec, at in list(acks):
                    if rec.get("incident_id") == incident_id and rec.get("command") == "release":
                        step = "release_guard_ack" if rec.get("kind") == "guard" else "release_actuator"
                        done(step, at, f"acknowledged by {rec.get('by')}")
                if steps["probation"]["status"] == "pending" and time.monotonic() >= next_state:
                    next_state = time.monotonic() + 0.5
                    st, body = api.agent(agent)
                    b = body.get("breaker") or {}
                    if st == 200 and b.get("state") == "half_open":
                        done("probation", time.monotonic(), f"half_open until {b.get('probation_until')}")
            why = {"release_guard_ack": "no FreezeGuard let the agent proceed again",
                   "release_actuator": "the actuator did not acknowledge the release",
                   "probation": "the agent's breaker did not show half_open (probation)"}
            for s in RELEASE_STEPS:
                if steps[s]["status"] == "pending":
                    steps[s].update(status="fail", detail=f"{why.get(s, s)} within {wait_s:.0f} s"
                                    if code == 200 else "not reached: the release was refused")
    finally:
        producer.close(timeout=5)
        watch.close()
    ordered = [steps[s] for s in STEPS]
    failed = [s["step"] for s in ordered if s["status"] == "fail"]
    return {
        "format": REPORT_FORMAT, "drill_id": drill_id, "agent_id": agent, "started_at": _iso(started),
        "incident_at": _iso(t0_wall), "finished_at": _iso(time.time()), "finished_t": time.time(),
        "incident_id": incident_id, "passed": not failed, "failed_step": failed[0] if failed else None,
        "steps": ordered, "notes": notes, "bootstrap": settings.bootstrap, "api": api.url,
        "prometheus": prometheus,
    }


class _Unusable(Exception):
    pass


def write_report(report: dict, out: str | Path) -> Path:
    """``drill.json`` and ``drill.md`` into ``out``."""
    d = Path(out)
    d.mkdir(parents=True, exist_ok=True)
    (d / "drill.json").write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    verdict = "PASSED" if report["passed"] else f"FAILED at {report['failed_step']}"
    lines = [f"# Freeze drill {report['drill_id']}: {verdict}", "",
             f"Drill agent `{report['agent_id']}`, incident `{report['incident_id']}`; started "
             f"{report['started_at']}, incident played {report['incident_at']}, finished {report['finished_at']}.", "",
             "| step | seconds | target | result | detail |", "|---|---|---|---|---|"]
    for s in report["steps"]:
        secs = f"{s['seconds']:.3f}" if s["seconds"] is not None else "-"
        lines.append(f"| {s['step']} | {secs} | {s['target_s']:g} | {s['status']} | {s['detail']} |")
    lines.append("")
    lines.append("Freeze steps are timed from the first harmful action (the first send) being produced; "
                 "release steps from the release request.")
    for n in report["notes"]:
        lines.append(f"\nNote: {n}")
    (d / "drill.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return d


# --------------------------------------------------------------------------- command line
def configure_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--agent", default=None, metavar="DRILL_AGENT",
                   help=f"the drill agent (id starting with {DRILL_PREFIX}; default {DEFAULT_DRILL_AGENT})")
    p.add_argument("--url", default=None, metavar="URL",
                   help="a worker's API (default $FLOWBREAKER_API_URL or http://127.0.0.1:6066)")
    p.add_argument("--token-file", default=None, metavar="FILE",
                   help="file holding a lead's bearer token, for the release (default $FLOWBREAKER_API_TOKEN)")
    p.add_argument("--prometheus", default=None, metavar="URL",
                   help="also time the DrillAgentFrozen alert in this Prometheus (e.g. http://127.0.0.1:9090)")
    p.add_argument("--report", default=None, metavar="DIR", help="report directory (default var/drills/<drill id>)")
    p.add_argument("--wait", type=float, default=None, metavar="SECONDS",
                   help="longest wait for a step (default twice the largest target, at least 30)")
    p.add_argument("--no-publish", action="store_true", help="do not publish the result on agent-drills")
    add_kafka_arguments(p)


def run(args: argparse.Namespace) -> int:
    from detector.errors import UsageError

    agent = args.agent or DEFAULT_DRILL_AGENT
    if not is_drill(agent):
        raise UsageError(f"--agent {agent!r}: a drill agent's id starts with {DRILL_PREFIX!r} (so its events never "
                         "count as a real agent's)")
    try:
        settings = Settings.from_args(args)
    except SettingsError as err:
        raise UsageError(str(err)) from None
    token = os.environ.get("FLOWBREAKER_API_TOKEN", "")
    if args.token_file:
        try:
            token = Path(args.token_file).read_text().strip()
        except OSError as err:
            raise UsageError(f"cannot read --token-file {args.token_file}: {err.strerror}") from None
    if not token:
        raise UsageError("a lead's API token is needed for the release: --token-file FILE or $FLOWBREAKER_API_TOKEN")
    url = args.url or os.environ.get("FLOWBREAKER_API_URL") or "http://127.0.0.1:6066"
    targets = targets_from(settings)
    wait_s = args.wait if args.wait is not None else max(30.0, 2 * max(targets.values()))
    if wait_s <= 0:
        raise UsageError("--wait must be > 0")
    from streams.kafka_admin import KafkaUnavailable, ensure_topics

    try:
        ensure_topics(settings, topics=["actions", "decisions", "control", "acks", "drills"])
    except KafkaUnavailable as err:
        print(f"flowbreaker drill: {err}", file=sys.stderr)
        return 1
    api = _Api(url, token)
    try:
        report = run_drill(settings, agent=agent, api=api, prometheus=args.prometheus, targets=targets,
                           wait_s=wait_s, say=lambda line: print(line, file=sys.stderr, flush=True))
    except (_Unusable, urllib.error.URLError, ConnectionError) as err:
        raise UsageError(f"cannot drill: {getattr(err, 'reason', err)}") from None
    out = write_report(report, args.report or Path("var") / "drills" / report["drill_id"])
    if not args.no_publish:
        try:
            publish_result(settings, report)
        except Exception as err:  # the report is written; the metrics just miss this drill
            print(f"flowbreaker drill: the result could not be published on {settings.topic('drills')}: {err}",
                  file=sys.stderr)
    if report["passed"]:
        print(f"drill {report['drill_id']} passed: report in {out}/drill.md")
        return 0
    bad = next(s for s in report["steps"] if s["step"] == report["failed_step"])
    print(f"flowbreaker drill: FAILED at {bad['step']}: {bad['detail']} (report in {out}/drill.md)", file=sys.stderr)
    return 1
