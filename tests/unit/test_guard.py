"""FreezeGuard without Kafka: the fold of freeze/release commands into the frozen set, and the
reference runtime that obeys it (streams/demo/simulated_runtime.py, driven by a hand-made clock)."""
from __future__ import annotations

import itertools

import doctest
import json
import random
import time
from datetime import datetime, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import streams.clients.guard
import streams.demo.simulated_runtime
from streams.clients.guard import FreezeGuard
from streams.clients.signing import KeyRing
from streams.demo.simulated_runtime import (Feed, Runtime, TaskError, paced_history, step_event, task_from_dict,
                                            task_to_dict)

AGENTS = ("agent-a", "agent-b", "agent-c", "agent-d")
KEYS = KeyRing({"k1": b"k" * 32}, active="k1")
N_PARTITIONS = 3

pytestmark = pytest.mark.timeout(120)


def command(kind: str, agent: str, incident: str = "inc-1") -> dict:
    return {"command": kind, "agent_id": agent, "incident_id": incident,
            "issued_at": "2026-03-02T09:00:00Z", "reason": "test", "issued_by": "flowbreaker"}


def partition_of(agent: str) -> int:
    return AGENTS.index(agent) % N_PARTITIONS


def as_log(sequence):
    """Commands as Kafka would store them: keyed by agent, so each agent stays in one partition."""
    next_offset = [0] * N_PARTITIONS
    out = []
    for agent, kind in sequence:
        p = partition_of(agent)
        out.append((p, next_offset[p], command(kind, agent)))
        next_offset[p] += 1
    return out


def expected_frozen(sequence) -> set[str]:
    last = {}
    for agent, kind in sequence:
        last[agent] = kind
    return {a for a, kind in last.items() if kind == "freeze"}


commands = st.lists(st.tuples(st.sampled_from(AGENTS), st.sampled_from(("freeze", "release"))), max_size=60)


def test_the_module_examples_run():
    assert doctest.testmod(streams.clients.guard).failed == 0
    assert doctest.testmod(streams.demo.simulated_runtime).failed == 0


def test_a_freeze_stops_the_agent_and_a_release_lets_it_go_on():
    g = FreezeGuard()
    assert g.may_proceed("agent-a")
    g.apply(command("freeze", "agent-a"))
    assert not g.may_proceed("agent-a")
    assert g.may_proceed("agent-b")
    assert g.frozen()["agent-a"]["incident_id"] == "inc-1"
    g.apply(command("release", "agent-a"))
    assert g.may_proceed("agent-a")
    assert g.frozen() == {}


@settings(max_examples=300, deadline=None)
@given(commands)
def test_the_frozen_set_is_the_agents_whose_last_command_is_freeze(sequence):
    g = FreezeGuard()
    for p, offset, cmd in as_log(sequence):
        g.apply(cmd, partition=p, offset=offset)
    assert set(g.frozen()) == expected_frozen(sequence)
    for agent in AGENTS:
        assert g.may_proceed(agent) == (agent not in expected_frozen(sequence))


@settings(max_examples=200, deadline=None)
@given(commands, st.randoms(use_true_random=False), st.integers(min_value=0, max_value=60))
def test_interleaving_partitions_and_redelivery_change_nothing(sequence, rnd, replay_from):
    log = as_log(sequence)
    # partitions are read in any interleaving, each in its own order ...
    by_partition = {p: [r for r in log if r[0] == p] for p in range(N_PARTITIONS)}
    delivered = []
    while any(by_partition.values()):
        p = rnd.choice([p for p, rs in by_partition.items() if rs])
        delivered.append(by_partition[p].pop(0))
    # ... and after a reconnect part of the log comes again (at-least-once)
    delivered += delivered[replay_from:]
    g = FreezeGuard()
    for p, offset, cmd in delivered:
        g.apply(cmd, partition=p, offset=offset)
    assert set(g.frozen()) == expected_frozen(sequence)


@settings(max_examples=100, deadline=None)
@given(commands)
def test_without_offsets_commands_apply_in_call_order(sequence):
    g = FreezeGuard()
    for agent, kind in sequence:
        g.apply(command(kind, agent))
    assert set(g.frozen()) == expected_frozen(sequence)


def test_an_older_offset_never_undoes_a_newer_command():
    g = FreezeGuard()
    g.apply(command("freeze", "agent-a"), partition=1, offset=7)
    assert not g.apply(command("release", "agent-a"), partition=1, offset=3)
    assert not g.may_proceed("agent-a")


def test_malformed_commands_are_counted_and_ignored():
    g = FreezeGuard()
    for bad in (b"not json", b"[1, 2]", b'{"command": "pause", "agent_id": "agent-a"}',
                b'{"command": "freeze"}', b'{"command": "freeze", "agent_id": 7}', b"\xff\xfe"):
        assert not g.apply(bad)
    assert g.invalid == 6
    assert g.frozen() == {}
    assert g.apply(b'{"command": "freeze", "agent_id": "agent-a", "extra": 1}')  # unknown fields are fine


