"""The actuator's sinks and delivery loop, against a real HTTP server on 127.0.0.1 (no mocks)."""
from __future__ import annotations

import doctest
import io
import json
import socket
import threading
import time
from collections import namedtuple
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

import streams.actuator
from streams.actuator import Actuator, Backoff, LogSink, Stopped, WebhookSink, idempotency_key

pytestmark = pytest.mark.timeout(60)

Record = namedtuple("Record", "topic partition offset key value")
FAST = Backoff(initial=0.02, factor=2.0, maximum=0.5, jitter=0.0)


def command(kind="freeze", agent="agent-7", incident="inc-42") -> dict:
    return {"command": kind, "agent_id": agent, "incident_id": incident, "issued_at": "2026-03-02T09:00:00Z",
            "reason": "sent 5000 restricted records to a new external address", "issued_by": "flowbreaker"}


def raw(cmd: dict) -> bytes:
    return json.dumps(cmd).encode()


class Orchestrator:
    """A tiny HTTP server that answers ``fail_status`` to the first ``fail_first`` POSTs, then 200.

    ``requests`` holds (monotonic time, headers, body) of every POST received.
    """

    def __init__(self, fail_first: int = 0, fail_status: int = 503, port: int = 0):
        self.fail_first = fail_first
        self.fail_status = fail_status
        self.requests: list[tuple[float, dict, bytes]] = []
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with outer.lock:
                    outer.requests.append((time.monotonic(), dict(self.headers), body))
                    failing = len(outer.requests) <= outer.fail_first
                status = outer.fail_status if failing else 200
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/freeze"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


class FakeConsumer:
    """Hands out the given records in one poll, then nothing; remembers commits."""

    def __init__(self, records, on_commit=None):
        self.pending = list(records)
        self.on_commit = on_commit
        self.commits: list[tuple[int, int]] = []  # (partition, offset committed)

    def poll(self, timeout_ms=0):
        from kafka import TopicPartition

        if not self.pending:
            time.sleep(timeout_ms / 1000 / 10)
            return {}
        out = {}
        for rec in self.pending:
            out.setdefault(TopicPartition(rec.topic, rec.partition), []).append(rec)
        self.pending = []
        return out

    def commit(self, offsets):
        if self.on_commit is not None:
            self.on_commit()
        for tp, meta in offsets.items():
            self.commits.append((tp.partition, meta.offset))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_module_examples_run():
    assert doctest.testmod(streams.actuator).failed == 0


def test_backoff_grows_exponentially_up_to_its_cap_and_jitter_only_shortens_it():
    b = Backoff(initial=0.1, factor=3.0, maximum=2.0, jitter=0.0)
    assert [b.delay(n) for n in (1, 2, 3, 4, 5)] == pytest.approx([0.1, 0.3, 0.9, 2.0, 2.0])
    jittery = Backoff(initial=1.0, factor=2.0, maximum=8.0, jitter=0.25)
    for n in range(1, 8):
        full = min(8.0, 2.0 ** (n - 1))
        for _ in range(50):
            assert 0.75 * full <= jittery.delay(n) <= full


def test_the_idempotency_key_is_the_incident_and_the_command():
    assert idempotency_key(command("release", incident="inc-9")) == "inc-9:release"
    no_incident = {"command": "freeze", "agent_id": "a"}
    assert idempotency_key(no_incident, b"x") == idempotency_key(no_incident, b"x") != idempotency_key(no_incident, b"y")


def test_the_webhook_retries_failed_posts_with_growing_delays_until_the_orchestrator_accepts():
    cmd = command()
    with Orchestrator(fail_first=4) as orch:
        sink = WebhookSink(orch.url, backoff=FAST, headers={"Authorization": "Bearer s3cret"})
        sink.deliver(cmd, raw(cmd), threading.Event())
    assert len(orch.requests) == 5
    assert sink.attempts == 5 and sink.failures == 4
    for _, headers, body in orch.requests:
        assert json.loads(body) == cmd
        assert headers["Idempotency-Key"] == "inc-42:freeze"
        assert headers["Authorization"] == "Bearer s3cret"
        assert headers["Content-Type"] == "application/json"
        assert headers["X-Flowbreaker-Agent"] == "agent-7"
    times = [t for t, _, _ in orch.requests]
    gaps = [b - a for a, b in zip(times, times[1:])]
    # waits of 0.02, 0.04, 0.08, 0.16 s: each gap is at least its delay and they grow
    for gap, delay in zip(gaps, (0.02, 0.04, 0.08, 0.16)):
        assert gap >= delay * 0.9
    assert gaps[-1] > gaps[0] * 3


