"""Helpers for the worker integration tests and bench/bench_stream.py.

Workers run as subprocesses (``python -m streams.cli.main worker``), each with its own
web port and data dir; they are stopped with SIGTERM and, after a timeout,
SIGKILL, and only by their own pid. Every wait here is bounded.
"""
from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections import defaultdict
from pathlib import Path
from typing import Callable, Iterable

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
REPO_DIR = Path(__file__).resolve().parents[2]
POLICY = REPO_DIR / "examples" / "policy.toml"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop_process(proc: subprocess.Popen, timeout: float) -> int | None:
    """SIGTERM our own child, then SIGKILL after ``timeout``; its exit code (negative: killed by a signal)."""
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
    return proc.returncode


class WorkerProc:
    """One ``flowbreaker worker`` subprocess."""

    def __init__(self, bootstrap: str, prefix: str, app_id: str, datadir: Path, *, policy: Path | None = POLICY,
                 extra: Iterable[str] = (), web_port: int | None = None, session_timeout: float = 6.0,
                 flush_interval: float = 1.0) -> None:
        self.web_port = web_port or free_port()
        self.datadir = Path(datadir)
        self.datadir.mkdir(parents=True, exist_ok=True)
        self.args = [sys.executable, "-m", "streams.cli.main", "worker", "--bootstrap", bootstrap,
                     "--topic-prefix", prefix, "--app-id", app_id, "--web-port", str(self.web_port),
                     "--datadir", str(self.datadir), "--session-timeout", str(session_timeout),
                     "--flush-interval", str(flush_interval), *extra]
        if policy is not None:
            self.args += ["--policy", str(policy)]
        self.proc: subprocess.Popen | None = None
        self.lines: list[str] = []
        self.line_times: list[tuple[float, str]] = []  # (wall clock when read, line)
        self._cond = threading.Condition()
        self.stderr_path = self.datadir / f"worker-{self.web_port}.err"

    def start(self) -> "WorkerProc":
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        env["PYTHONPATH"] = str(REPO_DIR) + os.pathsep + env.get("PYTHONPATH", "")
        if not env.get("FLOWBREAKER_SIGNING_KEYS") and not env.get("FLOWBREAKER_SIGNING_KEYS_INLINE"):
            # workers sign freezes and releases (streams/clients/signing.py): outside pytest (bench/), a key of their own
            env["FLOWBREAKER_SIGNING_KEYS"] = str(ensure_signing_keys(self.datadir.parent / "signing-keys.toml"))
        self._err = open(self.stderr_path, "ab")
        self.proc = subprocess.Popen(self.args, cwd=REPO_DIR, env=env, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=self._err, text=True)
        threading.Thread(target=self._read, daemon=True).start()
        return self

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        with open(self.stderr_path.with_suffix(".out"), "a") as out:
            for line in self.proc.stdout:
                line = _ANSI.sub("", line).rstrip("\n")
                out.write(line + "\n")
                out.flush()
                with self._cond:
                    self.lines.append(line)
                    self.line_times.append((time.time(), line))
                    self._cond.notify_all()

    def ready_count(self) -> int:
        with self._cond:
            return sum(1 for line in self.lines if line.startswith("flowbreaker worker ready"))

    def wait_ready(self, count: int = 1, timeout: float = 60.0) -> str:
        """Wait for the ``count``-th readiness line; return it."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                ready = [line for line in self.lines if line.startswith("flowbreaker worker ready")]
                if len(ready) >= count:
                    return ready[count - 1]
                if self.proc is not None and self.proc.poll() is not None:
                    raise RuntimeError(f"worker exited with {self.proc.returncode}:\n{self.stderr_tail()}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"worker not ready within {timeout}s; stdout={self.lines}\n"
                                       f"{self.stderr_tail()}")
                self._cond.wait(min(left, 0.5))

    def status(self, timeout: float = 5.0) -> dict:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.web_port}/status", timeout=timeout) as r:
            return json.loads(r.read())

    def metrics(self, timeout: float = 5.0) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.web_port}/metrics", timeout=timeout) as r:
            return r.read().decode()

    def stderr_tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.stderr_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """kill -9 (our own pid only)."""
        if self.alive():
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout``; the exit code (negative: killed by a signal)."""
        if self.proc is None:
            return None
        stop_process(self.proc, timeout)
        try:
            self._err.close()
        except Exception:
            pass
        return self.proc.returncode


