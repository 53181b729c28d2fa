"""The MCP gateway's decisions (streams/mcp_proxy/gate.py) and its relay (relay.py), without a network.

The freeze guard is the real FreezeGuard fed by hand; the check client and the stale guard are small fakes;
the relay runs on anyio memory streams carrying the SDK's own SessionMessage / JSON-RPC objects.
"""
from __future__ import annotations

import json
import logging

import anyio
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mcp.shared.message import SessionMessage
from mcp.types.jsonrpc import JSONRPCNotification, JSONRPCRequest, JSONRPCResponse

from detector.events import decode_event
from streams.clients.check_client import CheckError, CheckResult
from streams.clients.guard import FreezeGuard
from streams.mcp_proxy.gate import ToolGate
from streams.mcp_proxy.relay import Relay
from streams.tool_mapping import load_mapping, mapping_from_dict

AGENT = "agent-7"


class Checks:
    """Answers the checks with ``answer`` (a CheckResult, or an exception to raise), then with each of ``then`` in
    turn, the last one for ever; records the actions."""

    def __init__(self, answer=None, approvals=(), then=()) -> None:
        self.answers = [answer or CheckResult("allow"), *then]
        self.actions: list[dict] = []
        self.approvals = list(approvals)

    def check(self, action):
        self.actions.append(dict(action))
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        return answer

    def approval(self, approval_id):
        return self.approvals.pop(0) if self.approvals else {"state": "pending", "approval_id": approval_id}


class StaleGuard:
    """A guard that cannot confirm it read agent-control to its end (the broker is unreachable)."""

    current = False

    def is_frozen(self, agent):
        return False

    def open_incident(self, agent):
        return None

    def wait_current(self, timeout):
        return False


def gate(checks=None, guard=None, mapping=None, **kw) -> ToolGate:
    return ToolGate(agent_id=AGENT, mapping=mapping or load_mapping(None), checks=checks or Checks(),
                    guard=guard or FreezeGuard(), ready_wait_s=0.0, **kw)


def action(g: ToolGate, tool="send_email", arguments=None) -> dict:
    return g.action_for(tool=tool, arguments=arguments or {"to": "bob@corp.example"}, session_id="mcp-s1",
                        event_id="mcp-e1")


def frozen_guard() -> FreezeGuard:
    guard = FreezeGuard()
    guard.apply({"command": "freeze", "agent_id": AGENT, "incident_id": "inc-42"})
    return guard


# --------------------------------------------------------------------------- the decision

def test_an_allowed_call_is_forwarded_after_one_check_of_the_mapped_action():
    checks = Checks(CheckResult("allow", score=0.1))
    g = gate(checks)
    d = g.decide_now(action(g))
    assert (d.forward, d.verdict, d.result) == (True, "allow", None)
    [checked] = checks.actions
    assert (checked["agent_id"], checked["tool"], checked["action"], checked["task_id"], checked["event_id"]) == (
        AGENT, "send_email", "send", "mcp-s1", "mcp-e1")


def test_a_call_needing_approval_is_refused_with_a_tool_error_naming_the_request():
    g = gate(Checks(CheckResult("needs_approval", 0.97, ["never-seen external destination"], "apr-123")))
    d = g.decide_now(action(g))
    assert not d.forward and d.verdict == "needs_approval"
    assert d.result["isError"] is True
    text = d.result["content"][0]["text"]
    assert "held this call for approval (request apr-123)" in text and "never-seen external destination" in text
    assert d.result["_meta"]["flowbreaker"] == {"verdict": "needs_approval", "approval_request_id": "apr-123",
                                                "reasons": ["never-seen external destination"],
                                                "event_id": "mcp-e1", "agent_id": AGENT}


def test_a_denied_call_is_refused_with_the_workers_reasons():
    g = gate(Checks(CheckResult("deny", reasons=["approval apr-9 was denied"])))
    d = g.decide_now(action(g))
    assert (d.forward, d.verdict) == (False, "deny")
    assert d.result["content"][0]["text"] == "flowbreaker refused this call: approval apr-9 was denied. Do not retry it."


def test_an_agent_the_guard_holds_frozen_is_refused_without_asking_the_api():
    checks = Checks()
    g = gate(checks, frozen_guard())
    d = g.decide_now(action(g))
    assert (d.forward, d.verdict, checks.actions) == (False, "frozen", [])
    assert "agent agent-7 is frozen (the agent is frozen (incident inc-42))" in d.result["content"][0]["text"]