def test_listeners_hear_changes_only():
    heard = []
    g = FreezeGuard(on_change=lambda cmd, frozen: heard.append((cmd["agent_id"], frozen)))
    g.apply(command("freeze", "agent-a"))
    g.apply(command("freeze", "agent-a", incident="inc-2"))  # still frozen: no change
    g.apply(command("release", "agent-b"))                   # was not frozen: no change
    g.apply(command("release", "agent-a"))                   # names inc-1, the open incident is inc-2: ignored
    g.apply(command("release", "agent-a", incident="inc-2"))
    assert heard == [("agent-a", True), ("agent-a", False)]
    assert g.frozen() == {}


def test_a_failing_listener_does_not_stop_the_fold():
    def broken(cmd, frozen):
        raise RuntimeError("listener bug")

    g = FreezeGuard(on_change=broken)
    assert g.apply(command("freeze", "agent-a"))
    assert not g.may_proceed("agent-a")


def test_a_kafka_guard_holds_every_agent_until_it_has_read_the_log():
    g = FreezeGuard("127.0.0.1:1", keys=KEYS)  # never started: not caught up
    assert not g.ready
    assert not g.may_proceed("agent-a")


def test_may_proceed_is_one_hash_lookup_whatever_the_number_of_frozen_agents():
    """A runtime asks before every tool call: the answer is one lookup in the frozen set (no scan of it, no
    copy), so it costs the same with 10,000 agents frozen as with one. (Its cost, ~0.1 us, is printed by
    ``python bench/bench_guard.py``; tests do not time it.)"""
    g = FreezeGuard()
    for i in range(10_000):
        g.apply(command("freeze", f"agent-{i}"))
    asked = []

    class Watched(type(g._frozen)):
        def __contains__(self, key):
            asked.append(key)
            return super().__contains__(key)

        def __iter__(self):
            raise AssertionError("may_proceed iterated over the frozen agents")

    g._frozen = Watched(g._frozen)
    assert g.may_proceed("agent-x") and not g.may_proceed("agent-7")
    assert asked == ["agent-x", "agent-7"]


# ---------------------------------------------------------------------- signed commands, poison, failing closed

_SEQ = itertools.count(1)


def signed(kind: str, agent: str, incident: str = "inc-1", by: str = "flowbreaker") -> dict:
    """Signed as its issuer would: with the next sequence number (contract section 4)."""
    return KEYS.sign(dict(command(kind, agent, incident), issued_by=by, seq=next(_SEQ)))


POISON = [b"not json", b'{"a":' * 1000, b"[" * 5000 + b"]" * 5000, b"\xff\xfe\x00", b'{"command": "freeze", "agent_id": "\xff"}',
          b'{"command": "freeze", "agent_id": 7}', b'{"command": "release", "agent_id": ["x"]}',
          b'{"command": "freeze", "agent_id": "' + b"a" * 100_000 + b'"}', b"", None, b"null", b"1e999999",
          b'{"command": "freeze", "agent_id": "a", "signature": {"nested": true}}']


def test_a_signed_guard_ignores_forged_unsigned_and_stale_releases_and_obeys_a_signed_one():
    g = FreezeGuard(keys=KEYS)
    assert g.apply(signed("freeze", "agent-a", "inc-7"))
    forged = command("release", "agent-a", "inc-made-up")            # the worker's name, a made-up incident
    unsigned_right_incident = command("release", "agent-a", "inc-7")
    bad_sig = dict(signed("release", "agent-a", "inc-7", by="lee"), reason="changed after signing")
    other_key = KeyRing({"k1": b"x" * 32}, active="k1").sign(command("release", "agent-a", "inc-7"))
    stale = signed("release", "agent-a", "inc-6", by="lee")           # a genuine release of an older incident
    for cmd in (forged, unsigned_right_incident, bad_sig, other_key, stale):
        assert not g.apply(cmd)
        assert not g.may_proceed("agent-a")
    assert g.outcomes["release_unverified"] == 4 and g.outcomes["release_stale"] == 1
    assert g.verdicts["unsigned"] == 2 and g.verdicts["bad_signature"] == 2
    assert g.apply(signed("release", "agent-a", "inc-7", by="lee"))
    assert g.may_proceed("agent-a")


