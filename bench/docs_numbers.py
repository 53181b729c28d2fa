"""The numbers the documents quote from offline runs, computed and written into their marked blocks.

    python bench/docs_numbers.py                       # print every block
    python bench/docs_numbers.py --write [NAME ...]    # rewrite those blocks in their documents (default: all)

Each block sits in its document (:data:`DOCUMENT`) between ``<!-- docs-numbers:NAME ... -->``
and ``<!-- /docs-numbers:NAME -->``, and is exactly what :func:`render` prints for it;
``tests/unit/test_docs.py`` checks the form of every block and recomputes what is
cheap (the rule list on the committed fixture). Blocks:

``prevention``
    The pre-action check measured offline: for ``flowbreaker simulate`` seeds 0-3
    (defaults otherwise: 41 agents, 7 days, 7 incidents), ``flowbreaker train`` on the
    clean days and ``flowbreaker replay --gate`` on the rest with
    ``examples/policy.toml``; the incidents whose first harmful action got
    ``needs_approval`` or ``deny``, and ``needs_approval`` verdicts per 1,000 benign
    actions with destinations (:func:`models.evaluate.gate_summary`, the metric of
    ``bench/bench_detection.py``). About 25 s a seed on a loaded 2-core machine.
``public-fixture``
    What ``bench/bench_detection.py`` measures when the full public benchmark is not
    built: the reduced fixture committed in ``tests/fixtures/public`` (13 agents, 11
    incidents), the detector (train + ``replay --gate``) against the rule list
    (:mod:`bench.public.rules`). A few seconds.
``evaluate-simulator`` (docs/retraining.md)
    What ``flowbreaker evaluate`` reports for ``flowbreaker simulate``'s defaults
    (seed 0, trained on the clean days, ``examples/policy.toml``): the metrics of
    :func:`models.evaluate.summarize`. About 25 s.

A number here changes when detection changes: rerun with ``--write`` and commit the
README with the change that moved it.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
from contextlib import redirect_stderr
from io import StringIO
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

README = ROOT / "README.md"
RETRAINING = ROOT / "docs" / "retraining.md"
POLICY = ROOT / "examples" / "policy.toml"
FIXTURE = ROOT / "tests" / "fixtures" / "public"
SEEDS = (0, 1, 2, 3)

#: every block's header lines (a Markdown table's first two lines), then the pattern of each row
HEADER = {
    "prevention": ("| seed | first harmful actions held (needs_approval or deny) "
                   "| approvals asked per 1,000 benign outbound actions |\n|---|---|---|"),
    "public-fixture": "| metric | flowbreaker | rules |\n|---|---|---|",
    "evaluate-simulator": "| metric | value |\n|---|---|",
}
ROW = {
    "prevention": re.compile(r"^\| (\d+) \| (\d+) of (\d+) \| (\d+\.\d) \|$"),
    "public-fixture": re.compile(r"^\| ([a-z][a-z ,/0-9-]+) \| ([0-9./]+) \| ([0-9./]+) \|$"),
    "evaluate-simulator": re.compile(r"^\| ([a-zA-Z][a-zA-Z ,/0-9.-]+) \| ([0-9][0-9a-z ,/.%()-]*) \|$"),
}
#: the rows of ``public-fixture``: label -> how to read it from :func:`models.evaluate.summarize`'s metrics
FIXTURE_ROWS = {
    "caught at the first harmful action": lambda m: f"{m['freeze_outcomes']['caught_at_first_harmful']}/"
                                                    f"{m['freeze_outcomes']['of']}",
    "contained": lambda m: f"{m['freeze_outcomes']['contained']}/{m['freeze_outcomes']['of']}",
    "false freezes": lambda m: str(m["false_freezes"]["count"]),
    "look-alikes frozen": lambda m: f"{m['lookalikes_frozen']['frozen']}/{m['lookalikes_frozen']['of']}",
    "event roc-auc": lambda m: f"{m['event_level']['roc_auc']:.3f}",
    "pre-action check, first harmful actions held": lambda m: f"{m['gate']['first_harmful_held']}/{m['gate']['of']}",
    "approvals per 1,000 benign outbound actions": lambda m: f"{m['gate']['approvals_per_1000_benign_outbound']:.1f}",
}


def _pct(part: int, whole: int) -> str:
    return f"{100.0 * part / whole:.1f} % ({part} of {whole})" if whole else "n/a"


def _hours_or_seconds(s: float) -> str:
    return f"{s / 3600.0:.1f} h" if s >= 3600 else f"{s:.0f} s"


#: the rows of ``evaluate-simulator``: label -> how to read it from :func:`models.evaluate.summarize`'s metrics
EVALUATE_ROWS = {
    "incidents caught at the first harmful event / later / missed":
        lambda m: f"{m['incidents']['caught_first']} / {m['incidents']['caught_later']} / "
                  f"{m['incidents']['missed']} of {m['incidents']['in_input']}",
    "false freezes per 1,000 agent-days":
        lambda m: f"{m['false_freezes']['per_1000_agent_days']:.1f} ({m['false_freezes']['agent_days']} agent-days)",
    "alert precision": lambda m: _pct(m["alerts"]["on_incident_events"], m["alerts"]["count"]),
    "freeze precision": lambda m: _pct(m["freezes"]["on_incident_events"], m["freezes"]["count"]),
    "event-level ROC-AUC / PR-AUC":
        lambda m: f"{m['event_level']['roc_auc']:.3f} / {m['event_level']['pr_auc']:.3f} "
                  f"(prevalence {100.0 * m['event_level']['prevalence']:.1f} %)",
    "detection delay, median / max":
        lambda m: f"{_hours_or_seconds(m['detection_delay']['median_s'])}, "
                  f"{m['detection_delay']['median_events']:.0f} events / "
                  f"{_hours_or_seconds(m['detection_delay']['max_s'])}, "
                  f"{m['detection_delay']['max_events']:.0f} events",
}


def _cli(*argv: str) -> None:
    """One ``flowbreaker`` command in this process, its chatter swallowed; fails loudly."""
    from streams.cli.main import main

    err = StringIO()
    with redirect_stderr(err):
        rc = main(list(argv))
    if rc != 0:
        raise SystemExit(f"docs_numbers: flowbreaker {argv[0]} failed ({rc}): {err.getvalue().strip()[-500:]}")


def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _outbound(path: Path) -> set[str]:
    return {r["event_id"] for r in _records(path) if r.get("destinations")}


def detector_metrics(history: Path, events: Path, labels: Path, policy: Path, work: Path) -> dict:
    """``flowbreaker train`` on ``history``, ``replay --gate`` of ``events``, scored against ``labels``."""
    from models.evaluate import load_labels, summarize

    work.mkdir(parents=True, exist_ok=True)
    _cli("train", "--input", str(history), "--policy", str(policy), "--out", str(work / "model"), "--quiet")
    _cli("replay", "--model", str(work / "model"), "--policy", str(policy), "--gate", "--quiet",
         "--input", str(events), "--out", str(work / "decisions.jsonl"))
    return summarize(_records(work / "decisions.jsonl"), load_labels(labels), outbound_ids=_outbound(events))


def rules_metrics(history: Path, events: Path, labels: Path, policy: Path) -> dict:
    """The rule list (:mod:`bench.public.rules`) with the seen-sets of ``history``, scored like the detector."""
    from bench.public.rules import RuleBaseline
    from detector.events import decode_event
    from detector.policy import load_policy
    from models.evaluate import load_labels, summarize

    def read(path: Path):
        return [decode_event(line) for line in path.read_bytes().splitlines() if line.strip()]

    rb = RuleBaseline(load_policy(policy)).learn(read(history))
    recs = [rb.decide(ev, gate=True) for ev in read(events)]
    return summarize(recs, load_labels(labels), outbound_ids=_outbound(events))


def fixture_rules_column() -> list[str]:
    """The ``rules`` column of ``public-fixture`` (well under a second: no training)."""
    m = rules_metrics(FIXTURE / "history.jsonl", FIXTURE / "events.jsonl", FIXTURE / "labels.json",
                      FIXTURE / "policy.toml")
    return [fn(m) for fn in FIXTURE_ROWS.values()]


def public_fixture(work: Path) -> list[str]:
    m = detector_metrics(FIXTURE / "history.jsonl", FIXTURE / "events.jsonl", FIXTURE / "labels.json",
                         FIXTURE / "policy.toml", work / "fixture")
    return [f"| {label} | {fn(m)} | {rule} |" for (label, fn), rule in zip(FIXTURE_ROWS.items(),
                                                                             fixture_rules_column())]


def prevention(work: Path) -> list[str]:
    rows = []
    for seed in SEEDS:
        d = work / f"seed{seed}"
        d.mkdir(parents=True, exist_ok=True)
        _cli("simulate", "--seed", str(seed), "--out", str(d / "events.jsonl"), "--history-out",
             str(d / "history.jsonl"), "--labels", str(d / "labels.json"))
        g = detector_metrics(d / "history.jsonl", d / "events.jsonl", d / "labels.json", POLICY, d)["gate"]
        rows.append(f"| {seed} | {g['first_harmful_held']} of {g['of']} | "
                    f"{g['approvals_per_1000_benign_outbound']:.1f} |")
    return rows


def evaluate_simulator(work: Path) -> list[str]:
    work.mkdir(parents=True, exist_ok=True)
    _cli("simulate", "--out", str(work / "events.jsonl"), "--history-out", str(work / "history.jsonl"),
         "--labels", str(work / "labels.json"))
    m = detector_metrics(work / "history.jsonl", work / "events.jsonl", work / "labels.json", POLICY, work)
    return [f"| {label} | {fn(m)} |" for label, fn in EVALUATE_ROWS.items()]


BLOCKS = {"prevention": prevention, "public-fixture": public_fixture, "evaluate-simulator": evaluate_simulator}
#: the document each block is in
DOCUMENT = {"prevention": README, "public-fixture": README, "evaluate-simulator": RETRAINING}


def render(name: str, rows: list[str]) -> str:
    """A block's text: its header, then its rows (each matching ``ROW[name]``)."""
    bad = [r for r in rows if not ROW[name].match(r)]
    if bad:
        raise ValueError(f"{name}: rows not of the block's form: {bad}")
    return "\n".join([HEADER[name], *rows])