def test_an_agent_the_worker_reports_frozen_is_refused_as_frozen():
    g = gate(Checks(CheckResult("deny", reasons=["the agent is frozen"])))
    assert g.decide_now(action(g)).verdict == "frozen"


def test_no_answer_from_any_worker_refuses_the_call_and_fail_open_forwards_it_loudly(caplog):
    fallback = CheckResult("deny", reasons=["no answer from flowbreaker (unreachable): fail-closed by policy"],
                           source="fallback", fallback_cause="unreachable")
    g = gate(Checks(fallback))
    d = g.decide_now(action(g))
    assert (d.forward, d.verdict, d.fallback) == (False, "unavailable", True)
    assert "could not be checked" in d.result["content"][0]["text"]
    opened = CheckResult("allow", reasons=["no answer"], source="fallback", fallback_cause="unreachable")
    g = gate(Checks(opened), fail_open=True)
    with caplog.at_level(logging.ERROR, logger="flowbreaker.mcp_proxy"):
        d = g.decide_now(action(g))
    assert (d.forward, d.fallback) == (True, True)
    assert "FAIL-OPEN" in caplog.text


def test_a_freeze_log_that_is_not_current_refuses_every_call_unless_fail_open():
    checks = Checks()
    g = gate(checks, StaleGuard())
    d = g.decide_now(action(g))
    assert (d.forward, d.verdict, checks.actions) == (False, "unavailable", [])
    assert "agent-control" in d.result["content"][0]["text"]
    g = gate(checks, StaleGuard(), fail_open=True)
    assert g.decide_now(action(g)).forward and len(checks.actions) == 1  # still checked by the API


def test_a_check_the_api_refuses_is_a_refused_call():
    g = gate(Checks(CheckError(401, "unknown token")))
    d = g.decide_now(action(g))
    assert (d.forward, d.verdict) == (False, "deny")
    assert "401: unknown token" in d.result["content"][0]["text"]


def test_a_call_that_maps_to_an_invalid_action_is_refused_without_a_check():
    mapping = mapping_from_dict({"tool": [{"match": "*", "records": {"from": "arguments.n"}}]})
    checks = Checks()
    g = gate(checks, mapping=mapping)
    d = g.decide_now(action(g, arguments={"n": -5}))
    assert (d.forward, d.verdict, checks.actions) == (False, "deny", [])
    assert "invalid action" in d.result["content"][0]["text"] and "records" in d.result["content"][0]["text"]


OUTCOMES = {
    "allow": CheckResult("allow"),
    "needs_approval": CheckResult("needs_approval", approval_request_id="apr-1"),
    "deny": CheckResult("deny", reasons=["forged approval"]),
    "frozen": CheckResult("deny", reasons=["the agent is frozen"]),
    "fallback_deny": CheckResult("deny", source="fallback", fallback_cause="timeout"),
    "fallback_allow": CheckResult("allow", source="fallback", fallback_cause="timeout"),
    "error": CheckError(403, "forbidden"),
}


@settings(max_examples=200, deadline=None)
@given(frozen=st.booleans(), stale=st.booleans(), outcome=st.sampled_from(sorted(OUTCOMES)),
       fail_open=st.booleans())
def test_a_call_is_forwarded_only_when_the_agent_is_not_frozen_and_the_check_allows_it(frozen, stale, outcome,
                                                                                       fail_open):
    guard = frozen_guard() if frozen else (StaleGuard() if stale else FreezeGuard())
    g = gate(Checks(OUTCOMES[outcome]), guard, fail_open=fail_open)
    d = g.decide_now(action(g))
    allowed_by_check = outcome == "allow" or outcome == "fallback_allow"
    assert d.forward == (not frozen and (not stale or fail_open) and allowed_by_check)
    assert d.forward == (d.result is None)
    if not d.forward:
        assert d.result["isError"] is True and d.result["_meta"]["flowbreaker"]["verdict"] == d.verdict


class LoopChecks(Checks):
    """Checks that also answer from the event loop (``acheck``, as CheckClient does); records which way each came."""

    def __init__(self, *a, **kw) -> None:
        super().__init__(*a, **kw)
        self.ways: list[str] = []

    def check(self, action):
        self.ways.append("thread")
        return super().check(action)

    async def acheck(self, action):
        self.ways.append("loop")
        return super().check(action)


