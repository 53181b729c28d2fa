"""Hostile input on ``agent-actions`` against a running worker on the real broker (issue 10, items 1, 2, 6, 7, 12).

In one run, valid events are mixed with malformed, deeply nested, oversized,
mis-keyed (no key, another agent's key, a partition the default partitioner
would not pick), reused-id, far-future and look-alike-identifier records. The
test checks that every valid event is decided and never decided two different
ways, that every invalid record lands in the DLQ with its reason, that the
stream agent never crashed or restarted, and that SIGTERM stops the worker
cleanly.
"""
from __future__ import annotations

import json
import random
import time

import pytest

from streams.worker.intake import REROUTED_HEADER, home_partition
from worker_harness import TopicReader, WorkerProc, fleet, replay

pytestmark = pytest.mark.timeout(300)

PARTITIONS = 8


def _invalid(base: dict) -> list[tuple[str, bytes, str]]:
    """(expected code, raw value, a phrase of the expected reason) of every kind of bad record."""
    def ev(**changes) -> bytes:
        return json.dumps({**base, **changes}).encode()

    return [
        ("depth", b'{"a":' * 1000, "deeper than"),                        # the RecursionError
        ("depth", b"[" * 100_000, "deeper than"),
        ("depth", ev(event_id="deep-1", x=json.loads("[" * 300 + "]" * 300)), "deeper than"),
        ("not_json", b'{"event_id": "m1", ts: oops', "JSON"),
        ("not_json", b"", "no value"),
        ("encoding", b'{"event_id": "m3", "agent_id": "\xff\xfe"}', "UTF-8"),
        ("not_object", b"[1, 2]", "object"),
        ("missing", json.dumps({k: v for k, v in base.items() if k != "tool"}).encode(), "missing"),
        ("enum", ev(event_id="m6", action="exfiltrate"), "action"),
        ("range", ev(event_id="m7", bytes=-3), "bytes"),
        ("length", ev(event_id="m9", resource="r" * 600_000), "resource"),   # oversized field, 600 KB message
        ("timestamp", ev(event_id="future-1", ts="2099-01-01T00:00:00Z"), "ahead of the broker's time"),
        ("timestamp", ev(event_id="future-2", ts="2099-06-01T12:00:00+02:00"), "ahead of the broker's time"),
        ("character", ev(event_id="zw-1", agent_id=base["agent_id"] + "\u200b"), "U+200B"),
        ("character", ev(event_id="bidi-1", agent_id="\u202e" + base["agent_id"]), "U+202E"),
        ("character", ev(event_id="nul-1", operator_id="ops\x00"), "U+0000"),
    ]


def _status(worker) -> str:
    """The worker's /status for a failure message (what it decided, where it stands), or why there is none."""
    try:
        return json.dumps(worker.status())
    except OSError as exc:
        return f"no /status ({exc!r}; alive: {worker.alive()})"


