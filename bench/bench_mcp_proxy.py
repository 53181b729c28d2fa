"""What ``flowbreaker mcp-proxy`` adds to a tool call on localhost, the pre-action check included: prints numbers,
asserts nothing.

    python bench/bench_mcp_proxy.py [--bootstrap HOST:PORT] [--calls 2000]

Without ``--bootstrap`` it starts its own broker with scripts/kafka.sh (free ports, fresh data dir) and stops it
at the end. One ``flowbreaker worker`` (a tokens file) owns every partition; the agent gets a short history of
ordinary reads. Then three MCP sessions of the SDK's client (``ClientSession`` over ``stdio_client``) to the same
test server (tests/integration/mcp_tool_server.py, FastMCP's successor ``MCPServer``): one direct, one through the
gateway (``--api`` that worker, the freeze guard following ``agent-control``, each forwarded call published on
``agent-actions``), and one through a bare relay (bench/stdio_relay.py: lines copied both ways, nothing parsed or
checked: the floor under any stdio gateway in Python on this host). The sessions call ``read_record`` (allowed),
one call at a time, taking turns call by call in a rotating order (all see the host alike), after 200 warm-up
calls each; a call's latency is send to result in the client.

Reported:

- p50 / p95 / p99 / max of the three, and what the bare relay and the gateway add at each percentile (through
  minus direct): two extra stdio hops, and for the gateway also the mapping, the check's round trip to the worker
  and the SDK's parsing; the issue's goal is <= 5 ms p99 added by the gateway;
- the host's load: the 1-minute load average, and how busy the cores were during the calls, by this benchmark's
  processes (client, gateway, server, worker) and by everything else (the shared broker, other work);
- where the time goes: the gateway's own decision time (the check included, from its closing log line), the
  check's round trip alone from this process (``CheckClient.acheck``, as the gateway makes it; back to back, and
  after 5 ms without a call, as the worker waits between the gateway's checks here) with the worker's own
  handling time (``flowbreaker_check_seconds``), the gateway's CPU per call and its own steps in-process.

Everything shares the host's cores: read the numbers as what this host gave while it ran.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

import anyio
from harness import broker, pct  # bench/harness.py: sys.path, a broker of our own
from mcp_harness import MAPPING, child_env, client_session, gateway_args, server_args
from worker_harness import WorkerProc, ensure_signing_keys, make_topics, produce

TOKEN = "bench-runtime-token"
RELAY = Path(__file__).resolve().parent / "stdio_relay.py"
AGENT = "bench-mcp-agent"
GOAL_P99_MS = 5.0
WARMUP = 200


def ms(x: float) -> str:
    return f"{x * 1000:.2f}"


# ------------------------------------------------------------------ the host
def cpu_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of all cores since boot (/proc/stat)."""
    f = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = f[3] + (f[4] if len(f) > 4 else 0)
    return sum(f) - idle, sum(f)


def tree_ticks(root: int) -> int:
    """user + system jiffies of ``root`` and every process under it, alive now."""
    parent, ticks = {}, {}
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            parent[int(pid)], ticks[int(pid)] = int(fields[1]), int(fields[11]) + int(fields[12])
    total = 0
    for pid, t in ticks.items():
        p = pid
        while p not in (0, 1, root) and p in parent:
            p = parent[p]
        if p == root:
            total += t
    return total


def gateway_cpu() -> float:
    """CPU seconds (user + system) used so far by the gateway this process started."""
    tick = os.sysconf("SC_CLK_TCK")
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == os.getpid() and b"mcp-proxy" in cmd:
            return (int(fields[11]) + int(fields[12])) / tick
    return float("nan")


# ------------------------------------------------------------------ the calls
async def measure(direct_args: list[str], proxy_args: list[str], calls: int, errlog) -> dict:
    env = child_env()
    relay_args = [str(RELAY), "--", sys.executable, *direct_args]
    async with client_session(direct_args, errlog, env) as direct, \
            client_session(relay_args, errlog, env) as relayed, \
            client_session(proxy_args, errlog, env) as proxied:
        refused = 0

        async def one(session) -> float:
            nonlocal refused
            t0 = time.perf_counter()
            res = await session.call_tool("read_record", {"record_id": "r1"})
            took = time.perf_counter() - t0
            refused += bool(res.is_error)
            return took

        sessions = {"direct": direct, "relay": relayed, "proxied": proxied}
        for _ in range(WARMUP):  # connections, caches, the worker's agent state
            for session in sessions.values():
                await one(session)
        idle0 = gateway_cpu()
        await anyio.sleep(5.0)
        idle = (gateway_cpu() - idle0) / 5.0
        refused = 0
        took: dict[str, list[float]] = {name: [] for name in sessions}
        names = list(sessions)
        load0, busy0, own0, cpu0 = os.getloadavg()[0], cpu_ticks(), tree_ticks(os.getpid()), gateway_cpu()
        t0 = time.monotonic()
        for i in range(calls):  # each round in another order: none of the three always goes first
            for name in names[i % 3:] + names[:i % 3]:
                took[name].append(await one(sessions[name]))
        wall = time.monotonic() - t0
        busy1, own1, cpu1 = cpu_ticks(), tree_ticks(os.getpid()), gateway_cpu()
        busy, total = busy1[0] - busy0[0], busy1[1] - busy0[1]
        return {**took, "refused": refused, "gateway_cpu": (cpu1 - cpu0) / calls,
                "idle": idle, "wall": wall, "load": (load0, os.getloadavg()[0]),
                "busy": busy / total if total else float("nan"),
                "own": (own1 - own0) / total if total else float("nan")}


