"""What a runtime's pre-call question costs: ``FreezeGuard.may_proceed`` with many agents frozen.

    python bench/bench_guard.py [--frozen 10000] [--calls 200000] [--runs 3]

Prints numbers, asserts nothing. A guard without a broker (commands applied directly, as in
``tests/unit/test_guard.py``, which holds the structure: one lookup in the frozen set), ``--frozen`` agents
frozen, then ``--calls`` questions about an agent that is not frozen and as many about one that is; the best
of ``--runs``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import best_of  # noqa: E402  bench/harness.py: sys.path
from streams.clients.guard import FreezeGuard  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--frozen", type=int, default=10_000)
    ap.add_argument("--calls", type=int, default=200_000)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()

    g = FreezeGuard()
    for i in range(args.frozen):
        g.apply({"command": "freeze", "agent_id": f"agent-{i}", "incident_id": "inc-1",
                 "issued_at": "2026-03-02T09:00:00Z", "reason": "bench", "issued_by": "flowbreaker"})
    ask = g.may_proceed
    for agent in ("agent-x", "agent-7"):
        best = best_of(args.runs, lambda: [ask(agent) for _ in range(args.calls)]) / args.calls
        state = "frozen" if not ask(agent) else "free"
        print(f"may_proceed({agent!r}) ({state}, {args.frozen:,} frozen): {best * 1e9:6.0f} ns a call")


if __name__ == "__main__":
    main()
