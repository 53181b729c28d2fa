"""An MCP server for the gateway's tests (the SDK's high-level server, FastMCP's successor ``MCPServer``):
three tools (``read_record``, ``send_email``, ``delete_record``), a resource and a prompt, and a record of every
tool call it executes, one JSON line per call in ``--record FILE`` (written before the tool answers), so a test
can tell which calls reached it.

    python tests/integration/mcp_tool_server.py --record calls.jsonl               # stdio
    python tests/integration/mcp_tool_server.py --record calls.jsonl --http 8123   # Streamable HTTP on /mcp
"""
from __future__ import annotations

import argparse
import json
import os

from mcp.server.mcpserver import MCPServer

server = MCPServer("records", instructions="Records of the test organisation.")
RECORD_FILE: str | None = None


def _record(tool: str, **arguments) -> None:
    if RECORD_FILE:
        with open(RECORD_FILE, "a") as fh:
            fh.write(json.dumps({"tool": tool, "arguments": arguments}) + "\n")
            fh.flush()
            os.fsync(fh.fileno())


@server.tool()
def read_record(record_id: str) -> str:
    """Read one customer record."""
    _record("read_record", record_id=record_id)
    return json.dumps({"id": record_id, "name": "Ada Lovelace", "email": "ada@corp.example", "notes": "x" * 200})


@server.tool()
def send_email(to: str, body: str, records: int = 1) -> str:
    """Send an email carrying ``records`` records."""
    _record("send_email", to=to, body=body, records=records)
    return f"sent {len(body)} characters to {to}"


@server.tool()
def delete_record(record_id: str) -> str:
    """Delete one customer record."""
    _record("delete_record", record_id=record_id)
    return f"deleted {record_id}"


@server.resource("records://schema")
def schema() -> str:
    """The record schema."""
    return '{"id": "string", "name": "string", "email": "string"}'


@server.prompt()
def summarise(record_id: str) -> str:
    """Ask for a summary of a record."""
    return f"Summarise record {record_id} in one sentence."


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--record", required=True)
    parser.add_argument("--http", type=int, default=0, help="serve Streamable HTTP on this port instead of stdio")
    args = parser.parse_args()
    RECORD_FILE = args.record
    if args.http:
        server.run("streamable-http", host="127.0.0.1", port=args.http)
    else:
        server.run("stdio")
