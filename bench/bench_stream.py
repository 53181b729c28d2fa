"""Stream benchmark on a real broker: prints numbers, asserts nothing (a few minutes).

    python bench/bench_stream.py [--bootstrap HOST:PORT [--broker-pid PID]] [--events 600000] [--rates 1000,2500,5000]

Without ``--bootstrap`` it starts its own broker with scripts/kafka.sh (free
ports, fresh data dir) and stops it at the end. It measures, in one run:

1. sustained throughput: a raw aiokafka consumer reading ``agent-actions``
   (and the same while decoding every event), next to one ``flowbreaker worker``
   and then two workers (one consumer group) deciding the same pre-filled topic.
   A worker's rate is decisions per second between its readiness (after its
   last rebalance) and its last decision, from the decisions' broker timestamps;
   A bare faust agent that only counts events on the same topic shows what
   faust itself costs per message here;
2. latency at fixed offered loads (``--rates``, events/s, each for
   ``--seconds``, paced aiokafka producer, one worker, after a warm-up of
   ``--warmup`` seconds at 1,000 events/s): produce -> decision,
   from the action's and the decision's create times (same host, ms
   resolution), p50/p99/max;
3. produce -> freeze command on ``agent-control`` for every freeze in those runs
   (joined through the incident record's ``trigger_event_id``), p50/p99/max.

Next to them, ``flowbreaker replay``'s rate on the same events (decode, the
same engine and policy, encode; in this process, no Kafka), and the cores each
process used (CPU seconds over wall seconds, from ``/proc``) during each run:
the broker's (its own, or ``--broker-pid``), the workers' and the producer's.
At the end it prints the ratios issue 13 asks for: one worker against replay,
p99 latencies at 5,000 events/s, two workers against one.

Workers run as subprocesses with default settings (batches of up to
``batch_max`` records, state flushed every 5 s or 1,000 events per agent).
Everything shares the machine's cores with the broker and the load generator:
read the numbers as what this host gives, not as a ceiling.
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
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests" / "integration")]

from worker_harness import POLICY, TopicReader, WorkerProc, event_messages, producer  # noqa: E402

#: events simulate() gives an agent over 5 days (seed 11: 174,169 of 300 agents)
EVENTS_PER_AGENT = 580
KINDS = ["bulk_read_broadcast", "mass_fanout", "mass_delete", "prompt_injection", "instruction_change"]


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, max(0, int(round(q / 100 * (len(s) - 1)))))]


def start_broker(tmp: Path):
    sys.path.insert(0, str(REPO / "tests" / "integration"))
    from conftest import free_port_pair, kafka_script_env, run_kafka_sh

    port, cport = free_port_pair(29192)
    env = kafka_script_env(port, cport, tmp / "kafka")
    proc = run_kafka_sh("start", env=env, timeout=600)
    if proc.returncode != 0:
        raise SystemExit(f"kafka.sh start failed: {proc.stderr}")
    return proc.stdout.strip().splitlines()[-1], (lambda: run_kafka_sh("stop", env=env, timeout=60))


def broker_pid_of(tmp: Path) -> int | None:
    """The pid of the broker start_broker started (scripts/kafka.sh's pid file)."""
    try:
        return int((tmp / "kafka" / "kafka.pid").read_text().strip())
    except (OSError, ValueError):
        return None


def cpu_seconds(pid: int | None) -> float:
    """User + system CPU seconds a process has used so far (0 if unknown)."""
    if pid is None:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_cpu_seconds() -> float:
    """CPU seconds all cores of the machine have been busy so far (/proc/stat: everything but idle and iowait)."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    except (OSError, ValueError):
        return 0.0
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


class Cores:
    """Cores each named process used between start() and stop(): CPU seconds / wall seconds; beside them
    ``machine`` (all processes) and ``others`` (the machine minus the named ones: the other work on the host)."""

    def __init__(self, pids: dict[str, int | None]) -> None:
        self.pids = pids

    def sample(self) -> tuple[float, dict[str, float]]:
        used = {name: cpu_seconds(pid) for name, pid in self.pids.items()}
        used["machine"] = machine_cpu_seconds()
        return time.time(), used

    def start(self) -> "Cores":
        self.t0, self.c0 = self.sample()
        return self

    def stop(self) -> dict[str, float]:
        return self.between((self.t0, self.c0), self.sample())

    @staticmethod
    def between(a: tuple[float, dict[str, float]], b: tuple[float, dict[str, float]]) -> dict[str, float]:
        dt = max(1e-9, b[0] - a[0])
        out = {name: (b[1][name] - a[1][name]) / dt for name in a[1]}
        out["others"] = max(0.0, out["machine"] - sum(v for k, v in out.items() if k != "machine"))
        return out


def show_cores(cores: dict[str, float]) -> str:
    return ", ".join(f"{name} {c:.2f}" for name, c in cores.items())


def replay_rate(msgs: list[tuple[bytes, bytes]], policy: Path) -> float:
    """flowbreaker replay's rate on these events in this process: decode, Engine.process_batch, encode."""
    import msgspec

    from detector.engine import Engine
    from detector.events import decode_event
    from detector.policy import load_policy

    import gc

    from streams.gc_tuning import THRESHOLDS

    encode = msgspec.json.Encoder().encode
    values = [v for _, v in msgs]
    best = float("inf")
    before = gc.get_threshold()
    gc.set_threshold(*THRESHOLDS)  # as flowbreaker replay (and the worker) collect
    try:
        for _ in range(2):
            engine = Engine(policy=load_policy(str(policy)))
            t0 = time.perf_counter()
            for i in range(0, len(values), 1024):
                for d in engine.process_batch([decode_event(v) for v in values[i:i + 1024]]):
                    if not d.duplicate:
                        encode(d.record)
            best = min(best, time.perf_counter() - t0)
    finally:
        gc.set_threshold(*before)
    return len(values) / best


def produce_fast(bootstrap: str, topic: str, messages) -> float:
    prod = producer(bootstrap)
    t0 = time.perf_counter()
    for key, value in messages:
        prod.send(topic, key=key, value=value)
    prod.flush(timeout=120)
    dt = time.perf_counter() - t0
    prod.close(timeout=10)
    return len(messages) / dt


async def raw_consume(bootstrap: str, topic: str, n: int, decode: bool) -> float:
    from aiokafka import AIOKafkaConsumer

    from detector.events import EventError, decode_event

    c = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest",
                         enable_auto_commit=False, fetch_max_bytes=16 * 1024 * 1024,
                         max_partition_fetch_bytes=4 * 1024 * 1024)
    await c.start()
    try:
        count = 0
        deadline = time.monotonic() + 120
        t0 = time.perf_counter()  # from the first fetch request on, as for the workers' first batch
        while count < n and time.monotonic() < deadline:
            got = await c.getmany(timeout_ms=1000, max_records=20000)
            for records in got.values():
                if decode:
                    for m in records:
                        try:
                            decode_event(m.value)
                        except EventError:
                            pass
                count += len(records)
        return count / (time.perf_counter() - t0)
    finally:
        await c.stop()


