"""``flowbreaker mcp-proxy``: an MCP gateway in front of one MCP server, for one agent.

stdio (what a desktop assistant, an IDE or an agent framework starts)::

    flowbreaker mcp-proxy --agent-id support-bot --api http://127.0.0.1:6066 --token-file runtime.token \\
        --bootstrap 127.0.0.1:9092 [--mapping tools.toml] -- npx -y @modelcontextprotocol/server-filesystem /srv

Streamable HTTP (clients connect to ``http://HOST:PORT/mcp``; each session gets its own upstream session)::

    flowbreaker mcp-proxy ... --upstream http://127.0.0.1:8000/mcp --listen 127.0.0.1:8931

Either side can be either transport: ``--listen`` serves HTTP instead of stdio,
``--upstream URL`` reaches the server over HTTP instead of starting ``COMMAND``.
The gateway follows ``agent-control`` (a :class:`~streams.clients.guard.FreezeGuard`,
verifying releases with the command signing keys: ``--signing-keys`` or
``FLOWBREAKER_SIGNING_KEYS``), asks ``POST /v1/check`` before each tool call and
publishes the action event of each forwarded call on ``agent-actions``
(``--topic-prefix`` applies). Logs go to stderr (stdout is the MCP channel).

Exit codes: 2 for a bad argument, an unreadable token or mapping file or no
signing keys (one line); 1 when the broker cannot be reached at start; else the
gateway runs until the client closes the session (stdio) or a signal.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import time
from pathlib import Path
from typing import Any

from detector.errors import UsageError
from streams.settings import Settings, SettingsError, add_kafka_arguments

log = logging.getLogger("flowbreaker.mcp_proxy")

#: how long a tool call waits for the freeze guard to catch up (a fresh gateway) before it is refused
READY_WAIT_S = 5.0


def configure_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--agent-id", required=True, metavar="ID", help="the agent whose tool calls pass this gateway")
    p.add_argument("--api", action="append", required=True, metavar="URL",
                   help="a worker's API for the pre-action check (repeat for more workers)")
    p.add_argument("--token-file", required=True, type=Path, metavar="FILE",
                   help="a bearer token of the runtime role (docs/api.md)")
    p.add_argument("--mapping", type=Path, metavar="FILE",
                   help="tool mapping file (TOML, docs/contract.md): action, resource, sensitivity... per tool")
    p.add_argument("--wait-approval", type=float, default=0.0, metavar="SECONDS",
                   help="hold a call that needs approval until it is decided, at most this long (default 0: "
                        "answer at once with a tool error naming the approval request)")
    p.add_argument("--fail-open", action="store_true",
                   help="forward calls when flowbreaker cannot be reached (logged as errors); default: refuse them")
    p.add_argument("--check-timeout", type=float, default=1.0, metavar="SECONDS",
                   help="how long a check may take before the gateway answers itself (default %(default)s)")
    p.add_argument("--upstream", metavar="URL", help="the MCP server's Streamable HTTP endpoint (instead of COMMAND)")
    p.add_argument("--listen", metavar="HOST:PORT",
                   help="serve Streamable HTTP on http://HOST:PORT/mcp (instead of stdio)")
    p.add_argument("server_command", nargs=argparse.REMAINDER, metavar="-- COMMAND ARGS",
                   help="the MCP server to start and talk to over stdio")
    add_kafka_arguments(p)


def _listen_address(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UsageError(f"--listen {text!r}: expected HOST:PORT")
    return host.strip("[]"), int(port)


def run(args: argparse.Namespace) -> int:
    command = list(args.server_command or [])
    if command and command[0] == "--":
        command = command[1:]
    if bool(command) == bool(args.upstream):
        raise UsageError("give the MCP server either as -- COMMAND ARGS... (stdio) or as --upstream URL")
    if args.upstream and not args.upstream.startswith(("http://", "https://")):
        raise UsageError(f"--upstream {args.upstream!r}: expected an http:// or https:// URL")
    listen = _listen_address(args.listen) if args.listen else None
    if args.wait_approval < 0 or args.check_timeout <= 0:
        raise UsageError("--wait-approval must be >= 0 and --check-timeout > 0")
    bad = [u for u in args.api if not u.startswith(("http://", "https://"))]
    if bad:
        raise UsageError(f"--api {bad[0]!r}: expected an http:// or https:// URL")
    try:
        token = args.token_file.read_text().strip()
    except OSError as err:
        raise UsageError(f"cannot read --token-file {args.token_file}: {err.strerror}") from None
    if not token:
        raise UsageError(f"--token-file {args.token_file} is empty")
    from streams.tool_mapping import load_mapping

    mapping = load_mapping(args.mapping)  # MappingError is a UsageError: exit 2
    try:
        settings = Settings.from_args(args)
        from streams.clients.signing import keyring_for

        keys = keyring_for(settings)
    except SettingsError as err:
        raise UsageError(str(err)) from None
    if keys is None:
        raise UsageError("no command signing keys: the gateway verifies releases with them (--signing-keys FILE "
                         "or FLOWBREAKER_SIGNING_KEYS: the workers' key file)")

    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("kafka").setLevel(logging.WARNING)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("httpx2").setLevel(logging.WARNING)
    logging.getLogger("mcp").setLevel(logging.WARNING)
    if args.fail_open:
        log.error("FAIL-OPEN: --fail-open is set: tool calls of %s go through when flowbreaker cannot be reached",
                  args.agent_id)

    producer = _producer(settings)  # KafkaUnavailable: exit 1
    from streams.clients.check_client import CheckClient
    from streams.clients.guard import FreezeGuard
    from streams.mcp_proxy.gate import SENSITIVITIES, ToolGate
    from streams.mcp_proxy.publisher import Publisher

    guard = FreezeGuard(settings.bootstrap, keys=keys, topic=settings.topic("control"),
                        client_id="flowbreaker-mcp-proxy-guard", consumer_config=settings.kafka_python_config())
    checks = CheckClient(args.api, token, timeout_s=args.check_timeout,
                         fail_closed=() if args.fail_open else SENSITIVITIES)
    gate = ToolGate(agent_id=args.agent_id, mapping=mapping, checks=checks, guard=guard, fail_open=args.fail_open,
                    wait_approval_s=args.wait_approval, ready_wait_s=READY_WAIT_S)
    publisher = Publisher(producer, settings.topic("actions"))
    # acknowledge the commands this gateway enacts for its agent on agent-control-acks, as a runtime's guard
    # does (streams/clients/acks.py; flowbreaker drill reads them)
    import os
    import socket

    from streams.clients.acks import GuardAcker

    acker = GuardAcker(settings, by=f"mcp-proxy:{socket.gethostname()}:{os.getpid()}").attach(
        _OneAgent(guard, args.agent_id))
    guard.start()
    import anyio

    from streams.mcp_proxy import serve

    started = time.monotonic()
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)  # SIGTERM: stop as on Ctrl-C, flushing
    try:
        if listen is None:
            anyio.run(serve.stdio_session, gate, publisher, command, args.upstream)
        else:
            serve.http(gate, publisher, listen, command, args.upstream)
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        guard.stop(timeout=5.0)
        acker.close()
        checks.close()
        publisher.close()
        producer.close(timeout=5.0)
        log.info("gateway for %s stopped after %.0f s: %s; events %s", args.agent_id, time.monotonic() - started,
                 gate.counts, publisher.stats)
    return 0


class _OneAgent:
    """The guard as a GuardAcker sees it, narrowed to the gateway's agent: the gateway enacts no other agent's
    commands, so it acknowledges none."""

    def __init__(self, guard: Any, agent_id: str) -> None:
        self.guard, self.agent_id = guard, agent_id

    @property
    def ready(self) -> bool:
        return self.guard.ready

    def add_listener(self, on_change) -> None:
        self.guard.add_listener(lambda command, frozen: on_change(command, frozen)
                                if command.get("agent_id") == self.agent_id else None)


def _producer(settings: Settings) -> Any:
    from kafka import KafkaProducer
    from kafka.errors import KafkaError

    from streams.kafka_admin import KafkaUnavailable

    kafka_log = logging.getLogger("kafka")
    level = kafka_log.level
    kafka_log.setLevel(logging.CRITICAL)  # no broker: our one line says so, not the client's retries
    try:  # linger 100 ms: kafka-python's sender costs ~1 ms of CPU per event sent alone, ~0.3 ms batched
        return KafkaProducer(client_id="flowbreaker-mcp-proxy", linger_ms=100, max_block_ms=5000,
                             request_timeout_ms=10000, bootstrap_timeout_ms=10000, **settings.kafka_python_config())
    except KafkaError as err:
        raise KafkaUnavailable(f"no Kafka broker answered at {settings.bootstrap} within 10 s "
                               f"({type(err).__name__})") from None
    finally:
        kafka_log.setLevel(level)
