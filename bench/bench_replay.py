"""Replay throughput next to the bare decode rate of the same file, and state bytes per agent.

    python bench/bench_replay.py [--agents 40] [--days 7] [--state-agents 10000] [--runs 3]

(``--state-agents 0`` skips the state section, which takes most of the ~13 minutes.)

Prints numbers; asserts nothing. "Bare decode" is ``decode_event`` over the
file's lines (the cheapest thing any consumer must do per event: the contract's checks
included); "typed decode" is msgspec's typed decode of the same lines alone (``ActionEvent``,
no checks: the denominator the issue was written with). The replay lines divide by both decodes
taken as replay takes its lines, :data:`CHUNK` at a time, each chunk's events dropped before the
next: a whole list of 12,000 decoded events at once, as the first lines above decode, moved 0.49-0.98
us an event between runs of this script (the pages its arenas take and give back to the system
cost more than the decode, more in some processes than in others), where the chunks stay at ~0.50
us (and replay's own decode is chunked). "Replay" is
decode + ``Engine.process_batch`` + encoding the decision records (a chunk's in one call), i.e. what
``flowbreaker replay`` does per event, with its garbage collector thresholds
(streams/gc_tuning.py) and the compiled kernel when it is built (detector/native.py;
the pure-Python references are timed too, by this script run again with ``FLOWBREAKER_PURE_PYTHON=1``).
Issue 20's goal: replay with a trained model >= 50,000 events/s and <= 10x a bare typed decode (the "typed
decode" column of the replay lines; the "bare decode" one, ``decode_event``, is shown beside it).
Also shown: ``json.loads`` and pydantic v2 on the same lines, which is how the decoder
was chosen. The machine's load average is printed beside the numbers (a shared machine).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import msgspec  # noqa: E402

from detector import native  # noqa: E402
from detector.engine import Engine  # noqa: E402
from detector.events import ActionEvent, decode_event, decode_lines  # noqa: E402
from models.simulate import simulate  # noqa: E402
from models.store import load_model, save_model  # noqa: E402
from models.train import fit  # noqa: E402
from streams.cli.replay import _CHUNK as CHUNK  # noqa: E402
from streams.gc_tuning import tune  # noqa: E402


def load() -> str:
    return "load %.2f" % os.getloadavg()[0]


CPU: dict[object, float] = {}  # the least CPU time of each timed function (see best_of)


def best_of_each(n, fns):
    """:func:`best_of` of each of ``fns``, their runs taken in turn (``n`` rounds of one run of each): a ratio of
    two of them compares runs made at the same moments, which a shared machine's slower seconds move alike."""
    best = {fn: float("inf") for fn in fns}
    for fn in fns:
        CPU[fn] = float("inf")
    for _ in range(n):
        for fn in fns:
            t0, c0 = time.perf_counter(), time.process_time()
            fn()
            best[fn] = min(best[fn], time.perf_counter() - t0)
            CPU[fn] = min(CPU[fn], time.process_time() - c0)
    return [best[fn] for fn in fns]


def best_of(n, fn):
    """The least wall time of ``n`` runs of ``fn``; the least CPU time of this process is kept in CPU[fn]."""
    best = cpu = float("inf")
    for _ in range(n):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        best = min(best, time.perf_counter() - t0)
        cpu = min(cpu, time.process_time() - c0)
    CPU[fn] = cpu
    return best


def pydantic_rate(lines):
    try:
        from typing import Literal

        from pydantic import BaseModel, Field
    except ImportError:
        return None

    class Ev(BaseModel):
        event_id: str = Field(min_length=1, max_length=128)
        ts: str
        agent_id: str = Field(min_length=1, max_length=128)
        operator_id: str = Field(min_length=1, max_length=256)
        tool: str = Field(min_length=1, max_length=256)
        action: Literal["read", "write", "delete", "send", "exec"]
        resource: str = Field(min_length=1, max_length=1024)
        sensitivity: Literal["public", "internal", "confidential", "restricted"]
        records: int = Field(default=0, ge=0)
        bytes: int = Field(default=0, ge=0)
        destinations: list[str] = []
        task_id: str | None = None
        parent_event_id: str | None = None
        approval_id: str | None = None
        instruction_hash: str | None = None
        requested_by: str | None = None

    return best_of(3, lambda: [Ev.model_validate_json(x) for x in lines])


def workload(agents: int, days: int) -> tuple[list[dict], list[bytes], list[ActionEvent], int, dict, dict]:
    """The events replayed here and in bench_instructions.py: the simulator's fleet (seed 1), as JSON lines, decoded,
    and a model fitted on the first 60 %: ``(events, lines, decoded, cut, card, arrays)``, the rest (``lines[cut:]``)
    the events replayed."""
    events, _ = simulate(n_agents=agents, days=days, seed=1)
    lines = [json.dumps(e, separators=(",", ":")).encode() for e in events]
    decoded = [decode_event(x) for x in lines]
    cut = int(len(lines) * 0.6)
    card, arrays = fit(decoded[:cut], Engine().policy, seed=0)
    return events, lines, decoded, cut, card, arrays