def test_an_unsigned_freeze_is_obeyed_and_counted_but_never_displaces_a_signed_one():
    g = FreezeGuard(keys=KEYS)
    assert g.apply(command("freeze", "agent-b", "inc-x"))             # unsigned: freezing is the safe side
    assert not g.may_proceed("agent-b") and not g.freeze_verified("agent-b")
    assert g.outcomes["frozen_unverified"] == 1
    g.apply(signed("freeze", "agent-a", "inc-1"))
    assert not g.apply(command("freeze", "agent-a", "inc-forged"))     # cannot hijack the open incident ...
    assert g.open_incident("agent-a") == "inc-1" and g.outcomes["freeze_ignored"] == 1
    assert g.apply(signed("release", "agent-a", "inc-1", by="lee"))   # ... so the genuine release still works
    assert g.apply(signed("release", "agent-b", "inc-x", by="lee"))   # a key holder lifts the unsigned hold


@pytest.mark.parametrize("poison", POISON, ids=range(len(POISON)))
def test_every_kind_of_poison_record_is_counted_and_skipped_and_the_next_freeze_is_seen(poison):
    g = FreezeGuard(keys=KEYS)
    assert not g.apply(poison, partition=0, offset=0)
    assert g.invalid == 1 and sum(g.rejected.values()) == 1
    assert g.apply(signed("freeze", "agent-a"), partition=0, offset=1)
    assert not g.may_proceed("agent-a")


def test_rejections_have_bounded_reasons():
    from streams.clients.commands import REASONS

    g = FreezeGuard(keys=KEYS)
    for i, poison in enumerate(POISON):
        g.apply(poison, partition=0, offset=i)
    assert set(g.rejected) <= set(REASONS)
    assert {"too_deep", "encoding", "not_json", "schema", "too_large", "empty"} <= set(g.rejected)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(max_size=300), st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.sampled_from(["command", "agent_id", "incident_id", "signature", "issued_by", "x"]), inner, max_size=6),
    max_leaves=30).map(lambda v: json.dumps(v).encode())))
def test_no_record_makes_apply_raise(value):
    g = FreezeGuard(keys=KEYS)
    g.apply(value, partition=0, offset=0)
    g.apply(signed("freeze", "agent-a"), partition=0, offset=1)
    assert not g.may_proceed("agent-a")


def test_a_kafka_guard_fails_closed_once_it_is_not_confirmed_current():
    g = FreezeGuard("127.0.0.1:1", keys=KEYS, max_staleness_s=5.0)
    g._synced, g._current_at = True, time.monotonic()                 # as the follower leaves it when caught up
    assert g.may_proceed("agent-a") and g.current
    g._current_at = time.monotonic() - 6.0                            # no confirmation for 6 s
    assert not g.may_proceed("agent-a") and not g.current
    g._current_at = time.monotonic()
    g._synced = False                                                 # the follower failed and restarts
    assert not g.may_proceed("agent-a")


def test_a_kafka_guard_without_keys_is_refused(monkeypatch):
    monkeypatch.delenv("FLOWBREAKER_SIGNING_KEYS", raising=False)
    monkeypatch.delenv("FLOWBREAKER_SIGNING_KEYS_INLINE", raising=False)
    with pytest.raises(ValueError, match="signing keys"):
        FreezeGuard("127.0.0.1:1")


# ---------------------------------------------------------------------- the reference runtime obeys the guard

class Clock:
    """A hand-driven monotonic clock."""

    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def make_task(task_id: str, agent: str = "agent-a", steps: int = 3, delay: float = 10.0) -> dict:
    return {"task_id": task_id, "agent_id": agent, "kind": "test", "steps": [
        {"operator_id": "ops", "tool": "crm.query", "action": "read", "resource": f"crm://{task_id}/{i}",
         "sensitivity": "internal", "records": i, "delay_s": 0.0 if i == 0 else delay,
         **({"parent": i - 1} if i else {})} for i in range(steps)]}


def drive(rt: Runtime, clock: Clock, until: float, step: float = 0.1) -> None:
    while clock.t < until:
        rt.tick()
        clock.t += step


def runtime_with(guard=None, fail_first: int = 0):
    clock, sent, failures = Clock(), [], [fail_first]

    def emit(ev):
        if failures[0]:
            failures[0] -= 1
            raise ConnectionError("broker away")
        sent.append(ev)

    guard = guard or FreezeGuard()
    return Runtime(guard, emit, speed=10.0, clock=clock), guard, clock, sent


def test_a_frozen_agent_takes_no_task_and_drops_none_until_released():
    rt, guard, clock, sent = runtime_with()
    guard.apply(command("freeze", "agent-a"))
    for i in range(3):
        rt.submit(task_from_dict(make_task(f"t{i}")))
    rt.submit(task_from_dict(make_task("other", agent="agent-b")))
    drive(rt, clock, 10.0)
    assert [e for e in sent if e["agent_id"] == "agent-a"] == []
    assert {e["task_id"] for e in sent} == {"other"}
    assert rt.counts("agent-a")["held"] == 3 and rt.stats()["agent-a"]["queued"] == 3
    guard.apply(command("release", "agent-a"))
    drive(rt, clock, 30.0)
    done = [e["task_id"] for e in sent if e["agent_id"] == "agent-a"]
    assert done == ["t0"] * 3 + ["t1"] * 3 + ["t2"] * 3  # in queue order, every step once
    assert rt.counts("agent-a") | {"events": 0} == {"executed": 3, "held": 3, "aborted": 0, "blocked_calls": 0,
                                                    "events": 0, "resumed": 3}


