"""Helpers for the control-plane API tests: workers with a tokens file, HTTP calls, topic reads.

Workers are :class:`worker_harness.WorkerProc` subprocesses (stopped by their own
pid); every wait here is bounded.
"""
from __future__ import annotations

import hashlib
import json
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Iterable

from aiokafka.partitioner import murmur2

from worker_harness import WorkerProc, make_topics, produce, wait_for  # noqa: F401 (wait_for: for the API tests)

#: role -> (principal, token). Tokens are test values; the tokens file holds only their hashes.
PRINCIPALS = {
    "viewer": ("vera", "tok-viewer-7f3a9c"),
    "analyst": ("ann", "tok-analyst-1b2c3d"),
    "lead": ("lee", "tok-lead-4e5f6a"),
    "lead2": ("lou", "tok-lead2-8b9c0d"),
    "runtime": ("rt-1", "tok-runtime-2d3e4f"),
}
ROLE_OF = {"viewer": "viewer", "analyst": "analyst", "lead": "lead", "lead2": "lead", "runtime": "runtime"}
TOKEN = {k: v[1] for k, v in PRINCIPALS.items()}
NAME = {k: v[0] for k, v in PRINCIPALS.items()}


def write_tokens(path: Path) -> Path:
    lines = []
    for key, (name, token) in PRINCIPALS.items():
        lines += ["[[token]]", f'name = "{name}"', f'role = "{ROLE_OF[key]}"',
                  f'sha256 = "{hashlib.sha256(token.encode()).hexdigest()}"', ""]
    path.write_text("\n".join(lines))
    return path


def partition_of(agent: str, n: int) -> int:
    return (murmur2(agent.encode()) & 0x7FFFFFFF) % n


class Response:
    def __init__(self, status: int, headers: dict, body: bytes) -> None:
        self.status, self.headers, self.raw = status, headers, body

    @property
    def json(self) -> Any:
        return json.loads(self.raw) if self.raw else None

    def __repr__(self) -> str:
        return f"<{self.status} {self.raw[:300]!r}>"


def call(method: str, url: str, token: str | None = None, body: Any = None, *, headers: dict | None = None,
         timeout: float = 15.0) -> Response:
    data = None
    if body is not None:
        data = body if isinstance(body, bytes) else body.encode() if isinstance(body, str) else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    if token is not None:
        req.add_header("Authorization", f"Bearer {token}")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    for k, v in (headers or {}).items():
        req.add_header(k, v)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return Response(r.status, dict(r.headers), r.read())
    except urllib.error.HTTPError as err:
        return Response(err.code, dict(err.headers), err.read())