def replay_pass(lines: list[bytes], model, encode_lines=msgspec.json.Encoder().encode_lines) -> None:
    """One pass over ``lines`` as ``flowbreaker replay`` makes it (streams/cli/replay.py): decoded a chunk at a
    time (the usual lines in one compiled call, decode_lines, as replay's reader decodes them), decided by a new
    engine, the chunk's decision records encoded in one call, a line each."""
    eng = Engine(model=model)
    for i in range(0, len(lines), CHUNK):
        encode_lines([d.record for d in eng.process_batch(decode_lines(lines[i:i + CHUNK])) if not d.duplicate])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--agents", type=int, default=40)
    ap.add_argument("--days", type=int, default=7)
    ap.add_argument("--state-agents", type=int, default=10_000, help="0: skip the state section")
    ap.add_argument("--runs", type=int, default=3, help="timed runs of each line (the best is shown)")
    ap.add_argument("--replay-only", action="store_true", help=argparse.SUPPRESS)  # the pure-Python rows' child
    args = ap.parse_args()

    # the fleet's dicts stay alive too: the collector's passes, and so the decode rates, depend on what the heap holds
    events, lines, decoded, cut, card, arrays = workload(args.agents, args.days)
    with tempfile.TemporaryDirectory() as tmp:
        save_model(tmp, card, arrays)
        model = load_model(tmp)
    test = lines[cut:]
    m = len(test)
    avg = sum(map(len, lines)) / len(lines)

    typed = msgspec.json.Decoder(ActionEvent).decode
    typed_fn = lambda: [typed(x) for x in test]  # noqa: E731

    def chunked(decode):
        """``decode`` over ``test`` as replay_pass reads it: CHUNK lines at a time, each chunk's events dropped
        before the next (the replay lines' denominators)."""
        def run() -> None:
            for i in range(0, m, CHUNK):
                [decode(x) for x in test[i:i + CHUNK]]
        return run

    if not args.replay_only:
        t_json = best_of(3, lambda: [json.loads(x) for x in test])
        t_dec = best_of(3, lambda: [decode_event(x) for x in test])
        t_typed = best_of(3, typed_fn)
        t_pyd = pydantic_rate(test)

    tune()  # as flowbreaker replay and the worker
    us = lambda t: t / m * 1e6  # noqa: E731
    if not args.replay_only:
        print(f"events: {m} (avg {avg:.0f} bytes), {args.agents} agents")
        print(f"json.loads            {m / t_json:>10,.0f} events/s  {us(t_json):6.2f} us/event")
        if t_pyd:
            print(f"pydantic v2 validate  {m / t_pyd:>10,.0f} events/s  {us(t_pyd):6.2f} us/event")
        print(f"typed decode (msgspec){m / t_typed:>10,.0f} events/s  {us(t_typed):6.2f} us/event  [{load()}]")
        print(f"bare decode (msgspec) {m / t_dec:>10,.0f} events/s  {us(t_dec):6.2f} us/event  [{load()}]")
    # the compiled pieces are chosen once, at import (FLOWBREAKER_PURE_PYTHON): the pure-Python rows come from
    # this script run again with it set
    how = "compiled kernels" if native.kernels is not None else "pure Python"
    dec = chunked(decode_event)  # the ratios' decodes: same moment, same load, chunked as replay decodes
    typed_chunks = chunked(typed)
    online = lambda: replay_pass(test, None)  # noqa: E731
    trained = lambda: replay_pass(test, model)  # noqa: E731
    t_d, t_ty, t_rep_online, t_rep_model = best_of_each(args.runs, [dec, typed_chunks, online, trained])
    for name, t, fn in (("online only  ", t_rep_online, online), ("trained model", t_rep_model, trained)):
        print(f"replay, {name} {m / t:>10,.0f} events/s  {us(t):6.2f} us/event"
              f"  ({t / t_d:.1f}x bare decode of {us(t_d):.2f} us, {t / t_ty:.1f}x typed decode of {us(t_ty):.2f} us)"
              f"  {how}"
              f"  [{load()}]")
        # CPU time is less moved by other work on a shared machine than wall time
        print(f"    in CPU time:        {m / CPU[fn]:>10,.0f} events/s  {us(CPU[fn]):6.2f} us/event"
              f"  ({CPU[fn] / CPU[dec]:.1f}x bare decode of {us(CPU[dec]):.2f} us,"
              f" {CPU[fn] / CPU[typed_chunks]:.1f}x typed decode of {us(CPU[typed_chunks]):.2f} us)")
    if args.replay_only:
        return
    if native.kernels is not None:
        sys.stdout.flush()
        subprocess.run([sys.executable, __file__, "--replay-only", "--agents", str(args.agents), "--days",
                        str(args.days), "--runs", str(args.runs)],
                       env={**os.environ, native.PURE_PYTHON_ENV: "1"}, check=True)
    else:
        print("(the compiled kernels are not built: bash scripts/install.sh with a C compiler builds them)")
    print("goal (issue 20): trained model >= 50,000 events/s (20 us/event) and <= 10x a typed decode (the 'x typed "
          "decode' above; decode_event, the contract's checks included, is the 'bare decode')")

    # state per agent at steady state: many agents, each with a realistic history
    k = args.state_agents
    if k <= 0:
        return
    base = decoded[:cut]
    eng = Engine(trace_agents=0, trace_length=1)
    per_agent = max(1, min(100, len(base) // max(1, args.agents)))
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for a in range(k):
        aid = f"bench-agent-{a:05d}"
        src = base[(a * per_agent) % (len(base) - per_agent):][:per_agent]
        eng.process_batch([e.replace(agent_id=aid, event_id=f"{aid}-{i}")
                           for i, e in enumerate(src)])
    eng.traces = None  # the trace store is bounded separately; measure the agent state
    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    blob = sum(len(eng.dump_agent(f"bench-agent-{a:05d}")) for a in range(k))
    print(f"state: {k} agents, {per_agent} events each: {(after - before) / k:,.0f} bytes/agent in memory "
          f"(incl. dict slot), {blob / k:,.0f} bytes/agent serialised (changelog value)")


if __name__ == "__main__":
    main()
