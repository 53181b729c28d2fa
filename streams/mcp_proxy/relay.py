"""One MCP session relayed between a client and a server, message by message, with ``tools/call`` gated.

The gateway does not play server to the client and client to the server: it
passes the JSON-RPC messages of one session between the two transports the
``mcp`` SDK opens (``mcp.server.stdio.stdio_server`` towards the client,
``mcp.client.stdio.stdio_client`` or ``mcp.client.streamable_http`` towards the
server; ``SessionMessage`` objects, validated by the SDK's JSON-RPC types).
So everything but a tool call passes through as the two ends sent it:
``initialize`` and the server's own capabilities, instructions and version,
``tools/list``, resources, prompts, completions, logging, progress,
notifications both ways, cancellation, requests the server makes of the client
(sampling, elicitation, roots), methods of protocol revisions newer than this
module. A session-level proxy (a low-level ``Server`` in front of a
``ClientSession``) would have to re-declare each of those and re-encode every
result, and would drop what it does not know.

A ``tools/call`` request is handed to :class:`streams.mcp_proxy.gate.ToolGate`
in a task of its own (other messages do not wait behind a call held for
approval; the check itself runs on the event loop, ``ToolGate.decide``):

- forwarded: the request goes to the server unchanged; when its response comes
  back, the response goes to the client unchanged and then (off the call's
  path, once the client transport wrote it) the action event is published
  (``publish``), with the result;
- refused: the server never sees it; the client gets a response with the
  gate's tool error (``isError: true``) under the request's id.

A ``notifications/cancelled`` for a call still held by the gate ends the hold
(nothing is sent: the client gave up on it); for a forwarded call it goes to
the server, like any notification. A message a transport could not parse
(the SDK hands it over as an exception) is logged and dropped: it has no id to
answer.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Callable

import anyio
import anyio.to_thread
from mcp.shared.message import SessionMessage
from mcp.types.jsonrpc import JSONRPCError, JSONRPCNotification, JSONRPCRequest, JSONRPCResponse

from streams.mcp_proxy.gate import Decision, ToolGate, trace_id

__all__ = ["Relay"]

log = logging.getLogger("flowbreaker.mcp_proxy")

#: forwarded calls awaiting their response, at most (a server that never answers cannot grow memory)
MAX_PENDING = 10_000


class Relay:
    """Relays one session; ``publish(event)`` is called for each forwarded call that returned a result (it must
    not block: :class:`streams.mcp_proxy.publisher.Publisher` queues). ``on_decision(tool, decision, seconds)`` (optional) sees every gated call."""

    def __init__(self, gate: ToolGate, publish: Callable[[dict], Any], *, session_id: str,
                 on_decision: Callable[[str, Decision, float], Any] | None = None) -> None:
        self.gate = gate
        self.publish = publish
        self.session_id = session_id
        self.on_decision = on_decision
        self._held: dict[Any, anyio.CancelScope] = {}
        self._pending: dict[Any, tuple[Decision, str, Any]] = {}  # request id -> (decision, tool, arguments)
        self._progress: dict[Any, Any] = {}  # progress token -> id of the request that named it
        self.stats = {"forwarded": 0, "refused": 0, "published": 0, "cancelled": 0, "unparsed": 0}

    async def run(self, client_read, client_write, server_read, server_write) -> None:
        """Relay until either side ends; then close the other side's writer."""
        async with anyio.create_task_group() as tg:
            async def from_client() -> None:
                try:
                    async for item in client_read:
                        await self._from_client(item, client_write, server_write, tg)
                except (anyio.ClosedResourceError, anyio.BrokenResourceError):
                    pass  # a transport closed its end: the session is over
                finally:
                    tg.cancel_scope.cancel()

            async def from_server() -> None:
                try:
                    async for item in server_read:
                        await self._from_server(item, client_write)
                except (anyio.ClosedResourceError, anyio.BrokenResourceError):
                    pass
                finally:
                    tg.cancel_scope.cancel()

            tg.start_soon(from_client)
            tg.start_soon(from_server)
        for stream in (client_write, server_write):  # the transports' writers end when their stream closes
            with anyio.CancelScope(shield=True):
                try:
                    await stream.aclose()
                except Exception:  # noqa: BLE001 - closing a stream its transport already closed
                    pass

    # ------------------------------------------------------------------ client -> server
    async def _from_client(self, item, client_write, server_write, tg) -> None:
        if isinstance(item, Exception):
            self.stats["unparsed"] += 1
            log.warning("dropped a message from the client that is not JSON-RPC: %s", str(item)[:200])
            return
        msg = item.message
        if isinstance(msg, JSONRPCRequest) and msg.method == "tools/call":
            tg.start_soon(self._tool_call, item, client_write, server_write)
            return
        if isinstance(msg, JSONRPCNotification) and msg.method == "notifications/cancelled":
            rid = (msg.params or {}).get("requestId")
            scope = self._held.get(rid) if rid is not None else None
            if scope is not None:
                self.stats["cancelled"] += 1
                scope.cancel()
                return
            if rid is not None:
                self._pending.pop(rid, None)
        elif isinstance(msg, JSONRPCRequest):
            self._note_progress_token(msg)
        await server_write.send(SessionMessage(msg))  # the client side's transport metadata stays on its side

    def _note_progress_token(self, msg: JSONRPCRequest) -> None:
        meta = (msg.params or {}).get("_meta")
        token = meta.get("progressToken") if isinstance(meta, dict) else None
        if token is not None:
            if len(self._progress) >= MAX_PENDING:
                self._progress.pop(next(iter(self._progress)))
            self._progress[token] = msg.id

    def call_of_progress_token(self, token: Any) -> Any:
        """The id of the request that named ``token`` as its progress token, if known."""
        return self._progress.get(token) if token is not None else None

    async def _tool_call(self, item: SessionMessage, client_write, server_write) -> None:
        msg: JSONRPCRequest = item.message  # type: ignore[assignment]
        params = msg.params or {}
        tool = params.get("name")
        arguments = params.get("arguments")
        if not isinstance(tool, str) or not tool or (arguments is not None and not isinstance(arguments, dict)):
            await server_write.send(SessionMessage(msg))  # malformed: the server answers it with its own error, as without us
            return
        started = time.perf_counter()
        scope = anyio.CancelScope()
        self._held[msg.id] = scope
        decision = None
        try:
            with scope:
                decision = await self._decide(tool, arguments, msg.id, trace_id(params.get("_meta")))
        finally:
            self._held.pop(msg.id, None)
        if decision is None:  # cancelled by the client while held
            log.info("call %r of %s cancelled by the client while held", msg.id, tool)
            return
        if self.on_decision is not None:
            self.on_decision(tool, decision, time.perf_counter() - started)
        if decision.forward:
            self.stats["forwarded"] += 1
            if len(self._pending) >= MAX_PENDING:
                self._pending.pop(next(iter(self._pending)))
            self._pending[msg.id] = (decision, tool, arguments)
            self._note_progress_token(msg)
            await server_write.send(SessionMessage(msg))
            return
        self.stats["refused"] += 1
        log.info("refused %s call %r of %s: %s %s", self.gate.agent_id, msg.id, tool, decision.verdict,
                 "; ".join(decision.reasons))
        await client_write.send(SessionMessage(JSONRPCResponse(jsonrpc="2.0", id=msg.id, result=decision.result),
                                               metadata=_related(item)))

    async def _decide(self, tool: str, arguments: dict | None, request_id: Any, task: str | None) -> Decision:
        gate = self.gate
        action = gate.action_for(tool=tool, arguments=arguments, session_id=self.session_id, task_id=task,
                                 attributes={"jsonrpc.request.id": str(request_id)})
        decision = await gate.decide(action)  # the check on the loop, no thread hop (ToolGate.decide)
        if decision.verdict != "needs_approval" or gate.wait_approval_s <= 0 or not decision.approval_request_id:
            return decision
        # --wait-approval: hold the call until a person decides, then check again with the approval attached
        aid = decision.approval_request_id
        log.info("holding %s's call of %s for approval %s (up to %.0f s)", gate.agent_id, tool, aid,
                 gate.wait_approval_s)
        deadline = time.monotonic() + gate.wait_approval_s
        while time.monotonic() < deadline:
            await anyio.sleep(min(gate.approval_poll_s, max(0.0, deadline - time.monotonic())))
            if gate.guard.is_frozen(gate.agent_id):
                return await gate.decide(action)  # frozen meanwhile: refused
            rec = await anyio.to_thread.run_sync(gate.approval_state, aid)
            if rec is None or rec.get("state") == "pending":
                continue
            if rec.get("state") == "approved":
                return await gate.decide(dict(action, approval_id=rec.get("approval_id") or aid))
            return gate.refuse(f"approval_{rec.get('state')}", action,
                               [f"approval request {aid} was {rec.get('state')}"
                                + (f" ({rec['reason']})" if rec.get("reason") else "")], aid)
        return gate.refuse("needs_approval", action, list(decision.reasons) +
                           [f"no decision on approval request {aid} within {gate.wait_approval_s:.0f} s"], aid)

    # ------------------------------------------------------------------ server -> client
    async def _from_server(self, item, client_write) -> None:
        if isinstance(item, Exception):
            self.stats["unparsed"] += 1
            log.warning("dropped a message from the server that is not JSON-RPC: %s", str(item)[:200])
            return
        msg = item.message
        await client_write.send(item)
        if isinstance(msg, (JSONRPCResponse, JSONRPCError)) and msg.id in self._pending:
            decision, tool, arguments = self._pending.pop(msg.id)
            self._drop_progress_of(msg.id)
            if isinstance(msg, JSONRPCResponse):
                # after the reply is on its way: the client transport's writer task was woken by the send above
                # and runs first (it writes the line without waiting), then this (making, validating and queueing
                # the event, ~0.1 ms) runs; done here, it ran before the write, on the call's path
                asyncio.get_running_loop().call_soon(self._publish, decision, tool, arguments, msg.result)

    def _drop_progress_of(self, request_id: Any) -> None:
        for token in [t for t, rid in self._progress.items() if rid == request_id]:
            del self._progress[token]

    def _publish(self, decision: Decision, tool: str, arguments: Any, result: Any) -> None:
        try:
            event = self.gate.performed(decision, tool, arguments, result, session_id=self.session_id)
            self.publish(event)
            self.stats["published"] += 1
        except Exception:  # noqa: BLE001 - a failed publish must not end the session; it is logged
            log.exception("could not publish the action event of %s's call of %s", self.gate.agent_id, tool)


def _related(item: SessionMessage):
    """Metadata that routes our answer to the request's own response channel (Streamable HTTP)."""
    from mcp.shared.message import ServerMessageMetadata

    md = item.metadata
    request_context = getattr(md, "request_context", None)
    return ServerMessageMetadata(related_request_id=item.message.id, request_context=request_context)  # type: ignore[union-attr]