def ensure_signing_keys(path: Path) -> Path:
    """A command signing key file at ``path`` (made once, mode 600), for workers started outside pytest."""
    if not path.exists():
        from streams.clients.signing import new_key_file

        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(new_key_file("k-bench"))
        try:
            os.link(tmp, path)  # atomic: the first writer's key wins, never a half-written file
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    return path


# ---------------------------------------------------------------------- Kafka I/O
def producer(bootstrap: str):
    from kafka import KafkaProducer

    return KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=2, request_timeout_ms=15000,
                         max_block_ms=15000, batch_size=256 * 1024)


def make_topics(bootstrap: str, names, partitions: int = 8, configs: dict | None = None,
                timeout_s: float = 30.0) -> list[str]:
    """Create topics (replication factor 1) and wait until every partition has a leader."""
    from kafka.admin import KafkaAdminClient

    names = list(names)
    spec = {
        name: {"num_partitions": partitions, "replication_factor": 1, "configs": dict(configs or {})}
        for name in names
    }
    admin = KafkaAdminClient(
        bootstrap_servers=bootstrap, client_id="flowbreaker-tests",
        request_timeout_ms=int(timeout_s * 1000), bootstrap_timeout_ms=int(timeout_s * 1000),
    )
    try:
        admin.create_topics(spec, timeout_ms=int(timeout_s * 1000), wait_for_metadata=True)
    finally:
        admin.close()
    return names


def produce(bootstrap: str, topic: str, messages: Iterable[tuple[bytes | None, bytes]], *,
            rate: float | None = None, prod=None, on_sent: Callable[[int], None] | None = None) -> int:
    """Send (key, value) pairs in order (``rate``: messages per second); flushes; returns the count."""
    own = prod is None
    prod = prod or producer(bootstrap)
    n = 0
    t0 = time.monotonic()
    try:
        for key, value in messages:
            prod.send(topic, key=key, value=value)
            n += 1
            if on_sent is not None:
                on_sent(n)
            if rate:
                ahead = n / rate - (time.monotonic() - t0)
                if ahead > 0.002:
                    time.sleep(ahead)
        prod.flush(timeout=60)
    finally:
        if own:
            prod.close(timeout=10)
    return n


def event_messages(events: Iterable[dict]) -> list[tuple[bytes, bytes]]:
    return [(e["agent_id"].encode(), json.dumps(e).encode()) for e in events]


