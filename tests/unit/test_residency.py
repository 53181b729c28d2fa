"""Agents resting serialised in the table and waking up (streams/worker/residency.py, detector/trace.py)."""
from __future__ import annotations

import json
import zlib

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from detector.engine import Engine
from detector.events import decode_event
from detector.trace import TraceStore, trace_entry
from models.simulate import simulate
from streams.worker.intake import home_partition
from streams.worker import residency
from streams.worker.residency import DICT_SAMPLES, RESTING, Residency, pack_state, rest_value, unpack_state


@pytest.fixture(scope="module")
def events():
    evs, _ = simulate(n_agents=6, days=2, seed=3, incidents=["mass_fanout", "bulk_read_broadcast", "mass_delete"],
                      incident_days_from=1)
    return [decode_event(e) for e in evs]


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def _outputs(decisions):
    return [(d.record, d.freeze, d.incident) for d in decisions if not d.duplicate]


def test_decisions_and_incident_traces_do_not_depend_on_agents_resting_between_batches(events):
    always = Engine()
    expected = []
    for k in range(0, len(events), 97):
        expected += _outputs(always.process_batch(events[k:k + 97]))

    engine, store, clock = Engine(), {}, Clock()
    res = Residency(engine, store, partitions=8, rest_after=0.0, clock=clock)
    got = []
    for k in range(0, len(events), 97):
        batch = events[k:k + 97]
        for ev in batch:
            if ev.agent_id not in res:
                res.load(ev.agent_id)
        got += _outputs(engine.process_batch(batch))
        clock.t += 1.0
        assert res.rest_idle(lambda a: False) > 0  # everybody rests, and wakes for its next event
        assert not engine.agents
        if k % 2:  # deflated a few at a time, and woken either way
            assert res.compact_some(n=None) > 0 and all(v[:1] == RESTING for v in store.values())
    assert any(f is not None for _, f, _ in expected), "the fleet should trip breakers"
    assert got == expected
    assert res.stats["woken"] > 0 and res.stats["rested"] > 0


def test_a_resting_agent_is_smaller_than_its_changelog_value_and_wakes_where_it_stood(events):
    engine, store = Engine(), {}
    res = Residency(engine, store, partitions=8, rest_after=0.0)
    agent = events[0].agent_id
    res.load(agent)
    engine.process_batch([e for e in events if e.agent_id == agent][:50])
    res.cursor[agent] = 1234
    plain = pack_state(res.home[agent], 1234, engine.dump_agent(agent))
    before = engine.dump_agent(agent)
    res.rest(agent)
    assert agent not in res and agent not in engine.agents
    assert len(store[agent]) < len(plain) * 0.7
    assert unpack_state(store[agent]) == unpack_state(plain)
    assert res.load(agent) == [] and agent not in store  # resident again: the store keeps no second copy
    assert res.cursor[agent] == 1234 and engine.dump_agent(agent) == before


def test_an_envelope_from_another_partition_keeps_the_state_but_not_the_offset(events):
    engine, store = Engine(), {}
    agent = events[0].agent_id
    engine.process(events[0])
    wrong = (home_partition(agent, 8) + 1) % 8
    store[agent] = pack_state(wrong, 99, engine.dump_agent(agent), [["freeze", "control", 1, agent, b"{}", "i", 5]])
    engine.agents.clear()
    res = Residency(engine, store, partitions=8, rest_after=0.0)
    assert res.load(agent) == [["freeze", "control", 1, agent, b"{}", "i", 5]]
    assert res.cursor[agent] == -1 and agent in engine.agents


def _acted(events, n: int):
    """A residency (rest_after 60 s, on a Clock at 0) whose first ``n`` agents were loaded and acted once:
    ``(engine, store, clock, res, agents)``."""
    engine, store, clock = Engine(), {}, Clock()
    res = Residency(engine, store, partitions=8, rest_after=60.0, clock=clock)
    agents = sorted({e.agent_id for e in events})[:n]
    for a in agents:
        res.load(a)
        engine.process(next(e for e in events if e.agent_id == a))
    return engine, store, clock, res, agents


def test_only_agents_quiet_for_rest_after_and_not_kept_rest(events):
    engine, store, clock, res, agents = _acted(events, 3)
    clock.t = 30.0
    res.seen[agents[2]] = 30.0  # acted just now
    assert res.rest_idle(lambda a: False) == 0
    clock.t = 61.0
    assert res.rest_idle(lambda a: a == agents[0]) == 1  # agents[0] has unwritten changes
    assert set(res.home) == {agents[0], agents[2]} and set(store) == {agents[1]}


def test_resting_agents_of_revoked_partitions_leave_the_store_and_recovered_ones_get_compacted(events):
    engine, store = Engine(), {}
    res = Residency(engine, store, partitions=8, rest_after=0.0)
    agents = sorted({e.agent_id for e in events})
    for a in agents:
        engine.process(next(e for e in events if e.agent_id == a))
        store[a] = pack_state(home_partition(a, 8), 7, engine.dump_agent(a))  # as faust recovers it: plain
    engine.agents.clear()
    res.load(agents[0])
    res.schedule_compaction()
    assert res.compact_some(n=100) == len(agents) - 1
    assert all(store[a][:1] == RESTING for a in agents[1:]) and agents[0] not in store
    revoked = {home_partition(agents[1], 8)}
    dropped = res.drop_partitions(revoked)
    assert dropped == sum(1 for a in agents[1:] if home_partition(a, 8) in revoked)
    assert all(home_partition(a, 8) not in revoked for a in store)


