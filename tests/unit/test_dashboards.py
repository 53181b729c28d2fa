"""dashboards/: Grafana JSON structure, metric names against Metrics().render(),
alert rules and Prometheus config checked by promtool."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from streams.worker.metrics import Metrics

REPO = Path(__file__).resolve().parents[2]
DASHBOARDS = REPO / "dashboards"
SCRIPT = REPO / "scripts" / "prometheus.sh"
DS = {"type": "prometheus", "uid": "${datasource}"}

# Grafana unit ids used on purpose (a typo would silently show raw numbers)
UNITS = {"short", "none", "s", "bytes", "Bps", "percentunit", "eps", "recps", "cpm", "dtdurations"}
PROMQL_FUNCTIONS = {
    "sum", "min", "max", "avg", "count", "topk", "bottomk", "quantile", "group", "stddev",
    "rate", "irate", "increase", "delta", "deriv", "changes", "resets", "histogram_quantile",
    "time", "vector", "scalar", "abs", "clamp_min", "clamp_max", "absent", "max_over_time",
    "min_over_time", "avg_over_time", "sum_over_time", "last_over_time", "predict_linear",
    "round", "sort", "sort_desc", "timestamp", "label_replace",
}
PROMQL_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool",
                   "and", "or", "unless", "offset"}
TARGET_LABELS = {"instance", "job"}
PROMETHEUS_METRICS = {"up": TARGET_LABELS}  # made by Prometheus itself, per target


def load_generator():
    spec = importlib.util.spec_from_file_location("flowbreaker_dashboards", DASHBOARDS / "generate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


generate = load_generator()
DASHBOARD_FILES = sorted((DASHBOARDS / "grafana").glob("*.json"))


def load(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


# ---------------------------------------------------------------- what a worker exposes

class Event:
    def __init__(self, agent_id, action="send", sensitivity="restricted", records=5, bytes=500,
                 destinations=()):
        self.agent_id, self.action, self.sensitivity = agent_id, action, sensitivity
        self.records, self.bytes, self.destinations = records, bytes, list(destinations)


class Decision:
    def __init__(self, agent_id, score, severity="ok", action_taken="none", reasons=(),
                 transition=None, freeze=None, dest_classes=()):
        self.record = {"event_id": "e", "agent_id": agent_id, "ts": "2025-01-01T00:00:00Z",
                       "score": score, "severity": severity, "reasons": list(reasons),
                       "action_taken": action_taken, "breaker_state": "closed",
                       "model_version": "v1"}
        self.transition, self.freeze, self.dest_classes = transition, freeze, tuple(dest_classes)


def exposed_metrics() -> dict[str, set[str]]:
    """Sample name -> label names, from a worker's metrics after a little traffic."""
    m = Metrics()
    dests = ["email:a@x", "slack:#all", "email:b@corp"]
    m.observe(Event("a1", destinations=dests),
              Decision("a1", 0.4, dest_classes=("external", "broadcast", "internal")), 0.02)
    m.observe(Event("a2", action="read", destinations=()), Decision("a2", 0.1), 0.01)
    m.observe(Event("a3"), Decision("a3", 0.95, "high", "alert",
                                    [{"feature": "volume", "value": 50, "baseline": 3, "detail": ""}]), 0.3)
    m.observe(Event("a4"), Decision("a4", 0.99, "critical", "freeze",
                                    [{"feature": "exfil", "value": 1, "baseline": 0, "detail": ""}],
                                    transition=("closed", "open"),
                                    freeze={"incident_id": "inc-1", "agent_id": "a4"}), 0.3)
    m.observe(Event("flowbreaker-drill-1"), Decision("flowbreaker-drill-1", 0.99, "critical", "freeze",
                                                     transition=("closed", "open"),
                                                     freeze={"incident_id": "inc-d", "agent_id": "x"}), 0.3)
    m.release()
    m.dlq("missing")
    m.duplicate()
    m.set_lag(0, 12)
    m.set_assignment([0])
    m.set_model("v1", "2025-01-01T00:00:00Z")
    m.set_worker("w1")
    names: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(m.render().decode()):
        for sample in family.samples:
            names.setdefault(sample.name, set()).update(sample.labels)
    for name in names:
        names[name] |= TARGET_LABELS
    names.update(PROMETHEUS_METRICS)
    return names


