"""Latency of one worker at a fixed offered load, measured apart from bench/bench_stream.py (about a minute).

    python bench/bench_latency.py [--bootstrap HOST:PORT] [--rate 5000] [--events 30000] [--warmup 5] [--runs 1]

Without ``--bootstrap`` it starts its own broker with scripts/kafka.sh (free ports, fresh data dir) and stops
it at the end.

One ``flowbreaker worker`` (default settings, as bench_stream.py starts it) on
fresh topics; a paced aiokafka producer in this process offers ``--events``
held-out events (a fleet and seed no other bench uses) at ``--rate`` events/s,
after ``--warmup`` seconds at 1,000 events/s that are not measured. Each event's
``ts`` is set to the wall clock just before it is sent, so the decision record's
own ``ts`` field (docs/contract.md section 3: copied from the action) says when
its action was produced, and an automatic freeze command's ``issued_at`` (section
4: the ``ts`` of the action that tripped the breaker) the same for the freeze.
``agent-decisions`` and ``agent-control`` are created with
``message.timestamp.type=LogAppendTime``: a record's broker timestamp is when the
broker appended it, i.e. when a consumer could read it. Printed, per run:

* ``ts`` of the decision -> the decision on the broker (p50/p99/max): produce ->
  decision, from the records' own fields, with no clock of the worker's;
* the action's broker create time -> the decision on the broker (the producer's
  own delay left out);
* ``issued_at`` of each freeze -> the freeze command on the broker.

Only this host's clock is read (same host, ms resolution). Because every
``ts`` is "now", agents act far faster than the simulated fleet, so the engine
alerts and freezes more than on the simulator's own times: the freezes are
counted. It asserts nothing: the numbers are what this 2-core host, shared with
the broker and the producer, gives.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import broker, pct  # noqa: E402  bench/harness.py: sys.path, a broker of our own
from bench_stream import produce_paced_async  # noqa: E402
from worker_harness import TopicReader, WorkerProc  # noqa: E402

KINDS = ["bulk_read_broadcast", "mass_fanout", "mass_delete", "prompt_injection", "instruction_change"]
PLACEHOLDER = b'"@@TS@@"'


def stamp(now: float) -> bytes:
    """RFC 3339 UTC with milliseconds: the ``ts`` of an action produced at ``now``."""
    return b'"' + datetime.fromtimestamp(now, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3].encode() + b'Z"'


def epoch(ts: str) -> float:
    return datetime.fromisoformat(ts[:-1] + "+00:00" if ts.endswith("Z") else ts).timestamp()


def templates(events: list[dict]) -> list[tuple[bytes, bytes]]:
    out = []
    for e in events:
        value = json.dumps({**e, "ts": "@@TS@@"}).encode()
        out.append((e["agent_id"].encode(), value))
    return out


async def offer(bootstrap: str, topic: str, msgs: list[tuple[bytes, bytes]], rate: float) -> float:
    """Send ``msgs`` at ``rate``/s, each stamped with the wall clock just before its send; the achieved rate."""
    return await produce_paced_async(bootstrap, topic, msgs, rate,
                                     stamp=lambda value: value.replace(PLACEHOLDER, stamp(time.time())))


def line(name: str, values: list[float]) -> str:
    if not values:
        return f"  {name}: none"
    return (f"  {name}: p50 {pct(values, 50):5.0f} ms  p99 {pct(values, 99):5.0f} ms  max {max(values):5.0f} ms"
            f"  ({len(values)})")


def one_run(bootstrap: str, events: list[dict], args, tmp: Path) -> dict:
    from streams.kafka_admin import ensure_topics

    prefix = f"bench-lat-{uuid.uuid4().hex[:6]}-"
    append = {"message.timestamp.type": "LogAppendTime"}
    ensure_topics(bootstrap, 8, topic_prefix=prefix,
                  configs={"actions": {"message.timestamp.type": "CreateTime"}, "decisions": append,
                           "control": append})
    w = WorkerProc(bootstrap, prefix, f"{prefix}w", tmp / prefix, flush_interval=5.0, session_timeout=10.0)
    try:
        w.start().wait_ready(timeout=90)
        n_warm = int(1000 * args.warmup)
        warm, measured = events[:n_warm], events[n_warm:n_warm + args.events]
        topic = f"{prefix}agent-actions"
        asyncio.run(offer(bootstrap, topic, templates(warm), 1000.0))
        time.sleep(2.0)
        achieved = asyncio.run(offer(bootstrap, topic, templates(measured), args.rate))
        ids = {e["event_id"] for e in measured}
        dec = TopicReader(bootstrap, f"{prefix}agent-decisions")
        dec.read_until(lambda ms: len(ms) >= len(warm) + len(measured), timeout=120)
        acts = TopicReader(bootstrap, topic)
        acts.read_until(lambda ms: len(ms) >= len(warm) + len(measured), timeout=60)
        created = {}
        for m in acts.messages:
            created[json.loads(m.value)["event_id"]] = m.timestamp
        by_ts, by_create, sent_at = [], [], []
        seen = set()
        for m in dec.messages:
            d = json.loads(m.value)
            if d["event_id"] not in ids or d["event_id"] in seen:
                continue  # the warm-up, or a redelivered copy
            seen.add(d["event_id"])
            sent_at.append(epoch(d["ts"]))
            by_ts.append(m.timestamp - sent_at[-1] * 1000)
            by_create.append(m.timestamp - created[d["event_id"]])
        ctl = TopicReader(bootstrap, f"{prefix}agent-control")
        ctl.drain(quiet=1.5, timeout=30)
        first_ts = min((epoch(json.loads(m.value)["ts"]) for m in dec.messages
                        if json.loads(m.value)["event_id"] in ids), default=0.0)
        freezes = []
        for m in ctl.messages:
            c = json.loads(m.value)
            if c.get("command") == "freeze" and c.get("issued_by") == "flowbreaker":
                at = epoch(c["issued_at"])
                if at >= first_ts:
                    freezes.append(m.timestamp - at * 1000)
        for r in (dec, acts, ctl):
            r.close()
        st = w.status()
        t0 = min(sent_at, default=0.0)
        per_second: dict[int, float] = {}
        for at, lat in zip(sent_at, by_ts):
            k = int(at - t0)
            per_second[k] = max(per_second.get(k, 0.0), lat)
        return {"achieved": achieved, "by_ts": by_ts, "per_second": per_second, "by_create": by_create,
                "freezes": freezes, "decided": len(seen), "offered": len(measured), "status": st}
    finally:
        w.stop(timeout=30)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bootstrap", help="HOST:PORT of a running broker (default: start one here)")
    ap.add_argument("--rate", type=float, default=5000.0, help="offered load, events/s")
    ap.add_argument("--events", type=int, default=30_000, help="events offered at --rate")
    ap.add_argument("--warmup", type=float, default=5.0, help="seconds at 1,000 events/s first, not measured")
    ap.add_argument("--runs", type=int, default=1, help="runs, each on fresh topics and a fresh worker")
    args = ap.parse_args()
    if args.rate <= 0 or args.events < 1 or args.warmup < 0 or not 1 <= args.runs <= 10:
        ap.error("--rate > 0, --events >= 1, --warmup >= 0, 1 <= --runs <= 10")

    from models.simulate import simulate

    need = int(1000 * args.warmup) + args.events
    events, _ = simulate(n_agents=200, days=6, seed=23, incidents=KINDS * 12, incident_days_from=1)
    if len(events) < need:
        ap.error(f"the fleet has {len(events)} events, fewer than the {need} asked for")
    events = events[:need]
    tmp = Path(tempfile.mkdtemp(prefix="fb-bench-lat-"))
    try:
        with broker(args.bootstrap, tmp, 29392) as bootstrap:
            runs(bootstrap, events, args, tmp)
    finally:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)


def runs(bootstrap: str, events: list[dict], args, tmp: Path) -> None:
    print(f"broker {bootstrap}; cores {os.cpu_count()}; one worker; {args.events} events at {args.rate:,.0f}/s "
          f"after {args.warmup:.0f} s at 1,000/s")
    for i in range(args.runs):
        r = one_run(bootstrap, events, args, tmp)
        st = r["status"]
        print(f"run {i + 1}: {r['achieved']:,.0f} events/s achieved, {r['decided']}/{r['offered']} decided; "
              f"worker: {st['events']} events in {st['batches']} batches, {st['state_writes']} state writes in "
              f"{st['flushes']} flushes, {st['freezes']} freezes")
        print(line("ts of the decision -> decision on the broker", r["by_ts"]))
        print(line("action created -> decision on the broker   ", r["by_create"]))
        print(line("issued_at of a freeze -> freeze on the broker", r["freezes"]))
        print("  slowest decision of each second of the run (ms): "
              + " ".join(f"{v:.0f}" for _, v in sorted(r["per_second"].items())))


if __name__ == "__main__":
    main()
