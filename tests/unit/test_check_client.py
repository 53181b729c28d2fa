"""The check client's fallback reports (streams/clients/check_client.py) against a small HTTP server on
127.0.0.1 that enforces the worker's limits: 100 reports and a byte limit per call, a 400 for an invalid one."""
from __future__ import annotations

import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from streams.clients.check_client import CheckClient, CheckError

pytestmark = pytest.mark.timeout(60)


class FallbackSink:
    """Takes ``POST /v1/fallbacks`` like a worker: 413 over ``limit`` bytes, 400 over 100 reports or for a report
    whose tool is ``"bad"``; records what it accepted."""

    def __init__(self, limit: int) -> None:
        self.limit, self.got, self.dropped, self.calls = limit, [], 0, 0
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's name
                n = int(self.headers["Content-Length"])
                body = self.rfile.read(n)
                sink.calls += 1
                if n > sink.limit:
                    return self._answer(413, {"error": {"message": "too large"}})
                doc = json.loads(body)
                items = doc["fallbacks"]
                if not 1 <= len(items) <= 100 or any(it.get("tool") == "bad" for it in items):
                    return self._answer(400, {"error": {"message": "fallbacks[0].tool: invalid"}})
                sink.got.extend(items)
                sink.dropped += doc.get("dropped", 0)
                self._answer(200, {"recorded": len(items)})

            def _answer(self, status, obj):
                data = json.dumps(obj).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _offline(client: CheckClient, n: int, tool: str = "t") -> None:
    for i in range(n):
        client._fallback({"agent_id": "a", "event_id": f"e{i}", "tool": tool, "action": "send",
                          "sensitivity": "internal"}, "timeout")


@pytest.fixture
def sink():
    s = FallbackSink(limit=16 * 1024)
    yield s
    s.close()


def test_a_backlog_larger_than_one_call_arrives_whole_in_calls_the_server_takes(sink):
    client = CheckClient("http://127.0.0.1:9", "tok", report_urls=sink.url, report_every_s=3600)
    _offline(client, 250, tool="mcp.partner_portal." + "x" * 200)
    assert client.flush_reports() == 250
    assert [r["event_id"] for r in sink.got] == [f"e{i}" for i in range(250)]
    assert client.stats["dropped"] == 0 and sink.calls >= 4


def test_a_server_that_takes_less_than_the_client_thinks_makes_it_send_smaller_calls(sink):
    sink.limit = 4096
    client = CheckClient("http://127.0.0.1:9", "tok", report_urls=sink.url, report_every_s=3600)
    _offline(client, 120)
    assert client.flush_reports() == 120 and len(sink.got) == 120
    assert client.report_body_limit <= 4096


def test_a_report_the_server_refuses_is_counted_as_dropped_and_does_not_hold_back_the_others(sink):
    client = CheckClient("http://127.0.0.1:9", "tok", report_urls=sink.url, report_every_s=3600)
    _offline(client, 30)
    _offline(client, 1, tool="bad")
    _offline(client, 30)
    assert client.flush_reports() == 60
    assert len(sink.got) == 60 and client.stats["dropped"] == 1 and not client._reports
    _offline(client, 1)
    assert client.flush_reports() == 1 and sink.dropped == 1  # the count travels with the next batch


# --------------------------------------------------------------------------- the check from an event loop