EXPOSED = exposed_metrics()


# ---------------------------------------------------------------- a small PromQL reader

STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
SELECTOR = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)?\s*\{([^}]*)\}")
MATCHER = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)")
IDENT = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")


def read_promql(expr: str) -> tuple[dict[str, set[str]], set[str], set[str]]:
    """(metric -> labels matched on it, grouping labels, functions called).

    Enough PromQL for our own expressions: selectors, grouping clauses, ranges,
    functions, binary operators. Not a parser for every PromQL program.
    """
    expr = STRING.sub('""', generate.expand(expr, agent="x"))
    grouping = set()
    for _, labels in GROUPING.findall(expr):
        grouping |= {label.strip() for label in labels.split(",") if label.strip()}
    expr = GROUPING.sub(" ", expr)
    metrics: dict[str, set[str]] = {}
    for name, body in SELECTOR.findall(expr):
        assert name, f"selector without a metric name in {expr!r}"
        metrics.setdefault(name, set()).update(label for label, _ in MATCHER.findall(body))
    expr = SELECTOR.sub(lambda m: f" {m.group(1)} ", expr)
    expr = re.sub(r"\[[^\]]*\]", " ", expr)
    expr = re.sub(r"\b\d+(\.\d+)?(e[+-]?\d+)?\b", " ", expr)
    functions = set()
    for m in IDENT.finditer(expr):
        word = m.group(0)
        if expr[m.end():].lstrip().startswith("("):
            functions.add(word)
        elif word not in PROMQL_KEYWORDS:
            metrics.setdefault(word, set())
    return metrics, grouping, functions


def check_expression(where: str, expr: str) -> None:
    if expr.startswith("label_values("):
        metric, label = re.fullmatch(r"label_values\((\w+),\s*(\w+)\)", expr).groups()
        assert metric in EXPOSED, f"{where}: unknown metric {metric}"
        assert label in EXPOSED[metric], f"{where}: {metric} has no label {label}"
        return
    metrics, grouping, functions = read_promql(expr)
    assert metrics, f"{where}: no metric in {expr!r}"
    assert functions <= PROMQL_FUNCTIONS, f"{where}: unknown functions {functions - PROMQL_FUNCTIONS}"
    known_labels = {"le"}
    for metric, labels in metrics.items():
        assert metric in EXPOSED, f"{where}: metric {metric} is not exposed by a worker"
        unknown = labels - EXPOSED[metric]
        assert not unknown, f"{where}: {metric} has no label(s) {unknown}"
        known_labels |= EXPOSED[metric]
    assert grouping <= known_labels, f"{where}: grouping by unknown label(s) {grouping - known_labels}"


def test_the_promql_reader_finds_metrics_labels_and_functions():
    metrics, grouping, functions = read_promql(
        'sum by (dest_class) (rate(flowbreaker_records_total{sensitivity=~"a|b", x="}"}[$__rate_interval]))'
        " * on (instance) group_left flowbreaker_worker_info > 0.5"
    )
    assert metrics == {"flowbreaker_records_total": {"sensitivity", "x"}, "flowbreaker_worker_info": set()}
    assert grouping == {"dest_class", "instance"}
    assert functions == {"sum", "rate"}


def test_a_misspelt_metric_is_caught():
    with pytest.raises(AssertionError, match="not exposed"):
        check_expression("test", "sum(rate(flowbreaker_action_total[5m]))")


def test_a_misspelt_label_is_caught():
    with pytest.raises(AssertionError, match="no label"):
        check_expression("test", 'sum(flowbreaker_records_total{dest_clas="external"})')


# ---------------------------------------------------------------- generated files

def test_the_committed_files_are_what_the_generator_produces():
    stale = generate.stale()
    assert not stale, f"run `python dashboards/generate.py` and commit: {[str(p) for p in stale]}"


def test_there_are_the_three_dashboards():
    assert [p.name for p in DASHBOARD_FILES] == [
        "agent-drilldown.json", "pipeline-health.json", "soc-overview.json",
    ]


@pytest.fixture(params=DASHBOARD_FILES, ids=lambda p: p.stem)
def dash(request) -> dict:
    return load(request.param)


