"""Memory a worker holds per agent: prints bytes per agent, asserts nothing (a few minutes).

    python bench/bench_memory.py [--agents 20000] [--events 120000] [--no-live] [--turns-only] [--bootstrap HOST:PORT]

Two measurements of the same fleet (``--agents`` agents sharing ``--events``
events, about six each, relabelled from the simulator's traffic):

1. **in process, by component** (no broker): the structures a worker keeps,
   built by the worker's own code (engine, trace store, table values, the
   processor's per-agent maps, metrics), sized object by object (``sys.getsizeof``
   over the reachable graph, each object counted once) and in total with
   ``tracemalloc``. Twice: right after the events, while every agent is
   resident (its live engine state in memory), and once the agents have gone
   idle and rest serialised in the table (``streams/worker/residency.py``).
2. **live** (real broker; its own unless ``--bootstrap``): a fresh ``flowbreaker
   worker`` subprocess decides the events, offered at ``--rate`` (it keeps up:
   no backlog), and its RSS (``/proc/PID/status``) is read at readiness, once
   every event is decided and after ``--settle`` quiet seconds (idle agents
   rest). Then the same again with the same events over ``--control-agents``
   agents. RSS also keeps what the traffic itself needed at its peak (fetched
   and held messages, outputs in flight: the allocator keeps freed memory for
   reuse), so the per-agent figure is the difference of the two runs' RSS
   growth, divided by the difference in agents.

Everything shares a noisy 2-core machine; RSS moves by a few MB between runs.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import tempfile
import time
import tracemalloc
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests" / "integration")]


def fleet_messages(n_agents: int, n_events: int, seed: int = 11) -> list[tuple[bytes, bytes]]:
    """(key, value) of ``n_events`` simulated events spread round-robin over ``n_agents`` agents."""
    from models.simulate import simulate

    days = max(1, n_events // 25_000 + 1)
    events, _ = simulate(n_agents=300, days=days, seed=seed)
    while len(events) < n_events:  # not enough traffic: a longer simulation
        days *= 2
        events, _ = simulate(n_agents=300, days=days, seed=seed)
    out = []
    for i, e in enumerate(events[:n_events]):
        agent = f"mem-agent-{i % n_agents:06d}"
        e = dict(e, agent_id=agent, event_id=f"{agent}-{i}")
        out.append((agent.encode(), json.dumps(e).encode()))
    return out


def deep_size(obj, seen: set[int]) -> int:
    """Bytes of every object reachable from ``obj`` not in ``seen`` (which it extends)."""
    import types

    total, stack = 0, [obj]
    skip = (type, types.ModuleType, types.FunctionType, types.BuiltinFunctionType, types.MethodType)
    while stack:
        o = stack.pop()
        if id(o) in seen or isinstance(o, skip):
            continue
        seen.add(id(o))
        total += sys.getsizeof(o)
        stack.extend(gc.get_referents(o))
    return total


def in_process(msgs: list[tuple[bytes, bytes]], n_agents: int) -> None:
    from prometheus_client import CollectorRegistry

    from detector.engine import Engine
    from detector.events import decode_event
    from detector.policy import load_policy
    from streams.worker.metrics import Metrics
    from streams.worker.residency import Residency

    gc.collect()
    tracemalloc.start()
    t0 = tracemalloc.get_traced_memory()[0]
    engine = Engine(policy=load_policy(str(REPO / "examples" / "policy.toml")))
    metrics = Metrics(CollectorRegistry(), process_metrics=False)
    table: dict[str, bytes] = {}  # the table's in-memory store
    residency = Residency(engine, table, partitions=8, rest_after=0.0, clock=lambda: 0.0)
    for k in range(0, len(msgs), 500):
        batch = [decode_event(v) for _, v in msgs[k:k + 500]]  # fresh objects, as the worker decodes them
        for ev in batch:
            if ev.agent_id not in residency:
                residency.load(ev.agent_id)
        for i, d in enumerate(engine.process_batch(batch)):
            if not d.duplicate:
                metrics.observe(d.event, d, 0.01)
                residency.cursor[d.event.agent_id] = k + i
    metrics.refresh_topk()  # what a scrape (or the worker's timer) does
    del batch, d
    gc.collect()

    def report(stage: str) -> None:
        seen: set[int] = set()
        for shared in (engine.policy, engine._generic, engine._cal, engine._tails, engine.model):
            deep_size(shared, seen)
        parts = {
            "engine state (live agents)": deep_size(engine.agents, seen),
            "trace rings": deep_size(engine.traces, seen),
            "table values (resting agents)": deep_size(table, seen),
            "processor per-agent maps": sum(deep_size(x, seen) for x in (residency.home, residency.cursor,
                                                                          residency.seen)),
            "metrics per-agent": sum(deep_size(x, seen) for x in (metrics._window, metrics._risk,
                                                                   metrics._reasons, metrics._frozen)),
        }
        from detector import sketch

        parts["hash memo (detector/sketch.py, bounded, shared)"] = deep_size(sketch._cache, seen)
        traced = tracemalloc.get_traced_memory()[0] - t0
        print(f"\n{stage}: {len(engine.agents)} live, {len(table)} resting of {n_agents} agents")
        for name, size in parts.items():
            print(f"  {name:<48} {size / n_agents:>7,.0f} bytes/agent")
        print(f"  {'sum of the above':<48} {sum(parts.values()) / n_agents:>7,.0f} bytes/agent")
        print(f"  {'tracemalloc: all Python allocations since start':<48} {traced / n_agents:>7,.0f} bytes/agent")

    report("all agents resident (right after their events)")
    residency.rest_idle(lambda agent: False, limit=None)
    residency.compact_some(n=None)  # what the worker does a few at a time, every tick
    gc.collect()
    report("idle agents resting serialised (steady state)")
    tracemalloc.stop()


def rss_kb(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of a process in KiB."""
    rss = hwm = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1])
        elif line.startswith("VmHWM:"):
            hwm = int(line.split()[1])
    return rss, hwm


