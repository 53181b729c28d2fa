"""``flowbreaker mcp-proxy`` between the mcp SDK's own client and an MCP server, with the real broker and workers.

The client is ``mcp.ClientSession`` over ``mcp.client.stdio.stdio_client``, which starts the gateway
(``python -m streams.cli.main mcp-proxy ... -- python mcp_tool_server.py``) as a desktop assistant would; the
server (tests/integration/mcp_tool_server.py) records every tool call it executes, so "the server never saw
it" is read from its record. The workers are the two-worker cluster these modules share (conftest.py).
"""
from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import anyio
import pytest
from mcp import ClientSession

from api_harness import TOKEN, call, read_topic, seed, wait_for
from mcp_harness import HERE, MAPPING, child_env, client_session, gateway_args
from worker_harness import REPO_DIR, free_port, stop_process

pytestmark = pytest.mark.timeout(300)

@pytest.fixture(scope="module")
def cluster(two_worker_cluster):
    return two_worker_cluster


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("mcp-proxy")
    (d / "runtime.token").write_text(TOKEN["runtime"] + "\n")
    (d / "tools.toml").write_text(MAPPING)
    return d


class Gateway:
    """One gateway session: ``session`` (an initialised ClientSession), ``calls()`` (what the server executed),
    ``stderr()`` (the gateway's log)."""

    def __init__(self, session: ClientSession, record: Path, errlog: Path) -> None:
        self.session, self.record, self.errlog = session, record, errlog

    def calls(self) -> list[dict]:
        if not self.record.exists():
            return []
        return [json.loads(line) for line in self.record.read_text().splitlines() if line.strip()]

    def stderr(self) -> str:
        return self.errlog.read_text(errors="replace")


@contextlib.asynccontextmanager
async def gateway(cluster, files: Path, agent: str, *, api: str | None = None, extra: tuple[str, ...] = ()):
    name = f"{agent}-{time.monotonic_ns()}"
    record, errlog = files / f"{name}.calls.jsonl", files / f"{name}.err"
    args = gateway_args(agent=agent, api=api or cluster.url(0), token_file=files / "runtime.token",
                        bootstrap=cluster.bootstrap, prefix=cluster.prefix, mapping=files / "tools.toml",
                        record=record, extra=extra)
    with open(errlog, "w") as err:
        async with client_session(args, err, child_env(PYTHONUNBUFFERED="1")) as session:
            yield Gateway(session, record, errlog)


def run(coro_fn, *args):
    return anyio.run(coro_fn, *args)


def published(cluster, agent: str) -> list[dict]:
    return [json.loads(m.value) for m in read_topic(cluster.bootstrap, cluster.topic("actions"))
            if m.key == agent.encode() and json.loads(m.value)["event_id"].startswith("mcp-")]


def records_of(cluster, topic: str) -> list[dict]:
    return [json.loads(m.value) for m in read_topic(cluster.bootstrap, topic)]


def verdict_of(result) -> dict:
    return (result.meta or {}).get("flowbreaker") or {}


def test_an_allowed_call_reaches_the_server_and_is_published_and_the_rest_passes_through(cluster, files):
    agent = cluster.agent_on(0, "gw-allow")
    seed(cluster, [agent])

    async def scenario():
        async with gateway(cluster, files, agent) as gw:
            s = gw.session
            assert s.initialize_result.server_info.name == "records"          # the server's own answer
            assert s.instructions == "Records of the test organisation."
            assert [t.name for t in (await s.list_tools()).tools] == ["read_record", "send_email", "delete_record"]
            schema = await s.read_resource("records://schema")
            assert schema.contents[0].text.startswith('{"id"')
            prompt = await s.get_prompt("summarise", {"record_id": "r9"})
            assert prompt.messages[0].content.text == "Summarise record r9 in one sentence."
            result = await s.call_tool("read_record", {"record_id": "r1"})
            assert not result.is_error, result
            assert json.loads(result.content[0].text)["name"] == "Ada Lovelace"
            return result, gw.calls()

    result, calls = run(scenario)
    assert calls == [{"tool": "read_record", "arguments": {"record_id": "r1"}}]
    events = wait_for(lambda: published(cluster, agent), 30, "the action event on agent-actions")
    assert len(events) == 1
    ev = events[0]
    assert (ev["tool"], ev["action"], ev["resource"], ev["sensitivity"], ev["operator_id"], ev["records"]) == (
        "read_record", "read", "crm://accounts", "internal", "ops-team", 3)
    assert ev["bytes"] >= len(result.content[0].text) > 200   # the result's size
    assert ev["task_id"].startswith("mcp-")                     # the MCP session