def _same(d):
    return (d.forward, d.verdict, d.reasons, d.approval_request_id, d.fallback, d.result)


@settings(max_examples=100, deadline=None)
@given(frozen=st.booleans(), stale=st.booleans(), outcome=st.sampled_from(sorted(OUTCOMES)),
       fail_open=st.booleans())
def test_deciding_on_the_event_loop_gives_the_decision_made_in_a_thread_and_checks_on_the_loop(frozen, stale,
                                                                                            outcome, fail_open):
    guard = frozen_guard() if frozen else (StaleGuard() if stale else FreezeGuard())
    in_thread = gate(Checks(OUTCOMES[outcome]), guard, fail_open=fail_open)
    checks = LoopChecks(OUTCOMES[outcome])
    on_loop = gate(checks, guard, fail_open=fail_open)
    expected = in_thread.decide_now(action(in_thread))
    got = anyio.run(on_loop.decide, action(on_loop))
    assert _same(got) == _same(expected)
    assert on_loop.counts == in_thread.counts
    assert checks.ways == ([] if frozen or (stale and not fail_open) else ["loop"])


def test_the_published_event_keeps_the_checked_id_and_approval_and_counts_the_results_bytes():
    g = gate()
    d = g.decide_now(dict(action(g), approval_id="apr-77"))
    result = {"content": [{"type": "text", "text": "sent 12 characters"}], "isError": False}
    ev = g.performed(d, "send_email", {"to": "bob@corp.example"}, result, session_id="mcp-s1")
    decode_event(ev)  # a valid contract event
    assert (ev["event_id"], ev["approval_id"], ev["task_id"], ev["action"]) == ("mcp-e1", "apr-77", "mcp-s1", "send")
    assert ev["bytes"] == len(json.dumps(result, separators=(",", ":")).encode())  # the default: the result's size


# --------------------------------------------------------------------------- the relay

def _request(rid, name, arguments=None, method="tools/call"):
    params = {"name": name, "arguments": arguments or {}} if method == "tools/call" else {}
    return SessionMessage(JSONRPCRequest(jsonrpc="2.0", id=rid, method=method, params=params))


async def _relay(g: ToolGate, steps):
    """Run a relay; ``steps(client_in, client_out, server_in, server_out)`` plays both ends. Returns
    (relay, published events)."""
    events: list[dict] = []
    relay = Relay(g, events.append, session_id="mcp-s1")
    c_in_w, c_in_r = anyio.create_memory_object_stream(10)
    c_out_w, c_out_r = anyio.create_memory_object_stream(10)
    s_in_w, s_in_r = anyio.create_memory_object_stream(10)
    s_out_w, s_out_r = anyio.create_memory_object_stream(10)
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(relay.run, c_in_r, c_out_w, s_in_r, s_out_w)
            await steps(c_in_w, c_out_r, s_in_w, s_out_r)
            await c_in_w.aclose()
    return relay, events


def test_the_relay_answers_a_refused_call_itself_and_passes_everything_else_on():
    g = gate(Checks(CheckResult("deny", reasons=["no"])))

    async def steps(client, from_relay, server, to_server):
        await client.send(_request(1, "tools/list", method="tools/list"))
        assert (await to_server.receive()).message.method == "tools/list"
        await server.send(SessionMessage(JSONRPCResponse(jsonrpc="2.0", id=1, result={"tools": []})))
        assert (await from_relay.receive()).message.result == {"tools": []}
        await client.send(_request(2, "delete_record", {"record_id": "r1"}))
        answer = (await from_relay.receive()).message
        assert answer.id == 2 and answer.result["isError"] is True
        note = SessionMessage(JSONRPCNotification(jsonrpc="2.0", method="notifications/initialized"))
        await client.send(note)
        assert (await to_server.receive()).message.method == "notifications/initialized"  # not the refused call

    relay, events = anyio.run(_relay, g, steps)
    assert (relay.stats["refused"], relay.stats["forwarded"], events) == (1, 0, [])


def test_the_relay_publishes_a_forwarded_call_once_the_server_answered_it():
    g = gate(Checks(CheckResult("allow")))

    async def steps(client, from_relay, server, to_server):
        await client.send(_request("a", "read_record", {"record_id": "r1"}))
        forwarded = (await to_server.receive()).message
        assert (forwarded.id, forwarded.params["name"]) == ("a", "read_record")
        result = {"content": [{"type": "text", "text": "x" * 100}], "isError": False}
        await server.send(SessionMessage(JSONRPCResponse(jsonrpc="2.0", id="a", result=result)))
        assert (await from_relay.receive()).message.result == result

    relay, events = anyio.run(_relay, g, steps)
    assert [(e["tool"], e["action"], e["event_id"].startswith("mcp-")) for e in events] == [("read_record", "read",
                                                                                            True)]
    assert events[0]["bytes"] > 100


