"""Instructions per event of a trained replay, counted by valgrind's callgrind: a measure that other work on a
shared machine does not move (wall and CPU time here move 30-50 % between runs).

    python bench/bench_instructions.py [--agents 40] [--days 7] [--events 3000] [--top 25]

Needs valgrind (``apt-get install valgrind``); takes about a minute. The events and the model are
bench/bench_replay.py's (``workload``: the simulator's fleet, trained on its first 60 %); the loop is its "replay,
trained model" (``replay_pass``: decode, ``Engine.process_batch`` in chunks as ``flowbreaker replay`` runs it, the
decision records encoded). The interpreter's start, the imports and loading the model are taken out by counting
two runs, one and three passes over the first ``--events`` events (each pass a new engine), and halving the
difference (numpy's BLAS kept to one thread: its idle threads spin).
``--top`` prints that difference by C function too (the interpreter's own loop is ``_PyEval_EvalFrameDefault``:
the engine's Python). The same count of msgspec's typed decode of the same lines (issue 20's denominator, each
decoded event freed as bench_replay.py's timing frees it) gives the ratio in instructions, which no other work
moves; the ratio in time (bench_replay.py) is larger, as a decode runs more instructions a cycle than the engine.
Prints numbers; asserts nothing.
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

#: the replay loop run under callgrind: python -c LOOP ROOT EVENTS_FILE MODEL_DIR PASSES
LOOP = """
import sys
sys.path.insert(0, sys.argv[1])
from bench.bench_replay import replay_pass
from models.store import load_model
from streams.gc_tuning import tune
lines = open(sys.argv[2], "rb").read().splitlines()
model = load_model(sys.argv[3])
tune()
for _ in range(int(sys.argv[4])):
    replay_pass(lines, model)
"""

#: msgspec's typed decode of the same lines (bench_replay.py's "typed decode": a chunk at a time, as replay reads),
#: run under callgrind the same way
TYPED = """
import sys
sys.path.insert(0, sys.argv[1])
import msgspec
from detector.events import ActionEvent
from streams.cli.replay import _CHUNK
from streams.gc_tuning import tune
lines = open(sys.argv[2], "rb").read().splitlines()
decode = msgspec.json.Decoder(ActionEvent).decode
tune()
for _ in range(int(sys.argv[4])):
    for i in range(0, len(lines), _CHUNK):
        [decode(x) for x in lines[i:i + _CHUNK]]
"""


def counted(tmp: Path, passes: int, loop: str = LOOP) -> tuple[int, Path]:
    """Instructions of ``loop`` run ``passes`` times, and callgrind's output file."""
    out = tmp / f"callgrind.{passes}.{len(loop)}"
    run = subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", sys.executable, "-c", loop,
                          str(ROOT), str(tmp / "events.jsonl"), str(tmp / "model"), str(passes)],
                         capture_output=True, text=True, env={**os.environ, "OPENBLAS_NUM_THREADS": "1"})
    found = re.search(r"Collected : (\d+)", run.stderr)
    if run.returncode != 0 or found is None:
        sys.exit(f"valgrind failed ({run.returncode}): {run.stderr[-500:]}")
    return int(found.group(1)), out


def by_function(path: Path) -> collections.Counter:
    """Instructions by C function (self cost) in a callgrind output file."""
    text = subprocess.run(["callgrind_annotate", "--threshold=100", str(path)], capture_output=True,
                          text=True).stdout
    got: collections.Counter = collections.Counter()
    for line in text.splitlines():
        m = re.match(r"\s*([\d,]+) \([\s\d.]+%\)\s+(.*?)\s\[", line)
        if m:
            got[m.group(2).split(":")[-1].split("'")[0]] += int(m.group(1).replace(",", ""))
    return got


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--agents", type=int, default=40)
    ap.add_argument("--days", type=int, default=7)
    ap.add_argument("--events", type=int, default=3000, help="events in each pass (the first of the test part)")
    ap.add_argument("--top", type=int, default=25, help="C functions to list (0: none)")
    args = ap.parse_args()
    if shutil.which("valgrind") is None:
        sys.exit("valgrind is not installed (apt-get install valgrind)")

    from bench.bench_replay import workload
    from models.store import save_model

    _, lines, _, cut, card, arrays = workload(args.agents, args.days)
    test = lines[cut:][:args.events]
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        save_model(tmp / "model", card, arrays)
        (tmp / "events.jsonl").write_bytes(b"\n".join(test) + b"\n")
        one, out1 = counted(tmp, 1)
        three, out3 = counted(tmp, 3)
        per_event = (three - one) / (2 * len(test))
        print(f"trained replay, {len(test)} events of {args.agents} agents: {per_event:,.0f} instructions per event "
              f"(callgrind; one pass {one:,}, three passes {three:,})")
        typed = (counted(tmp, 3, TYPED)[0] - counted(tmp, 1, TYPED)[0]) / (2 * len(test))
        print(f"msgspec typed decode of the same lines: {typed:,.0f} instructions per event; trained replay "
              f"{per_event / typed:.1f}x a typed decode in instructions (issue 20's goal: 10x, in time)")
        if args.top > 0:
            a, b = by_function(out1), by_function(out3)
            diff = {k: (b[k] - a.get(k, 0)) / (2 * len(test)) for k in b}
            for k, v in sorted(diff.items(), key=lambda kv: -kv[1])[:args.top]:
                print(f"{v:10,.0f} {100 * v / per_event:5.1f} %  {k}")


if __name__ == "__main__":
    main()