def end_offsets_sum(bootstrap: str, topic: str) -> int:
    """How many records ``topic`` holds now (the sum of its partitions' end offsets)."""
    from kafka import KafkaConsumer, TopicPartition

    c = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    try:
        tps = [TopicPartition(topic, p) for p in sorted(c.partitions_for_topic(topic) or ())]
        return sum(c.end_offsets(tps).values()) if tps else 0
    finally:
        c.close()


def worker_rate(workers: list[WorkerProc], bootstrap: str, topic: str, n: int, since_ms: int, base: int,
                timeout: float = 240, broker_pid: int | None = None) -> dict:
    """Wait until the workers decided n events after since_ms; rate over the steady window (from the last
    readiness to the last decision) and the cores each process used in that same window. ``base``: the
    records ``topic`` held before the workers started.

    While the workers run, the bench only asks the broker for the topic's end offsets (reading 150,000
    decisions with kafka-python would take a third of a core from the processes measured); the decisions
    themselves are read once the count is reached, to date them and to count each event once."""
    from kafka import KafkaConsumer, TopicPartition

    cores = Cores({**{f"worker {i + 1}": w.proc.pid for i, w in enumerate(workers)}, "broker": broker_pid,
                   "bench": os.getpid()})
    samples = [cores.sample()]
    watcher = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    try:
        tps = [TopicPartition(topic, p) for p in sorted(watcher.partitions_for_topic(topic) or ())]
        deadline = time.monotonic() + timeout
        seen: set[bytes] = set()
        stamps: list[int] = []
        reader = None
        while time.monotonic() < deadline:
            time.sleep(0.25)
            samples.append(cores.sample())
            produced = sum(watcher.end_offsets(tps).values()) - base
            if reader is None and produced < n:
                continue
            reader = reader or TopicReader(bootstrap, topic)
            while reader.poll(1000):
                pass
            for m in reader.messages[len(stamps):]:
                stamps.append(m.timestamp)
            seen = {m.value for m in reader.messages if m.timestamp >= since_ms}  # a redelivered event's
            if len(seen) >= n:                                                     # decision is byte-identical
                break
        if reader is not None:
            reader.close()
    finally:
        watcher.close()
    stamps = [t for t in stamps if t >= since_ms]
    ready = max(t for w in workers for t, line in w.line_times if "worker ready" in line)
    start_ms = int(ready * 1000)
    window = [t for t in stamps if t >= start_ms]
    end = max(window) / 1000 if window else ready
    dur = end - ready if window else float("nan")
    inside = [s for s in samples if ready <= s[0] <= end + 0.3]
    used = Cores.between(inside[0], inside[-1]) if len(inside) > 1 else Cores.between(samples[0], samples[-1])
    statuses = [w.status() for w in workers]
    return {"decided": len(seen), "decisions_in_window": len(window), "window_s": dur, "cores": used,
            "rate": len(window) / dur if window and dur > 0 else float("nan"),
            "partitions": [s["partitions"] for s in statuses],
            "state_writes": sum(s["state_writes"] for s in statuses)}