def test_the_action_event_is_made_and_published_after_the_client_transport_wrote_the_reply():
    """The client's transport (the SDK's stdio_server) writes from a task of its own, woken by each message on a
    stream without a buffer: the event is published after that task wrote the reply, off the call's path."""
    order: list[str] = []
    g = gate(LoopChecks(CheckResult("allow")))
    relay = Relay(g, lambda event: order.append("published"), session_id="mcp-s1")

    async def scenario():
        c_in_w, c_in_r = anyio.create_memory_object_stream(10)
        c_out_w, c_out_r = anyio.create_memory_object_stream(0)   # as the SDK's transports: no buffer
        s_in_w, s_in_r = anyio.create_memory_object_stream(10)
        s_out_w, s_out_r = anyio.create_memory_object_stream(10)

        async def client_transport():  # writes each message as it gets it, like stdio_server's writer
            async for item in c_out_r:
                order.append(f"wrote {item.message.id}")

        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                tg.start_soon(client_transport)
                tg.start_soon(relay.run, c_in_r, c_out_w, s_in_r, s_out_w)
                await c_in_w.send(_request(5, "read_record", {"record_id": "r1"}))
                assert (await s_out_r.receive()).message.id == 5
                result = {"content": [{"type": "text", "text": "r1"}], "isError": False}
                await s_in_w.send(SessionMessage(JSONRPCResponse(jsonrpc="2.0", id=5, result=result)))
                while "published" not in order:
                    await anyio.sleep(0.01)
                await c_in_w.aclose()

    anyio.run(scenario)
    assert order == ["wrote 5", "published"]


def test_a_held_call_the_client_cancels_is_neither_forwarded_nor_answered():
    g = gate(Checks(CheckResult("needs_approval", approval_request_id="apr-5")), wait_approval_s=60,
             approval_poll_s=0.05)

    async def steps(client, from_relay, server, to_server):
        await client.send(_request(7, "send_email", {"to": "x@evil.example"}))
        await anyio.sleep(0.3)  # held: polling the approval
        cancel = JSONRPCNotification(jsonrpc="2.0", method="notifications/cancelled", params={"requestId": 7})
        await client.send(SessionMessage(cancel))
        await anyio.sleep(0.2)
        with pytest.raises(anyio.WouldBlock):
            from_relay.receive_nowait()
        with pytest.raises(anyio.WouldBlock):
            to_server.receive_nowait()

    relay, events = anyio.run(_relay, g, steps)
    assert relay.stats["cancelled"] == 1 and relay.stats["forwarded"] == 0 and events == []


def test_a_held_call_goes_through_when_approved_and_is_checked_again_with_the_approval():
    checks = Checks(CheckResult("needs_approval", approval_request_id="apr-5"),
                    approvals=[{"state": "pending"}, {"state": "approved", "approval_id": "apr-5"}],
                    then=[CheckResult("allow")])  # the worker's answer once the approval is attached
    g = gate(checks, wait_approval_s=60, approval_poll_s=0.01)

    async def steps(client, from_relay, server, to_server):
        await client.send(_request(8, "send_email", {"to": "x@partner.example"}))
        assert (await to_server.receive()).message.id == 8

    relay, _ = anyio.run(_relay, g, steps)
    assert [a.get("approval_id") for a in checks.actions] == [None, "apr-5"]
    assert relay.stats["forwarded"] == 1


def test_a_held_call_whose_approval_is_denied_is_refused():
    checks = Checks(CheckResult("needs_approval", approval_request_id="apr-6"),
                    approvals=[{"state": "denied", "reason": "not this partner"}])
    g = gate(checks, wait_approval_s=60, approval_poll_s=0.01)

    async def steps(client, from_relay, server, to_server):
        await client.send(_request(9, "send_email", {"to": "x@partner.example"}))
        answer = (await from_relay.receive()).message
        assert answer.result["isError"] and "apr-6 was denied (not this partner)" in answer.result["content"][0]["text"]

    anyio.run(_relay, g, steps)