class Cluster:
    """``n`` workers of one app on the session broker, with the test tokens. ``refusal_window_s``: the
    FLOWBREAKER_AUDIT_REFUSAL_WINDOW_S its workers run with, when the caller set it (for :class:`AuditMark`)."""

    def __init__(self, bootstrap: str, prefix: str, tmp: Path, n: int = 2, *, partitions: int = 8,
                 extra: Iterable[str] = (), refusal_window_s: float | None = None) -> None:
        self.bootstrap, self.prefix, self.tmp, self.partitions = bootstrap, prefix, tmp, partitions
        self.refusal_window_s = refusal_window_s
        self.tokens = write_tokens(tmp / "tokens.toml")
        self.workers = [WorkerProc(bootstrap, prefix, prefix + "app", tmp / f"w{i}", session_timeout=6.0,
                                   flush_interval=1.0, extra=["--tokens", str(self.tokens), *extra])
                        for i in range(n)]

    def topic(self, logical: str) -> str:
        return self.prefix + {"actions": "agent-actions", "control": "agent-control", "audit": "agent-audit",
                              "feedback": "agent-feedback", "approvals": "agent-approvals",
                              "incidents": "agent-incidents", "decisions": "agent-decisions"}[logical]

    def url(self, i: int = 0) -> str:
        return f"http://127.0.0.1:{self.workers[i].web_port}"

    def start(self, timeout: float = 90.0) -> "Cluster":
        make_topics(self.bootstrap, [self.topic("actions"), self.topic("control")], partitions=self.partitions)
        self.workers[0].start()
        self.workers[0].wait_ready(1, timeout=timeout)
        for w in self.workers[1:]:
            w.start()
        self.wait_stable(timeout)
        for i in range(len(self.workers)):
            wait_for(lambda i=i: call("GET", self.url(i) + "/v1/breakers", TOKEN["viewer"]).status == 200,
                     timeout, f"API of worker {i}")
        return self

    def owned(self) -> list[list[int]]:
        return [sorted(w.status()["partitions"]) for w in self.workers]

    def wait_stable(self, timeout: float = 90.0) -> None:
        def stable():
            try:
                sts = [w.status() for w in self.workers]
            except OSError:
                return False
            parts = [p for s in sts for p in s["partitions"]]
            return all(s["ready"] and s["partitions"] for s in sts) and sorted(parts) == list(range(self.partitions))
        wait_for(stable, timeout, "a stable assignment", every=0.5, procs=self.workers)

    def owner_index(self, agent: str) -> int:
        p = partition_of(agent, self.partitions)
        for i, parts in enumerate(self.owned()):
            if p in parts:
                return i
        raise AssertionError(f"no worker owns partition {p}")

    def agent_on(self, i: int, stem: str) -> str:
        """An agent id (``stem-N``) whose partition worker ``i`` owns."""
        mine = set(self.owned()[i])
        for n in range(10_000):
            agent = f"{stem}-{n}"
            if partition_of(agent, self.partitions) in mine:
                return agent
        raise AssertionError("no agent id found")

    def stop(self) -> None:
        for w in self.workers:
            w.stop(timeout=20)


def now_ts() -> str:
    from datetime import datetime, timezone

    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def event(agent: str, i: int, **kw) -> dict:
    ev = {"event_id": f"{agent}-e{i}", "ts": f"2026-03-02T09:{i // 60:02d}:{i % 60:02d}Z", "agent_id": agent,
          "operator_id": "ops-team", "tool": "crm.query", "action": "read", "resource": "crm://accounts",
          "sensitivity": "internal", "records": 3, "task_id": f"{agent}-task-{i // 5}"}
    ev.update(kw)
    return ev


def seed(cluster: Cluster, agents: Iterable[str], n: int = 12) -> None:
    """Normal reads for each agent; returns once every agent is known to the API."""
    agents = list(agents)
    msgs = [(a.encode(), json.dumps(event(a, i)).encode()) for a in agents for i in range(n)]
    produce(cluster.bootstrap, cluster.topic("actions"), msgs)
    for a in agents:
        wait_for(lambda a=a: call("GET", cluster.url(0) + f"/v1/agents/{a}", TOKEN["viewer"]).status == 200,
                 30, f"agent {a} known")


def exfil(agent: str, i: int, **kw) -> dict:
    """A send of restricted data to a never-seen external address: trips the breaker, or needs approval."""
    base = dict(tool="mail.send", action="send", resource="hr://personnel/records", sensitivity="restricted",
                records=5000, bytes=9_000_000, destinations=["email:drop@evil.example"],
                requested_by="mallory@corp.example", instruction_hash="sha256:feedbeef")
    base.update(kw)
    return event(agent, i, **base)