def live_run(bootstrap: str, tmp: Path, msgs: list[tuple[bytes, bytes]], n_agents: int, rate: float, settle: float,
             rest_after: float) -> dict:
    """One fresh worker deciding ``msgs`` (paced at ``rate``): its RSS at readiness, once decided, once settled."""
    import asyncio

    from bench_stream import produce_paced_async
    from streams.kafka_admin import ensure_topics
    from worker_harness import WorkerProc

    prefix = f"mem-{uuid.uuid4().hex[:6]}-"
    ensure_topics(bootstrap, 8, topic_prefix=prefix)
    w = WorkerProc(bootstrap, prefix, f"{prefix}app", tmp / prefix, flush_interval=5.0, session_timeout=10.0,
                   extra=["--rest-after", str(rest_after)])
    try:
        w.start().wait_ready(timeout=120)
        time.sleep(3.0)
        rss0, _ = rss_kb(w.proc.pid)
        t = time.monotonic()
        achieved = asyncio.run(produce_paced_async(bootstrap, f"{prefix}agent-actions", msgs, rate))
        deadline = time.monotonic() + 600
        while w.status()["events"] < len(msgs) and time.monotonic() < deadline:
            time.sleep(1.0)
        rss1, _ = rss_kb(w.proc.pid)
        resident = w.status()["agents_loaded"]
        time.sleep(settle)
        rss2, hwm = rss_kb(w.proc.pid)
        st = w.status()
        took = time.monotonic() - t - settle
        print(f"  {n_agents:>6} agents: {len(msgs)} events at {achieved:,.0f}/s, decided in {took:.0f} s;"
              f" RSS at readiness {rss0 / 1024:,.1f} MiB, once decided {rss1 / 1024:,.1f} MiB ({resident} resident), "
              f"after {settle:.0f} s quiet {rss2 / 1024:,.1f} MiB ({st['agents_loaded']} resident, "
              f"{st['agents_resting']} resting; peak {hwm / 1024:,.1f} MiB)")
        return {"agents": n_agents, "grown": (rss2 - rss0) * 1024, "peak": (hwm - rss0) * 1024}
    finally:
        w.stop(timeout=60)