def test_a_freeze_mid_task_stops_it_before_its_next_tool_call_and_it_is_not_resumed():
    rt, guard, clock, sent = runtime_with()
    rt.submit(task_from_dict(make_task("t0", steps=5)))
    rt.submit(task_from_dict(make_task("t1", steps=2)))
    drive(rt, clock, 1.5)  # steps 0 and 1 done (one second apart at speed 10)
    assert [e["event_id"] for e in sent] == ["rt-t0.0", "rt-t0.1"]
    guard.apply(command("freeze", "agent-a"))
    drive(rt, clock, 10.0)
    assert len(sent) == 2
    assert rt.counts("agent-a")["aborted"] == 1 and rt.counts("agent-a")["blocked_calls"] == 1
    guard.apply(command("release", "agent-a"))
    drive(rt, clock, 20.0)
    assert [e["event_id"] for e in sent[2:]] == ["rt-t1.0", "rt-t1.1"]


def test_a_failed_publish_is_retried_without_skipping_or_repeating_a_step():
    rt, guard, clock, sent = runtime_with(fail_first=2)
    rt.submit(task_from_dict(make_task("t0", steps=3, delay=1.0)))
    drive(rt, clock, 10.0)
    assert [e["event_id"] for e in sent] == ["rt-t0.0", "rt-t0.1", "rt-t0.2"]
    assert rt.counts("agent-a")["executed"] == 1


def test_the_runtimes_events_are_contract_events_linked_to_their_parent():
    from detector.events import decode_event

    task = task_from_dict(make_task("t0", steps=2))
    ev = step_event(task, 1, "2026-03-02T10:00:00.000+01:00")
    decoded = decode_event(json.dumps(ev).encode())
    assert decoded.parent_event_id == "rt-t0.0" and decoded.task_id == "t0" and decoded.records == 1


def test_simulator_tasks_survive_the_task_queue_format():
    from models.simulate import Fleet

    fleet = Fleet.make(n_agents=5, seed=2)
    rng = random.Random(2)
    at = datetime(2026, 3, 2, 10, tzinfo=timezone.utc)
    for agent in fleet.agents:
        for task in (fleet.normal_task(agent, at, rng), fleet.incident_task("mass_fanout", agent, at, rng)):
            d = json.loads(json.dumps(task_to_dict(task)))
            parsed = task_from_dict(json.dumps(d))
            assert parsed.task_id == task.task_id and len(parsed.steps) == len(task.steps)
            assert [s["tool"] for s in parsed.steps] == [s.tool for s in task.steps]
            assert "harmful" not in d["steps"][0]  # the runtime is not told what is an incident


@pytest.mark.parametrize("bad", [b"nope", b"[]", b'{"agent_id": "a", "steps": []}',
                                 b'{"task_id": "t", "agent_id": "a", "steps": [{"tool": "x"}]}',
                                 b'{"task_id": "t", "agent_id": "a", "steps": [{"operator_id": "o", "tool": "t", '
                                 b'"action": "read", "resource": "r", "sensitivity": "public", "parent": 0}]}'])
def test_bad_task_messages_are_refused_with_a_reason(bad):
    with pytest.raises(TaskError):
        task_from_dict(bad)


def test_the_feed_injects_an_incident_every_so_often_between_normal_tasks():
    feed = Feed(n_agents=6, seed=1, rate=2.0, incident_every=30.0, incident_after=10.0)
    tasks = []
    for t in range(0, 100):
        tasks += [(t, d) for d in feed.due(float(t))]
    incidents = [t for t, d in tasks if d.get("_incident")]
    assert incidents == [10, 40, 70]
    assert 120 < len(tasks) < 300  # about 2 a second


def test_a_paced_history_is_deterministic_and_decodes():
    from detector.events import decode_event

    end = datetime(2026, 3, 2, 12, tzinfo=timezone.utc)
    a = paced_history(n_agents=4, seed=3, rate=1.0, speed=10.0, seconds=120, sessions=2, session_every=3600, end=end)
    b = paced_history(n_agents=4, seed=3, rate=1.0, speed=10.0, seconds=120, sessions=2, session_every=3600, end=end)
    assert a == b and len(a) > 50
    assert len({e["event_id"] for e in a}) == len(a)
    for e in a:
        decode_event(json.dumps(e))
