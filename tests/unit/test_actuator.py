"""The actuator's sinks and delivery loop, against a real HTTP server on 127.0.0.1 (no mocks)."""
from __future__ import annotations

import itertools

import doctest
import io
import json
import socket
import threading
import time
from collections import namedtuple
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

import streams.clients.actuator
from streams.clients.actuator import Actuator, Backoff, LogSink, WebhookSink, idempotency_key
from streams.clients.sink import Stopped
from streams.clients.signing import KeyRing

pytestmark = pytest.mark.timeout(60)

Record = namedtuple("Record", "topic partition offset key value")
FAST = Backoff(initial=0.02, factor=2.0, maximum=0.5, jitter=0.0)
KEYS = KeyRing({"k1": b"s" * 32}, active="k1")


def command(kind="freeze", agent="agent-7", incident="inc-42", by="flowbreaker", sign=True) -> dict:
    cmd = {"command": kind, "agent_id": agent, "incident_id": incident, "issued_at": "2026-03-02T09:00:00Z",
           "reason": "sent 5000 restricted records to a new external address", "issued_by": by}
    return KEYS.sign(dict(cmd, seq=next(_SEQ))) if sign else cmd


_SEQ = itertools.count(1)  # every signed command gets the next sequence number, as its issuer would give it


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
        self.seeks: list[tuple[int, int]] = []

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

    def seek(self, tp, offset):
        self.seeks.append((tp.partition, offset))

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
    assert doctest.testmod(streams.clients.actuator).failed == 0


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
    waits: list[float] = []

    class Recorded(threading.Event):  # the waits the sink asks for (a busy machine only lengthens the gaps)
        def wait(self, timeout=None):
            waits.append(timeout)
            return super().wait(timeout)

    with Orchestrator(fail_first=4) as orch:
        sink = WebhookSink(orch.url, backoff=FAST, headers={"Authorization": "Bearer s3cret"})
        sink.deliver(cmd, raw(cmd), Recorded())
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
    # waits of 0.02, 0.04, 0.08, 0.16 s, growing, and each gap at least its wait (other work on the machine
    # can only make a gap longer, so the growth is checked on the waits asked for, not on the gaps)
    assert waits == [0.02, 0.04, 0.08, 0.16]
    for gap, delay in zip(gaps, waits):
        assert gap >= delay * 0.9


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
        act = Actuator(consumer, [WebhookSink(orch.url, backoff=FAST), LogSink(out)], keys=KEYS)
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
        act = Actuator(consumer, [WebhookSink(orch.url, backoff=FAST)], keys=KEYS, stop=stop)
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
    act = Actuator(consumer, [LogSink(out)], keys=KEYS)
    act.poll_once()
    assert consumer.commits == [(1, 1), (1, 2)]
    assert act.invalid == 1 and act.enacted["freeze"] == 1


