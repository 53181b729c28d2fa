"""``flowbreaker otlp`` throughput: tool spans decoded, mapped and published per second, on one core.

    python bench/bench_otlp.py [--bootstrap HOST:PORT] [--spans 51200] [--batch 512] [--rounds 3] [--cpu N]

Prints numbers, asserts nothing. The spans are made by the OpenTelemetry SDK
(an agent's ``execute_tool`` spans with the GenAI attributes: agent, conversation,
tool, call id, arguments and result, among 50 agents) and encoded by the SDK's
own OTLP encoder into ``ExportTraceServiceRequest`` bodies of ``--batch`` spans
(the BatchSpanProcessor's default export size is 512). Three measurements, each
the best of ``--rounds``, the process pinned to one CPU (``--cpu``, default the
last one):

1. **decode**: ``parse_request`` + ``SpanTranslator.translate`` (protobuf ->
   validated contract events, JSON-encoded), no I/O;
2. **decode + publish**: the same, then every event on ``agent-actions`` of a
   real broker (aiokafka, acks=all), each request waiting for the broker before
   it is answered, as the receiver does, 4 requests in flight (one in flight
   measures the broker's round trip, not the receiver);
3. **HTTP**: a ``flowbreaker otlp`` subprocess pinned to that CPU, bodies POSTed
   over keep-alive connections (4 in flight) by this process (not pinned), the
   count of events published read from its ``/metrics``.

Each is printed per second of wall time and per second of the process's CPU
time (what one core gives when nothing else runs on it; on a loaded machine the
wall-time rate is lower). Without ``--bootstrap`` it starts its own broker with
scripts/kafka.sh and stops it at the end. The broker and the client share the
machine's other cores.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from harness import REPO, broker  # bench/harness.py: sys.path, a broker of our own

from worker_harness import free_port, stop_process, wait_for  # noqa: E402


def make_bodies(n_spans: int, batch: int) -> list[bytes]:
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "bench-agents"}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("bench")
    tools = ["crm.lookup", "hr_db.query", "send_email", "files.delete", "web.search", "slack.post_message"]
    for i in range(n_spans):
        agent = f"agent-{i % 50:03d}"
        with tracer.start_as_current_span(f"execute_tool {tools[i % len(tools)]}", attributes={
                "gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": tools[i % len(tools)],
                "gen_ai.tool.call.id": f"call-{i}", "gen_ai.agent.id": agent,
                "gen_ai.conversation.id": f"conv-{i // 20}",
                "gen_ai.tool.call.arguments": json.dumps({"customer": i, "fields": ["name", "tier"]}),
                "gen_ai.tool.call.result": json.dumps({"name": "Ada Lovelace", "tier": "gold", "id": i})}):
            pass
    spans = memory.get_finished_spans()
    provider.shutdown()
    return [encode_spans(spans[i:i + batch]).SerializeToString() for i in range(0, len(spans), batch)]


def decode_only(bodies: list[bytes]) -> tuple[float, int, float]:
    from streams.otlp.translate import PROTOBUF, SpanTranslator, parse_request

    translator = SpanTranslator()
    t0, c0 = time.perf_counter(), time.process_time()
    n = 0
    for body in bodies:
        n += len(translator.translate(parse_request(body, PROTOBUF)).records)
    return time.perf_counter() - t0, n, time.process_time() - c0


async def decode_publish(bodies: list[bytes], bootstrap: str, topic: str, partitions: int,
                         in_flight: int = 4) -> tuple[float, int, float]:
    from aiokafka import AIOKafkaProducer
    from prometheus_client import CollectorRegistry

    from streams.otlp.metrics import OtlpMetrics
    from streams.otlp.receiver import ActionPublisher, OtlpReceiver
    from streams.otlp.translate import DEFAULT_MAX_BYTES, PROTOBUF, SpanTranslator

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        receiver = OtlpReceiver(SpanTranslator(), ActionPublisher(producer, topic, partitions),
                                OtlpMetrics(CollectorRegistry()), max_bytes=DEFAULT_MAX_BYTES)
        await receiver.export("http", bodies[0], PROTOBUF)  # connections and metadata warm
        queue = list(reversed(bodies))
        counts = []

        async def exporter():  # one of `in_flight` exporters, as concurrent HTTP requests would be
            while queue:
                counts.append(len((await receiver.export("http", queue.pop(), PROTOBUF)).records))

        t0, c0 = time.perf_counter(), time.process_time()
        await asyncio.gather(*(exporter() for _ in range(in_flight)))
        return time.perf_counter() - t0, sum(counts), time.process_time() - c0
    finally:
        await producer.stop()


async def post_all(url: str, bodies: list[bytes], in_flight: int = 4) -> None:
    from aiohttp import ClientSession, TCPConnector

    queue = list(reversed(bodies))
    async with ClientSession(connector=TCPConnector(limit=in_flight)) as session:
        async def worker():
            while queue:
                body = queue.pop()
                async with session.post(url, data=body, headers={"Content-Type": "application/x-protobuf"}) as r:
                    await r.read()
                    if r.status != 200:
                        raise SystemExit(f"receiver answered {r.status}")
        await asyncio.gather(*(worker() for _ in range(in_flight)))


def published(port: int) -> float:
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        for line in r.read().decode().splitlines():
            if line.startswith("flowbreaker_otlp_events_published_total "):
                return float(line.split()[-1])
    return 0.0


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def over_http(bodies: list[bytes], bootstrap: str, prefix: str, cpu: int, workdir: Path) -> tuple[float, int, float]:
    port = free_port()
    env = dict(os.environ, PYTHONPATH=str(REPO))
    err = open(workdir / "otlp.err", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "streams.cli.main", "otlp", "--bootstrap", bootstrap,
                             "--topic-prefix", prefix, "--listen", f"127.0.0.1:{port}"], cwd=REPO, env=env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)
    try:
        os.sched_setaffinity(proc.pid, {cpu})
        wait_for(lambda: proc.poll() is None and published(port) >= 0, 60, "flowbreaker otlp")
        url = f"http://127.0.0.1:{port}/v1/traces"
        asyncio.run(post_all(url, bodies[:1]))
        before = published(port)
        t0, c0 = time.perf_counter(), cpu_seconds(proc.pid)
        asyncio.run(post_all(url, bodies))
        elapsed, used = time.perf_counter() - t0, cpu_seconds(proc.pid) - c0
        return elapsed, int(published(port) - before), used
    finally:
        stop_process(proc, 20)
        err.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--bootstrap", default=None)
    p.add_argument("--spans", type=int, default=51_200)
    p.add_argument("--batch", type=int, default=512)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--cpu", type=int, default=None, help="the CPU to pin to (default the last one)")
    args = p.parse_args()
    cpu = args.cpu if args.cpu is not None else max(os.sched_getaffinity(0))
    print(f"making {args.spans:,} tool spans with the OpenTelemetry SDK ...", flush=True)
    bodies = make_bodies(args.spans, args.batch)
    size = sum(map(len, bodies))
    print(f"{len(bodies)} OTLP protobuf bodies of {args.batch} spans, {size / len(bodies) / 1024:.0f} KiB each")
    mine = os.sched_getaffinity(0)
    with tempfile.TemporaryDirectory() as tmp, broker(args.bootstrap, Path(tmp), 19392) as bootstrap:
        from streams.kafka_admin import ensure_topics
        from streams.settings import Settings

        prefix = f"bench-otlp-{uuid.uuid4().hex[:6]}-"
        settings = Settings(bootstrap=bootstrap, topic_prefix=prefix)
        topic = settings.topic("actions")
        partitions = ensure_topics(settings, topics=["actions"], timeout_s=60)[topic]
        os.sched_setaffinity(0, {cpu})
        try:
            rows = []
            best = min(decode_only(bodies) for _ in range(args.rounds))
            rows.append(("decode (parse + map + validate + encode)", best))
            best = min(asyncio.run(decode_publish(bodies, bootstrap, topic, partitions)) for _ in range(args.rounds))
            rows.append(("decode + publish (aiokafka, acks=all)", best))
        finally:
            os.sched_setaffinity(0, mine)
        best = min(over_http(bodies, bootstrap, prefix, cpu, Path(tmp)) for _ in range(args.rounds))
        rows.append(("HTTP: POST /v1/traces to flowbreaker otlp", best))
        load = os.getloadavg()[0]
        print(f"\none core (CPU {cpu}), best of {args.rounds}; load average {load:.1f} on {os.cpu_count()} CPUs")
        print(f"  {'':<46} {'per second':>12} {'per CPU-second':>15}")
        for name, (elapsed, n, used) in rows:
            per_cpu = f"{n / used:>15,.0f}" if used > 0 else f"{'n/a':>15}"
            print(f"  {name:<46} {n / elapsed:>12,.0f} {per_cpu}  tool spans ({n:,} in {elapsed:.2f} s, "
                  f"{used:.2f} s CPU)")


if __name__ == "__main__":
    main()
