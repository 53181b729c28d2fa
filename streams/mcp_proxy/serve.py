"""The two ends of a gateway session, opened with the ``mcp`` SDK's transports, and the HTTP listener.

:func:`upstream` opens the server side: a child process over stdio
(``mcp.client.stdio.stdio_client``; the child inherits the gateway's whole
environment, since the MCP client that started the gateway already chose it) or
a Streamable HTTP endpoint (``mcp.client.streamable_http.streamable_http_client``).
:func:`stdio_session` relays the gateway's own stdin/stdout
(``mcp.server.stdio.stdio_server``) to it. :func:`http` serves Streamable HTTP
on ``/mcp``: every client session (``Mcp-Session-Id``) gets a
``StreamableHTTPServerTransport`` of its own and an upstream session of its own.

Limits of the HTTP listener: sessions only (the 2025 handshake revisions; a
request of the stateless 2026-07-28 revision is answered 400 by the transport),
no resumability (no event store), and a progress notification reaches the
client on its call's stream only when it names the call's progress token
(others go to the client's GET stream).
"""

from __future__ import annotations

import contextlib
import logging
import os
import uuid
from typing import Any, AsyncIterator

import anyio
from mcp.shared.message import ServerMessageMetadata, SessionMessage

from streams.mcp_proxy.gate import ToolGate
from streams.mcp_proxy.relay import Relay

__all__ = ["upstream", "stdio_session", "http"]

log = logging.getLogger("flowbreaker.mcp_proxy")


@contextlib.asynccontextmanager
async def upstream(command: list[str], url: str | None) -> AsyncIterator[tuple[Any, Any]]:
    """(read, write) streams of SessionMessage to the MCP server."""
    if url:
        from mcp.client.streamable_http import streamable_http_client

        async with streamable_http_client(url) as streams:
            yield streams[0], streams[1]
        return
    from mcp.client.stdio import StdioServerParameters, stdio_client

    params = StdioServerParameters(command=command[0], args=command[1:], env=dict(os.environ))
    async with stdio_client(params) as (read, write):
        yield read, write


async def stdio_session(gate: ToolGate, publisher: Any, command: list[str], url: str | None) -> None:
    """Relay this process's stdin/stdout (one MCP session) to the server until either side ends."""
    from mcp.server.stdio import stdio_server

    session = "mcp-" + uuid.uuid4().hex[:16]
    log.info("gateway for agent %s: session %s to %s", gate.agent_id, session, url or " ".join(command))
    timings = _Timings()
    stdin, stdout = await _pipes()
    async with upstream(command, url) as (server_read, server_write):
        async with stdio_server(stdin, stdout) as (client_read, client_write):
            relay = Relay(gate, publisher.publish, session_id=session, on_decision=timings.add)
            try:
                await relay.run(client_read, client_write, server_read, server_write)
            finally:
                await _close_checks(gate)
    log.info("session %s ended: %s; decision time %s", session, relay.stats, timings)


async def _close_checks(gate: ToolGate) -> None:
    """Close the check client's connections of this event loop (``CheckClient.aclose``), if it has any."""
    aclose = getattr(gate.checks, "aclose", None)
    if aclose is not None:
        with anyio.CancelScope(shield=True):
            await aclose()


async def _pipes() -> tuple[Any, Any]:
    """stdin and stdout as the SDK's ``stdio_server`` reads and writes them (lines of text), on the event loop
    when they are pipes or sockets, as an MCP client connects them: the SDK's own file wrappers hand every line
    read, every write and every flush to a worker thread (three thread hops per message; a tool call through the
    gateway made eight). ``(None, None)`` otherwise (a terminal, a file): the SDK's wrappers then."""
    import asyncio
    import stat
    import sys

    def streamable(fd: int) -> bool:
        try:
            mode = os.fstat(fd).st_mode
        except OSError:
            return False
        return stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)

    if not (streamable(0) and streamable(1)):
        return None, None
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=64 * 1024 * 1024)  # one message a line: a large tool result is one line
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(os.dup(0), "rb", 0))
    transport, protocol = await loop.connect_write_pipe(asyncio.streams.FlowControlMixin,
                                                        os.fdopen(os.dup(1), "wb", 0))
    writer = asyncio.StreamWriter(transport, protocol, None, loop)
    sys.stdout = sys.stderr  # a stray print must not land on the MCP wire
    return _LinesIn(reader), _LinesOut(writer)


class _LinesIn:
    """``async for line in stdin`` over an asyncio StreamReader (UTF-8, undecodable bytes replaced, as the SDK)."""

    def __init__(self, reader: Any) -> None:
        self.reader = reader

    def __aiter__(self) -> "_LinesIn":
        return self

    async def __anext__(self) -> str:
        line = await self.reader.readline()
        if not line:
            raise StopAsyncIteration
        return line.decode("utf-8", errors="replace")