@pytest.mark.parametrize("status", [400, 404, 429, 500])
def test_the_webhook_never_drops_a_command_whatever_the_error_status(status):
    with Orchestrator(fail_first=2, fail_status=status) as orch:
        WebhookSink(orch.url, backoff=FAST).deliver(command(), raw(command()), threading.Event())
    assert len(orch.requests) == 3


def test_the_webhook_keeps_retrying_while_the_orchestrator_is_down_and_delivers_once_it_is_up():
    port = free_port()
    delivered = threading.Event()
    sink = WebhookSink(f"http://127.0.0.1:{port}/freeze", backoff=FAST, timeout=2.0)

    def deliver():
        sink.deliver(command(), raw(command()), threading.Event())
        delivered.set()

    t = threading.Thread(target=deliver, daemon=True)
    t.start()
    time.sleep(0.4)
    assert not delivered.is_set() and sink.failures >= 3  # connection refused, again and again
    with Orchestrator(port=port) as orch:
        assert delivered.wait(5)
    assert len(orch.requests) == 1


def test_a_stop_ends_the_retries_at_once_without_delivering():
    stop = threading.Event()
    with Orchestrator(fail_first=10**6) as orch:
        sink = WebhookSink(orch.url, backoff=Backoff(initial=0.05, maximum=10.0, jitter=0.0))
        threading.Timer(0.5, stop.set).start()
        t0 = time.monotonic()
        with pytest.raises(Stopped):
            sink.deliver(command(), raw(command()), stop)
        assert time.monotonic() - t0 < 2.0
    assert len(orch.requests) >= 3


def test_the_log_sink_writes_one_line_per_command():
    text, js = io.StringIO(), io.StringIO()
    LogSink(text).deliver(command(), b"", threading.Event())
    LogSink(js, fmt="json").deliver(command("release"), b"", threading.Event())
    assert "FREEZE" in text.getvalue() and "agent=agent-7" in text.getvalue() and "incident=inc-42" in text.getvalue()
    assert json.loads(js.getvalue())["enacted"]["command"] == "release"


def test_the_actuator_commits_each_command_only_after_the_webhook_took_it():
    cmds = [command("freeze", "agent-1", "inc-1"), command("freeze", "agent-2", "inc-2"),
            command("release", "agent-1", "inc-1")]
    records = [Record("agent-control", 0, 10, b"agent-1", raw(cmds[0])),
               Record("agent-control", 3, 4, b"agent-2", raw(cmds[1])),
               Record("agent-control", 0, 11, b"agent-1", raw(cmds[2]))]
    out = io.StringIO()
    seen_at_commit = []
    with Orchestrator(fail_first=3) as orch:
        consumer = FakeConsumer(records, on_commit=lambda: seen_at_commit.append(len(orch.requests)))
        act = Actuator(consumer, [WebhookSink(orch.url, backoff=FAST), LogSink(out)])
        assert act.poll_once() == 3
    # the first command needed 4 POSTs: nothing was committed before the 4th
    assert seen_at_commit == [4, 5, 6]
    assert sorted(consumer.commits) == [(0, 11), (0, 12), (3, 5)]
    assert [c for c in consumer.commits if c[0] == 0] == [(0, 11), (0, 12)]  # partition order kept
    keys = [h["Idempotency-Key"] for _, h, _ in orch.requests]
    assert keys == ["inc-1:freeze"] * 4 + ["inc-1:release", "inc-2:freeze"]
    assert act.enacted == {"freeze": 2, "release": 1}
    assert out.getvalue().count("\n") == 3


def test_the_actuator_commits_nothing_while_the_webhook_fails_and_it_is_stopped():
    consumer = FakeConsumer([Record("agent-control", 0, 0, b"agent-1", raw(command()))])
    stop = threading.Event()
    with Orchestrator(fail_first=10**6) as orch:
        act = Actuator(consumer, [WebhookSink(orch.url, backoff=FAST)], stop=stop)
        t = threading.Thread(target=act.run, daemon=True)
        t.start()
        time.sleep(0.5)
        stop.set()
        t.join(5)
    assert not t.is_alive()
    assert consumer.commits == []
    assert act.enacted == {"freeze": 0, "release": 0}
    assert len(orch.requests) >= 3


def test_the_actuator_skips_and_commits_past_what_is_not_a_command():
    consumer = FakeConsumer([Record("agent-control", 1, 0, None, b"garbage"),
                             Record("agent-control", 1, 1, b"a", raw(command()))])
    out = io.StringIO()
    act = Actuator(consumer, [LogSink(out)])
    act.poll_once()
    assert consumer.commits == [(1, 1), (1, 2)]
    assert act.invalid == 1 and act.enacted["freeze"] == 1


def test_the_command_line_refuses_a_bad_webhook_url_with_exit_code_2(capsys):
    from streams.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["actuator", "--webhook", "ftp://x"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "webhook URL" in err