def marked(text: str, name: str) -> tuple[int, int]:
    """Where block ``name``'s content starts and ends in ``text`` (between its two markers)."""
    m = re.search(rf"<!-- docs-numbers:{re.escape(name)}\b[^>]*-->\n(.*?)<!-- /docs-numbers:{re.escape(name)} -->",
                  text, re.S)
    if m is None:
        raise ValueError(f"no docs-numbers block {name!r} in {DOCUMENT[name].relative_to(ROOT)}")
    return m.start(1), m.end(1)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("names", nargs="*", metavar="NAME", help=f"blocks (default all: {', '.join(BLOCKS)})")
    p.add_argument("--write", action="store_true", help="rewrite the blocks in README.md")
    p.add_argument("--work", metavar="DIR", help="where the runs write (default: a temporary directory)")
    args = p.parse_args(argv)
    unknown = [n for n in args.names if n not in BLOCKS]
    if unknown:
        p.error(f"unknown block {unknown[0]!r} (known: {', '.join(BLOCKS)})")
    with tempfile.TemporaryDirectory(prefix="fb-docs-numbers-") as tmp:
        work = Path(args.work or tmp)
        for name in args.names or list(BLOCKS):
            block = render(name, BLOCKS[name](work / name))
            if args.write:
                doc = DOCUMENT[name]
                text = doc.read_text()
                start, end = marked(text, name)
                doc.write_text(text[:start] + block + "\n" + text[end:])
                print(f"docs_numbers: block {name!r} of {doc.relative_to(ROOT)} written", file=sys.stderr)
            else:
                print(f"<!-- docs-numbers:{name} -->\n{block}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