def test_hostile_records_never_hide_crash_or_double_a_decision(kafka_bootstrap, unique_topic_prefix, tmp_path):
    p = unique_topic_prefix
    events = fleet(n_agents=8, days=2, seed=5)
    rng = random.Random(7)
    agents = sorted({e["agent_id"] for e in events})
    homes = {a: home_partition(a, PARTITIONS) for a in agents}
    by_agent = {a: [e for e in events if e["agent_id"] == a] for a in agents}

    # mis-keyed agents: the case (one event without a key, then the rest keyed), another agent's key,
    # and the right key on a partition a different partitioner chose
    nokey, wrongkey, wrongpart = agents[0], agents[1], agents[2]
    other = next(a for a in agents if homes[a] != homes[wrongkey])
    reused = agents[3]  # events that reuse an id: a true duplicate and the same id with other content
    miskeyed_ids: dict[str, str] = {}            # event_id -> reason
    plan: list[tuple[bytes | None, bytes, int | None, str]] = []  # (key, value, partition, kind)

    valid_stream: list[dict] = []  # what replay sees, in each agent's order
    first = {a: by_agent[a][0]["event_id"] for a in agents}
    dup_at = by_agent[reused][4]
    for i, e in enumerate(events):
        a = e["agent_id"]
        raw = json.dumps(e).encode()
        if a == nokey and e["event_id"] == first[a]:
            plan.append((None, raw, (homes[a] + 1) % PARTITIONS, "miskeyed"))
            miskeyed_ids[e["event_id"]] = "no_key"
        elif a == wrongkey and i % 3 == 0:
            plan.append((other.encode(), raw, homes[other], "miskeyed"))
            miskeyed_ids[e["event_id"]] = "wrong_key"
        elif a == wrongpart and i % 4 == 0:
            plan.append((a.encode(), raw, (homes[a] + 3) % PARTITIONS, "miskeyed"))
            miskeyed_ids[e["event_id"]] = "wrong_partition"
        else:
            plan.append((a.encode(), raw, None, "valid"))
        valid_stream.append(e)
        if e is dup_at:
            plan.append((a.encode(), raw, None, "valid"))                   # byte-identical redelivery
            valid_stream.append(e)
            other_content = dict(e, records=e.get("records", 0) + 777, resource=e["resource"] + "/other")
            plan.append((a.encode(), json.dumps(other_content).encode(), None, "valid"))   # reused id
            valid_stream.append(other_content)
    bad = _invalid(dict(by_agent[agents[4]][0]))
    for code, raw, phrase in bad:  # sprinkled through the stream, keyed as their agent would be
        at = rng.randrange(len(plan))
        plan.insert(at, (agents[4].encode(), raw, None, f"invalid:{code}:{phrase}"))

    expected_lines: dict[str, set[bytes]] = {}
    replay(valid_stream, tmp_path / "replay")
    for line in (tmp_path / "replay" / "replay.jsonl").read_bytes().splitlines():
        expected_lines.setdefault(json.loads(line)["event_id"], set()).add(line)
    valid_ids = {e["event_id"] for e in valid_stream}
    assert set(expected_lines) == valid_ids

    worker = WorkerProc(kafka_bootstrap, p, f"{p}app", tmp_path / "w", flush_interval=1.0)
    try:
        worker.start().wait_ready(timeout=90)
        from kafka import KafkaProducer

        prod = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all", linger_ms=2,
                             max_request_size=2 * 1024 * 1024)  # room for the 600 KB record
        sent = []
        for key, value, partition, kind in plan:
            sent.append((prod.send(f"{p}agent-actions", key=key, value=value, partition=partition), kind, value))
        prod.flush(timeout=60)
        where = [(f.get(timeout=30), kind, value) for f, kind, value in sent]
        prod.close(timeout=10)
        invalid_at = {(md.partition, md.offset): kind for md, kind, _ in where if kind.startswith("invalid")}

        # ---- every valid event decided, never two different ways
        decisions = TopicReader(kafka_bootstrap, f"{p}agent-decisions")
        decisions.read_until(lambda ms: len({json.loads(m.value)["event_id"] for m in ms}) >= len(valid_ids), 120)
        decisions.drain(quiet=2.0, timeout=20)
        got: dict[str, set[bytes]] = {}
        for m in decisions.messages:
            got.setdefault(json.loads(m.value)["event_id"], set()).add(m.value)
        missing = valid_ids - set(got)
        assert not missing, (f"{len(missing)} valid events never decided, e.g. {sorted(missing)[:5]}\n"
                             f"worker: {_status(worker)}\n{worker.stderr_tail(80)}")
        assert set(got) == valid_ids, set(got) - valid_ids
        mixed = {nokey, wrongkey, wrongpart}  # re-routed events take their place where the copy lands
        for eid, copies in got.items():
            agent = json.loads(next(iter(copies)))["agent_id"]
            if agent in mixed:
                assert len(copies) == 1 or eid == dup_at["event_id"], (eid, copies)
            else:  # untouched agents: exactly replay's records (a reused id is replay's business too)
                assert copies == expected_lines[eid], (eid, copies, expected_lines[eid])
        for a in mixed:  # the mis-keyed agent is not silenced: all its events decided (issue 10, item 1)
            assert {e["event_id"] for e in by_agent[a]} <= set(got)

        # ---- every invalid record in the DLQ with its reason
        dlq = TopicReader(kafka_bootstrap, f"{p}agent-actions-dlq")
        dlq.read_until(lambda ms: len({(json.loads(m.value)["source"]["partition"],
                                        json.loads(m.value)["source"]["offset"]) for m in ms}) >= len(invalid_at), 60)
        dead = {}
        for m in dlq.messages:
            rec = json.loads(m.value)
            dead[(rec["source"]["partition"], rec["source"]["offset"])] = rec
        assert set(dead) == set(invalid_at), (set(invalid_at) - set(dead), set(dead) - set(invalid_at))
        for at, kind in invalid_at.items():
            _, code, phrase = kind.split(":", 2)
            rec = dead[at]
            assert rec["code"] == code and phrase in rec["reason"], (kind, rec["code"], rec["reason"])
            assert rec["source"]["topic"] == f"{p}agent-actions"

        # ---- mis-keyed events were re-routed to their agent's partition, counted and named
        actions = TopicReader(kafka_bootstrap, f"{p}agent-actions")
        actions.read_until(lambda ms: sum(1 for m in ms if m.headers) >= len(miskeyed_ids), 30)
        copies = [m for m in actions.messages if any(h[0] == REROUTED_HEADER for h in (m.headers or ()))]
        assert sorted(json.loads(m.value)["event_id"] for m in copies) == sorted(miskeyed_ids)
        for m in copies:
            agent = json.loads(m.value)["agent_id"]
            assert m.key == agent.encode() and m.partition == homes[agent]
        metrics = worker.metrics()
        for reason in ("no_key", "wrong_key", "wrong_partition"):
            n = sum(1 for r in miskeyed_ids.values() if r == reason)
            assert f'flowbreaker_miskeyed_events_total{{outcome="rerouted",reason="{reason}"}} {float(n)}' \
                   in metrics, reason
        status = worker.status()
        assert status["rerouted"] == len(miskeyed_ids) and status["dlq"] == len(invalid_at), status

        # ---- the stream agent never crashed or restarted, and SIGTERM stops the worker promptly
        assert worker.alive()
        log = worker.stderr_path.read_text(errors="replace")
        assert "crashed" not in log.lower() and "Traceback" not in log and "RecursionError" not in log, log[-3000:]
        assert "faust delivered" not in log  # agent-actions is read by the worker's reader only (streams/worker/reader.py)
        assert "mis-keyed event" in log  # named in the worker's log
        t0 = time.monotonic()
        assert worker.stop(timeout=30) == 0, worker.stderr_tail()
        assert time.monotonic() - t0 < 30
        for r in (decisions, dlq, actions):
            r.close()
    finally:
        worker.stop(timeout=30)
