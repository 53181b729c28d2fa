"""``flowbreaker evaluate``: replay labelled events through one or two models and write a report
of detection quality (report.md, report.html, metrics.json and plots).

The file and engine shell around :mod:`models.evaluate`, which measures and writes the
report: this module reads the labels, the events (:mod:`streams.cli.sources`: invalid
lines are counted and skipped) and the models (``streams.cli.replay.load_engine``), so that
``models/`` never imports the shell. What is measured: :mod:`models.evaluate`.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from detector.errors import UsageError
from detector.policy import load_policy
from models.evaluate import LabelsError, evaluate_model, load_labels, one_line, write_report
from models.playback import parse_duration
from streams.cli.replay import analyst_for, load_engine
from streams.cli.sources import InvalidLines, read_file

__all__ = ["configure_parser", "run"]


def configure_parser(p: argparse.ArgumentParser) -> None:
    """Arguments of ``flowbreaker evaluate``."""
    p.add_argument("--model", required=True, metavar="MODEL_DIR", help="the model to evaluate (the candidate)")
    p.add_argument("--input", required=True, metavar="EVENTS.jsonl", help="action events, one JSON object per line")
    p.add_argument("--labels", required=True, metavar="LABELS.json",
                   help="labels (flowbreaker-labels/1, as `flowbreaker simulate` writes)")
    p.add_argument("--policy", metavar="P.toml", help="policy file (docs/contract.md, section 2)")
    p.add_argument("--baseline", metavar="OTHER_MODEL_DIR", help="another model, reported side by side")
    p.add_argument("--report", required=True, metavar="DIR",
                   help="directory for report.md, report.html, metrics.json and the plots")
    p.add_argument("--release-after", metavar="DURATION",
                   help="a simulated analyst releases every freeze this long (event time) after it, e.g. 1h, 30m, "
                        "90s or plain seconds; the report shows the figures with and without it (default: never)")
    p.add_argument("--analyst", metavar="LABELS.json",
                   help="a simulated analyst gives every freeze a verdict --analyst-delay after it (releasing it; "
                        "'confirmed' when its triggering event is an incident event of LABELS, else 'benign') and "
                        "every alert episode one --analyst-delay after it closes; the report shows the figures with "
                        "and without it, and the analyst's verdicts per agent-day")
    p.add_argument("--analyst-delay", metavar="DURATION", help="default 1h")
    p.add_argument("--quiet", action="store_true", help="do not report invalid lines one by one")


def run(args: argparse.Namespace) -> int:
    """Run ``flowbreaker evaluate``: 0 with the report written; :class:`UsageError` (exit 2) on a bad
    duration, labels file, model, policy or input, or a report directory it cannot write. Every
    input is checked before any scoring starts."""
    try:
        release_after = parse_duration(args.release_after) if args.release_after is not None else None
    except ValueError as err:
        raise UsageError(str(err)) from None
    try:
        labels = load_labels(args.labels)
    except LabelsError as err:
        raise UsageError(str(err)) from None
    analyst = analyst_for(getattr(args, "analyst", None), getattr(args, "analyst_delay", None))
    if analyst is not None and release_after is not None:
        raise UsageError("--analyst releases every freeze itself after --analyst-delay: drop --release-after")
    report = Path(args.report)
    if report.exists() and not report.is_dir():
        raise UsageError(f"--report {report} exists and is not a directory")
    # engines first: a broken model directory is an input error before any work is done
    specs = [("candidate", args.model)] + ([("baseline", args.baseline)] if args.baseline else [])
    engines = [(role, path, load_engine(path, args.policy)) for role, path in specs]
    policy = load_policy(args.policy)

    invalid = InvalidLines(args.input, quiet=args.quiet)
    events = read_file(args.input, on_error=invalid)
    if not events:
        raise UsageError(f"{args.input} has no valid events to evaluate")

    outbound = {ev.event_id for ev in events if ev.destinations}
    runs = [evaluate_model(role, path, engine, events, labels, policy, release_after=release_after, analyst=analyst,
                           fresh_engine=lambda path=path: load_engine(path, args.policy), outbound_ids=outbound)
            for role, path, engine in engines]
    models = [r.entry for r in runs]
    records, dup = runs[0].records, runs[0].duplicates
    meta = {
        "input": {"path": args.input, "events": len(events), "invalid_lines": invalid.count, "duplicates": dup,
                  "agents": len({r["agent_id"] for r in records}),
                  "agent_days": models[0]["metrics"]["false_freezes"]["agent_days"]},
        "labels": {"path": args.labels, "incidents": len(labels["incidents"]),
                   "lookalikes": len(labels.get("lookalikes", []))},
        "policy": args.policy,
        "release_after_s": release_after,
        "analyst": None if analyst is None else {"labels": args.analyst, "delay_s": analyst.delay},
    }
    try:
        out = write_report(report, meta, models, [r.scored for r in runs], thresholds=policy.thresholds)
    except OSError as err:
        raise UsageError(f"cannot write the report to {report}: {err.strerror or err}") from None
    for m in models:
        figures = [("", m["metrics"])]
        if "metrics_without_release" in m and analyst is not None:
            figures = [(f" (simulated analyst, verdicts after {analyst.delay:g} s)", m["metrics"]),
                       (" (no analyst, never released)", m["metrics_without_release"])]
        elif "metrics_without_release" in m:
            figures = [(f" (released after {release_after:g} s)", m["metrics"]),
                       (" (never released)", m["metrics_without_release"])]
        for tag, mm in figures:
            print(f"evaluate: {m['role']} {m['version']}{tag}: {one_line(mm)}", file=sys.stderr)
    print(f"evaluate: report written to {out}/report.html (and report.md, metrics.json)", file=sys.stderr)
    return 0