# ------------------------------------------------------------------ where the time goes
def check_alone(url: str, mapping: Path, n: int = 1000) -> tuple[list[float], list[float], float]:
    """The check's round trip from this process as the gateway makes it (CheckClient.acheck on an event loop, one
    kept-alive connection): back to back, and each after 5 ms without a call (as in the sessions, where the worker
    waits between checks while the other sessions call); and the worker's own mean time per check meanwhile
    (flowbreaker_check_seconds)."""
    from streams.clients.check_client import CheckClient
    from streams.clients.guard import FreezeGuard
    from streams.mcp_proxy.gate import SENSITIVITIES, ToolGate
    from streams.tool_mapping import load_mapping

    checks = CheckClient([url], TOKEN, timeout_s=1.0, fail_closed=SENSITIVITIES)
    gate = ToolGate(agent_id=AGENT, mapping=load_mapping(mapping), checks=checks, guard=FreezeGuard())
    actions = [gate.action_for(tool="read_record", arguments={"record_id": "r1"}, session_id="mcp-bench")
               for _ in range(n + 100)]

    async def run() -> tuple[list[float], list[float], tuple[float, float], tuple[float, float]]:
        out: dict[float, list[float]] = {0.0: [], 0.005: []}
        for a in actions[:100]:
            await checks.acheck(a)
        m0 = worker_check_seconds(url)
        for i, a in enumerate(actions[100:]):
            pause = 0.005 if i % 2 else 0.0
            if pause:
                await anyio.sleep(pause)
            t0 = time.perf_counter()
            res = await checks.acheck(a)
            out[pause].append(time.perf_counter() - t0)
            assert res.source == "flowbreaker", res
        m1 = worker_check_seconds(url)
        await checks.aclose()
        return out[0.0], out[0.005], m0, m1

    hot, idle, m0, m1 = anyio.run(run)
    return hot, idle, (m1[0] - m0[0]) / max(1.0, m1[1] - m0[1])


def worker_check_seconds(url: str) -> tuple[float, float]:
    """(sum, count) of the worker's flowbreaker_check_seconds histogram."""
    text = urllib.request.urlopen(url + "/metrics", timeout=10).read().decode()
    got = {k: float(v) for k, v in re.findall(r"^flowbreaker_check_seconds_(sum|count)\S* (\S+)$", text, re.M)}
    return got.get("sum", 0.0), got.get("count", 0.0)


def own_work(n: int = 5000) -> float:
    """CPU seconds per call of the gateway's own steps, in this process: map and decide a call (an allowing check
    client), parse and encode its four JSON-RPC messages with the SDK's types, make and validate its event."""
    import tomllib

    from detector.events import decode_event
    from mcp.types import jsonrpc_message_adapter
    from streams.clients.check_client import CheckResult
    from streams.clients.guard import FreezeGuard
    from streams.mcp_proxy.gate import ToolGate
    from streams.tool_mapping import mapping_from_dict

    class Allow:
        def check(self, action):
            return CheckResult("allow")

    gate = ToolGate(agent_id="a", mapping=mapping_from_dict(tomllib.loads(MAPPING)), checks=Allow(),
                    guard=FreezeGuard())
    result = {"content": [{"type": "text", "text": "x" * 300}], "isError": False}
    request = json.dumps({"jsonrpc": "2.0", "id": 5, "method": "tools/call",
                          "params": {"name": "read_record", "arguments": {"record_id": "r1"}}})
    response = json.dumps({"jsonrpc": "2.0", "id": 5, "result": result})
    t0 = time.process_time()
    for _ in range(n):
        for line in (request, request, response, response):
            jsonrpc_message_adapter.validate_json(line, by_name=False).model_dump_json(by_alias=True,
                                                                                       exclude_unset=True)
        action = gate.action_for(tool="read_record", arguments={"record_id": "r1"}, session_id="mcp-s")
        decision = gate.decide_now(action)
        event = gate.performed(decision, "read_record", {"record_id": "r1"}, result, session_id="mcp-s")
        decode_event(event)
        json.dumps(event, separators=(",", ":"))
    return (time.process_time() - t0) / n


# ------------------------------------------------------------------ the run
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bootstrap")
    ap.add_argument("--calls", type=int, default=2000, help="measured calls per session (default 2000)")
    args = ap.parse_args()
    if args.calls < 100:
        ap.error("--calls must be at least 100")
    tmp = Path(tempfile.mkdtemp(prefix="bench-mcp-"))
    with broker(args.bootstrap, tmp, 29392) as bootstrap:
        run(args, bootstrap, tmp)