def test_a_call_that_carries_trace_context_is_checked_as_part_of_that_trace_as_its_task():
    checks = Checks(CheckResult("deny", reasons=["no"]))
    g = gate(checks)
    trace = "4bf92f3577b34da6a3ce929d0e0e4736"

    async def steps(client, from_relay, server, to_server):
        msg = _request(3, "read_record", {"record_id": "r1"})
        msg.message.params["_meta"] = {"traceparent": f"00-{trace}-00f067aa0ba902b7-01"}
        await client.send(msg)
        await from_relay.receive()
        await client.send(_request(4, "read_record", {"record_id": "r2"}))  # no trace context: the session
        await from_relay.receive()

    anyio.run(_relay, g, steps)
    assert [a["task_id"] for a in checks.actions] == [trace, "mcp-s1"]


# --------------------------------------------------------------------------- the README's example

def _readme_blocks(lang: str) -> list[str]:
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    return re.findall(rf"```{lang}\n(.*?)```", text, re.S)


def test_the_readmes_mcp_servers_entry_is_a_valid_gateway_command_line():
    from streams.cli.main import build_parser

    entry = next(json.loads(b) for b in _readme_blocks("json") if "mcpServers" in b)
    server = entry["mcpServers"]["support-desk"]
    assert server["command"] == "flowbreaker"
    args = build_parser("mcp-proxy").parse_args(server["args"])
    assert (args.agent_id, args.api, args.bootstrap) == ("support-agent-001", ["http://127.0.0.1:6066"],
                                                         "127.0.0.1:9092")
    assert args.server_command[-2:] == ["python", "support_desk_server.py"]


def test_the_readmes_mcp_mapping_file_loads_and_maps_the_support_desks_calls():
    block = next(b for b in _readme_blocks("toml") if 'match = "crm.get_customer"' in b)
    import tomllib

    from streams.tool_mapping import mapping_from_dict

    mapping = mapping_from_dict(tomllib.loads(block))
    g = gate(mapping=mapping)
    send = g.action_for(tool="email.send", arguments={"to": "ann@customer.example", "ticket_id": "T-9"},
                        session_id="mcp-s1")
    decode_event(send)
    assert (send["action"], send["resource"], send["destinations"], send["operator_id"]) == (
        "send", "tickets://helpdesk/ticket/T-9", ["email:ann@customer.example"], "team-support")


# --------------------------------------------------------------------------- the command line

@pytest.mark.parametrize("argv, says", [
    (["--agent-id", "a", "--api", "http://w:6066", "--token-file", "{token}"], "either as -- COMMAND"),
    (["--agent-id", "a", "--api", "http://w:6066", "--token-file", "{token}", "--upstream", "http://u/mcp", "--",
      "srv"], "either as -- COMMAND"),
    (["--agent-id", "a", "--api", "w:6066", "--token-file", "{token}", "--", "srv"], "--api 'w:6066'"),
    (["--agent-id", "a", "--api", "http://w:6066", "--token-file", "{missing}", "--", "srv"], "cannot read"),
    (["--agent-id", "a", "--api", "http://w:6066", "--token-file", "{token}", "--listen", "nowhere", "--upstream",
      "http://u/mcp"], "expected HOST:PORT"),
    (["--agent-id", "a", "--api", "http://w:6066", "--token-file", "{token}", "--mapping", "{bad_mapping}", "--",
      "srv"], "unknown key 'colour'"),
    (["--agent-id", "a", "--api", "http://w:6066", "--token-file", "{token}", "--", "srv"], "no command signing keys"),
])
def test_bad_usage_of_mcp_proxy_is_one_line_and_exit_2(tmp_path, capsys, monkeypatch, argv, says):
    from streams.cli.main import main

    monkeypatch.delenv("FLOWBREAKER_SIGNING_KEYS", raising=False)
    monkeypatch.delenv("FLOWBREAKER_SIGNING_KEYS_INLINE", raising=False)
    (tmp_path / "t").write_text("tok\n")
    (tmp_path / "m.toml").write_text('[[tool]]\nmatch = "x"\ncolour = "red"\n')
    paths = {"token": tmp_path / "t", "missing": tmp_path / "nope", "bad_mapping": tmp_path / "m.toml"}
    argv = [a.format(**paths) for a in argv]
    assert main(["mcp-proxy", *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("flowbreaker mcp-proxy: ") and says in err[0], err