def test_a_call_that_needs_approval_is_answered_with_its_request_and_never_reaches_the_server(cluster, files):
    agent = cluster.agent_on(1, "gw-held")
    seed(cluster, [agent])

    async def scenario():
        async with gateway(cluster, files, agent) as gw:
            result = await gw.session.call_tool("send_email", {"to": "drop@evil.example", "body": "all of it",
                                                               "records": 5000})
            return result, gw.calls()

    result, calls = run(scenario)
    assert result.is_error
    meta = verdict_of(result)
    assert meta["verdict"] == "needs_approval" and meta["approval_request_id"].startswith("apr-")
    assert f"held this call for approval (request {meta['approval_request_id']})" in result.content[0].text
    assert calls == []
    rec = call("GET", cluster.url(1) + f"/v1/approvals/{meta['approval_request_id']}", TOKEN["viewer"]).json
    assert (rec["state"], rec["agent_id"], rec["destinations"]) == ("pending", agent, ["email:drop@evil.example"])
    time.sleep(1.0)  # anything published would be on the topic by now
    assert published(cluster, agent) == []


def test_with_wait_approval_a_held_call_goes_through_once_a_person_approves_it(cluster, files):
    agent = cluster.agent_on(0, "gw-wait")
    seed(cluster, [agent])
    approved: list[str] = []

    def approve_when_asked():
        def pending():
            listed = call("GET", cluster.url(0) + "/v1/approvals?state=pending", TOKEN["viewer"]).json["approvals"]
            return [a["approval_id"] for a in listed if a["agent_id"] == agent]
        aid = wait_for(pending, 60, "the gateway's approval request")[0]
        r = call("POST", cluster.url(0) + f"/v1/approvals/{aid}/approve", TOKEN["analyst"],
                 {"reason": "partner export agreed"})
        assert r.status == 200, r
        approved.append(aid)

    async def scenario():
        async with gateway(cluster, files, agent, extra=("--wait-approval", "90")) as gw:
            helper = threading.Thread(target=approve_when_asked, daemon=True)
            helper.start()
            result = await gw.session.call_tool("send_email", {"to": "partner@ext-partner.example",
                                                               "body": "the export", "records": 40})
            helper.join(10)
            return result, gw.calls()

    result, calls = run(scenario)
    assert not result.is_error, result
    assert calls == [{"tool": "send_email", "arguments": {"to": "partner@ext-partner.example", "body": "the export",
                                                          "records": 40}}]
    events = wait_for(lambda: published(cluster, agent), 30, "the approved call's action event")
    assert [(e["action"], e["destinations"], e["approval_id"]) for e in events] == [
        ("send", ["email:partner@ext-partner.example"], approved[0])]


def test_after_a_freeze_the_next_call_is_refused_and_the_server_never_sees_it(cluster, files):
    agent = cluster.agent_on(1, "gw-frozen")
    seed(cluster, [agent])

    async def scenario():
        async with gateway(cluster, files, agent) as gw:
            before = await gw.session.call_tool("read_record", {"record_id": "r1"})
            r = call("POST", cluster.url(0) + f"/v1/agents/{agent}/freeze", TOKEN["analyst"],
                     {"reason": "mass deletion under way"})
            assert r.status == 200, r
            frozen_at = time.monotonic()
            refused = await gw.session.call_tool("delete_record", {"record_id": "r1"})
            took = time.monotonic() - frozen_at
            await anyio.sleep(1.5)  # by now the gateway's own freeze guard holds the agent too
            later = await gw.session.call_tool("read_record", {"record_id": "r2"})
            return before, refused, later, took, gw.calls(), gw.stderr()

    before, refused, later, took, calls, stderr = run(scenario)
    print(f"refused {took * 1000:.0f} ms after the freeze was accepted")
    assert not before.is_error
    for result in (refused, later):
        assert result.is_error and verdict_of(result)["verdict"] == "frozen", result
        assert f"agent {agent} is frozen" in result.content[0].text
    assert [c["tool"] for c in calls] == ["read_record"]            # neither refused call reached the server
    assert "refused" in stderr

    def acks():  # the gateway acknowledged the freeze it enacted, as a runtime's guard does (flowbreaker drill)
        return [a for a in records_of(cluster, cluster.prefix + "agent-control-acks")
                if a.get("agent_id") == agent and a.get("by", "").startswith("mcp-proxy:")]
    [ack] = wait_for(acks, 30, "the gateway's acknowledgement of the freeze")
    assert (ack["kind"], ack["command"]) == ("guard", "freeze")