def run(args: argparse.Namespace, bootstrap: str, tmp: Path) -> None:
    prefix = f"bm-{uuid.uuid4().hex[:6]}-"
    keys = ensure_signing_keys(tmp / "signing-keys.toml")
    os.environ["FLOWBREAKER_SIGNING_KEYS"] = str(keys)  # the worker signs with the keys the gateway verifies with
    tokens = tmp / "tokens.toml"
    tokens.write_text(f'[[token]]\nname = "bench"\nrole = "runtime"\n'
                      f'sha256 = "{hashlib.sha256(TOKEN.encode()).hexdigest()}"\n')
    (tmp / "runtime.token").write_text(TOKEN)
    (tmp / "tools.toml").write_text(MAPPING)
    make_topics(bootstrap, [prefix + "agent-actions", prefix + "agent-control"], partitions=8)
    worker = WorkerProc(bootstrap, prefix, prefix + "app", tmp / "w0", extra=["--tokens", str(tokens)])
    try:
        worker.start()
        worker.wait_ready(1, timeout=120)
        t = time.time() - 3600
        history = []
        for i in range(30):
            ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t + i)) + "Z"
            history.append((AGENT.encode(), json.dumps(
                {"event_id": f"{AGENT}-h{i}", "ts": ts, "agent_id": AGENT, "operator_id": "ops-team",
                 "tool": "read_record", "action": "read", "resource": "crm://accounts", "sensitivity": "internal",
                 "records": 3, "task_id": f"{AGENT}-t{i // 10}"}).encode()))
        produce(bootstrap, prefix + "agent-actions", history)
        url = f"http://127.0.0.1:{worker.web_port}"
        deadline = time.monotonic() + 60
        while worker.status()["decisions"] < 30 and time.monotonic() < deadline:
            time.sleep(0.5)
        record = tmp / "calls.jsonl"
        proxy = gateway_args(agent=AGENT, api=url, token_file=tmp / "runtime.token", bootstrap=bootstrap,
                             prefix=prefix, mapping=tmp / "tools.toml", record=record)
        with open(tmp / "stderr.log", "w") as errlog:
            r = anyio.run(measure, server_args(record), proxy, args.calls, errlog)
        alone, after_idle, worker_s = check_alone(url, tmp / "tools.toml")
        decided = re.findall(r"decision time (p50 .*? over \d+ calls)", (tmp / "stderr.log").read_text())
    finally:
        worker.stop()
    d, rel, p = r["direct"], r["relay"], r["proxied"]
    cores = os.cpu_count() or 1
    print(f"host: {cores} cores; load average (1 min) {r['load'][0]:.2f} before the calls, {r['load'][1]:.2f} "
          f"after; cores busy {r['busy'] * 100:.0f} % during the calls ({r['own'] * 100:.0f} % this benchmark's "
          f"processes, {(r['busy'] - r['own']) * 100:.0f} % everything else)")
    print(f"{len(d)} calls per session, the sessions taking turns call by call, {r['wall']:.1f} s; "
          f"{r['refused']} calls answered with an error")
    print(f"{'':>22} {'p50 ms':>7} {'p95':>7} {'p99':>7} {'max':>7}")
    for name, xs in (("direct", d), ("through a bare relay", rel), ("through mcp-proxy", p)):
        print(f"{name:>22} {ms(pct(xs, 50)):>7} {ms(pct(xs, 95)):>7} {ms(pct(xs, 99)):>7} {ms(max(xs)):>7}")
    floor = {q: pct(rel, q) - pct(d, q) for q in (50, 95, 99)}
    added = {q: pct(p, q) - pct(d, q) for q in (50, 95, 99)}
    print(f"{'added by a bare relay':>22} {ms(floor[50]):>7} {ms(floor[95]):>7} {ms(floor[99]):>7}   "
          f"(bench/stdio_relay.py: the two extra stdio hops alone, no parsing, no check)")
    print(f"{'added by the gateway':>22} {ms(added[50]):>7} {ms(added[95]):>7} {ms(added[99]):>7}")
    print(f"goal: the gateway adds <= {GOAL_P99_MS:.0f} ms p99: {'met' if added[99] * 1000 <= GOAL_P99_MS else 'NOT met'} "
          f"here ({ms(added[99])} ms)")
    print("where the time goes:")
    print(f"  the gateway's decision per call, the check included (its log): {decided[-1] if decided else 'n/a'}")
    print(f"  the check's round trip alone (CheckClient.acheck from this process): back to back p50 "
          f"{ms(pct(alone, 50))} p95 {ms(pct(alone, 95))} p99 {ms(pct(alone, 99))} ms; after 5 ms without a call "
          f"p50 {ms(pct(after_idle, 50))} p95 {ms(pct(after_idle, 95))} p99 {ms(pct(after_idle, 99))} ms; the "
          f"worker's own handling {worker_s * 1000:.3f} ms per check")
    print(f"  gateway process CPU {r['gateway_cpu'] * 1000:.2f} ms per call (its idle share included; idle "
          f"{r['idle'] * 1000:.0f} ms per second); its own steps in-process {own_work() * 1e6:.0f} us per call",
          flush=True)


if __name__ == "__main__":
    main()
