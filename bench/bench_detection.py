"""Detection quality on the simulator and on the public-data benchmark, in one table.

    python bench/bench_detection.py [--public DIR] [--work DIR] [--release-after 1h] [--json OUT]

For each dataset it does what a new user would: ``flowbreaker train`` on the clean
history, ``flowbreaker replay --gate`` on the stream, the same replay with
``--release-after 1h`` (a simulated analyst releases every freeze an hour later),
the same replay with ``--analyst LABELS --analyst-delay 1h`` (a simulated analyst
gives every freeze and every alert episode a verdict an hour later: issue 18),
and the rule baseline (:mod:`bench.public.rules`, seen-sets from the same history),
then scores all decision files with the metrics of ``flowbreaker evaluate``
(:func:`models.evaluate.summarize`) and prints one Markdown table.

Datasets: the simulator (``flowbreaker simulate`` defaults, trained on its clean
days, ``examples/policy.toml``) and the public benchmark: the full build in
``~/.cache/flowbreaker/public-bench`` (``python -m bench.public.build``) if present,
else the reduced fixture committed in ``tests/fixtures/public``; and that benchmark with
the churn of a real fleet added (``bench/public/churn.py``: a tool rolled out to a role,
new payees and colleagues, new agents, a long-lived assistant whose work drifts), unless
``--skip-churn``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.public.rules import RuleBaseline  # noqa: E402
from detector.policy import load_policy  # noqa: E402
from models.evaluate import load_labels, summarize  # noqa: E402
from streams.cli.main import main as cli  # noqa: E402
from streams.cli.replay import read_events  # noqa: E402

FULL = Path.home() / ".cache" / "flowbreaker" / "public-bench"
FIXTURE = ROOT / "tests" / "fixtures" / "public"


def _events(path: Path):
    with open(path, "rb") as fh:
        return list(read_events(fh))


def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _run(*argv: str) -> None:
    rc = cli(list(argv))
    if rc != 0:
        raise SystemExit(f"bench_detection: flowbreaker {argv[0]} failed ({rc})")


def evaluate_dataset(name: str, history: Path, stream: Path, labels_path: Path, policy: Path, work: Path,
                     release_after: str) -> list[tuple[str, dict, float]]:
    """``[(column, metrics, seconds)]`` for the detector, the detector with releases, and the rules."""
    work.mkdir(parents=True, exist_ok=True)
    labels = load_labels(labels_path)
    events = _events(stream)
    outbound = {ev.event_id for ev in events if ev.destinations}
    cols = []
    t0 = time.perf_counter()
    _run("train", "--input", str(history), "--policy", str(policy), "--out", str(work / "model"))
    t_train = time.perf_counter() - t0
    verdicts = work / "verdicts.jsonl"
    for tag, extra, out in (
            ("flowbreaker", [], "decisions.jsonl"),
            (f"flowbreaker, release {release_after}", ["--release-after", release_after], "decisions-release.jsonl"),
            (f"flowbreaker, analyst {release_after}", ["--analyst", str(labels_path), "--analyst-delay", release_after,
                                                       "--verdicts-out", str(verdicts)], "decisions-analyst.jsonl")):
        out = work / out
        t0 = time.perf_counter()
        _run("replay", "--model", str(work / "model"), "--policy", str(policy), "--gate", "--quiet",
             "--input", str(stream), "--out", str(out), *extra)
        given = len(_records(verdicts)) if "--analyst" in extra else None
        cols.append((f"{name}: {tag}", summarize(_records(out), labels, outbound_ids=outbound, verdicts=given),
                     time.perf_counter() - t0 + (t_train if not extra else 0.0)))
    t0 = time.perf_counter()
    rb = RuleBaseline(load_policy(policy)).learn(_events(history))
    recs = [rb.decide(ev, gate=True) for ev in events]
    cols.append((f"{name}: rules", summarize(recs, labels, outbound_ids=outbound), time.perf_counter() - t0))
    return cols


def table(cols: list[tuple[str, dict, float]]) -> str:
    def f(v, nd=3):
        return "n/a" if v is None else (f"{v:.{nd}f}" if isinstance(v, float) else str(v))

    rows = [
        ("caught at first harmful action", lambda m: f"{m['freeze_outcomes']['caught_at_first_harmful']}/"
                                                     f"{m['freeze_outcomes']['of']}"),
        ("contained", lambda m: f"{m['freeze_outcomes']['contained']}/{m['freeze_outcomes']['of']}"),
        ("stopped before harm", lambda m: f"{m['freeze_outcomes']['stopped_before_harm']}/{m['freeze_outcomes']['of']}"),
        ("false freezes (agents)", lambda m: f"{m['false_freezes']['count']} ({m['false_freezes']['agents']})"),
        ("false freezes / 1,000 agent-days", lambda m: f"{f(m['false_freezes']['per_1000_agent_days'], 1)} "
                                                       f"({m['false_freezes']['agent_days']} agent-days)"),
        ("look-alikes frozen", lambda m: f"{m['lookalikes_frozen']['frozen']}/{m['lookalikes_frozen']['of']}"),
        ("benign actions alerted / agent-day (agent not frozen)",
         lambda m: f"{f(m['alerts']['benign_alerted_per_agent_day'], 2)} ({m['alerts']['benign_alerted']})"),
        ("analyst's verdicts / agent-day", lambda m: f"{f(m['analyst']['per_agent_day'], 2)} "
                                                     f"({m['analyst']['verdicts']})" if m.get("analyst") else "n/a"),
        ("event ROC-AUC", lambda m: f(m["event_level"]["roc_auc"])),
        ("event PR-AUC", lambda m: f(m["event_level"]["pr_auc"])),
        ("gate: first harmful held", lambda m: f"{m['gate']['first_harmful_held']}/{m['gate']['of']}"
         if m.get("gate") else "n/a"),
        ("gate: approvals / 1,000 benign outbound", lambda m: f(m["gate"]["approvals_per_1000_benign_outbound"], 1)
         if m.get("gate") else "n/a"),
        ("alert precision", lambda m: f(m["alerts"]["precision"])),
        ("caught first (freeze or high severity)", lambda m: f"{m['incidents']['caught_first']}/"
                                                             f"{m['incidents']['in_input']}"),
    ]
    out = ["| metric | " + " | ".join(c[0] for c in cols) + " |", "|---|" + "---|" * len(cols)]
    for label, fn in rows:
        out.append(f"| {label} | " + " | ".join(fn(c[1]) for c in cols) + " |")
    out.append("| seconds (train + replay) | " + " | ".join(f"{c[2]:.1f}" for c in cols) + " |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--public", metavar="DIR", help="public benchmark directory (default: the full build if present, "
                                                   "else tests/fixtures/public)")
    p.add_argument("--work", metavar="DIR", default="/tmp/fb-bench-detection")
    p.add_argument("--release-after", default="1h")
    p.add_argument("--json", metavar="OUT", help="also write all metrics as JSON")
    p.add_argument("--skip-simulator", action="store_true")
    p.add_argument("--skip-churn", action="store_true", help="leave out the public benchmark with churn added "
                                                             "(bench/public/churn.py)")
    args = p.parse_args(argv)
    work = Path(args.work)
    cols = []
    if not args.skip_simulator:
        sim = work / "sim"
        sim.mkdir(parents=True, exist_ok=True)
        _run("simulate", "--out", str(sim / "events.jsonl"), "--history-out", str(sim / "history.jsonl"),
             "--labels", str(sim / "labels.json"))
        cols += evaluate_dataset("simulator", sim / "history.jsonl", sim / "events.jsonl", sim / "labels.json",
                                 ROOT / "examples" / "policy.toml", sim, args.release_after)
    pub = Path(args.public) if args.public else (FULL if (FULL / "labels.json").is_file() else FIXTURE)
    name = "public fixture" if pub.resolve() == FIXTURE.resolve() else "public"
    cols += evaluate_dataset(name, pub / "history.jsonl", pub / "events.jsonl", pub / "labels.json",
                             pub / "policy.toml", work / "public", args.release_after)
    if not args.skip_churn:  # the same benchmark with a fleet's legitimate change added (issue 18)
        from bench.public.churn import main as churn

        churned = work / "public-churn-data"
        if churn(["--bench", str(pub), "--out", str(churned)]) != 0:
            raise SystemExit("bench_detection: bench.public.churn failed")
        cols += evaluate_dataset(f"{name} + churn", churned / "history.jsonl", churned / "events.jsonl",
                                 churned / "labels.json", churned / "policy.toml", work / "public-churn",
                                 args.release_after)
        from bench.public.churn import breakdown, breakdown_table, kinds_of_change

        kinds = kinds_of_change(_records(churned / "events.jsonl"),
                                json.loads((churned / "manifest.json").read_text())["churn"])
        churn_cols = [(tag, breakdown(_records(work / "public-churn" / f), kinds)) for tag, f in (
            ("flowbreaker", "decisions.jsonl"), (f"release {args.release_after}", "decisions-release.jsonl"),
            (f"analyst {args.release_after}", "decisions-analyst.jsonl")) if (work / "public-churn" / f).is_file()]
    print(f"public benchmark: {pub}")
    print(table(cols))
    if not args.skip_churn:
        print(f"\n{name} + churn, by kind of change: alerts / freezes / approvals asked (events)")
        print(breakdown_table(churn_cols))
    if args.json:
        Path(args.json).write_text(json.dumps({c[0]: c[1] for c in cols}, indent=1, default=str) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