class _LinesOut:
    """``await stdout.write(text)`` / ``await stdout.flush()`` over an asyncio StreamWriter."""

    def __init__(self, writer: Any) -> None:
        self.writer = writer

    async def write(self, text: str) -> None:
        self.writer.write(text.encode("utf-8"))

    async def flush(self) -> None:
        await self.writer.drain()


class _Timings:
    """The time the gateway took to decide its last calls (the check included), for the session's closing line."""

    def __init__(self, keep: int = 10_000) -> None:
        from collections import deque

        self.seconds: deque[float] = deque(maxlen=keep)

    def add(self, tool: str, decision: Any, seconds: float) -> None:
        self.seconds.append(seconds)

    def __str__(self) -> str:
        if not self.seconds:
            return "n/a (no tool call)"
        s = sorted(self.seconds)
        at = lambda q: s[min(len(s) - 1, int(q * len(s)))] * 1000  # noqa: E731
        return f"p50 {at(0.5):.2f} ms, p99 {at(0.99):.2f} ms over {len(s)} calls"


class _HttpSessions:
    """The listener's sessions: ``Mcp-Session-Id`` -> transport; each relayed to an upstream session."""

    def __init__(self, gate: ToolGate, publisher: Any, command: list[str], url: str | None,
                 max_sessions: int = 1000) -> None:
        self.gate, self.publisher, self.command, self.url = gate, publisher, command, url
        self.max_sessions = max_sessions
        self.sessions: dict[str, Any] = {}
        self.tg: Any = None

    async def __call__(self, scope, receive, send) -> None:
        from mcp.server.streamable_http import MCP_SESSION_ID_HEADER, StreamableHTTPServerTransport
        from starlette.requests import Request
        from starlette.responses import JSONResponse

        request = Request(scope, receive)
        sid = request.headers.get(MCP_SESSION_ID_HEADER)
        if sid is not None:
            transport = self.sessions.get(sid)
            if transport is None:
                await JSONResponse({"jsonrpc": "2.0", "id": None, "error": {"code": -32600,
                                    "message": "Session not found"}}, 404)(scope, receive, send)
                return
            await transport.handle_request(scope, receive, send)
            if transport.is_terminated:
                self.sessions.pop(sid, None)
            return
        if len(self.sessions) >= self.max_sessions:
            await JSONResponse({"jsonrpc": "2.0", "id": None, "error": {"code": -32603,
                                "message": "Too many open sessions"}}, 503)(scope, receive, send)
            return
        sid = uuid.uuid4().hex
        transport = StreamableHTTPServerTransport(mcp_session_id=sid)
        self.sessions[sid] = transport
        await self.tg.start(self._run_session, sid, transport)
        await transport.handle_request(scope, receive, send)

    async def _run_session(self, sid: str, transport: Any, *, task_status=anyio.TASK_STATUS_IGNORED) -> None:
        session = "mcp-" + sid[:16]
        try:
            async with transport.connect() as (client_read, client_write):
                task_status.started()
                async with upstream(self.command, self.url) as (server_read, server_write):
                    relay = Relay(self.gate, self.publisher.publish, session_id=session)
                    log.info("session %s opened", session)
                    await relay.run(client_read, _ToClient(client_write, relay), server_read, server_write)
                log.info("session %s ended: %s", session, relay.stats)
        except Exception:  # noqa: BLE001 - one session's failure must not end the listener
            log.exception("session %s failed", session)
        finally:
            self.sessions.pop(sid, None)
            with anyio.CancelScope(shield=True):
                await transport.terminate()


class _ToClient:
    """The HTTP transport's write stream, with server messages routed to the call they belong to: a response by
    its id (the transport does that), a progress notification by its token."""

    def __init__(self, write: Any, relay: Relay) -> None:
        self.write, self.relay = write, relay

    async def send(self, item: SessionMessage) -> None:
        msg = item.message
        related = None
        if getattr(msg, "method", None) == "notifications/progress":
            related = self.relay.call_of_progress_token((msg.params or {}).get("progressToken"))
        if related is not None:
            item = SessionMessage(msg, metadata=ServerMessageMetadata(related_request_id=related))
        await self.write.send(item)

    async def aclose(self) -> None:
        await self.write.aclose()


def http(gate: ToolGate, publisher: Any, listen: tuple[str, int], command: list[str], url: str | None) -> None:
    """Serve Streamable HTTP on ``http://HOST:PORT/mcp`` until a signal."""
    import uvicorn
    from starlette.applications import Starlette
    from starlette.routing import Route

    sessions = _HttpSessions(gate, publisher, command, url)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        async with anyio.create_task_group() as tg:
            sessions.tg = tg
            log.info("gateway for agent %s listening on http://%s:%d/mcp, upstream %s", gate.agent_id, listen[0],
                     listen[1], url or " ".join(command))
            try:
                yield
            finally:
                tg.cancel_scope.cancel()
                await _close_checks(gate)

    app = Starlette(routes=[Route("/mcp", endpoint=sessions, methods=["GET", "POST", "DELETE"])], lifespan=lifespan)
    uvicorn.run(app, host=listen[0], port=listen[1], log_level="warning", lifespan="on")