class QuietServer(ThreadingHTTPServer):
    """A test server that says nothing of a client that hung up before its answer (a timeout test's slow worker
    answers after the client gave up; its traceback, printed later from a daemon thread, landed in whichever
    test was capturing stderr then)."""

    daemon_threads = True

    def handle_error(self, request, client_address) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class CheckWorker:
    """Answers ``POST /v1/check`` like a worker, on HTTP/1.1 keep-alive: ``verdicts`` by the action's tool (else
    allow), ``status`` for every answer when set, ``X-Flowbreaker-Owner: owner`` when set, after ``delay`` s;
    records the bodies, the Authorization headers and the connections it was asked on."""

    def __init__(self, verdicts=None, owner=None, status=200, delay=0.0) -> None:
        self.verdicts, self.owner, self.status, self.delay = dict(verdicts or {}), owner, status, delay
        self.bodies, self.auth, self.peers = [], [], set()
        worker = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):  # noqa: N802 - http.server's name
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                worker.bodies.append(body)
                worker.auth.append(self.headers.get("Authorization"))
                worker.peers.add(self.client_address)
                if worker.delay:
                    import time
                    time.sleep(worker.delay)
                if worker.status != 200:
                    answer = {"error": {"code": "invalid_field", "message": "not a valid action"}}
                else:
                    verdict = worker.verdicts.get(body.get("tool"), "allow")
                    reasons = ["the agent is frozen"] if verdict == "frozen" else ["ordinary"]
                    answer = {"verdict": "deny" if verdict == "frozen" else verdict, "score": 0.5,
                              "reasons": reasons, "approval_request_id": "apr-9" if verdict == "needs_approval"
                              else None, "approval_rejected": None}
                data = json.dumps(answer).encode()
                self.send_response(worker.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                if worker.owner:
                    self.send_header("X-Flowbreaker-Owner", worker.owner)
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = QuietServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def workers():
    made = []

    def make(**kw):
        made.append(CheckWorker(**kw))
        return made[-1]
    yield make
    for w in made:
        w.close()


def _action(tool="crm.query", sensitivity="internal", agent="a1"):
    return {"event_id": "e1", "ts": "2026-12-04T10:00:00Z", "agent_id": agent, "operator_id": "ops", "tool": tool,
            "action": "read", "resource": "crm://accounts", "sensitivity": sensitivity, "records": 1}


def _on_loop(client, actions):
    import anyio

    async def run():
        try:
            return [await client.acheck(a) for a in actions]
        finally:
            await client.aclose()
    return anyio.run(run)


def test_a_check_from_an_event_loop_gets_the_answer_a_thread_gets_on_one_kept_alive_connection(workers):
    w = workers(verdicts={"mail.send": "needs_approval", "files.wipe": "deny"})
    client = CheckClient(w.url, "tok")
    actions = [_action(tool) for tool in ("crm.query", "mail.send", "files.wipe", "crm.query")]
    from_thread = [client.check(a) for a in actions]
    client.close()
    w.peers.clear()
    from_loop = _on_loop(client, actions)
    assert from_loop == from_thread
    assert [r.verdict for r in from_loop] == ["allow", "needs_approval", "deny", "allow"]
    assert from_loop[1].approval_request_id == "apr-9" and from_loop[0].source == "flowbreaker"
    assert w.bodies[-4:] == actions and set(w.auth) == {"Bearer tok"}
    assert len(w.peers) == 1                                      # kept alive, not one connection per check


def test_a_check_from_an_event_loop_asks_the_agents_owner_first_next_time(workers):
    owner = workers()
    first = workers(owner=owner.url)                              # a worker that forwarded to the owner
    client = CheckClient([first.url], "tok")
    _on_loop(client, [_action(), _action()])
    assert (len(first.bodies), len(owner.bodies)) == (1, 1)


def test_a_check_from_an_event_loop_with_no_worker_answering_fails_closed_or_open_by_policy():
    import socket

    with socket.socket() as s:                                    # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        nobody = f"http://127.0.0.1:{s.getsockname()[1]}"
    client = CheckClient(nobody, "tok", fail_closed=("restricted",), report_every_s=3600)
    restricted, internal = _on_loop(client, [_action(sensitivity="restricted"), _action(sensitivity="internal")])
    assert (restricted.verdict, internal.verdict) == ("deny", "allow")
    assert {restricted.source, internal.source, restricted.fallback_cause} == {"fallback", "unreachable"}
    assert len(client._reports) == 2                              # reported once a worker answers again


def test_a_check_from_an_event_loop_that_outlasts_the_timeout_gets_the_fallback(workers):
    slow = workers(delay=1.0)
    client = CheckClient(slow.url, "tok", timeout_s=0.1, fail_closed=("internal",), report_every_s=3600)
    [res] = _on_loop(client, [_action()])
    assert (res.verdict, res.source, res.fallback_cause) == ("deny", "fallback", "timeout")


def test_a_refused_check_request_raises_from_the_event_loop_too(workers):
    w = workers(status=400)
    client = CheckClient(w.url, "tok")
    with pytest.raises(CheckError, match="400: not a valid action"):
        _on_loop(client, [_action()])


def test_an_agent_a_worker_reported_frozen_is_refused_from_the_event_loop_without_asking_again(workers):
    w = workers(verdicts={"crm.query": "frozen"})
    client = CheckClient(w.url, "tok")
    first, second = _on_loop(client, [_action(), _action()])
    assert (first.verdict, first.source, second.verdict, second.source) == ("deny", "flowbreaker", "deny", "local")
    assert len(w.bodies) == 1
