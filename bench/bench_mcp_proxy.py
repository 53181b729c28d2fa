"""What ``flowbreaker mcp-proxy`` adds to a tool call on localhost, the pre-action check included: prints numbers,
asserts nothing.

    python bench/bench_mcp_proxy.py [--bootstrap HOST:PORT] [--calls 2000]

Without ``--bootstrap`` it starts its own broker with scripts/kafka.sh (free ports, fresh data dir) and stops it
at the end. One ``flowbreaker worker`` (a tokens file) owns every partition; the agent gets a short history of
ordinary reads. Then two MCP sessions of the SDK's client (``ClientSession`` over ``stdio_client``) to the same
test server (tests/integration/mcp_tool_server.py): one direct, one through the gateway (``--api`` that worker,
the freeze guard following ``agent-control``, each forwarded call published on ``agent-actions``). Calls of
``read_record`` (allowed) alternate between the two sessions in blocks of 100, one call at a time, after 100
warm-up calls each; the latency of each call is send to result in the client.

Reported: p50 / p90 / p99 / max of both, and the difference at each percentile (what the gateway adds: its two
extra stdio hops, the mapping, the check's round trip to the worker, the relay). The broker, worker, gateway,
server and this client share the host's cores: read the numbers as what this host gives.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

import anyio
from harness import REPO, broker, pct  # bench/harness.py: sys.path, a broker of our own
from mcp import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client
from worker_harness import WorkerProc, ensure_signing_keys, make_topics, produce

TOKEN = "bench-runtime-token"
SERVER = REPO / "tests" / "integration" / "mcp_tool_server.py"
MAPPING = """\
[defaults]
operator_id = "ops"

[[tool]]
match = "read_record"
action = "read"
resource = "crm://accounts"
sensitivity = "internal"
records = 3
"""


def ms(x: float) -> str:
    return f"{x * 1000:.2f}"


async def measure(direct_args: list[str], proxy_args: list[str], env: dict, calls: int, block: int,
                  errlog) -> tuple[list[float], list[float], int]:
    def params(args):
        return StdioServerParameters(command=sys.executable, args=args, env=env, cwd=str(REPO))

    async with stdio_client(params(direct_args), errlog=errlog) as (dr, dw), \
            stdio_client(params(proxy_args), errlog=errlog) as (pr, pw):
        async with ClientSession(dr, dw) as direct, ClientSession(pr, pw) as proxied:
            await direct.initialize()
            await proxied.initialize()
            refused = 0

            async def one(session) -> float:
                nonlocal refused
                t0 = time.perf_counter()
                res = await session.call_tool("read_record", {"record_id": "r1"})
                took = time.perf_counter() - t0
                refused += bool(res.is_error)
                return took

            for _ in range(100):  # warm-up: connections, caches, the worker's agent state
                await one(direct)
                await one(proxied)
            idle0 = gateway_cpu()
            await anyio.sleep(5.0)
            idle = (gateway_cpu() - idle0) / 5.0
            refused = 0
            d, p = [], []
            cpu0 = gateway_cpu()
            while len(d) < calls:
                for _ in range(block):
                    d.append(await one(direct))
                for _ in range(block):
                    p.append(await one(proxied))
            return d, p, refused, (gateway_cpu() - cpu0) / len(p), idle


def own_work(n: int = 5000) -> float:
    """CPU seconds per call of the gateway's own steps, in this process: map and decide a call (an allowing check
    client), parse and encode its four JSON-RPC messages with the SDK's types, make and validate its event."""
    import json

    from detector.events import decode_event
    from mcp.types import jsonrpc_message_adapter
    from streams.clients.check_client import CheckResult
    from streams.clients.guard import FreezeGuard
    from streams.mcp_proxy.gate import ToolGate
    from streams.tool_mapping import mapping_from_dict
    import tomllib

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


