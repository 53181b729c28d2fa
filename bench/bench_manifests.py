"""What intended-use manifests add to the pre-action check, measured offline.

    python bench/bench_manifests.py [--seeds 0,1,2,3] [--public DIR] [--work DIR] [--margin 2]
                                    [--release-after 3600] [--json OUT]

For each dataset, as an operator would: ``flowbreaker train`` on the clean history,
``flowbreaker manifest suggest`` from the same history (least privilege with its
default margins), then the stream in order through one engine, asking just before
each action with destinations and each delete (what ``replay --gate --manifests``
does, with a simulated analyst releasing every freeze an hour later as
``--release-after 1h``) both the learned check (:class:`detector.gate.Gate`) and the manifests
(:class:`detector.manifest.ManifestGate`'s violations, ceilings over the agent's
sliding usage since the start of its history; a held action of an incident is taken
as not performed, as an analyst would deny it, every other action as performed,
allowed or approved). Printed per dataset:

- incidents whose first harmful action is held (``needs_approval`` or ``deny``)
  by the manifests alone, by the learned check alone, by both, by neither (and
  those whose first harmful action is not an outbound action or a delete, which no
  pre-action check sees);
- approvals asked per 1,000 benign outbound actions (with destinations, in no
  incident): learned check alone, manifests alone, both together;
- which clauses held the first harmful actions, and which asked for the benign
  approvals.

Datasets: the simulator (``flowbreaker simulate`` defaults per seed,
``examples/policy.toml``) and the public benchmark (``~/.cache/flowbreaker/public-bench``
when built, else the reduced fixture ``tests/fixtures/public``).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from detector.engine import Engine  # noqa: E402
from detector.gate import Gate  # noqa: E402
from detector.manifest import ManifestGate, Usage  # noqa: E402
from detector.policy import load_policy  # noqa: E402
from models.playback import Playback  # noqa: E402
from models.store import load_model  # noqa: E402
from streams.cli.main import main as cli  # noqa: E402
from streams.manifests import load_path  # noqa: E402
from streams.cli.replay import read_events  # noqa: E402

FULL = Path.home() / ".cache" / "flowbreaker" / "public-bench"
FIXTURE = ROOT / "tests" / "fixtures" / "public"
HELD = ("needs_approval", "deny")


def HELD_ANY(*verdicts: str) -> bool:  # noqa: N802 - reads as the constant above
    return any(v in HELD for v in verdicts)


def _events(path: Path) -> list:
    with open(path, "rb") as fh:
        return list(read_events(fh))


class _Both:
    """A gate for :class:`models.playback.Playback` that asks the learned check and the manifests
    separately and remembers both answers (``last``); the combined verdict is what it returns."""

    def __init__(self, learned: Gate, both: ManifestGate) -> None:
        self.learned, self.both, self.last = learned, both, None

    def verdict(self, ev):
        if not ev.destinations and ev.action != "delete":
            return None
        lv = self.learned.check(ev)[0]
        found = self.both.violations(ev)  # also for a frozen agent: what the manifests alone would say
        if any(v.on_violation == "deny" for v in found):
            mv = "deny"
        elif found and ev.approval_id is None:
            mv = "needs_approval"
        else:
            mv = "allow"
        self.last = (lv, mv, found)
        order = ("allow", "needs_approval", "deny")
        return max(lv, mv, key=order.index)


def measure(history: Path, events: Path, labels_path: Path, policy_path: Path, work: Path, *,
            margin: float, release_after: float | None) -> dict:
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    assert cli(["train", "--input", str(history), "--policy", str(policy_path), "--out", str(work / "model"),
                "--quiet"]) == 0
    assert cli(["manifest", "suggest", "--input", str(history), "--policy", str(policy_path), "--out",
                str(work / "manifests"), "--margin", str(margin), "--quiet"]) == 0
    policy = load_policy(policy_path)
    book = load_path(work / "manifests")[0]
    engine = Engine(policy=policy, model=load_model(work / "model"))
    usage: dict[str, Usage] = {}
    for ev in _events(history):  # what each agent sent out before the stream starts
        if ev.destinations:
            usage.setdefault(ev.agent_id, Usage()).add(ev.t, ev.records, ev.bytes)
    learned = Gate(engine)
    both = ManifestGate(learned, book, usage_of=lambda a: usage.get(a))
    seen = _Both(learned, both)
    playback = Playback(engine, gate=seen, release_after=release_after)
    labels = json.loads(labels_path.read_text())
    incident_ids = {e for i in labels["incidents"] for e in i["event_ids"]}
    firsts = {i["first_harmful_event_id"]: i for i in labels["incidents"]}
    rows: dict[str, dict] = {}
    benign = Counter()
    benign_clauses: Counter = Counter()
    for ev in _events(events):
        seen.last = None
        playback.step(ev)  # releases due agents, asks the gate just before the action, then decides
        lv, mv, found = seen.last or ("allow", "allow", [])
        if seen.last is not None:
            if ev.event_id in firsts:
                rows[ev.event_id] = {"kind": firsts[ev.event_id]["kind"], "learned": lv in HELD,
                                     "manifests": mv in HELD, "clauses": sorted({v.clause for v in found})}
            elif ev.event_id not in incident_ids and ev.destinations:
                benign["outbound"] += 1
                benign["learned"] += lv == "needs_approval"
                benign["manifests"] += mv == "needs_approval"
                benign["both"] += "needs_approval" in (lv, mv) and "deny" not in (lv, mv)
                benign["denied"] += "deny" in (lv, mv)
                if mv == "needs_approval":
                    benign_clauses.update({v.clause for v in found})
        # what was sent out: a held harmful action is not (the analyst denies it); everything else is (allowed,
        # or held and approved), so an incident's volume does not spend its agent's ceilings for the rest of the day
        if ev.destinations and not (ev.event_id in incident_ids and HELD_ANY(lv, mv)):
            usage.setdefault(ev.agent_id, Usage()).add(ev.t, ev.records, ev.bytes)
    inc = Counter()
    for fid, i in firsts.items():
        r = rows.get(fid)
        if r is None:
            inc["not_gated"] += 1
            continue
        inc["both" if r["learned"] and r["manifests"] else "manifests_only" if r["manifests"]
            else "learned_only" if r["learned"] else "neither"] += 1
    per_k = lambda n: round(1000.0 * n / benign["outbound"], 2) if benign["outbound"] else None  # noqa: E731
    return {
        "incidents": len(firsts), "held": dict(inc),
        "first_harmful": {fid: r for fid, r in rows.items()},
        "benign_outbound": benign["outbound"],
        "approvals_per_1000": {"learned": per_k(benign["learned"]), "manifests": per_k(benign["manifests"]),
                               "both": per_k(benign["both"])},
        "benign_denied": benign["denied"],
        "benign_approval_clauses": dict(benign_clauses.most_common()),
        "manifests": len(book), "seconds": round(time.time() - t0, 1),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="0,1,2,3")
    ap.add_argument("--public", type=Path, default=FULL if (FULL / "events.jsonl").exists() else FIXTURE)
    ap.add_argument("--work", type=Path, default=None)
    ap.add_argument("--margin", type=float, default=2.0)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--release-after", type=float, default=3600.0, metavar="SECONDS",
                    help="a simulated analyst releases every freeze this long after it (default 3600; 0: never)")
    args = ap.parse_args(argv)
    work = args.work or Path(tempfile.mkdtemp(prefix="fb-bench-manifests-"))
    results = {}
    for seed in [int(s) for s in args.seeds.split(",") if s.strip()]:
        d = work / f"sim-{seed}"
        d.mkdir(parents=True, exist_ok=True)
        assert cli(["simulate", "--out", str(d / "events.jsonl"), "--history-out", str(d / "history.jsonl"),
                    "--labels", str(d / "labels.json"), "--seed", str(seed)]) == 0
        results[f"simulator seed {seed}"] = measure(d / "history.jsonl", d / "events.jsonl", d / "labels.json",
                                                    ROOT / "examples" / "policy.toml", d, margin=args.margin,
                                                    release_after=args.release_after or None)
        print(f"simulator seed {seed}: {results[f'simulator seed {seed}']['held']}", file=sys.stderr)
    if args.public and (args.public / "events.jsonl").exists():
        p = args.public
        results[f"public ({p.name})"] = measure(p / "history.jsonl", p / "events.jsonl", p / "labels.json",
                                                p / "policy.toml", work / "public", margin=args.margin,
                                                release_after=args.release_after or None)
    print("| dataset | first harmful actions held: manifests only / learned only / both / neither / "
          "not pre-checked | approvals per 1,000 benign outbound: learned / manifests / both |")
    print("|---|---|---|")
    for name, r in results.items():
        h = r["held"]
        a = r["approvals_per_1000"]
        print(f"| {name} | {h.get('manifests_only', 0)} / {h.get('learned_only', 0)} / {h.get('both', 0)} / "
              f"{h.get('neither', 0)} / {h.get('not_gated', 0)} of {r['incidents']} | "
              f"{a['learned']} / {a['manifests']} / {a['both']} (of {r['benign_outbound']:,}) |")
    for name, r in results.items():
        print(f"\n{name}: benign approvals by clause {r['benign_approval_clauses']}; benign denied "
              f"{r['benign_denied']}; {r['manifests']} manifests; {r['seconds']} s")
        for fid, row in r["first_harmful"].items():
            print(f"  {row['kind']:<22} learned={'held' if row['learned'] else '-':<5} "
                  f"manifests={'held' if row['manifests'] else '-':<5} {', '.join(row['clauses'])}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