def test_with_no_worker_answering_every_call_is_refused_unless_fail_open(cluster, files):
    agent = cluster.agent_on(0, "gw-down")
    nobody = f"http://127.0.0.1:{free_port()}"                      # the worker is down: nothing listens

    async def scenario(extra):
        async with gateway(cluster, files, agent, api=nobody, extra=extra) as gw:
            result = await gw.session.call_tool("delete_record", {"record_id": "r1"})
            return result, gw.calls(), gw.stderr()

    result, calls, _ = run(scenario, ())
    assert result.is_error and verdict_of(result)["verdict"] == "unavailable"
    assert "could not be checked" in result.content[0].text
    assert calls == []
    result, calls, stderr = run(scenario, ("--fail-open",))
    assert not result.is_error and [c["tool"] for c in calls] == ["delete_record"]
    assert "FAIL-OPEN" in stderr and "forwarding" in stderr


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_over_streamable_http_calls_are_checked_and_a_freeze_refuses_the_next_one(cluster, files):
    """The same gateway serving Streamable HTTP (--listen) in front of a server reached over Streamable HTTP
    (--upstream), with the SDK's streamable_http_client."""
    from mcp.client.streamable_http import streamable_http_client

    agent = cluster.agent_on(0, "gw-http")
    seed(cluster, [agent])
    record = files / "http.calls.jsonl"
    server_port, gateway_port = free_port(), free_port()
    env = child_env()
    logs = [open(files / name, "w") for name in ("http-server.err", "http-gateway.err")]
    procs = [subprocess.Popen([sys.executable, str(HERE / "mcp_tool_server.py"), "--record", str(record),
                               "--http", str(server_port)], cwd=REPO_DIR, env=env, stdin=subprocess.DEVNULL,
                              stdout=logs[0], stderr=logs[0])]
    try:
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "streams.cli.main", "mcp-proxy", "--agent-id", agent, "--api", cluster.url(0),
             "--token-file", str(files / "runtime.token"), "--bootstrap", cluster.bootstrap, "--topic-prefix",
             cluster.prefix, "--mapping", str(files / "tools.toml"),
             "--upstream", f"http://127.0.0.1:{server_port}/mcp", "--listen", f"127.0.0.1:{gateway_port}"],
            cwd=REPO_DIR, env=env, stdin=subprocess.DEVNULL, stdout=logs[1], stderr=logs[1]))
        wait_for(lambda: _listening(server_port) and _listening(gateway_port), 60, "the server and the gateway")

        async def scenario():
            async with streamable_http_client(f"http://127.0.0.1:{gateway_port}/mcp") as (read, write):
                async with ClientSession(read, write) as s:
                    with anyio.fail_after(60):
                        await s.initialize()
                    names = [t.name for t in (await s.list_tools()).tools]
                    allowed = await s.call_tool("read_record", {"record_id": "r7"})
                    r = call("POST", cluster.url(1) + f"/v1/agents/{agent}/freeze", TOKEN["analyst"],
                             {"reason": "exfiltration suspected"})
                    assert r.status == 200, r
                    refused = await s.call_tool("delete_record", {"record_id": "r7"})
                    return names, allowed, refused

        names, allowed, refused = run(scenario)
    finally:
        for proc in reversed(procs):
            stop_process(proc, 10)
        for log in logs:
            log.close()
    assert names == ["read_record", "send_email", "delete_record"]
    assert not allowed.is_error and json.loads(allowed.content[0].text)["id"] == "r7"
    assert refused.is_error and verdict_of(refused)["verdict"] == "frozen"
    assert [json.loads(x)["tool"] for x in record.read_text().splitlines()] == ["read_record"]
    events = wait_for(lambda: published(cluster, agent), 30, "the forwarded call's action event")
    assert [(e["tool"], e["bytes"] > 200) for e in events] == [("read_record", True)]


def test_with_no_broker_at_start_the_gateway_exits_1_with_one_line(files):
    nobody = f"127.0.0.1:{free_port()}"
    env = child_env()
    proc = subprocess.run([sys.executable, "-m", "streams.cli.main", "mcp-proxy", "--agent-id", "gw-nobroker",
                           "--api", "http://127.0.0.1:9", "--token-file", str(files / "runtime.token"),
                           "--bootstrap", nobody, "--", sys.executable, str(HERE / "mcp_tool_server.py"),
                           "--record", str(files / "nobroker.jsonl")],
                          cwd=REPO_DIR, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        f"flowbreaker mcp-proxy: no Kafka broker answered at {nobody} within 10 s (KafkaTimeoutError)"]
    assert not (files / "nobroker.jsonl").exists()
