"""Pre-action check latency on a real worker under stream load: prints numbers, asserts nothing.

    python bench/bench_check.py [--bootstrap HOST:PORT] [--rate 1000] [--seconds 20] [--stream-rate 2000]

Without ``--bootstrap`` it starts its own broker with scripts/kafka.sh (free
ports, fresh data dir) and stops it at the end. One ``flowbreaker worker``
(default settings, a tokens file) owns every partition; ``--agents`` agents get
a short history first. Then, for each stream load in ``--stream-rates``
(events/s on ``agent-actions``, paced by a producer in a separate process), it
offers ``--rate`` checks per second for ``--seconds`` seconds, open loop (each
check starts at its scheduled time whether or not the previous ones finished;
keep-alive connections from one aiohttp client), and reports:

- latency send -> answer, p50/p90/p99/p99.9/max, and the same counted from the
  scheduled start (what a caller sees when the client falls behind);
- the worker's own time per check (``flowbreaker_check_seconds``);
- how far the worker kept up with the stream (decisions published).

The mix: 95 % ordinary actions (allow), 5 % sends of restricted data to a new
external address (needs_approval: the first per agent opens a request, the
rest reuse it). Everything shares the machine's cores (broker, worker, load
generator, this client): read the numbers as what this host gives.
"""
from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import random
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from harness import broker, pct  # bench/harness.py: sys.path, a broker of our own
from worker_harness import WorkerProc, producer

TOKEN = "bench-runtime-token"
GC_TUNED = ("import gc, sys, threading; gc.set_threshold(50000, 20, 1000); "
            "threading.Timer(15.0, lambda: (gc.collect(), gc.freeze())).start(); "
            "from streams.cli.main import main; sys.exit(main())")


def action(agent: str, i: int, t: float, **kw) -> dict:
    ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t * 1000) % 1000:03d}Z"
    ev = {"event_id": f"{agent}-{i}", "ts": ts, "agent_id": agent, "operator_id": "ops", "tool": "crm.query",
          "action": "read", "resource": "crm://accounts", "sensitivity": "internal", "records": 3,
          "task_id": f"{agent}-t{i // 10}"}
    ev.update(kw)
    return ev


def stream_load(bootstrap: str, topic: str, agents: int, rate: float, seconds: float) -> None:
    """Paced ordinary actions (runs in its own process)."""
    prod = producer(bootstrap)
    t0 = time.monotonic()
    n = 0
    while time.monotonic() - t0 < seconds:
        agent = f"agent-{n % agents:04d}"
        ev = action(agent, 1_000_000 + n, time.time())
        prod.send(topic, key=agent.encode(), value=json.dumps(ev).encode())
        n += 1
        ahead = n / rate - (time.monotonic() - t0)
        if ahead > 0.002:
            time.sleep(ahead)
    prod.flush(timeout=60)
    prod.close(timeout=10)
    print(f"LOAD {n}", flush=True)


async def offer_checks(url: str, agents: int, rate: float, seconds: float, seed: int) -> dict:
    import aiohttp

    rnd = random.Random(seed)
    bodies = []
    for i in range(int(rate * seconds)):
        agent = f"agent-{rnd.randrange(agents):04d}"
        if rnd.random() < 0.05:
            ev = action(agent, 2_000_000 + i, time.time(), tool="mail.send", action="send",
                        resource="hr://personnel", sensitivity="restricted", records=500,
                        destinations=["email:drop@evil.example"])
        else:
            ev = action(agent, 2_000_000 + i, time.time())
        bodies.append(json.dumps(ev).encode())
    service, scheduled, verdicts, errors = [], [], {}, 0
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    conn = aiohttp.TCPConnector(limit=256, keepalive_timeout=60)
    async with aiohttp.ClientSession(connector=conn, timeout=aiohttp.ClientTimeout(total=10)) as session:
        for _ in range(50):  # warm the connections
            async with session.post(url + "/v1/check", data=bodies[0], headers=headers) as r:
                await r.read()

        async def one(body: bytes, due: float) -> None:
            nonlocal errors
            t_send = time.perf_counter()
            try:
                async with session.post(url + "/v1/check", data=body, headers=headers) as r:
                    payload = await r.json()
                    if r.status != 200:
                        errors += 1
                        return
            except Exception:  # noqa: BLE001 - counted
                errors += 1
                return
            t_done = time.perf_counter()
            service.append(t_done - t_send)
            scheduled.append(t_done - due)
            verdicts[payload["verdict"]] = verdicts.get(payload["verdict"], 0) + 1

        tasks = []
        t0 = time.perf_counter()
        for i, body in enumerate(bodies):
            due = t0 + i / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.ensure_future(one(body, due)))
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - t0
    return {"service": service, "scheduled": scheduled, "verdicts": verdicts, "errors": errors,
            "achieved": len(bodies) / elapsed}


def server_hist(worker: WorkerProc, name: str = "flowbreaker_check_seconds") -> dict[str, float]:
    out = {}
    for line in worker.metrics().splitlines():
        if line.startswith(name + "_bucket{"):
            le = line.split('le="')[1].split('"')[0]
            out[le] = float(line.rsplit(" ", 1)[1])
        elif line.startswith(name + "_count"):
            out["count"] = float(line.rsplit(" ", 1)[1])
    return out


def hist_quantile(h1: dict, h0: dict, q: float) -> float:
    """Upper bound of the bucket holding quantile ``q`` of the checks between two scrapes."""
    n = h1.get("count", 0) - h0.get("count", 0)
    if n <= 0:
        return float("nan")
    for le in sorted((k for k in h1 if k not in ("count", "+Inf")), key=float):
        if h1[le] - h0.get(le, 0) >= q * n:
            return float(le)
    return float("inf")