def test_every_dashboard_has_a_prometheus_datasource_variable(dash):
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"


def test_panel_ids_are_unique(dash):
    ids = [p["id"] for p in generate.iter_panels(dash)]
    assert len(ids) == len(set(ids))
    assert all(isinstance(i, int) and i > 0 for i in ids)


def test_every_panel_and_target_uses_the_datasource_variable(dash):
    for p in generate.iter_panels(dash):
        if p["type"] == "row":
            continue
        assert p["datasource"] == DS, p["title"]
        assert p["targets"], p["title"]
        for t in p["targets"]:
            assert t["datasource"] == DS, p["title"]
        ref_ids = [t["refId"] for t in p["targets"]]
        assert len(ref_ids) == len(set(ref_ids)), p["title"]


def test_variables_and_annotations_use_the_datasource_variable(dash):
    for v in dash["templating"]["list"]:
        if v["type"] == "query":
            assert v["datasource"] == DS
    for a in dash["annotations"]["list"]:
        assert a["datasource"] == DS


def test_no_datasource_uid_is_hard_coded(dash):
    def walk(node):
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "datasource" and isinstance(value, dict):
                    assert value.get("uid") == "${datasource}", value
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)
    walk(dash)


def test_every_panel_has_a_title_a_description_and_a_unit(dash):
    for p in generate.iter_panels(dash):
        assert p["title"].strip()
        if p["type"] == "row":
            continue
        assert len(p["description"]) >= 40, p["title"]
        assert p["fieldConfig"]["defaults"]["unit"] in UNITS, p["title"]
        for override in p["fieldConfig"]["overrides"]:
            for prop in override["properties"]:
                if prop["id"] == "unit":
                    assert prop["value"] in UNITS, p["title"]


def test_panels_fit_the_grid_without_overlapping(dash):
    cells = set()
    for p in dash["panels"]:
        g = p["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24, p["title"]
        mine = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert not cells & mine, f"{p['title']} overlaps another panel"
        cells |= mine


def test_every_metric_and_label_in_a_dashboard_exists_on_a_worker(dash):
    found = generate.queries(dash)
    assert found
    for where, expr in found:
        check_expression(f"{dash['title']}: {where}", expr)


def test_links_point_at_existing_dashboards():
    uids = {load(p)["uid"] for p in DASHBOARD_FILES}
    assert len(uids) == len(DASHBOARD_FILES)
    for path in DASHBOARD_FILES:
        for link in re.findall(r'"url": "([^"]+)"', path.read_text()):
            uid = re.match(r"/d/([^/]+)/", link).group(1)
            assert uid in uids, f"{path.name}: link to unknown dashboard {uid}"


def test_the_drilldown_offers_the_listed_agents_as_a_variable():
    dash = load(DASHBOARDS / "grafana" / "agent-drilldown.json")
    agent = next(v for v in dash["templating"]["list"] if v["name"] == "agent")
    assert agent["query"] == "label_values(flowbreaker_agent_breaker_state, agent_id)"
    assert all("$agent" in expr for where, expr in generate.queries(dash)
               if where.startswith("panel") and "fleet" not in expr and "flowbreaker_agent_" in expr)


def test_the_soc_overview_counts_alert_episodes_not_alerted_actions():
    dash = load(DASHBOARDS / "grafana" / "soc-overview.json")
    exprs = {where: expr for where, expr in generate.queries(dash)}
    counting = [where for where, expr in exprs.items()
                if "flowbreaker_decisions_total" in expr and 'action_taken=~"alert' in expr]
    assert counting == [], "SOC panels counting alerted actions: " + ", ".join(counting)
    titles = {p["title"]: p for p in generate.iter_panels(dash)}
    for title in ("Alert episodes open now", "Alert episodes in range", "Alert episodes"):
        assert "flowbreaker_episodes" in titles[title]["targets"][0]["expr"], title
    assert "flowbreaker_verdicts_applied_total" in titles["Analyst verdicts"]["targets"][0]["expr"]
    storm = next(r for r in generate.ALERT_RULES if r["alert"] == "AlertStorm")
    assert "flowbreaker_episodes_total" in storm["expr"]


def test_the_episode_gauge_is_taken_with_max_because_every_worker_reads_the_whole_topic():
    dash = load(DASHBOARDS / "grafana" / "soc-overview.json")
    for where, expr in generate.queries(dash):
        if "flowbreaker_episodes_open" in expr:
            assert expr.startswith("max("), (where, expr)


# ---------------------------------------------------------------- alert rules and config

def test_the_required_alerts_exist():
    names = {r["alert"] for r in generate.ALERT_RULES}
    assert names == {"AgentFrozen", "AlertStorm", "DLQRateHigh", "ConsumerLagGrowing",
                     "WorkerDown", "ModelStale", "DrillAgentFrozen", "DrillFailed", "DrillStale"}
    for rule in generate.ALERT_RULES:
        assert rule["labels"]["severity"] in {"warning", "critical"} or rule["labels"] == {
            "severity": "info", "kind": "drill"}  # the alert a drill times, never a page
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]


