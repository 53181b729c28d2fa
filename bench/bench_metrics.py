"""What the worker's Prometheus metrics cost per decision: ``Metrics.observe`` and ``observe_batch``.

    python bench/bench_metrics.py [--agents 40] [--days 3] [--runs 5]

Prints numbers, asserts nothing. The decisions are a simulated fleet's (``flowbreaker simulate``, seed 1),
decided once by the engine; the metrics then count them with a registry of their own, the best of ``--runs``
passes shown. (``tests/unit/test_metrics.py`` holds the structure that keeps this cheap: no labelled child looked
up per routine decision.)
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import best_of  # noqa: E402  bench/harness.py: sys.path
from prometheus_client import CollectorRegistry  # noqa: E402

from detector.engine import Engine  # noqa: E402
from detector.events import decode_event  # noqa: E402
from models.simulate import simulate  # noqa: E402
from streams.worker.metrics import Metrics  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--agents", type=int, default=40)
    ap.add_argument("--days", type=int, default=3)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()

    events, _ = simulate(n_agents=args.agents, days=args.days, seed=1)
    decisions = [d for d in Engine().process_batch([decode_event(json.dumps(e).encode()) for e in events])
                 if not d.duplicate]
    n = len(decisions)
    now = max(d.event.t for d in decisions) + 1.0

    def one_by_one():
        m = Metrics(CollectorRegistry(), process_metrics=False)
        for d in decisions:
            m.observe(d.event, d, now - d.event.t)

    def batched():
        m = Metrics(CollectorRegistry(), process_metrics=False)
        for i in range(0, n, 512):
            m.observe_batch(decisions[i:i + 512], now)

    print(f"decisions: {n} ({args.agents} agents, {args.days} days)")
    for name, fn in (("observe, one call a decision", one_by_one), ("observe_batch, 512 a call", batched)):
        t = best_of(args.runs, fn)
        print(f"{name:30s} {t / n * 1e6:6.2f} us/decision  ({n / t:,.0f} decisions/s)")


if __name__ == "__main__":
    main()