def ms(x: float) -> str:
    return f"{x * 1000:.2f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bootstrap")
    ap.add_argument("--rate", type=float, default=1000.0, help="checks per second (default 1000)")
    ap.add_argument("--seconds", type=float, default=20.0, help="length of each run (default 20)")
    ap.add_argument("--stream-rates", default="0,2000", help="stream loads, events/s (default 0,2000)")
    ap.add_argument("--agents", type=int, default=200)
    ap.add_argument("--gc-tuned", action="store_true",
                    help="run the worker with gc.set_threshold(50000, 20, 1000) and gc.freeze() after start "
                         "(shows what the collector's pauses cost the check's tail)")
    ap.add_argument("--load", nargs=5, metavar=("BOOTSTRAP", "TOPIC", "AGENTS", "RATE", "SECONDS"),
                    help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.load:
        b, topic, agents, rate, seconds = args.load
        stream_load(b, topic, int(agents), float(rate), float(seconds))
        return

    tmp = Path(tempfile.mkdtemp(prefix="bench-check-"))
    with broker(args.bootstrap, tmp, 29292) as bootstrap:
        run(args, bootstrap, tmp)


def run(args: argparse.Namespace, bootstrap: str, tmp: Path) -> None:
    prefix = f"bc-{uuid.uuid4().hex[:6]}-"
    tokens = tmp / "tokens.toml"
    tokens.write_text(f'[[token]]\nname = "bench"\nrole = "runtime"\n'
                      f'sha256 = "{hashlib.sha256(TOKEN.encode()).hexdigest()}"\n')
    worker = WorkerProc(bootstrap, prefix, prefix + "app", tmp / "w0", extra=["--tokens", str(tokens)],
                        flush_interval=5.0)
    if args.gc_tuned:  # python -c CODE worker ...: the CLI reads sys.argv[1:]
        worker.args[1:3] = ["-c", GC_TUNED]
    topic = prefix + "agent-actions"
    try:
        worker.start()
        worker.wait_ready(1, timeout=120)
        prod = producer(bootstrap)
        t = time.time() - 3600
        for a in range(args.agents):
            agent = f"agent-{a:04d}"
            for i in range(30):
                prod.send(topic, key=agent.encode(), value=json.dumps(action(agent, i, t + i)).encode())
        prod.flush(timeout=60)
        prod.close()
        url = f"http://127.0.0.1:{worker.web_port}"
        deadline = time.monotonic() + 60
        while worker.status()["decisions"] < args.agents * 30 and time.monotonic() < deadline:
            time.sleep(0.5)
        print(f"host: {os.cpu_count()} cores; worker {url}{' (GC tuned)' if args.gc_tuned else ''}; "
              f"{args.agents} agents with 30 actions each")
        print(f"{'stream ev/s':>11} {'checks/s':>9} {'p50 ms':>7} {'p90':>6} {'p99':>6} {'p99.9':>6} {'max':>7} "
              f"{'sched p99':>9} {'server p50/p99 (bucket)':>23} {'loop lag p99':>12} {'load':>5} {'errors':>6}  "
              "verdicts; stream kept up")
        for srate in [float(x) for x in args.stream_rates.split(",") if x.strip()]:
            load = None
            before = worker.status()["decisions"]
            if srate > 0:
                # the load generator stands for producers on other hosts: it yields the cores to the worker
                load = subprocess.Popen(["nice", "-n", "10", sys.executable, __file__, "--load", bootstrap, topic,
                                         str(args.agents), str(srate), str(args.seconds + 4)],
                                        stdout=subprocess.PIPE, text=True)
                time.sleep(2.0)  # the stream is flowing before the checks start
            h0, g0 = server_hist(worker), server_hist(worker, "flowbreaker_event_loop_lag_seconds")
            load_avg = os.getloadavg()[0]
            res = asyncio.run(offer_checks(url, args.agents, args.rate, args.seconds, seed=int(srate)))
            h1, g1 = server_hist(worker), server_hist(worker, "flowbreaker_event_loop_lag_seconds")
            kept = ""
            if load is not None:
                out, _ = load.communicate(timeout=args.seconds + 120)
                sent = int(out.split("LOAD ")[1].split()[0]) if "LOAD " in out else 0
                deadline = time.monotonic() + 30
                while worker.status()["decisions"] - before < sent and time.monotonic() < deadline:
                    time.sleep(0.2)
                kept = f"{worker.status()['decisions'] - before}/{sent} decided"
            s, sc = res["service"], res["scheduled"]
            print(f"{srate:>11.0f} {res['achieved']:>9.0f} {ms(pct(s, 50)):>7} {ms(pct(s, 90)):>6} "
                  f"{ms(pct(s, 99)):>6} {ms(pct(s, 99.9)):>6} {ms(max(s) if s else float('nan')):>7} "
                  f"{ms(pct(sc, 99)):>9} "
                  f"{ms(hist_quantile(h1, h0, 0.5)) + ' / ' + ms(hist_quantile(h1, h0, 0.99)):>23} "
                  f"{'<=' + ms(hist_quantile(g1, g0, 0.99)):>12} {load_avg:>5.1f} "
                  f"{res['errors']:>6}  {res['verdicts']}; {kept}", flush=True)
    finally:
        worker.stop()


if __name__ == "__main__":
    main()
