"""The gateway's decision for one ``tools/call``: forward it, or answer the model with a tool error.

:class:`ToolGate` maps the call to a contract action (``streams.tool_mapping``),
then decides, in this order:

1. *Frozen* (the :class:`streams.clients.guard.FreezeGuard` following
   ``agent-control`` holds the agent): refused at once, without a network call.
2. *Control log not current* (the guard is still catching up, or has not
   confirmed it read ``agent-control`` to its end for ``max_staleness_s``: the
   broker is unreachable): refused (fail closed). It waits up to
   ``ready_wait_s`` first, so the first call of a fresh gateway does not fail
   while the guard reads the log.
3. *The pre-action check* (``POST /v1/check`` through
   :class:`streams.clients.check_client.CheckClient`): ``allow`` forwards;
   ``deny`` refuses; ``needs_approval`` refuses with the approval request's id,
   or, with ``wait_approval_s``, holds the call until the request is decided and
   checks again with the approval attached. No answer from any worker: the
   check client's fallback, which the gateway builds to deny every sensitivity
   (fail closed). A 4xx answer (bad token, an action the API refuses) refuses too.

``fail_open`` turns 2 and the check's fallback around (the call is forwarded),
each time logged as an error: for a team that would rather keep its agents
running through an outage than stop them. An agent frozen by a command is
refused either way.

A refusal is a tool error (a ``CallToolResult`` with ``isError: true``) whose text
tells the model what happened and what to do; its ``_meta["flowbreaker"]`` says
the same for programs (``verdict``, ``reasons``, ``approval_request_id``,
``event_id``). After a forwarded call, :meth:`ToolGate.performed` gives the action
event to publish: the same event id, the time the result came back, and the
mapping's fields given the result (by default ``bytes`` is the result's size).

>>> from streams.clients.guard import FreezeGuard
>>> class Allow:                      # a check client that allows everything
...     def check(self, action): return CheckResult("allow")
>>> from streams.clients.check_client import CheckResult
>>> guard = FreezeGuard()             # fed by hand here; a gateway follows agent-control
>>> from streams.tool_mapping import load_mapping
>>> gate = ToolGate(agent_id="a1", mapping=load_mapping(None), checks=Allow(), guard=guard)
>>> d = gate.decide_now(gate.action_for(tool="mail.send", arguments={}, session_id="s", event_id="e1"))
>>> d.forward, d.verdict
(True, 'allow')
>>> _ = guard.apply({"command": "freeze", "agent_id": "a1", "incident_id": "inc-7"})
>>> d = gate.decide_now(gate.action_for(tool="mail.send", arguments={}, session_id="s", event_id="e2"))
>>> d.forward, d.verdict, d.result["isError"]
(False, 'frozen', True)
>>> d.result["content"][0]["text"].split(":")[0]
'flowbreaker refused this call'
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Mapping

from detector.events import EventError, decode_event
from streams.clients.check_client import CheckError, CheckResult

__all__ = ["ToolGate", "Decision", "SENSITIVITIES", "tool_error", "iso_now", "trace_id"]

log = logging.getLogger("flowbreaker.mcp_proxy")

#: every sensitivity of the contract: the gateway's check client fails closed for all of them
SENSITIVITIES = ("public", "internal", "confidential", "restricted")


def iso_now(clock: Callable[[], float] = time.time) -> str:
    """RFC 3339, milliseconds, UTC: ``2026-12-04T10:00:00.000Z``."""
    return datetime.fromtimestamp(clock(), timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


_TRACEPARENT = re.compile(r"^[0-9a-f]{2}-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}$")


def trace_id(meta: Any) -> str | None:
    """The W3C trace id in a request's ``params._meta.traceparent`` (how MCP clients propagate trace context),
    if there is a valid one: the call's task, as for a span (``flowbreaker otlp``: the trace id when no
    conversation id).

    >>> trace_id({"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"})
    '4bf92f3577b34da6a3ce929d0e0e4736'
    >>> trace_id({"traceparent": "00-00000000000000000000000000000000-00f067aa0ba902b7-01"}), trace_id(None)
    (None, None)
    """
    raw = meta.get("traceparent") if isinstance(meta, dict) else None
    m = _TRACEPARENT.match(raw) if isinstance(raw, str) else None
    if m is None or m.group(1) == "0" * 32:
        return None
    return m.group(1)


def tool_error(text: str, meta: Mapping[str, Any]) -> dict:
    """A ``CallToolResult`` (JSON) telling the model ``text``; ``meta`` under ``_meta["flowbreaker"]``."""
    return {"content": [{"type": "text", "text": text}], "isError": True, "_meta": {"flowbreaker": dict(meta)}}


@dataclass
class Decision:
    """What to do with one call: ``forward`` it, or answer ``result`` (a tool error) instead.

    ``verdict``: ``allow`` | ``needs_approval`` | ``deny`` | ``frozen`` | ``unavailable``; ``action`` is the
    checked action (with the approval id attached when an approval let it through)."""

    forward: bool
    verdict: str
    action: dict
    reasons: list[str] = field(default_factory=list)
    approval_request_id: str | None = None
    result: dict | None = None
    fallback: bool = False       # the verdict is the gateway's own (no answer, stale log), not a worker's


class ToolGate:
    """Decisions for the tool calls of one agent (``agent_id``); see the module's docstring.

    ``mapping`` has ``event_for(...)`` (:class:`streams.tool_mapping.ToolMapping`); ``checks`` has
    ``check(action) -> CheckResult`` and, for ``wait_approval_s``, ``approval(id) -> dict``
    (:class:`~streams.clients.check_client.CheckClient`); ``guard`` has ``is_frozen``, ``current``,
    ``open_incident`` and ``wait_current`` (:class:`~streams.clients.guard.FreezeGuard`).
    """

    def __init__(self, *, agent_id: str, mapping: Any, checks: Any, guard: Any, fail_open: bool = False,
                 wait_approval_s: float = 0.0, approval_poll_s: float = 1.0, ready_wait_s: float = 2.0,
                 clock: Callable[[], float] = time.time) -> None:
        self.agent_id = agent_id
        self.mapping = mapping
        self.checks = checks
        self.guard = guard
        self.fail_open = fail_open
        self.wait_approval_s = float(wait_approval_s)
        self.approval_poll_s = float(approval_poll_s)
        self.ready_wait_s = float(ready_wait_s)
        self.clock = clock
        self.counts: dict[str, int] = {}

    # ------------------------------------------------------------------ the action
    def action_for(self, *, tool: str, arguments: Mapping[str, Any] | None, session_id: str,
                   event_id: str | None = None, attributes: Mapping[str, Any] | None = None,
                   task_id: str | None = None) -> dict:
        """The contract action for a call of ``tool`` (the mapping's fields; ``task_id`` the trace the call
        belongs to when the client propagates one, see :func:`trace_id`, else the MCP session)."""
        attrs = {"mcp.method.name": "tools/call", "mcp.session.id": session_id, "gen_ai.tool.name": tool,
                 "gen_ai.operation.name": "execute_tool", **(attributes or {})}
        return self.mapping.event_for(tool=tool, agent_id=self.agent_id, task_id=task_id or session_id,
                                      event_id=event_id or "mcp-" + uuid.uuid4().hex, ts=iso_now(self.clock),
                                      arguments=dict(arguments) if arguments is not None else None, result=None,
                                      attributes=attrs)

    def performed(self, decision: Decision, tool: str, arguments: Mapping[str, Any] | None, result: Any, *,
                  session_id: str, attributes: Mapping[str, Any] | None = None) -> dict:
        """The action event of a forwarded call of ``tool`` that returned ``result`` (the ``CallToolResult`` as
        JSON): the checked action's id, the time now, the mapping's fields given the result (by default
        ``bytes`` is the result's size)."""
        action = decision.action
        attrs = {"mcp.method.name": "tools/call", "mcp.session.id": session_id, "gen_ai.tool.name": tool,
                 "gen_ai.operation.name": "execute_tool", **(attributes or {})}
        ev = self.mapping.event_for(tool=tool, agent_id=self.agent_id, task_id=action.get("task_id") or session_id,
                                    event_id=action["event_id"], ts=iso_now(self.clock),
                                    arguments=dict(arguments) if arguments is not None else None, result=result,
                                    attributes=attrs)
        if action.get("approval_id"):
            ev["approval_id"] = action["approval_id"]
        return ev

    # ------------------------------------------------------------------ deciding
    def decide_now(self, action: dict) -> Decision:
        """The decision for ``action`` from the guard and one check (blocking: call it from a thread).
        ``needs_approval`` is returned as it is; :meth:`approval_state` and :meth:`with_approval` wait."""
        d = self._decide(action)
        self.counts[d.verdict] = self.counts.get(d.verdict, 0) + 1
        return d

    async def decide(self, action: dict) -> Decision:
        """:meth:`decide_now` from the event loop: the same decision, with the check made on the loop
        (``checks.acheck``, :meth:`CheckClient.acheck`) instead of in a worker thread. A check client without
        ``acheck``, or a freeze log not current (waiting for it blocks), goes to a worker thread as before."""
        import anyio.to_thread

        acheck = getattr(self.checks, "acheck", None)
        if acheck is None:
            return await anyio.to_thread.run_sync(self.decide_now, action)
        d = self._screen(action)
        if d is None and not self.guard.current:
            d = await anyio.to_thread.run_sync(self._stale, action)
        if d is None:
            try:
                d = self._from_check(action, await acheck(action))
            except CheckError as err:
                d = self._check_refused(action, err)
        self.counts[d.verdict] = self.counts.get(d.verdict, 0) + 1
        return d

    def _decide(self, action: dict) -> Decision:
        d = self._screen(action)
        if d is None and not self.guard.current:
            d = self._stale(action)
        if d is not None:
            return d
        try:
            res: CheckResult = self.checks.check(action)
        except CheckError as err:
            return self._check_refused(action, err)
        return self._from_check(action, res)

    def _screen(self, action: dict) -> Decision | None:
        """A refusal before any check (an action outside the contract, a frozen agent), or None."""
        agent = self.agent_id
        try:
            decode_event(action)
        except EventError as err:  # the mapping gave a value outside the contract: a configuration error
            log.error("the mapped action for %s is not a valid event (%s): refusing the call; fix the mapping file",
                      action.get("tool"), err)
            return self.refuse("deny", action, [f"the call maps to an invalid action ({err})"])
        if self.guard.is_frozen(agent):
            return self.refuse("frozen", action, [f"the agent is frozen (incident {self.guard.open_incident(agent)})"])
        return None

    def _stale(self, action: dict) -> Decision | None:
        """The freeze log is not current: wait for it (blocking, up to ``ready_wait_s``); a refusal, or None to
        go on to the check (it caught up, or ``fail_open``)."""
        agent = self.agent_id
        if self.guard.wait_current(self.ready_wait_s):
            return None
        if self.guard.is_frozen(agent):
            return self.refuse("frozen", action, [f"the agent is frozen (incident {self.guard.open_incident(agent)})"])
        if self.fail_open:
            log.error("FAIL-OPEN: the freeze log (agent-control) is not current: forwarding %s's call of "
                      "%s unchecked against freezes (--fail-open)", agent, action.get("tool"))
            return None
        return self.refuse("unavailable", action, ["flowbreaker's freeze log (agent-control) cannot be "
                                                    "read: failing closed"], fallback=True)

    def _check_refused(self, action: dict, err: CheckError) -> Decision:
        log.error("the pre-action check refused the request for %s (%s): refusing the call", action.get("tool"), err)
        return self.refuse("deny", action, [f"the pre-action check refused the request ({err})"])

    def _from_check(self, action: dict, res: CheckResult) -> Decision:
        if res.source == "fallback":
            if res.verdict == "allow":
                log.error("FAIL-OPEN: no answer from flowbreaker (%s): forwarding %s's call of %s unchecked "
                          "(--fail-open)", res.fallback_cause, self.agent_id, action.get("tool"))
                return Decision(True, "allow", action, list(res.reasons), fallback=True)
            return self.refuse("unavailable", action, list(res.reasons), fallback=True)
        if res.verdict == "allow":
            return Decision(True, "allow", action, list(res.reasons))
        if res.verdict == "needs_approval":
            return self.refuse("needs_approval", action, list(res.reasons), res.approval_request_id)
        if "the agent is frozen" in res.reasons:
            return self.refuse("frozen", action, list(res.reasons))
        return self.refuse("deny", action, list(res.reasons))

    def with_approval(self, action: dict, approval_id: str) -> Decision:
        """Check ``action`` again with ``approval_id`` attached (after the approval was granted)."""
        return self.decide_now(dict(action, approval_id=approval_id))

    def approval_state(self, approval_request_id: str) -> dict | None:
        """The approval request's record, or None when no worker answered (blocking)."""
        try:
            return self.checks.approval(approval_request_id)
        except TimeoutError:
            return None

    def refuse(self, verdict: str, action: dict, reasons: list[str], approval_request_id: str | None = None,
                fallback: bool = False) -> Decision:
        tool = action.get("tool")
        because = "; ".join(reasons) or verdict
        if verdict == "needs_approval":
            text = (f"flowbreaker held this call for approval (request {approval_request_id}): calling {tool} needs "
                    f"a person's sign-off ({because}). Do not retry it now; tell the user it waits for approval of "
                    f"request {approval_request_id}.")
        elif verdict == "frozen":
            text = (f"flowbreaker refused this call: agent {self.agent_id} is frozen ({because}). No tool call will "
                    f"go through until a person releases the agent; stop and tell the user.")
        elif verdict == "unavailable":
            text = (f"flowbreaker refused this call: it could not be checked ({because}). Try again later.")
        else:
            text = f"flowbreaker refused this call: {because}. Do not retry it."
        meta = {"verdict": verdict, "reasons": reasons, "approval_request_id": approval_request_id,
                "event_id": action.get("event_id"), "agent_id": self.agent_id}
        return Decision(False, verdict, action, reasons, approval_request_id, tool_error(text, meta), fallback)