class TopicReader:
    """Reads every partition of a topic from the beginning, incrementally."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        from kafka import KafkaConsumer, TopicPartition

        self.consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None,
                                      auto_offset_reset="earliest", request_timeout_ms=30000,
                                      consumer_timeout_ms=1000)
        deadline = time.monotonic() + 30
        parts = None
        while not parts and time.monotonic() < deadline:
            parts = self.consumer.partitions_for_topic(topic)
            if not parts:
                time.sleep(0.2)
        self.tps = [TopicPartition(topic, p) for p in sorted(parts or ())]
        self.consumer.assign(self.tps)
        self.consumer.seek_to_beginning(*self.tps)
        self.messages: list = []

    def poll(self, timeout_ms: int = 200) -> int:
        got = self.consumer.poll(timeout_ms=timeout_ms, max_records=10000)
        n = 0
        for records in got.values():
            self.messages.extend(records)
            n += len(records)
        return n

    def read_until(self, done: Callable[[list], bool], timeout: float) -> list:
        deadline = time.monotonic() + timeout
        while not done(self.messages):
            if time.monotonic() > deadline:
                break
            self.poll()
        return self.messages

    def drain(self, quiet: float = 1.5, timeout: float = 30.0) -> list:
        """Read until nothing new arrives for ``quiet`` seconds."""
        deadline = time.monotonic() + timeout
        last = time.monotonic()
        while time.monotonic() < deadline and time.monotonic() - last < quiet:
            if self.poll():
                last = time.monotonic()
        return self.messages

    def close(self) -> None:
        self.consumer.close()


def decisions_by_event(messages) -> dict[str, list[bytes]]:
    out: dict[str, list[bytes]] = defaultdict(list)
    for m in messages:
        out[json.loads(m.value)["event_id"]].append(m.value)
    return out


# ---------------------------------------------------------------------- events and replay
def fleet(n_agents: int = 10, days: int = 2, seed: int = 3, incidents=None, incident_days_from: int = 1):
    """Simulated events (dicts, in time order) with incidents that trip breakers."""
    from models.simulate import simulate

    if incidents is None:
        incidents = ["bulk_read_broadcast", "mass_fanout", "mass_delete", "prompt_injection"] * 2
    events, labels = simulate(n_agents=n_agents, days=days, seed=seed, incidents=incidents,
                              incident_days_from=incident_days_from)
    return events


def fleet_model(events: list[dict], workdir: Path, policy: Path | None = POLICY, clean_days: int = 1) -> Path:
    """A model trained (``flowbreaker train``) on the fleet's first ``clean_days`` (before any incident:
    :func:`fleet`'s ``incident_days_from``), as a deployment would have one. A worker started with
    ``--model`` and ``replay --model`` of the same directory decide alike; with the model the fleet's
    incidents trip breakers, where the wide online-only prior catches few of them."""
    from detector.timestamps import instant

    workdir.mkdir(parents=True, exist_ok=True)
    start = min(instant(e["ts"]) for e in events)
    history = workdir / "history.jsonl"
    with open(history, "w") as fh:
        for e in events:
            if instant(e["ts"]) < start + clean_days * 86400.0:
                fh.write(json.dumps(e) + "\n")
    out = workdir / "model"
    cmd = [sys.executable, "-m", "streams.cli.main", "train", "--input", str(history), "--out", str(out), "--seed", "0"]
    if policy is not None:
        cmd += ["--policy", str(policy)]
    subprocess.run(cmd, cwd=REPO_DIR, check=True, timeout=300, capture_output=True)
    return out


def replay(events: Iterable[dict], workdir: Path, policy: Path | None = POLICY,
           extra: Iterable[str] = (), *, approvals_as_workers: bool = True) -> dict[str, dict]:
    """Decision records of ``flowbreaker replay`` over the events, by event_id (``extra``: more flags).

    With ``approvals_as_workers`` (and no ``--approvals`` in ``extra``) the replay checks approval ids as a
    worker does, against an empty approvals record: the simulated fleet's change tickets (``APR-2026-...``)
    are refused as the stream refuses them (docs/api.md), where a plain replay takes every id at its word."""
    workdir.mkdir(parents=True, exist_ok=True)
    src = workdir / "events.jsonl"
    out = workdir / "replay.jsonl"
    with open(src, "w") as fh:
        for e in events:
            fh.write(json.dumps(e) + "\n")
    cmd = [sys.executable, "-m", "streams.cli.main", "replay", "--input", str(src), "--out", str(out), "--quiet"]
    if policy is not None:
        cmd += ["--policy", str(policy)]
    extra = list(extra)
    if approvals_as_workers and "--approvals" not in extra:
        none = workdir / "no-approvals.jsonl"
        none.write_text("")
        extra += ["--approvals", str(none)]
    cmd += extra
    subprocess.run(cmd, cwd=REPO_DIR, check=True, timeout=120, capture_output=True)
    recs = {}
    with open(out, "rb") as fh:
        for line in fh:
            rec = json.loads(line)
            recs[rec["event_id"]] = rec
    return recs


class Orchestrator:
    """The agent orchestrator the actuator's webhook calls (on 127.0.0.1, a free port): records every POST
    (headers, JSON body, or None for a body that is not JSON) and answers ``status``. ``url`` is its
    address (path ``path``); ``close()`` stops it."""

    def __init__(self, status: int = 200, path: str = "/freeze") -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.requests: list[tuple[dict, dict | None]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                try:
                    parsed = json.loads(body)
                except ValueError:
                    parsed = None
                outer.requests.append((dict(self.headers), parsed))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}{path}"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()

    @property
    def posts(self) -> int:
        return len(self.requests)

    def commands(self, agent: str) -> list[tuple[str, str, str]]:
        """``(command, incident_id, Idempotency-Key)`` of every POST about ``agent``, in arrival order."""
        return [(b["command"], b.get("incident_id"), h.get("Idempotency-Key")) for h, b in self.requests
                if b is not None and b.get("agent_id") == agent]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def wait_for(check, timeout: float, what: str, every: float = 0.2, procs=()):
    """Poll ``check()`` every ``every`` s until it returns something truthy (an ``OSError``, e.g. a worker's web
    port not answering yet, counts as not yet) and return it; fail naming ``what`` after ``timeout`` s, or at once
    when one of ``procs`` (:class:`WorkerProc`) exited, with their stderr."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = check()
        except OSError:
            value = None
        if value:
            return value
        for p in procs:
            if not p.alive():
                raise AssertionError(f"worker exited while waiting for {what}:\n{p.stderr_tail()}")
        if time.monotonic() > deadline:
            tails = "\n".join(p.stderr_tail(15) for p in procs)
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}\n{tails}")
        time.sleep(every)