def gateway_cpu() -> float:
    """CPU seconds (user + system) the gateway process has used so far (found by its command line)."""
    total = 0.0
    tick = os.sysconf("SC_CLK_TCK")
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            if b"mcp-proxy" not in cmd or b"--agent-id" not in cmd:
                continue
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
        except OSError:
            continue
    return total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bootstrap")
    ap.add_argument("--calls", type=int, default=2000, help="measured calls per session (default 2000)")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-mcp-"))
    with broker(args.bootstrap, tmp, 29392) as bootstrap:
        run(args, bootstrap, tmp)


def run(args: argparse.Namespace, bootstrap: str, tmp: Path) -> None:
    prefix = f"bm-{uuid.uuid4().hex[:6]}-"
    keys = ensure_signing_keys(tmp / "signing-keys.toml")
    env = dict(os.environ, FLOWBREAKER_SIGNING_KEYS=str(keys), PYTHONPATH=str(REPO))
    os.environ["FLOWBREAKER_SIGNING_KEYS"] = str(keys)  # the worker signs with the keys the gateway verifies with
    tokens = tmp / "tokens.toml"
    tokens.write_text(f'[[token]]\nname = "bench"\nrole = "runtime"\n'
                      f'sha256 = "{hashlib.sha256(TOKEN.encode()).hexdigest()}"\n')
    (tmp / "runtime.token").write_text(TOKEN)
    (tmp / "tools.toml").write_text(MAPPING)
    make_topics(bootstrap, [prefix + "agent-actions", prefix + "agent-control"], partitions=8)
    worker = WorkerProc(bootstrap, prefix, prefix + "app", tmp / "w0", extra=["--tokens", str(tokens)])
    agent = "bench-mcp-agent"
    try:
        worker.start()
        worker.wait_ready(1, timeout=120)
        t = time.time() - 3600
        history = []
        for i in range(30):
            ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t + i)) + "Z"
            history.append((agent.encode(), (
                f'{{"event_id": "{agent}-h{i}", "ts": "{ts}", "agent_id": "{agent}", "operator_id": "ops", '
                f'"tool": "read_record", "action": "read", "resource": "crm://accounts", "sensitivity": "internal", '
                f'"records": 3, "task_id": "{agent}-t{i // 10}"}}').encode()))
        produce(bootstrap, prefix + "agent-actions", history)
        url = f"http://127.0.0.1:{worker.web_port}"
        deadline = time.monotonic() + 60
        while worker.status()["decisions"] < 30 and time.monotonic() < deadline:
            time.sleep(0.5)
        server = [str(SERVER), "--record", str(tmp / "calls.jsonl")]
        proxy = ["-m", "streams.cli.main", "mcp-proxy", "--agent-id", agent, "--api", url,
                 "--token-file", str(tmp / "runtime.token"), "--bootstrap", bootstrap, "--topic-prefix", prefix,
                 "--mapping", str(tmp / "tools.toml"), "--", sys.executable, *server]
        with open(tmp / "stderr.log", "w") as errlog:
            d, p, refused, cpu, idle = anyio.run(measure, server, proxy, env, args.calls, 100, errlog)
        print(f"host: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}; worker {url}; {len(d)} calls "
              f"per session, alternating blocks of 100; {refused} refused through the gateway")
        print(f"gateway process CPU: {cpu * 1000:.2f} ms per call (with its idle share); idle "
              f"{idle * 1000:.0f} ms per second; its own steps in-process {own_work() * 1e6:.0f} us per call")
        print(f"{'':>22} {'p50 ms':>7} {'p90':>7} {'p99':>7} {'max':>7}")
        for name, xs in (("direct", d), ("through mcp-proxy", p)):
            print(f"{name:>22} {ms(pct(xs, 50)):>7} {ms(pct(xs, 90)):>7} {ms(pct(xs, 99)):>7} {ms(max(xs)):>7}")
        print(f"{'added by the gateway':>22} {ms(pct(p, 50) - pct(d, 50)):>7} {ms(pct(p, 90) - pct(d, 90)):>7} "
              f"{ms(pct(p, 99) - pct(d, 99)):>7}", flush=True)
    finally:
        worker.stop()


if __name__ == "__main__":
    main()