def bare_faust(bootstrap: str, topic: str, n: int, datadir: str) -> None:
    """A faust agent that only counts: faust's own per-message cost on this host (run as a subprocess)."""
    import faust

    app = faust.App(f"bench-bare-{uuid.uuid4().hex[:6]}", broker=f"kafka://{bootstrap}", store="memory://",
                    datadir=datadir, web_enabled=False, topic_partitions=8,
                    table_standby_replicas=0, topic_replication_factor=1, key_serializer="raw",
                    value_serializer="raw")
    source = app.topic(topic, key_type=bytes, value_type=bytes, partitions=8)
    seen = {"n": 0, "t0": 0.0}

    @app.agent(source)
    async def count(stream):
        async for events in stream.take_events(500, within=0.005):
            if not seen["n"]:
                seen["t0"] = time.perf_counter()
            seen["n"] += len(events)
            if seen["n"] >= n:
                print(f"BARE {seen['n'] / (time.perf_counter() - seen['t0']):.0f}", flush=True)
                os._exit(0)

    sys.argv = [sys.argv[0], "worker", "-l", "warn"]
    app.main()


def run_bare_faust(bootstrap: str, topic: str, n: int, datadir: Path) -> float:
    import subprocess

    out = subprocess.run([sys.executable, __file__, "--bootstrap", bootstrap, "--bare-faust", topic, str(n),
                          str(datadir)],
                         capture_output=True, text=True, timeout=180, cwd=REPO)
    import re

    found = re.search(r"BARE (\d+)", out.stdout + out.stderr)  # faust may route stdout to its log
    return float(found.group(1)) if found else float("nan")