def live(msgs: list[tuple[bytes, bytes]], n_agents: int, control: int, bootstrap: str | None, rate: float,
         settle: float, rest_after: float, turns_only: bool = False) -> None:
    from bench_stream import start_broker

    tmp = Path(tempfile.mkdtemp(prefix="fb-mem-"))
    stop_broker = None
    if not bootstrap:
        bootstrap, stop_broker = start_broker(tmp)
    try:
        print(f"\nlive workers (paced producer, --rest-after {rest_after:g}), one fresh worker per run:")
        print(f"  a) {n_agents} agents acting in turns (each agent's events together: most agents idle at any time)")
        turns = live_run(bootstrap, tmp, sorted(msgs, key=lambda kv: kv[0]), n_agents, rate, settle, rest_after)
        together = None
        if not turns_only:
            print(f"  b) {n_agents} agents all active at once (round robin: every agent acts every "
                  f"{n_agents / rate:.0f} s, all resident together)")
            together = live_run(bootstrap, tmp, msgs, n_agents, rate, settle, rest_after)
        print(f"  c) the same events over {control} agents (what the traffic itself leaves in the heap)")
        few = live_run(bootstrap, tmp, relabel(msgs, control), control, rate, settle, rest_after)
        for name, run in (("a) in turns", turns), ("b) all at once", together)):
            if run is None:
                continue
            per = (run["grown"] - few["grown"]) / (n_agents - control)
            peak = (run["peak"] - few["peak"]) / (n_agents - control)
            print(f"  => {name}: RSS per agent at steady state {per:,.0f} bytes (peak {peak:,.0f}): (RSS growth with "
                  f"{n_agents} agents - with {control}) / {n_agents - control}")
        print(f"     the traffic alone grew RSS by {few['grown'] / 2**20:,.1f} MiB; RSS keeps the peak: memory freed "
              "when agents rest is reused, not returned")
    finally:
        if stop_broker is not None:
            stop_broker()
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)


def relabel(msgs: list[tuple[bytes, bytes]], n_agents: int) -> list[tuple[bytes, bytes]]:
    """The same events spread over ``n_agents`` agents instead."""
    out = []
    for i, (_, value) in enumerate(msgs):
        e = json.loads(value)
        agent = f"mem-agent-{i % n_agents:06d}"
        e["agent_id"] = agent
        out.append((agent.encode(), json.dumps(e).encode()))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--agents", type=int, default=20_000)
    ap.add_argument("--events", type=int, default=120_000)
    ap.add_argument("--bootstrap", help="use this broker instead of starting one")
    ap.add_argument("--no-live", action="store_true", help="only the in-process breakdown")
    ap.add_argument("--no-in-process", action="store_true", help="only the live worker")
    ap.add_argument("--rest-after", type=float, default=15.0,
                    help="the live workers' --rest-after (seconds an idle agent stays resident)")
    ap.add_argument("--settle", type=float, default=40.0, help="seconds to watch a live worker after its events")
    ap.add_argument("--rate", type=float, default=1500.0, help="events/s offered to the live workers")
    ap.add_argument("--control-agents", type=int, default=100, help="agents of the control run")
    ap.add_argument("--turns-only", action="store_true",
                    help="live: only the agents acting in turns and the control run (not all at once)")
    args = ap.parse_args()
    t = time.perf_counter()
    msgs = fleet_messages(args.agents, args.events)
    size = sum(len(v) for _, v in msgs) / len(msgs)
    print(f"{len(msgs)} events ({size:.0f} bytes on average) for {args.agents} agents "
          f"({time.perf_counter() - t:.0f} s to generate); python {sys.version.split()[0]}, {os.cpu_count()} cores")
    if not args.no_in_process:
        in_process(msgs, args.agents)
    if not args.no_live:
        live(msgs, args.agents, args.control_agents, args.bootstrap, args.rate, args.settle, args.rest_after,
             args.turns_only)


if __name__ == "__main__":
    main()
