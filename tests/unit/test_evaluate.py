"""Tests of ``flowbreaker evaluate`` (models/evaluate.py).

The hand-made set below has four agents and five labelled incidents whose
outcomes, rates, AUCs and delays were worked out by hand (see the comments);
the end-to-end test runs simulate -> train -> evaluate and checks that the
report is written and agrees with ``replay``'s decisions.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from detector.features import FEATURE_NAMES
from models.evaluate import (LabelsError, check_labels, event_labels, incident_outcomes, load_labels, summarize)
from streams.cli.main import main

REPO = Path(__file__).resolve().parents[2]
POLICY = REPO / "examples" / "policy.toml"


def rec(event_id, agent, ts, score, severity, action="none", state="closed"):
    return {"event_id": event_id, "agent_id": agent, "ts": ts, "score": score, "severity": severity,
            "action_taken": action, "breaker_state": state}


# scoring order; agent positions in brackets
RECORDS = [
    rec("a1", "a", "2026-03-02T09:00:00Z", 0.10, "ok"),                                # [0] benign
    rec("a2", "a", "2026-03-02T09:05:00Z", 0.30, "ok"),                                # [1] I1 preparatory
    rec("a3", "a", "2026-03-02T09:06:00Z", 0.97, "critical", "freeze", "open"),        # [2] I1 first harmful, frozen
    rec("a4", "a", "2026-03-02T09:07:00Z", 0.90, "high", "alert", "open"),             # [3] I1 harmful
    rec("b1", "b", "2026-03-02T10:00:00Z", 0.05, "ok"),                                # [0] benign
    rec("b2", "b", "2026-03-02T11:10:00+01:00", 0.60, "low"),                          # [1] I2 first harmful (10:10Z)
    rec("b3", "b", "2026-03-02T10:20:00Z", 0.20, "ok"),                                # [2] benign, interleaved
    rec("b4", "b", "2026-03-02T10:30:00Z", 0.80, "medium", "alert"),                   # [3] I2 harmful
    rec("b5", "b", "2026-03-02T10:40:00Z", 0.96, "critical", "freeze", "open"),        # [4] I2 harmful, frozen
    rec("c1", "c", "2026-03-02T11:00:00Z", 0.99, "critical", "freeze", "open"),        # false freeze
    rec("c2", "c", "2026-03-02T11:30:00Z", 0.40, "ok", "none", "open"),                # I3 first harmful, masked
    rec("c3", "c", "2026-03-02T12:00:00Z", 0.88, "high", "alert", "open"),             # I3 harmful
    rec("d1", "d", "2026-03-02T09:00:00Z", 0.86, "high", "alert"),                     # I4: high on the first harmful
    rec("d2", "d", "2026-03-02T09:10:00Z", 0.75, "medium", "alert"),                   # look-alike
    rec("d3", "d", "2026-03-02T09:20:00Z", 0.50, "ok"),                                # look-alike
    rec("a5", "a", "2026-03-03T10:00:00Z", 0.20, "ok", "none", "open"),                # [4] benign, a's second day
]

LABELS = {
    "format": "flowbreaker-labels/1",
    "incidents": [
        {"incident_id": "I1", "kind": "bulk", "agent_id": "a", "event_ids": ["a2", "a3", "a4"],
         "harmful_event_ids": ["a3", "a4"], "first_harmful_event_id": "a3"},
        {"incident_id": "I2", "kind": "drip", "agent_id": "b", "event_ids": ["b2", "b4", "b5"],
         "harmful_event_ids": ["b2", "b4", "b5"], "first_harmful_event_id": "b2"},
        {"incident_id": "I3", "kind": "drip", "agent_id": "c", "event_ids": ["c2", "c3"],
         "harmful_event_ids": ["c2", "c3"], "first_harmful_event_id": "c2"},
        {"incident_id": "I4", "kind": "fanout", "agent_id": "d", "event_ids": ["d1"],
         "harmful_event_ids": ["d1"], "first_harmful_event_id": "d1"},
        {"incident_id": "I5", "kind": "fanout", "agent_id": "e", "event_ids": ["zz1"],
         "harmful_event_ids": ["zz1"], "first_harmful_event_id": "zz1"},
    ],
    "lookalikes": [{"kind": "approved_export", "agent_id": "d", "event_ids": ["d2", "d3", "not-scored"]}],
}


@pytest.fixture(scope="module")
def outcomes():
    return {o["incident_id"]: o for o in incident_outcomes(RECORDS, LABELS)}


@pytest.fixture(scope="module")
def metrics():
    return summarize(RECORDS, LABELS)


def test_a_freeze_on_the_first_harmful_event_is_caught_first_with_no_delay(outcomes):
    o = outcomes["I1"]
    assert (o["outcome"], o["freeze_event_id"], o["delay_s"], o["delay_events"]) == ("first", "a3", 0.0, 0)
    assert o["harmful_done"] == 1 and o["harmful"] == 2 and o["max_score"] == 0.97


def test_a_freeze_three_events_after_the_first_harmful_one_is_caught_later(outcomes):
    o = outcomes["I2"]
    # b2 is 11:10+01:00 = 10:10Z; the freeze on b5 at 10:40Z, three of the agent's events later
    assert (o["outcome"], o["freeze_event_id"], o["delay_s"], o["delay_events"]) == ("later", "b5", 1800.0, 3)
    assert o["harmful_done"] == 3 and o["first_severity"] == "low"


def test_an_incident_on_an_agent_frozen_by_an_unrelated_freeze_is_masked_and_missed(outcomes):
    o = outcomes["I3"]
    assert (o["outcome"], o["masked"], o["freeze_event_id"], o["harmful_done"]) == ("missed", True, None, 2)


def test_a_high_severity_first_harmful_event_counts_as_caught_first_without_a_freeze(outcomes):
    o = outcomes["I4"]
    assert (o["outcome"], o["delay_s"], o["harmful_done"]) == ("first", None, 1)


def test_an_incident_absent_from_the_input_is_left_out(outcomes, metrics):
    assert outcomes["I5"]["outcome"] == "not_in_input"
    assert metrics["incidents"]["labelled"] == 5 and metrics["incidents"]["in_input"] == 4


def test_incident_counts_and_detection_rate(metrics):
    i = metrics["incidents"]
    assert (i["caught_first"], i["caught_later"], i["missed"], i["masked"]) == (2, 1, 1, 1)
    assert i["detection_rate"] == 0.75
    assert i["by_kind"] == {"bulk": {"first": 1, "later": 0, "missed": 0},
                            "drip": {"first": 0, "later": 1, "missed": 1},
                            "fanout": {"first": 1, "later": 0, "missed": 0}}


def test_false_freezes_are_counted_per_thousand_agent_days(metrics):
    # agent-days: a on 03-02 and 03-03, b, c, d on 03-02 = 5; one freeze (c1) outside incidents
    f = metrics["false_freezes"]
    assert (f["count"], f["agent_days"], f["per_1000_agent_days"], f["event_ids"]) == (1, 5, 200.0, ["c1"])


def test_alert_precision_counts_alerts_and_freezes_on_incident_events(metrics):
    # SOC-visible: a3 a4 b4 b5 c1 c3 d1 d2 = 8; on incident events: a3 a4 b4 b5 c3 d1 = 6; benign alerts on an
    # agent not frozen: d2 (c1 is a freeze), over 5 agent-days
    assert metrics["alerts"] == {"count": 8, "on_incident_events": 6, "precision": 0.75, "benign_alerted": 1,
                                 "benign_alerted_per_agent_day": 0.2}
    assert metrics["analyst"] is None
    assert metrics["freezes"] == {"count": 3, "on_incident_events": 2, "precision": 0.6667}


def test_event_level_positives_are_harmful_events_and_preparatory_events_are_left_out():
    y, s = event_labels(RECORDS, LABELS)
    assert len(y) == len(RECORDS) - 1  # a2 (preparatory) is neither
    assert int(y.sum()) == 8


def test_event_level_roc_auc_and_pr_auc_match_the_hand_computation(metrics):
    e = metrics["event_level"]
    # ROC: of 8 x 7 pairs, positives outrank negatives in 6+6+5+6+6+4+6+6 = 45 -> 45/56
    assert e["roc_auc"] == round(45 / 56, 4)
    # AP: positives at ranks 2,3,4,5,6,7,9,11 of the score order (c1, a negative, is first)
    ap = (1 / 2 + 2 / 3 + 3 / 4 + 4 / 5 + 5 / 6 + 6 / 7 + 7 / 9 + 8 / 11) / 8
    assert e["pr_auc"] == round(ap, 4)
    assert (e["positives"], e["negatives"], e["prevalence"]) == (8, 7, round(8 / 15, 4))


def test_detection_delay_summarises_the_frozen_incidents(metrics):
    assert metrics["detection_delay"] == {"frozen_incidents": 2, "median_s": 900.0, "max_s": 1800.0,
                                          "median_events": 1.5, "max_events": 3}


def test_lookalike_alerts_and_freezes_are_counted_per_kind(metrics):
    assert metrics["lookalikes"] == {"approved_export": {"events": 2, "alerts": 1, "freezes": 0}}


def test_one_class_inputs_give_no_auc_instead_of_failing():
    m = summarize(RECORDS[:1], {"format": "flowbreaker-labels/1", "incidents": [], "lookalikes": []})
    assert m["event_level"]["roc_auc"] is None and m["incidents"]["detection_rate"] is None


def test_labels_of_another_format_are_refused_with_one_line(tmp_path):
    with pytest.raises(LabelsError, match="format"):
        check_labels({"format": "other/1", "incidents": []})
    p = tmp_path / "l.json"
    p.write_text("{not json")
    with pytest.raises(LabelsError, match="is not JSON"):
        load_labels(p)
    with pytest.raises(LabelsError, match=r"incidents\[0\]\.event_ids"):
        check_labels({"format": "flowbreaker-labels/1", "incidents": [
            {"incident_id": "i", "kind": "k", "agent_id": "a", "event_ids": "x", "harmful_event_ids": [],
             "first_harmful_event_id": None}]})


# ---------------------------------------------------------------- command line, end to end
@pytest.fixture(scope="module")
def simulated(tmp_path_factory):
    from models.simulate import simulate, split_history

    d = tmp_path_factory.mktemp("eval")
    events, labels = simulate(n_agents=12, days=5, seed=4,
                              incidents=["bulk_read_broadcast", "mass_fanout", "mass_delete", "prompt_injection"])
    history, rest = split_history(events, labels)
    for name, evs in (("history.jsonl", history), ("events.jsonl", rest)):
        (d / name).write_text("".join(json.dumps(e) + "\n" for e in evs))
    (d / "events.jsonl").open("a").write("{not an event}\n")
    (d / "labels.json").write_text(json.dumps(labels))
    for out, seed in (("model", 0), ("other", 1)):
        assert main(["train", "--input", str(d / "history.jsonl"), "--policy", str(POLICY), "--out", str(d / out),
                     "--trees", "20", "--seed", str(seed), "--quiet"]) == 0
    return d


def test_evaluate_writes_a_self_contained_report_that_agrees_with_replay(simulated, capsys):
    d = simulated
    rc = main(["evaluate", "--model", str(d / "model"), "--baseline", str(d / "other"), "--policy", str(POLICY),
               "--input", str(d / "events.jsonl"), "--labels", str(d / "labels.json"), "--report", str(d / "rep"),
               "--quiet"])
    assert rc == 0
    err = capsys.readouterr().err
    assert "evaluate: candidate" in err and "evaluate: baseline" in err
    for name in ("report.md", "report.html", "metrics.json", "scores.png", "roc.png", "pr.png", "drift.png"):
        assert (d / "rep" / name).stat().st_size > 0, name
    html = (d / "rep" / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 4 and 'src="scores.png"' not in html
    md = (d / "rep" / "report.md").read_text()
    assert "![" in md and "(roc.png)" in md and "false freezes per 1,000 agent-days" in md
    doc = json.loads((d / "rep" / "metrics.json").read_text())
    assert doc["format"] == "flowbreaker-evaluation/1" and doc["input"]["invalid_lines"] == 1
    cand, base = doc["models"]
    assert (cand["role"], base["role"]) == ("candidate", "baseline") and cand["version"] != base["version"]
    assert len(cand["drift"]) == len(FEATURE_NAMES) and all(f["psi"] is None or f["psi"] >= 0 for f in cand["drift"])
    # the same numbers from replay's own output: one engine, the same code
    assert main(["replay", "--model", str(d / "model"), "--policy", str(POLICY), "--input", str(d / "events.jsonl"),
                 "--out", str(d / "decisions.jsonl"), "--quiet", "--gate"]) == 0
    records = [json.loads(line) for line in (d / "decisions.jsonl").read_text().splitlines()]
    labels = json.loads((d / "labels.json").read_text())
    outbound = set()
    for line in (d / "events.jsonl").read_text().splitlines():
        try:
            ev = json.loads(line)
        except ValueError:
            continue
        if ev.get("destinations"):
            outbound.add(ev["event_id"])
    assert json.loads(json.dumps(summarize(records, labels, outbound_ids=outbound))) == cand["metrics"]
    assert cand["metrics"]["gate"]["benign_outbound"] > 0


def test_release_after_releases_frozen_agents_so_they_can_be_frozen_again(simulated):
    from models.evaluate import score_events
    from streams.cli.replay import load_engine, read_events

    with open(simulated / "events.jsonl", "rb") as fh:
        events = list(read_events(fh))

    def run(release_after):
        records, _ = score_events(load_engine(str(simulated / "model"), str(POLICY)), events,
                                  release_after=release_after)
        return (sum(r["action_taken"] == "freeze" for r in records),
                sum(r["breaker_state"] == "open" for r in records))

    (freezes, frozen), (freezes_r, frozen_r) = run(None), run(60.0)
    assert freezes >= 1 and freezes_r > freezes and frozen_r < frozen


def test_release_after_is_recorded_in_the_report(simulated):
    d = simulated
    assert main(["evaluate", "--model", str(d / "model"), "--policy", str(POLICY), "--input", str(d / "events.jsonl"),
                 "--labels", str(d / "labels.json"), "--report", str(d / "rep2"), "--release-after", "600",
                 "--quiet"]) == 0
    doc = json.loads((d / "rep2" / "metrics.json").read_text())
    assert doc["release_after_s"] == 600 and len(doc["models"]) == 1
    assert "released after 600 s" in (d / "rep2" / "report.md").read_text()
    # with and without the simulated analyst, side by side
    assert "never released" in (d / "rep2" / "report.md").read_text()
    assert doc["models"][0]["metrics_without_release"]["freeze_outcomes"]["of"] == \
        doc["models"][0]["metrics"]["freeze_outcomes"]["of"]


def test_a_simulated_analyst_gives_verdicts_and_the_report_shows_them_beside_the_figures_without(simulated):
    d = simulated
    assert main(["evaluate", "--model", str(d / "model"), "--policy", str(POLICY), "--input", str(d / "events.jsonl"),
                 "--labels", str(d / "labels.json"), "--report", str(d / "rep3"), "--analyst", str(d / "labels.json"),
                 "--analyst-delay", "10m", "--quiet"]) == 0
    doc = json.loads((d / "rep3" / "metrics.json").read_text())
    assert doc["analyst"]["delay_s"] == 600 and doc["release_after_s"] is None
    m = doc["models"][0]
    assert m["metrics"]["analyst"]["verdicts"] >= 1 and m["metrics_without_release"]["analyst"] is None
    assert "simulated analyst, verdicts after 600 s" in (d / "rep3" / "report.md").read_text()


@pytest.mark.parametrize("change, message", [
    ({"--labels": "missing.json"}, "cannot read labels"),
    ({"--labels": "events.jsonl"}, "is not JSON"),
    ({"--model": "no-such-model"}, "does not exist"),
    ({"--input": "no-such-input.jsonl"}, "cannot read"),
    ({"--release-after": "-5"}, "--release-after: '-5' is not a duration"),
    ({"--release-after": "0h"}, "--release-after: '0h' must be a positive duration"),
    ({"--release-after": "soon"}, "--release-after: 'soon' is not a duration"),
    ({"--bogus": "1"}, "unrecognized arguments"),
])
def test_bad_input_exits_2_with_one_line(simulated, capsys, change, message):
    d = simulated
    args = {"--model": "model", "--input": "events.jsonl", "--labels": "labels.json", "--report": "rep-bad"}
    args.update(change)
    argv = ["evaluate"]
    for k, v in args.items():
        argv += [k, v if k in ("--release-after", "--bogus") else str(d / v)]
    try:
        rc = main(argv)
    except SystemExit as exit_:  # argparse
        rc = exit_.code
    assert rc == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err
    assert re.match(r"^flowbreaker( evaluate)?: (?!error)", err)