async def produce_paced_async(bootstrap: str, topic: str, messages, rate: float, stamp=None) -> float:
    """Paced load from an aiokafka producer (cheaper per message than kafka-python: the load generator
    shares the cores with the worker and the broker); ``stamp(value)``, if given, makes each value just
    before its send. The achieved rate."""
    from aiokafka import AIOKafkaProducer

    import gc

    prod = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=0)
    await prod.start()
    # the bench holds every generated event: a full collection here paused the load generator for 100s of ms
    # with records already stamped and not yet sent, which the latency runs then charged to the worker
    gc.collect()
    gc.freeze()
    gc.disable()
    try:
        t0 = time.monotonic()
        futs = []
        for n, (key, value) in enumerate(messages, 1):
            futs.append(await prod.send(topic, value=stamp(value) if stamp else value, key=key))
            ahead = n / rate - (time.monotonic() - t0)
            if ahead > 0.002:
                await asyncio.sleep(ahead)
        await asyncio.gather(*futs)
        return len(messages) / (time.monotonic() - t0)
    finally:
        gc.enable()
        gc.unfreeze()
        await prod.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bootstrap")
    ap.add_argument("--broker-pid", type=int, help="pid of the --bootstrap broker (for the cores it used)")
    ap.add_argument("--events", type=int, default=600_000,
                    help="events for the throughput runs (enough that two workers still share some after the "
                         "second one joins: one worker decides ~70k events/s here)")
    ap.add_argument("--rates", default="1000,2500,5000", help="offered loads for the latency runs (events/s)")
    ap.add_argument("--seconds", type=float, default=6.0, help="length of each latency run")
    ap.add_argument("--warmup", type=float, default=8.0, help="seconds of 1,000 events/s before the latency runs")
    ap.add_argument("--only", choices=("throughput", "latency"),
                    help="one part: one worker against replay (no raw consumer, bare faust or two workers), or "
                         "the latency runs alone (short A/B runs)")
    ap.add_argument("--bare-faust", nargs=3, metavar=("TOPIC", "N", "DATADIR"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.bare_faust:
        return bare_faust(args.bootstrap, args.bare_faust[0], int(args.bare_faust[1]), args.bare_faust[2])

    from models.simulate import simulate
    from streams.kafka_admin import ensure_topics

    tmp = Path(tempfile.mkdtemp(prefix="fb-bench-"))
    stop_broker = None
    bootstrap, broker_pid = args.bootstrap, args.broker_pid
    if not bootstrap:
        bootstrap, stop_broker = start_broker(tmp)
        broker_pid = broker_pid_of(tmp)
    print(f"broker {bootstrap}; cores {os.cpu_count()}; python {sys.version.split()[0]}")
    started: list[WorkerProc] = []
    try:
        t = time.perf_counter()
        # the simulator gives ~580 events per agent over 5 days: as many agents as the count asks (300 at least)
        events, _ = simulate(n_agents=max(300, -(-args.events // EVENTS_PER_AGENT)), days=5, seed=11)
        events = events[: args.events]
        msgs = event_messages(events)
        size = sum(len(v) for _, v in msgs) / len(msgs)
        print(f"generated {len(events)} events of {size:.0f} bytes on average, {len({e['agent_id'] for e in events})}"
              f" agents ({time.perf_counter() - t:.1f}s)")
        results = {}
        throughput, latency, full = args.only != "latency", args.only != "throughput", args.only is None
        if throughput:
            replay = replay_rate(msgs, POLICY)
            print(f"flowbreaker replay, same events and policy (in process): {replay:,.0f} events/s")

        # ------------------------------------------------------------ throughput
        prefix = f"bench-{uuid.uuid4().hex[:6]}-"
        if throughput:
            ensure_topics(bootstrap, 8, topic_prefix=prefix)
            rate_in = produce_fast(bootstrap, f"{prefix}agent-actions", msgs)
            print(f"\npre-filled {prefix}agent-actions (8 partitions) at {rate_in:,.0f} events/s (kafka-python "
                  "producer)")
        if full:
            raw = asyncio.run(raw_consume(bootstrap, f"{prefix}agent-actions", len(msgs), decode=False))
            raw_dec = asyncio.run(raw_consume(bootstrap, f"{prefix}agent-actions", len(msgs), decode=True))
            bare = run_bare_faust(bootstrap, f"{prefix}agent-actions", len(msgs) * 9 // 10, tmp / "bare")
            print(f"raw aiokafka consumer:              {raw:>9,.0f} events/s")
            print(f"raw aiokafka consumer + decode:     {raw_dec:>9,.0f} events/s")
            print(f"bare faust agent (take_events):     {bare:>9,.0f} events/s   (counts only: faust's own cost)")

        for n_workers in ((1, 2) if full else (1,) if throughput else ()):
            since = int(time.time() * 1000)
            base = end_offsets_sum(bootstrap, f"{prefix}agent-decisions")  # earlier runs' decisions
            app_id = f"{prefix}w{n_workers}"
            ws = [WorkerProc(bootstrap, prefix, app_id, tmp / f"{app_id}-{i}", flush_interval=5.0,
                             session_timeout=10.0) for i in range(n_workers)]
            started.extend(ws)
            for w in ws:
                w.start()
            for w in ws:
                w.wait_ready(timeout=90)
            r = worker_rate(ws, bootstrap, f"{prefix}agent-decisions", len(msgs), since, base, broker_pid=broker_pid)
            results[n_workers] = r
            print(f"{n_workers} worker{'s' if n_workers > 1 else ' '}:                          "
                  f"{r['rate']:>9,.0f} events/s  ({r['decisions_in_window']} decisions in {r['window_s']:.1f}s after "
                  f"the last rebalance; {r['decided']}/{len(msgs)} events decided; partitions {r['partitions']}; "
                  f"{r['state_writes']} state writes; cores used: {show_cores(r['cores'])})")
            if not r["decisions_in_window"]:
                print(f"  (every event was decided before the last worker was ready: no rate; a larger --events than "
                      f"{len(msgs)} measures it)")
            for w in ws:
                w.stop(timeout=60)
        if full:
            print(f"worker / raw consumer:              {results[1]['rate'] / raw:>9.0%}   "
                  f"(worker / bare faust: {results[1]['rate'] / bare:.0%}; two workers / one: "
                  f"{results[2]['rate'] / results[1]['rate']:.2f}x)")
        if throughput:
            print(f"\none worker / replay on the same events: {results[1]['rate'] / replay:6.2f}   (goal >= 0.70)")
        if not latency:
            return

        # ------------------------------------------------------------ latency at fixed loads
        prefix = f"bench-{uuid.uuid4().hex[:6]}-"
        # the producer's create time on the actions (not the broker's append time): latency from the send
        ensure_topics(bootstrap, 8, topic_prefix=prefix, configs={"actions": {"message.timestamp.type": "CreateTime"}})
        rates = [float(r) for r in args.rates.split(",")]
        need = int(sum(rates) * args.seconds + 1000 * args.warmup)
        lat_events, _ = simulate(n_agents=150, days=4, seed=5, incidents=KINDS * 12, incident_days_from=1)
        lat_events = lat_events[:need]
        w = WorkerProc(bootstrap, prefix, f"{prefix}lat", tmp / "lat", flush_interval=5.0, session_timeout=10.0)
        started.append(w)
        w.start().wait_ready(timeout=90)
        # warm-up, not measured: the first state writes, offset commits and new log segments of every
        # partition cost the broker tens of ms once; the runs below measure the steady state
        warm = lat_events[: int(1000 * args.warmup)]
        asyncio.run(produce_paced_async(bootstrap, f"{prefix}agent-actions", event_messages(warm), 1000.0))
        time.sleep(2.0)
        chunks, at = [], len(warm)
        run_cores = {}
        for rate in rates:
            n = min(int(rate * args.seconds), len(lat_events) - at)
            chunk = lat_events[at:at + n]
            at += n
            chunk_msgs = event_messages(chunk)
            cores = Cores({"worker": w.proc.pid, "broker": broker_pid, "producer": os.getpid()}).start()
            achieved = asyncio.run(produce_paced_async(bootstrap, f"{prefix}agent-actions", chunk_msgs, rate))
            run_cores[rate] = cores.stop()
            chunks.append((rate, achieved, {e["event_id"] for e in chunk}))
            time.sleep(1.0)  # let the worker drain before the next load
        total = sum(len(c[2]) for c in chunks) + len(warm)
        dec = TopicReader(bootstrap, f"{prefix}agent-decisions")
        dec.read_until(lambda ms: len(ms) >= total, timeout=120)
        acts = TopicReader(bootstrap, f"{prefix}agent-actions")
        acts.read_until(lambda ms: len(ms) >= total, timeout=60)
        sent = {json.loads(m.value)["event_id"]: m.timestamp for m in acts.messages}
        decided = {}
        for m in dec.messages:
            decided.setdefault(json.loads(m.value)["event_id"], m.timestamp)
        print("\nlatency, one worker, paced aiokafka producer (create time of the action -> of the decision):")
        p99_decision = {}
        for rate, achieved, ids in chunks:
            lat = [decided[i] - sent[i] for i in ids if i in decided]
            p99_decision[rate] = pct(lat, 99)
            print(f"  {rate:>6,.0f} events/s offered ({achieved:,.0f} achieved, {len(ids)} events): produce -> decision"
                  f"  p50 {pct(lat, 50):4.0f} ms  p99 {pct(lat, 99):5.0f} ms  max {max(lat):5.0f} ms"
                  f"  (cores: {show_cores(run_cores[rate])})")
        inc = TopicReader(bootstrap, f"{prefix}agent-incidents")
        ctl = TopicReader(bootstrap, f"{prefix}agent-control")
        n_freezes = sum(1 for m in dec.messages if json.loads(m.value)["action_taken"] == "freeze")
        inc.read_until(lambda ms: len(ms) >= n_freezes, timeout=30)
        ctl.read_until(lambda ms: len(ms) >= n_freezes, timeout=30)
        trigger = {json.loads(m.value)["incident_id"]: json.loads(m.value)["trigger_event_id"] for m in inc.messages}
        flat = {}
        for m in ctl.messages:
            c = json.loads(m.value)
            if c.get("command") == "freeze" and c["incident_id"] in trigger:
                eid = trigger[c["incident_id"]]
                rate = next((r for r, _, ids in chunks if eid in ids), None)
                if rate is not None:  # not in the warm-up
                    flat.setdefault(rate, []).append(m.timestamp - sent[eid])
        p99_freeze = {}
        for rate, values in sorted(flat.items()):
            p99_freeze[rate] = pct(values, 99)
            print(f"  {rate:>6,.0f} events/s offered: produce -> freeze command  p50 {pct(values, 50):4.0f} ms  "
                  f"p99 {pct(values, 99):5.0f} ms  max {max(values):5.0f} ms  ({len(values)} freezes)")
        allf = [v for vs in flat.values() for v in vs]
        if allf:
            print(f"  all loads: produce -> freeze command  p50 {pct(allf, 50):4.0f} ms  p99 {pct(allf, 99):5.0f} ms"
                  f"  ({len(allf)} freezes)")
        for r in (dec, acts, inc, ctl):
            r.close()
        st = w.status()
        print(f"  worker: {st['events']} events, {st['state_writes']} state writes in {st['flushes']} flushes")

        top = max(rates)
        print(f"\nratios (issue 13), on a {os.cpu_count()}-core machine shared with other work:")
        nan = float("nan")
        print(f"  p99 produce -> decision at {top:,.0f}/s:    {p99_decision.get(top, nan):6.0f} ms (goal <= 50)")
        print(f"  p99 produce -> freeze at {top:,.0f}/s:      {p99_freeze.get(top, nan):6.0f} ms (goal <= 100)")
        if not full:
            return
        print(f"  one worker / replay on the same events:   {results[1]['rate'] / replay:6.2f}   (goal >= 0.70)")
        print(f"  two workers / one:                        {results[2]['rate'] / results[1]['rate']:6.2f}   "
              f"(goal >= 1.7 where the cores allow)")

        def per_core(r: dict) -> float:
            return r["rate"] / max(1e-9, sum(v for k, v in r["cores"].items() if k.startswith("worker")))

        two = results[2]["cores"]
        free = os.cpu_count() - two["machine"]
        print(f"  two workers / one, per core the workers used: {per_core(results[2]) / per_core(results[1]):6.2f}   "
              f"(1.0: a second worker adds no cost of its own; events/s per worker core "
              f"{per_core(results[1]):,.0f} -> {per_core(results[2]):,.0f})")
        print(f"  did the cores allow it? during the two-worker run the machine was busy {two['machine']:.2f} of "
              f"{os.cpu_count()} cores ({free:.2f} idle; other work {two['others']:.2f}); two workers need about "
              f"{2 * sum(v for k, v in results[1]['cores'].items() if k.startswith('worker')):.2f} cores for 2x")
        print(f"  cores used: one worker run: {show_cores(results[1]['cores'])}; two workers run: "
              f"{show_cores(results[2]['cores'])}; {top:,.0f}/s run: {show_cores(run_cores.get(top, {}))}")
    finally:
        for w in started:
            w.stop(timeout=30)
        if stop_broker is not None:
            stop_broker()
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