def read_topic(bootstrap: str, topic: str, timeout: float = 10.0, since: dict[int, int] | None = None) -> list:
    """Every message of ``topic`` up to its current end (ConsumerRecords); from ``since`` (partition -> offset,
    e.g. :func:`topic_ends`) instead of the beginning when given."""
    from kafka import KafkaConsumer, TopicPartition

    c = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                      auto_offset_reset="earliest", request_timeout_ms=20000)
    try:
        parts = c.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        if not tps:
            return []
        c.assign(tps)
        c.seek_to_beginning(*tps)
        for tp in tps:
            if since and since.get(tp.partition):
                c.seek(tp, since[tp.partition])
        ends = c.end_offsets(tps)
        out = []
        deadline = time.monotonic() + timeout
        while any(c.position(tp) < ends[tp] for tp in tps) and time.monotonic() < deadline:
            for recs in c.poll(timeout_ms=200).values():
                out.extend(recs)
        return out
    finally:
        c.close()


def topic_ends(bootstrap: str, topic: str) -> dict[int, int]:
    """partition -> end offset of ``topic`` now."""
    return {int(k.rsplit(":", 1)[1]): v for k, v in end_offsets(bootstrap, [topic]).items()}


class AuditMark:
    """A mark on a cluster's audit trail (``agent-audit``): :meth:`records` are the ones written after it.

    For a module on the shared cluster (conftest.py, ``two_worker_cluster``), whose audit topic also holds
    the records of the modules before it. Refused calls are summarised per client and window
    (``cluster.refusal_window_s``): a window opened by an earlier module's refusal would be summarised into a
    record written after the mark, counting calls that are not this module's. So the mark waits until every
    window opened before it has closed and its summary is on the topic: at most one window after the last
    refusal record, and not at all on a cluster that has refused nothing yet."""

    #: the workers write due summaries once a second; the rest is room for the write itself
    SUMMARY_DELAY_S = 2.5

    def __init__(self, cluster: Cluster, timeout: float = 60.0) -> None:
        from detector.timestamps import instant

        self.bootstrap, self.topic = cluster.bootstrap, cluster.topic("audit")
        window = cluster.refusal_window_s
        if window is None:
            raise AssertionError("the cluster's refusal window is not known (FLOWBREAKER_AUDIT_REFUSAL_WINDOW_S)")
        opened = [instant(r["at"]) for r in records(self.bootstrap, self.topic)
                  if r.get("result") in ("unauthenticated", "forbidden") and r.get("what") != "refused_calls"]
        if opened:
            closed_by = max(opened) + window + self.SUMMARY_DELAY_S
            if closed_by - time.time() > timeout:
                raise AssertionError(f"a refusal window of {window} s is open beyond {timeout} s")
            time.sleep(max(0.0, closed_by - time.time()))  # bounded above; a condition on the audit times
        self.since = topic_ends(self.bootstrap, self.topic)

    def messages(self) -> list:
        """The audit topic's messages written after the mark (ConsumerRecords)."""
        return read_topic(self.bootstrap, self.topic, since=self.since)

    def records(self) -> list[dict]:
        return [json.loads(m.value) for m in self.messages()]


def records(bootstrap: str, topic: str) -> list[dict]:
    return [json.loads(m.value) for m in read_topic(bootstrap, topic)]


def end_offsets(bootstrap: str, topics: Iterable[str]) -> dict:
    from kafka import KafkaConsumer, TopicPartition

    c = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, request_timeout_ms=20000)
    try:
        out = {}
        for t in topics:
            tps = [TopicPartition(t, p) for p in sorted(c.partitions_for_topic(t) or ())]
            out.update(c.end_offsets(tps) if tps else {})
        return {f"{tp.topic}:{tp.partition}": v for tp, v in out.items()}
    finally:
        c.close()


def metrics_sum(cluster: Cluster, name: str, **labels) -> float:
    """:func:`metric` summed over the cluster's workers."""
    return sum(metric(w.metrics(), name, **labels) for w in cluster.workers)


def metric(text: str, name: str, **labels) -> float:
    """Sum of the samples of ``name`` matching ``labels`` in Prometheus text."""
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name):
            continue
        head, _, value = line.rpartition(" ")
        if head.split("{")[0] != name:
            continue
        if all(f'{k}="{v}"' in head for k, v in labels.items()):
            total += float(value)
    return total
