"""The check client's fallback reports (streams/clients/check_client.py) against a small HTTP server on
127.0.0.1 that enforces the worker's limits: 100 reports and a byte limit per call, a 400 for an invalid one."""
from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from streams.clients.check_client import CheckClient

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