def test_every_metric_in_an_alert_exists_on_a_worker():
    for rule in generate.ALERT_RULES:
        check_expression(rule["alert"], rule["expr"])


def test_alerts_yml_reads_back_as_the_rules():
    yaml = pytest.importorskip("yaml")
    loaded = yaml.safe_load((DASHBOARDS / "alerts.yml").read_text())
    assert loaded == {"groups": [{"name": "flowbreaker", "rules": generate.ALERT_RULES}]}


@pytest.fixture(scope="module")
def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        install = subprocess.run(["bash", str(SCRIPT), "install"], capture_output=True, text=True)
        path = shutil.which("promtool")
        if path is None:
            pytest.skip(f"promtool missing and cannot be installed: {install.stderr.strip()[-300:]}")
    return path


def run_promtool(promtool: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([promtool, *args], capture_output=True, text=True, timeout=60)


def test_promtool_accepts_the_alert_rules(promtool):
    result = run_promtool(promtool, "check", "rules", str(DASHBOARDS / "alerts.yml"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "9 rules found" in result.stdout + result.stderr


def test_promtool_accepts_the_committed_prometheus_config(promtool):
    result = run_promtool(promtool, "check", "config", str(DASHBOARDS / "prometheus.yml"))
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_script_writes_a_config_promtool_accepts_with_the_given_targets(promtool, tmp_path):
    env = {"PATH": "/usr/bin:/bin:/usr/local/bin", "FLOWBREAKER_PROM_DIR": str(tmp_path / "prom"),
           "FLOWBREAKER_PROM_TARGETS": "127.0.0.1:16066, 127.0.0.1:16067"}
    written = subprocess.run(["bash", str(SCRIPT), "config"], env=env, capture_output=True,
                             text=True, timeout=60)
    assert written.returncode == 0, written.stderr
    config = Path(written.stdout.strip())
    assert config == tmp_path / "prom" / "prometheus.yml"
    targets = json.loads((config.parent / "targets.json").read_text())
    assert targets == [{"targets": ["127.0.0.1:16066", "127.0.0.1:16067"], "labels": {}}]
    result = run_promtool(promtool, "check", "config", str(config))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 rule files found" in result.stdout + result.stderr


def test_the_script_rejects_a_malformed_target(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "FLOWBREAKER_PROM_DIR": str(tmp_path),
           "FLOWBREAKER_PROM_TARGETS": "127.0.0.1"}
    result = subprocess.run(["bash", str(SCRIPT), "config"], env=env, capture_output=True, text=True)
    assert result.returncode == 1
    assert "invalid target" in result.stderr


def test_the_script_status_is_3_when_not_running(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "FLOWBREAKER_PROM_DIR": str(tmp_path),
           "FLOWBREAKER_PROM_PORT": "1"}
    result = subprocess.run(["bash", str(SCRIPT), "status"], env=env, capture_output=True, text=True)
    assert result.returncode == 3


def test_grafana_provisioning_points_at_local_prometheus_without_uids():
    datasources = (DASHBOARDS / "provisioning" / "datasources.yml").read_text()
    assert "type: prometheus" in datasources
    assert "url: http://127.0.0.1:9090" in datasources
    assert not re.search(r"^\s*uid:", datasources, re.M)
    providers = (DASHBOARDS / "provisioning" / "dashboards.yml").read_text()
    assert "type: file" in providers and "path:" in providers