def test_rest_value_is_idempotent():
    rested = rest_value(pack_state(1, 2, b"x" * 500))
    assert rest_value(rested) == rested


def test_resting_envelopes_are_deflated_against_the_first_ones_that_rested_and_read_back_exactly(events,
                                                                                                  monkeypatch):
    monkeypatch.setattr(residency, "_DICTIONARY", residency._Dictionary())  # this process's dictionary, anew
    engine = Engine()
    engine.process_batch(events)
    plain = [pack_state(home_partition(a, 8), 7, engine.dump_agent(a)) for a in sorted(engine.agents)]
    plain = (plain * (DICT_SAMPLES // len(plain) + 2))[:DICT_SAMPLES + len(plain)]
    rested = [rest_value(p) for p in plain]
    assert [r[:2] for r in rested] == [RESTING + b"\x00"] * DICT_SAMPLES + [RESTING + b"\x01"] * (len(plain)
                                                                                                  - DICT_SAMPLES)
    assert [unpack_state(r) for r in rested] == [unpack_state(p) for p in plain]  # before and after it was set
    alone, against = rested[:len(plain) - DICT_SAMPLES], rested[DICT_SAMPLES:]
    assert sum(map(len, against)) < 0.8 * sum(map(len, alone))


def test_an_envelope_deflated_against_a_dictionary_this_process_lacks_is_refused(monkeypatch):
    monkeypatch.setattr(residency, "_DICTIONARY", residency._Dictionary())
    with pytest.raises(ValueError, match="dictionary"):
        unpack_state(RESTING + b"\x01" + zlib.compress(pack_state(1, 2, b"x"))[2:])


# --------------------------------------------------------------------------- the trace ring at rest

@settings(max_examples=80, deadline=None)
@given(st.lists(st.sampled_from(["append", "append", "append", "rest", "snapshot"]), max_size=150),
       st.sampled_from([1, 5, 31, 32, 33, 70]))
def test_a_ring_reads_back_exactly_the_last_entries_appended_rested_or_not(ops, length):
    store = TraceStore(length=length)
    appended: list[dict] = []
    for n, op in enumerate(ops):
        if op == "append":
            entry = {"event_id": f"e{n}", "score": n / 10}
            store.append("a", entry)
            appended.append(entry)
        elif op == "rest":
            store.rest("a")
        assert store.snapshot("a") == appended[-length:]


def test_a_ring_of_real_actions_is_packed_compactly_and_keeps_every_field(events):
    engine = Engine()
    agent = max({e.agent_id for e in events}, key=lambda a: sum(1 for e in events if e.agent_id == a))
    mine = [e for e in events if e.agent_id == agent][:260]
    assert len(mine) > 200
    plain = []
    for k in range(0, len(mine), 50):
        for d in engine.process_batch(mine[k:k + 50]):
            plain.append(trace_entry((d.event, d.record["score"], d.record["severity"], d.dest_classes)))
    assert engine.traces.snapshot(agent) == plain[-200:]
    assert msgspec.json.encode(engine.traces.snapshot(agent)) == msgspec.json.encode(plain[-200:])
    assert engine.traces.rest(agent) and engine.traces.snapshot(agent) == plain[-200:]
    ring = engine.traces._rings[agent]
    assert ring.live is None and ring.packed >= 200
    assert sum(len(b) for _, b in ring.blocks) < len(json.dumps(plain[-200:])) / 8


def test_a_recovered_table_names_its_frozen_agents_longest_frozen_first_without_waking_them(events):
    engine, store = Engine(), {}
    agents = sorted({e.agent_id for e in events})
    for a in agents:
        engine.process(next(e for e in events if e.agent_id == a))
    frozen = agents[1:4]
    for i, a in enumerate(reversed(frozen)):  # the last of them frozen first
        assert engine.freeze_manual(a, at=1000.0 + i, by="soc", reason="test") is not None
    for i, a in enumerate(agents):
        raw = pack_state(home_partition(a, 8), 7, engine.dump_agent(a))
        store[a] = rest_value(raw) if i % 2 else raw  # recovered plain, or already compacted
    incidents = {a: engine.agents[a].breaker.incident_id for a in frozen}
    engine.agents.clear()
    res = Residency(engine, store, partitions=8, rest_after=0.0)
    res.load(frozen[0])  # resident: the engine knows it, the store holds nothing for it
    store["broken"] = b"\x96not a state"
    everywhere = set(range(8))

    found = res.open_breakers(everywhere)
    assert list(found) == [frozen[2], frozen[1]]
    assert {a: b.incident_id for a, b in found.items()} == {a: incidents[a] for a in frozen[1:]}
    assert set(engine.agents) == {frozen[0]}, "nothing is woken"
    elsewhere = everywhere - {home_partition(frozen[1], 8)}
    assert frozen[1] not in res.open_breakers(elsewhere)


def test_a_call_of_rest_idle_stops_at_its_budget_and_the_next_rests_the_others(events):
    engine, store, clock, res, agents = _acted(events, 7)
    clock.t = 61.0
    ticks = iter(range(100))

    def timer():  # each rest takes 8 ms
        return next(ticks) * 0.008

    assert res.rest_idle(lambda a: False, budget=0.02, timer=timer) == 3
    assert set(store) == set(agents[:3]) and set(res.home) == set(agents[3:])
    assert res.rest_idle(lambda a: False, budget=0.02, timer=timer) == 3
    assert res.rest_idle(lambda a: False, budget=None) == 1 and not res.home and set(store) == set(agents)
