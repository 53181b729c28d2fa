#!/usr/bin/env python3
"""Generate flowbreaker's Grafana dashboards and Prometheus alert rules.

    python dashboards/generate.py           write grafana/*.json and alerts.yml
    python dashboards/generate.py --check   exit 1 if a committed file is not current

The generated files are committed; ``tests/unit/test_dashboards.py`` fails when
they differ from what this script produces, so edit this file, run it, and
commit both. Standard library only (no Grafana SDK, no YAML library): the
output is plain Grafana dashboard JSON (schemaVersion 39, Grafana 10+) and
Prometheus 2.x rule YAML.

Conventions every dashboard follows (the test checks them):
- a ``datasource`` variable of type ``datasource`` (query ``prometheus``), used
  as ``${datasource}`` by every panel, target, query variable and annotation:
  no datasource uid is hard-coded;
- every panel has a unique id, a title, a description written for a SOC
  analyst and a unit;
- every metric named in an expression exists on a worker's ``/metrics``.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
GRAFANA_DIR = HERE / "grafana"
ALERTS_FILE = HERE / "alerts.yml"

DS = {"type": "prometheus", "uid": "${datasource}"}
RATE = "$__rate_interval"
SENSITIVE = 'sensitivity=~"confidential|restricted"'
LEAVING = 'dest_class=~"external|broadcast"'
# The SOC counts alert episodes (flowbreaker_episodes_total, every series there from the start at 0),
# not alerted actions. flowbreaker_alerts_total{severity, feature} gets a series at its first alert, and
# rate()/increase() cannot see a series' rise from "absent": use it only for the breakdown by feature.
SOC_UID, AGENT_UID, PIPELINE_UID = "flowbreaker-soc", "flowbreaker-agent", "flowbreaker-pipeline"
AGENT_LINK = (
    f"/d/{AGENT_UID}/flowbreaker-agent-drill-down?var-agent=AGENT"
    "&${datasource:queryparam}&${__url_time_range}"
)
BREAKER_MAPPINGS = [{
    "type": "value",
    "options": {
        "0": {"text": "closed", "color": "green", "index": 0},
        "1": {"text": "half open", "color": "yellow", "index": 1},
        "2": {"text": "open (frozen)", "color": "red", "index": 2},
    },
}]


# --------------------------------------------------------------------------- building blocks

def target(expr: str, legend: str = "", *, ref: str = "A", instant: bool = False,
           fmt: str = "time_series") -> dict:
    return {
        "refId": ref,
        "datasource": DS,
        "expr": expr,
        "legendFormat": legend or "__auto",
        "range": not instant,
        "instant": instant,
        "format": fmt,
    }


def targets(*specs) -> list[dict]:
    """``(expr, legend)`` pairs -> targets with refIds A, B, C..."""
    return [target(expr, legend, ref=chr(ord("A") + i)) for i, (expr, legend) in enumerate(specs)]


def thresholds(*steps) -> dict:
    """``("green", None), ("red", 1)`` -> Grafana absolute thresholds."""
    return {"mode": "absolute", "steps": [{"color": c, "value": v} for c, v in steps]}


def panel(kind: str, title: str, description: str, unit: str, tgts: list[dict], *,
          w: int = 12, h: int = 8, defaults: dict | None = None, options: dict | None = None,
          overrides: list | None = None, **extra) -> dict:
    field_defaults = {"unit": unit}
    field_defaults.update(defaults or {})
    p = {
        "type": kind,
        "title": title,
        "description": description,
        "datasource": DS,
        "gridPos": {"w": w, "h": h},
        "fieldConfig": {"defaults": field_defaults, "overrides": overrides or []},
        "options": options or {},
        "targets": tgts,
    }
    p.update(extra)
    return p


def timeseries(title, description, unit, tgts, *, stack=False, bars=False, minimum=None,
               maximum=None, **kw) -> dict:
    custom = {
        "drawStyle": "bars" if bars else "line",
        "lineWidth": 1,
        "fillOpacity": 60 if bars else 10,
        "showPoints": "never",
        "spanNulls": False,
        "stacking": {"mode": "normal" if stack else "none", "group": "A"},
    }
    defaults = {"custom": custom, "color": {"mode": "palette-classic"}}
    if minimum is not None:
        defaults["min"] = minimum
    if maximum is not None:
        defaults["max"] = maximum
    defaults.update(kw.pop("defaults", {}))
    options = {
        "legend": {"displayMode": "table", "placement": "bottom", "showLegend": True,
                   "calcs": ["max", "lastNotNull"]},
        "tooltip": {"mode": "multi", "sort": "desc"},
    }
    return panel("timeseries", title, description, unit, tgts, defaults=defaults,
                 options=options, **kw)


def stat(title, description, unit, expr, *, steps=(("green", None),), w=6, h=4,
         mappings=None, graph=True, **kw) -> dict:
    defaults = {"thresholds": thresholds(*steps), "color": {"mode": "thresholds"}}
    if mappings:
        defaults["mappings"] = mappings
    defaults.update(kw.pop("defaults", {}))
    options = {
        "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
        "colorMode": "value", "graphMode": "area" if graph else "none",
        "textMode": "auto", "justifyMode": "auto", "orientation": "auto",
    }
    return panel("stat", title, description, unit, [target(expr)], w=w, h=h,
                 defaults=defaults, options=options, **kw)


def table(title, description, unit, expr, *, rename: dict, link_agent: str | None = None,
          w=12, h=8) -> dict:
    """An instant query as a table; ``link_agent`` names the (renamed) column whose
    cells link to the agent drill-down."""
    overrides = []
    if link_agent:
        overrides.append({
            "matcher": {"id": "byName", "options": link_agent},
            "properties": [{"id": "links", "value": agent_link("${__value.raw}")}],
        })
    return panel(
        "table", title, description, unit, [target(expr, instant=True, fmt="table")],
        w=w, h=h, defaults={"custom": {"align": "auto", "filterable": True}}, overrides=overrides,
        options={"showHeader": True, "cellHeight": "sm", "footer": {"show": False}},
        transformations=[{
            "id": "organize",
            "options": {
                "excludeByName": {"Time": True, "Value": True, "__name__": True},
                "renameByName": rename,
                "indexByName": {k: i for i, k in enumerate(rename)},
            },
        }],
    )


def row(title: str) -> dict:
    return {"type": "row", "title": title, "collapsed": False, "panels": [],
            "gridPos": {"w": 24, "h": 1}}


def datasource_variable() -> dict:
    return {
        "type": "datasource", "name": "datasource", "label": "Prometheus",
        "query": "prometheus", "current": {}, "hide": 0, "includeAll": False,
        "multi": False, "options": [], "refresh": 1, "regex": "",
        "description": "Prometheus that scrapes the flowbreaker workers.",
    }


def query_variable(name: str, label: str, query: str, description: str) -> dict:
    return {
        "type": "query", "name": name, "label": label, "datasource": DS,
        "definition": query, "query": query, "refresh": 2, "sort": 1,
        "current": {}, "hide": 0, "includeAll": False, "multi": False,
        "options": [], "regex": "", "description": description,
    }


def annotation(name: str, expr: str, title: str, color: str) -> dict:
    return {
        "name": name, "datasource": DS, "enable": True, "hide": False,
        "iconColor": color, "expr": expr, "step": "30s", "titleFormat": title,
        "textFormat": "", "useValueForTime": False,
    }


def layout(panels: list[dict]) -> list[dict]:
    """Assign ids 1..n and flow panels left to right into 24-column rows."""
    x = y = row_h = 0
    for i, p in enumerate(panels, start=1):
        p["id"] = i
        pos = p["gridPos"]
        if x + pos["w"] > 24 or p["type"] == "row":
            x, y, row_h = 0, y + row_h, 0
        pos["x"], pos["y"] = x, y
        x += pos["w"]
        row_h = max(row_h, pos["h"])
        if p["type"] == "row":
            x, y, row_h = 0, y + pos["h"], 0
    return panels


def dashboard(uid: str, title: str, description: str, panels: list[dict], *,
              variables=(), annotations=(), refresh="10s", time_from="now-1h") -> dict:
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": ["flowbreaker", "security"],
        "editable": True,
        "graphTooltip": 1,
        "timezone": "browser",
        "schemaVersion": 39,
        "version": 1,
        "refresh": refresh,
        "time": {"from": time_from, "to": "now"},
        "links": [{
            "type": "dashboards", "title": "flowbreaker", "tags": ["flowbreaker"],
            "asDropdown": True, "includeVars": True, "keepTime": True,
        }],
        "templating": {"list": [datasource_variable(), *variables]},
        "annotations": {"list": list(annotations)},
        "panels": layout(panels),
    }


def agent_link(field_ref: str) -> list[dict]:
    return [{"title": "Open agent drill-down", "url": AGENT_LINK.replace("AGENT", field_ref)}]


# --------------------------------------------------------------------------- dashboards

def soc_overview() -> dict:
    panels = [
        row("Now"),
        stat("Agents frozen now",
             "Agents whose circuit breaker is open: their runtime stopped taking tasks and "
             "making tool calls. Each needs an analyst to review the incident and release "
             "the agent (or confirm the freeze).",
             "short", "sum(flowbreaker_agents_frozen)",
             steps=(("green", None), ("red", 1)), graph=False, w=5),
        stat("Alert episodes open now",
             "Alert episodes waiting for an analyst: an agent's alerted actions gathered into one "
             "episode, open until the agent has been quiet for 30 minutes. Give each a verdict "
             "(POST /v1/episodes/{id}/verdict): benign teaches the agent, confirmed does not.",
             "short", "max(flowbreaker_episodes_open)",
             steps=(("green", None), ("orange", 1)), graph=False, w=5),
        stat("Alert episodes in range",
             "Alert episodes opened in the selected time range: what the SOC has to look at, "
             "one per agent and burst of alerts, not one per alerted action.",
             "short", 'sum(increase(flowbreaker_episodes_total{event="opened"}[$__range]))',
             steps=(("green", None), ("orange", 1)), w=5),
        stat("Freezes in range",
             "Agents frozen automatically in the selected time range (one per incident).",
             "short", "sum(increase(flowbreaker_freezes_total[$__range]))",
             steps=(("green", None), ("red", 1)), w=5),
        stat("Sensitive records leaving in range",
             "Confidential and restricted records carried to external or broadcast "
             "destinations in the selected time range.",
             "short",
             f"sum(increase(flowbreaker_records_total{{{SENSITIVE}, {LEAVING}}}[$__range]))",
             steps=(("green", None), ("orange", 1000)), w=4),
        row("Alert episodes and freezes"),
        timeseries("Alert episodes",
                   "Alert episodes opened and closed per interval. An episode gathers one agent's "
                   "alerted actions until it has been quiet for 30 minutes; a sustained rise across "
                   "many agents suggests a shared cause (a prompt injection campaign, a bad "
                   "deployment) rather than one misbehaving agent.",
                   "short",
                   targets((f'sum(increase(flowbreaker_episodes_total{{event="opened"}}[{RATE}]))', "opened"),
                           (f'sum(increase(flowbreaker_episodes_total{{event="closed"}}[{RATE}]))', "closed")),
                   bars=True),
        timeseries("Alerted actions by leading reason",
                   "Alerted actions per minute (the actions inside episodes) by the feature that "
                   "contributed most to the score (for example destination novelty, volume or "
                   "fan-out). Tells what kind of behaviour is being flagged. A reason's first "
                   "alerts on a worker may be missing here.",
                   "cpm",
                   targets((f"sum by (feature) (rate(flowbreaker_alerts_total[{RATE}])) * 60",
                            "{{feature}}")), stack=True),
        timeseries("Freezes and releases",
                   "Agents frozen by the circuit breaker and frozen agents released by an "
                   "approver, per interval. Freezes without matching releases are open "
                   "incidents.",
                   "short",
                   targets((f"sum(increase(flowbreaker_freezes_total[{RATE}]))", "freezes"),
                           (f"sum(increase(flowbreaker_releases_total[{RATE}]))", "releases")),
                   bars=True),
        timeseries("Analyst verdicts",
                   "Verdicts applied per interval, by kind: benign (the incident's or episode's actions "
                   "were legitimate work and now teach the agent's profile) and confirmed (harmful; "
                   "teaches nothing). Rejected: records on agent-verdicts that were not signed or "
                   "whose signature did not verify (each worker counts them).",
                   "short",
                   targets((f"sum by (verdict) (increase(flowbreaker_verdicts_applied_total[{RATE}]))",
                            "{{verdict}}"),
                           (f"max(increase(flowbreaker_verdicts_rejected_total[{RATE}]))", "rejected")),
                   bars=True),
        table("Frozen agents now",
              "Each frozen agent with its incident id (the longest-frozen 100 per worker). "
              "Click an agent for its drill-down.",
              "none", "max by (agent_id, incident_id) (flowbreaker_agent_frozen)",
              rename={"agent_id": "Agent", "incident_id": "Incident"},
              link_agent="Agent"),
        row("Riskiest agents"),
        panel("bargauge", "Riskiest agents now",
              "The agents with the highest recent anomaly score (0 = normal, 1 = most "
              "unusual for that agent; scores are comparable across agents). A score "
              "decays by half every 5 minutes without new anomalies. Click for the drill-down.",
              "none",
              [target("topk(20, max by (agent_id) (flowbreaker_agent_risk_score))",
                      "{{agent_id}}", instant=True)],
              w=12, h=10,
              defaults={"min": 0, "max": 1, "decimals": 2,
                        "thresholds": thresholds(("green", None), ("yellow", 0.7), ("red", 0.9)),
                        "color": {"mode": "thresholds"},
                        "links": agent_link("${__field.labels.agent_id}")},
              options={"displayMode": "gradient", "orientation": "horizontal",
                       "showUnfilled": True, "valueMode": "color",
                       "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False}}),
        panel("heatmap", "Anomaly score distribution",
              "How many decisions fell in each score band over time. Normal traffic sits "
              "at the bottom; a band lighting up near 1 is many unusual actions at once.",
              "none",
              [target(f"sum by (le) (increase(flowbreaker_decision_score_bucket[{RATE}]))",
                      "{{le}}", fmt="heatmap")],
              w=12, h=10,
              options={"calculate": False, "cellGap": 1, "yAxis": {"unit": "none"},
                       "color": {"mode": "scheme", "scheme": "Oranges", "steps": 64},
                       "tooltip": {"show": True, "yHistogram": False},
                       "legend": {"show": True}}),
        row("Data leaving"),
        timeseries("Sensitive records leaving, by destination class",
                   "Confidential and restricted records per second carried to external "
                   "destinations (outside the organisation's domains) and broadcast "
                   "destinations (channels reaching many people).",
                   "recps",
                   targets((f"sum by (dest_class) (rate(flowbreaker_records_total{{{SENSITIVE}, "
                            f"{LEAVING}}}[{RATE}]))", "{{dest_class}}")),
                   stack=True),
        timeseries("Sensitive bytes leaving, by destination class",
                   "Bytes per second of confidential and restricted data sent to external "
                   "and broadcast destinations.",
                   "Bps",
                   targets((f"sum by (dest_class) (rate(flowbreaker_bytes_total{{{SENSITIVE}, "
                            f"{LEAVING}}}[{RATE}]))", "{{dest_class}}")),
                   stack=True),
        timeseries("Fan-out: destinations addressed",
                   "Destinations addressed per second by class (one per recipient, channel "
                   "or URL). A jump in external or broadcast destinations is data being "
                   "spread widely.",
                   "short",
                   targets((f"sum by (dest_class) (rate(flowbreaker_destinations_total[{RATE}]))",
                            "{{dest_class}}")),
                   stack=True),
        timeseries("Fan-out: destinations per action",
                   "Median and 99th percentile of destinations per action that has any. "
                   "A high 99th percentile is a mass mailing or mass share.",
                   "short",
                   targets(
                       ("histogram_quantile(0.5, sum by (le) (rate("
                        f"flowbreaker_event_destinations_bucket[{RATE}])))", "median"),
                       ("histogram_quantile(0.99, sum by (le) (rate("
                        f"flowbreaker_event_destinations_bucket[{RATE}])))", "p99"),
                   )),
        row("Intended use and drills"),
        timeseries("Out-of-scope actions, by clause",
                   "Actions outside their agent's intended-use manifest, per minute, by the clause "
                   "they break (tools, resources, sensitivity, destinations, principals, ceilings): "
                   "decided actions on the stream (they count towards the score and the risk budget) "
                   "and proposed actions held by the pre-action check. `flowbreaker audit` reports "
                   "them per agent.",
                   "cpm",
                   targets((f'sum by (clause) (rate(flowbreaker_scope_violations_total{{where="stream"}}[{RATE}])) '
                            "* 60", "stream: {{clause}}"),
                           (f'sum by (clause) (rate(flowbreaker_scope_violations_total{{where="check"}}[{RATE}])) '
                            "* 60", "check: {{clause}}")),
                   stack=True, w=12),
        stat("Since the last freeze drill",
             "Time since the last `flowbreaker drill` finished (a rehearsed freeze of a drill agent, "
             "end to end). Drills should run at least weekly: DrillStale fires after 8 days.",
             "s", "time() - max(flowbreaker_drill_last_run_timestamp_seconds)",
             steps=(("green", None), ("orange", 7 * 86400), ("red", 8 * 86400)), graph=False),
        stat("Last freeze drill",
             "Whether the last drill passed every step (event to decision, freeze command, the "
             "runtime's stop, the actuator's webhook, the alert, the release and probation) within "
             "its target. Its report names the step that failed.",
             "none", "max(flowbreaker_drill_last_success)",
             steps=(("red", None), ("green", 1)), graph=False,
             mappings=[{"type": "value", "options": {
                 "0": {"text": "failed", "color": "red", "index": 0},
                 "1": {"text": "passed", "color": "green", "index": 1}}}]),
    ]
    return dashboard(
        SOC_UID, "flowbreaker / SOC overview",
        "What AI agents are doing with data right now: alerts, freezes, the riskiest "
        "agents and sensitive data leaving the organisation.",
        panels,
        annotations=[annotation("Freezes", "sum(increase(flowbreaker_freezes_total[1m])) > 0",
                                "Agent frozen", "red")],
    )


def agent_drilldown() -> dict:
    agent = 'agent_id="$agent"'
    panels = [
        stat("Breaker state",
             "The agent's circuit breaker: closed (running normally), open (frozen: its "
             "runtime takes no tasks and makes no tool calls) or half open (released, on "
             "probation).",
             "none", f"max(flowbreaker_agent_breaker_state{{{agent}}})",
             steps=(("green", None), ("yellow", 1), ("red", 2)), mappings=BREAKER_MAPPINGS,
             graph=False, w=6),
        stat("Risk score now",
             "The agent's recent peak anomaly score, 0 (normal) to 1 (most unusual for "
             "this agent), decaying by half every 5 minutes. Empty when the agent is not "
             "among the riskiest agents.",
             "none", f"max(flowbreaker_agent_risk_score{{{agent}}})",
             steps=(("green", None), ("yellow", 0.7), ("red", 0.9)), w=6,
             defaults={"min": 0, "max": 1, "decimals": 2}),
        table("Open incident",
              "The incident under which the agent is frozen, if it is. Look the incident "
              "id up in the agent-incidents topic or the worker's incident API for the "
              "trace of its last actions and who configured and requested them.",
              "none", f"max by (agent_id, incident_id) (flowbreaker_agent_frozen{{{agent}}})",
              rename={"agent_id": "Agent", "incident_id": "Incident"}, w=12, h=4),
        timeseries("Risk score over time",
                   "The agent's recent peak score against the fleet's 95th percentile "
                   "score. Gaps mean the agent was not among the riskiest agents then.",
                   "none",
                   targets((f"max(flowbreaker_agent_risk_score{{{agent}}})", "$agent"),
                           ("histogram_quantile(0.95, sum by (le) (rate("
                            f"flowbreaker_decision_score_bucket[{RATE}])))", "fleet p95")),
                   minimum=0, maximum=1, w=24),
        panel("state-timeline", "Breaker history",
              "When the agent was frozen (red), on probation after a release (yellow) or "
              "running normally (green).",
              "none",
              [target(f"max(flowbreaker_agent_breaker_state{{{agent}}})", "breaker")],
              w=24, h=5,
              defaults={"mappings": BREAKER_MAPPINGS, "color": {"mode": "thresholds"},
                        "thresholds": thresholds(("green", None), ("yellow", 1), ("red", 2))},
              options={"showValue": "auto", "mergeValues": True, "rowHeight": 0.9,
                       "legend": {"showLegend": True, "displayMode": "list", "placement": "bottom"}}),
        timeseries("Leading features against baseline",
                   "The features behind the agent's latest flagged action (value) and what "
                   "is normal for this agent (baseline): how far it strayed, in the "
                   "feature's own unit.",
                   "short",
                   targets((f"max by (feature) (flowbreaker_agent_feature_value{{{agent}}})",
                            "{{feature}} value"),
                           (f"max by (feature) (flowbreaker_agent_feature_baseline{{{agent}}})",
                            "{{feature}} baseline")),
                   w=24,
                   defaults={"custom": {"drawStyle": "line", "lineWidth": 2, "fillOpacity": 0,
                                        "showPoints": "auto", "spanNulls": False,
                                        "stacking": {"mode": "none", "group": "A"}}}),
    ]
    return dashboard(
        AGENT_UID, "flowbreaker / Agent drill-down",
        "One agent's risk, circuit breaker and the features behind its alerts. Lists the "
        "riskiest and the frozen agents (per-agent series are kept for those only).",
        panels,
        variables=[query_variable(
            "agent", "Agent", "label_values(flowbreaker_agent_breaker_state, agent_id)",
            "Agents currently among the riskiest or frozen.")],
        annotations=[annotation(
            "Breaker changes", f"changes(flowbreaker_agent_breaker_state{{{agent}}}[1m]) > 0",
            "Breaker state changed", "orange")],
    )


def pipeline_health() -> dict:
    latency = f"sum by (le) (rate(flowbreaker_processing_latency_seconds_bucket[{RATE}]))"
    worker = "on (instance, job) group_left flowbreaker_worker_info"
    panels = [
        stat("Workers up",
             "flowbreaker workers answering Prometheus' scrapes. Partitions of a "
             "worker that is down are taken over by the others after a rebalance.",
             "short", "count(flowbreaker_worker_info)",
             steps=(("red", None), ("green", 1)), graph=False),
        stat("Throughput",
             "Agent actions scored per second, all workers.",
             "eps", f"sum(rate(flowbreaker_actions_total[{RATE}]))"),
        stat("Latency p99",
             "99th percentile time from when the agent acted to the decision: how late "
             "a freeze can come.",
             "s", f"histogram_quantile(0.99, {latency})",
             steps=(("green", None), ("orange", 1), ("red", 10))),
        stat("Consumer lag",
             "Actions waiting to be scored, summed over partitions.",
             "short", "sum(max by (partition) (flowbreaker_consumer_lag))",
             steps=(("green", None), ("orange", 1000), ("red", 10000))),
        timeseries("Throughput by action",
                   "Agent actions scored per second by kind of action.",
                   "eps",
                   targets((f"sum by (action) (rate(flowbreaker_actions_total[{RATE}]))",
                            "{{action}}")), stack=True),
        timeseries("Latency percentiles (event time to decision)",
                   "Median, 95th and 99th percentile time from the action's timestamp to "
                   "its decision. Includes the agent runtime's delay before publishing.",
                   "s",
                   targets((f"histogram_quantile(0.5, {latency})", "p50"),
                           (f"histogram_quantile(0.95, {latency})", "p95"),
                           (f"histogram_quantile(0.99, {latency})", "p99"))),
        timeseries("Consumer lag per partition",
                   "Messages behind the end of agent-actions per partition. Growing lag "
                   "means the workers cannot keep up: add workers or partitions.",
                   "short",
                   targets(("max by (partition) (flowbreaker_consumer_lag)", "partition {{partition}}"))),
        timeseries("Dead-lettered events by reason",
                   "Invalid events per second sent to agent-actions-dlq, by reason code "
                   "(for example a missing field or a timestamp without offset). Usually a "
                   "misbehaving agent runtime or integration.",
                   "eps",
                   targets((f"sum by (code) (rate(flowbreaker_dlq_events_total[{RATE}]))", "{{code}}")),
                   stack=True),
        timeseries("Duplicates",
                   "Repeated event ids per second, skipped after the first. Redeliveries "
                   "after a crash or rebalance show up here.",
                   "eps",
                   targets((f"sum(rate(flowbreaker_duplicates_total[{RATE}]))", "duplicates"))),
        timeseries("Throughput per worker",
                   "Agent actions scored per second by each worker, with the partitions "
                   "it owns. Uneven load points at a hot partition.",
                   "eps",
                   targets((f"sum by (instance) (rate(flowbreaker_actions_total[{RATE}]))",
                            "{{instance}}"),
                           ("sum by (instance) (flowbreaker_assigned_partitions)",
                            "{{instance}} partitions"))),
        timeseries("Worker memory and CPU",
                   "Resident memory and CPU (1 = one core) of each worker process.",
                   "bytes",
                   targets((f"process_resident_memory_bytes * {worker}", "{{instance}} memory"),
                           (f"rate(process_cpu_seconds_total[{RATE}]) * {worker}",
                            "{{instance}} cpu")),
                   overrides=[{  # cpu (query B) in cores, on its own axis
                       "matcher": {"id": "byFrameRefID", "options": "B"},
                       "properties": [{"id": "unit", "value": "percentunit"},
                                      {"id": "custom.axisPlacement", "value": "right"}],
                   }]),
        table("Model in use",
              "The baseline model each worker scores with and when it was trained. "
              "Workers should agree; a mix means a reload is in progress or failed.",
              "none", "max by (instance, version, trained_at) (flowbreaker_model_info)",
              rename={"instance": "Worker", "version": "Model version", "trained_at": "Trained at"}),
        stat("Model age",
             "Time since the oldest model in use was trained. Retrain and promote when "
             "it gets old (the ModelStale alert fires after 30 days).",
             "dtdurations", "time() - min(flowbreaker_model_trained_timestamp_seconds)",
             steps=(("green", None), ("orange", 14 * 86400), ("red", 30 * 86400)),
             graph=False, w=12, h=8),
    ]
    return dashboard(
        PIPELINE_UID, "flowbreaker / Pipeline health",
        "Is the detector keeping up: workers, throughput, latency, lag, dead letters and "
        "the model in use.",
        panels,
    )


DASHBOARDS = {
    "soc-overview.json": soc_overview,
    "agent-drilldown.json": agent_drilldown,
    "pipeline-health.json": pipeline_health,
}


# --------------------------------------------------------------------------- alert rules

ALERT_RULES = [
    {
        "alert": "AgentFrozen",
        "expr": "max by (agent_id, incident_id) (flowbreaker_agent_frozen) > 0",
        "for": "0s",
        "labels": {"severity": "critical"},
        "annotations": {
            "summary": "Agent {{ $labels.agent_id }} is frozen (incident {{ $labels.incident_id }})",
            "description": "flowbreaker's circuit breaker froze agent {{ $labels.agent_id }}: "
                           "its runtime takes no tasks and makes no tool calls until an "
                           "approver releases it. Review incident {{ $labels.incident_id }} "
                           "on the agent drill-down dashboard.",
        },
    },
    {
        "alert": "DrillAgentFrozen",
        "expr": "max by (agent_id) (flowbreaker_drill_agent_frozen) > 0",
        "for": "0s",
        "labels": {"severity": "info", "kind": "drill"},
        "annotations": {
            "summary": "Drill agent {{ $labels.agent_id }} is frozen (a rehearsal)",
            "description": "A freeze drill froze its drill agent {{ $labels.agent_id }}; `flowbreaker drill` "
                           "times this alert and releases the agent. Route alerts labelled kind=drill away "
                           "from the on-call pager. Frozen for long: a drill was interrupted; release it.",
        },
    },
    {
        "alert": "DrillFailed",
        "expr": "max(flowbreaker_drill_last_success) < 1",
        "for": "0s",
        "labels": {"severity": "warning"},
        "annotations": {
            "summary": "The last freeze drill failed",
            "description": "A step of the last `flowbreaker drill` (decision, freeze command, the runtime's "
                           "stop, the actuator's webhook, the alert, release or probation) did not happen "
                           "within its target: a real freeze might not stop an agent in time either. The "
                           "drill report names the step.",
        },
    },
    {
        "alert": "DrillStale",
        "expr": "time() - max(flowbreaker_drill_last_run_timestamp_seconds) > 8 * 86400",
        "for": "1h",
        "labels": {"severity": "warning"},
        "annotations": {
            "summary": "No freeze drill for more than 8 days",
            "description": "The last `flowbreaker drill` finished {{ $value | humanizeDuration }} ago. "
                           "Rehearse the freeze path at least weekly (schedule `flowbreaker drill`).",
        },
    },
    {
        "alert": "AlertStorm",
        "expr": 'sum(rate(flowbreaker_episodes_total{event="opened"}[5m])) * 60 > 10',
        "for": "5m",
        "labels": {"severity": "warning"},
        "annotations": {
            "summary": "More than 10 flowbreaker alert episodes opened per minute for 5 minutes",
            "description": "flowbreaker opens {{ $value | humanize }} alert episodes per minute. "
                           "Many agents misbehaving at once point at a shared cause (a "
                           "prompt injection campaign, a bad deployment, a policy change) "
                           "or at a miscalibrated model.",
        },
    },
    {
        "alert": "DLQRateHigh",
        "expr": "sum(rate(flowbreaker_dlq_events_total[5m])) / (sum(rate(flowbreaker_actions_total[5m])) "
                "+ sum(rate(flowbreaker_dlq_events_total[5m]))) > 0.05",
        "for": "10m",
        "labels": {"severity": "warning"},
        "annotations": {
            "summary": "More than 5% of agent events are invalid",
            "description": "{{ $value | humanizePercentage }} of events on agent-actions go to "
                           "the dead-letter topic: those actions are not scored. See the "
                           "pipeline health dashboard for the reason codes.",
        },
    },
    {
        "alert": "ConsumerLagGrowing",
        "expr": "max by (partition) (flowbreaker_consumer_lag) > 1000 and "
                "max by (partition) (deriv(flowbreaker_consumer_lag[10m])) > 0",
        "for": "10m",
        "labels": {"severity": "warning"},
        "annotations": {
            "summary": "Consumer lag on partition {{ $labels.partition }} keeps growing",
            "description": "Partition {{ $labels.partition }} of agent-actions is "
                           "{{ $value | humanize }} messages behind and growing: decisions "
                           "and freezes come late. Add workers or check the slowest one.",
        },
    },
    {
        "alert": "WorkerDown",
        "expr": 'up{job="flowbreaker"} == 0',
        "for": "1m",
        "labels": {"severity": "critical"},
        "annotations": {
            "summary": "flowbreaker worker {{ $labels.instance }} is down",
            "description": "Prometheus cannot scrape {{ $labels.instance }}. Its partitions "
                           "are scored by the other workers after a rebalance; if it was "
                           "the only worker, no agent action is being checked.",
        },
    },
    {
        "alert": "ModelStale",
        "expr": "time() - max by (instance) (flowbreaker_model_trained_timestamp_seconds) "
                "> 30 * 86400",
        "for": "1h",
        "labels": {"severity": "warning"},
        "annotations": {
            "summary": "Worker {{ $labels.instance }} scores with a model older than 30 days",
            "description": "The model in use was trained {{ $value | humanizeDuration }} ago. "
                           "Agents' normal behaviour drifts: retrain and promote a model.",
        },
    },
]


def _block(text: str, indent: int) -> str:
    pad = " " * indent
    return "|-\n" + "\n".join(pad + line for line in text.splitlines())


def alerts_yaml() -> str:
    """The rule file, written by hand-rolled YAML: plain scalars for identifiers and
    durations, literal blocks (no escaping needed) for expressions and texts."""
    out = [
        "# Generated by dashboards/generate.py: edit that file, then run it.",
        "# Prometheus alerting rules for flowbreaker workers (job \"flowbreaker\").",
        "groups:",
        "  - name: flowbreaker",
        "    rules:",
    ]
    for rule in ALERT_RULES:
        out.append(f"      - alert: {rule['alert']}")
        out.append(f"        expr: {_block(rule['expr'], 10)}")
        out.append(f"        for: {rule['for']}")
        out.append("        labels:")
        out.extend(f"          {k}: {v}" for k, v in rule["labels"].items())
        out.append("        annotations:")
        out.extend(f"          {k}: {_block(v, 12)}" for k, v in rule["annotations"].items())
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------- queries

def iter_panels(dash: dict):
    """Every panel, including those nested in collapsed rows."""
    for p in dash.get("panels", []):
        yield p
        yield from p.get("panels", [])


def queries(dash: dict) -> list[tuple[str, str]]:
    """``(where, expression)`` for every query a dashboard runs: panel targets,
    annotations and query variables (``label_values(...)`` as written)."""
    found = []
    for p in iter_panels(dash):
        for t in p.get("targets", []):
            found.append((f"panel {p['id']} {p['title']!r} target {t['refId']}", t["expr"]))
    for a in dash.get("annotations", {}).get("list", []):
        if "expr" in a:
            found.append((f"annotation {a['name']!r}", a["expr"]))
    for v in dash.get("templating", {}).get("list", []):
        if v.get("type") == "query":
            found.append((f"variable {v['name']!r}", v["query"]))
    return found


GRAFANA_DEFAULTS = {"__rate_interval": "1m", "__range": "1h", "__interval": "15s"}


def expand(expr: str, **variables: str) -> str:
    """Substitute Grafana variables (``$x``, ``${x}``, ``${x:fmt}``) as Grafana would,
    for running a panel's query directly against Prometheus. Built-ins default to
    ``GRAFANA_DEFAULTS``; a variable not given raises ``KeyError``.

    >>> expand('rate(m{agent_id="$agent"}[$__rate_interval])', agent="a1")
    'rate(m{agent_id="a1"}[1m])'
    """
    values = {**GRAFANA_DEFAULTS, **variables}
    return re.sub(r"\$\{?(\w+)(?::\w+)?\}?", lambda m: values[m.group(1)], expr)


# --------------------------------------------------------------------------- files

def rendered() -> dict[Path, str]:
    """Every generated file and its exact content."""
    files = {
        GRAFANA_DIR / name: json.dumps(build(), indent=2, sort_keys=False) + "\n"
        for name, build in DASHBOARDS.items()
    }
    files[ALERTS_FILE] = alerts_yaml()
    return files


def stale() -> list[Path]:
    return [p for p, text in rendered().items()
            if not p.exists() or p.read_text(encoding="utf-8") != text]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="exit 1 if a generated file differs from the committed one")
    args = parser.parse_args(argv)
    if args.check:
        out_of_date = stale()
        for p in out_of_date:
            print(f"out of date: {p.relative_to(HERE.parent)}", file=sys.stderr)
        return 1 if out_of_date else 0
    GRAFANA_DIR.mkdir(exist_ok=True)
    for path, text in rendered().items():
        path.write_text(text, encoding="utf-8")
        print(path.relative_to(HERE.parent))
    return 0


if __name__ == "__main__":
    sys.exit(main())