def test_the_command_line_refuses_a_bad_webhook_url_with_exit_code_2(capsys):
    from streams.cli.main import main

    assert main(["actuator", "--webhook", "ftp://x"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("flowbreaker actuator: webhook URL")


# ---------------------------------------------------------------------- hostile records and forged commands

POISON = [b"not json", b'{"a":' * 1000, b"[" * 5000 + b"]" * 5000, b"\xff\xfe", b'{"command": "freeze", "agent_id": "\xff"}',
          b'{"command": "freeze", "agent_id": 7}', b'{"command": "freeze", "agent_id": "' + b"a" * 100_000 + b'"}',
          None, b"", b'{"command": "release", "agent_id": "a", "incident_id": {"x": 1}}']


def run_records(records, history=None):
    out = io.StringIO()
    with Orchestrator() as orch:
        consumer = FakeConsumer(records)
        act = Actuator(consumer, [WebhookSink(orch.url, backoff=FAST), LogSink(out, fmt="json")], keys=KEYS,
                       history=history)
        act.poll_once()
    return act, consumer, [(h, json.loads(b)) for _, h, b in orch.requests]


def test_poison_records_are_skipped_counted_and_committed_and_the_freeze_behind_them_is_enacted():
    records = [Record("agent-control", 2, i, b"a", v) for i, v in enumerate(POISON)]
    records.append(Record("agent-control", 2, len(POISON), b"agent-7", raw(command())))
    act, consumer, posts = run_records(records)
    assert act.invalid == len(POISON) and sum(act.rejected.values()) == len(POISON)
    assert consumer.commits == [(2, i + 1) for i in range(len(records))]
    assert [b["command"] for _, b in posts] == ["freeze"] and act.enacted["freeze"] == 1


def test_forged_unsigned_and_stale_releases_are_not_enacted_and_a_signed_one_is():
    freeze = command()                                                         # signed first: the lowest seq
    forged = command("release", incident="inc-made-up", sign=False)            # the worker's own name
    unsigned = command("release", by="lee", sign=False)
    tampered = dict(command("release", by="lee"), agent_id="agent-7", reason="edited")
    stale = command("release", incident="inc-41", by="lee")                    # a genuine, older release
    good = command("release", by="lee")
    records = [Record("agent-control", 0, i, b"agent-7", raw(c))
               for i, c in enumerate([freeze, forged, unsigned, tampered, stale, good])]
    act, consumer, posts = run_records(records)
    assert [(b["command"], b["incident_id"]) for _, b in posts] == [("freeze", "inc-42"), ("release", "inc-42")]
    assert posts[1][1]["issued_by"] == "lee"
    assert act.ignored == {"release_unverified": 3, "release_stale": 1}
    assert consumer.commits[-1] == (0, 6)


def test_an_unsigned_freeze_is_enacted_marked_unverified_and_counted():
    act, _, posts = run_records([Record("agent-control", 0, 0, b"agent-7", raw(command(sign=False)))])
    assert [h["X-Flowbreaker-Verified"] for h, _ in posts] == ["false"]
    assert act.unverified_freezes == 1


def test_a_refreeze_after_a_release_is_a_second_delivery_with_its_own_idempotency_key():
    cmds = [command("freeze", incident="inc-1"), command("release", incident="inc-1", by="lee"),
            command("freeze", incident="inc-2")]
    act, _, posts = run_records([Record("agent-control", 0, i, b"agent-7", raw(c)) for i, c in enumerate(cmds)])
    assert [h["Idempotency-Key"] for h, _ in posts] == ["inc-1:freeze", "inc-1:release", "inc-2:freeze"]
    assert act.enacted == {"freeze": 2, "release": 1}


def test_starting_mid_log_it_reads_the_partition_history_to_know_the_open_incident():
    earlier = [Record("agent-control", 0, 0, b"agent-7", raw(command(incident="inc-9"))),
               Record("agent-control", 0, 1, b"x", b"garbage")]
    asked = []

    def history(topic, partition, end):  # the partition before the committed offset
        asked.append((topic, partition, end))
        return earlier[:end]

    release = Record("agent-control", 0, 2, b"agent-7", raw(command("release", incident="inc-9", by="lee")))
    act, _, posts = run_records([release], history=history)
    assert asked == [("agent-control", 0, 2)]
    assert [b["command"] for _, b in posts] == ["release"]
    act, _, posts = run_records([release])  # without the history the release names no known freeze
    assert posts == [] and act.ignored == {"release_stale": 1}


def test_when_the_history_cannot_be_read_the_record_waits_uncommitted():
    def history(topic, partition, end):
        raise TimeoutError("broker away")

    consumer = FakeConsumer([Record("agent-control", 3, 5, b"agent-7", raw(command("release", by="lee")))])
    act = Actuator(consumer, [LogSink(io.StringIO())], keys=KEYS, history=history, retry_s=0.01)
    assert act.poll_once() == 0
    assert consumer.commits == [] and consumer.seeks == [(3, 5)]


def test_the_command_line_needs_the_signing_keys(capsys, monkeypatch):
    from streams.cli.main import main

    monkeypatch.delenv("FLOWBREAKER_SIGNING_KEYS", raising=False)
    monkeypatch.delenv("FLOWBREAKER_SIGNING_KEYS_INLINE", raising=False)
    assert main(["actuator", "--bootstrap", "127.0.0.1:1"]) == 2
    assert "signing keys" in capsys.readouterr().err
