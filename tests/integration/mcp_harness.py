"""What tests/integration/test_mcp_proxy.py and bench/bench_mcp_proxy.py share: the test MCP server, the mapping of
its tools, the gateway's command line and an initialised SDK client session over stdio.

The client is the ``mcp`` SDK's own (``ClientSession`` over ``stdio_client``), which starts the gateway
(``python -m streams.cli.main mcp-proxy ... -- python mcp_tool_server.py --record FILE``) as a desktop assistant
would, or the server directly. The server (mcp_tool_server.py) records every tool call it executes in FILE.
"""
from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path
from typing import Any, AsyncIterator, Iterable

import anyio
from mcp import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client

HERE = Path(__file__).resolve().parent
REPO_DIR = HERE.parents[1]
SERVER = HERE / "mcp_tool_server.py"

#: the test server's tools as contract actions: an ordinary read, a send of restricted records, a delete
MAPPING = """\
[defaults]
operator_id = "ops-team"

[[tool]]
match = "read_record"
action = "read"
resource = "crm://accounts"
sensitivity = "internal"
records = 3

[[tool]]
match = "send_email"
action = "send"
resource = "hr://personnel/records"
sensitivity = "restricted"
destinations = { from = "arguments.to", prefix = "email:" }
records = { from = "arguments.records", default = 1 }

[[tool]]
match = "delete_record"
action = "delete"
resource = "crm://accounts"
sensitivity = "internal"
records = 1
"""


def server_args(record: Path) -> list[str]:
    """The test server over stdio, recording its calls in ``record``."""
    return [str(SERVER), "--record", str(record)]


def gateway_args(*, agent: str, api: str, token_file: Path, bootstrap: str, prefix: str, mapping: Path,
                 record: Path, extra: Iterable[str] = ()) -> list[str]:
    """``python`` arguments of ``flowbreaker mcp-proxy`` for ``agent`` in front of the test server over stdio."""
    return ["-m", "streams.cli.main", "mcp-proxy", "--agent-id", agent, "--api", api, "--token-file",
            str(token_file), "--bootstrap", bootstrap, "--topic-prefix", prefix, "--mapping", str(mapping), *extra,
            "--", sys.executable, *server_args(record)]


def child_env(**extra: str) -> dict[str, str]:
    """This environment with the repository first on PYTHONPATH (the children import streams/)."""
    return dict(os.environ, PYTHONPATH=str(REPO_DIR) + os.pathsep + os.environ.get("PYTHONPATH", ""), **extra)


@contextlib.asynccontextmanager
async def client_session(args: list[str], errlog: Any, env: dict[str, str] | None = None
                         ) -> AsyncIterator[ClientSession]:
    """An initialised SDK client session with ``python ARGS`` (the gateway or the server) over stdio; its stderr
    goes to ``errlog``."""
    params = StdioServerParameters(command=sys.executable, args=args, env=env or child_env(), cwd=str(REPO_DIR))
    async with stdio_client(params, errlog=errlog) as (read, write):
        async with ClientSession(read, write) as session:
            with anyio.fail_after(60):
                await session.initialize()
            yield session
