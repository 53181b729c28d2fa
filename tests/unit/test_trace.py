"""The trace store (detector/trace.py): what it reads back, what it holds, and its bounds."""
from __future__ import annotations

from collections import OrderedDict

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from detector.events import decode_event
from detector.trace import CHUNK, DICT_UP_TO, TRACE_FIELDS, TraceStore, _Dictionary, _encode, _row, trace_entry

_CLASSES = ["external", "internal", "partner", "untrusted"]


@st.composite
def _items(draw, n: int):
    """``n`` engine items ``(event, score, severity, dest_classes)`` of agents a0..a2, as the engine appends them."""
    out = []
    for i in range(n):
        dests = draw(st.lists(st.sampled_from(["https://x.example/a", "mail:bob@corp", "s3://b/k", "https://y.io"]),
                              max_size=14))
        raw = {"event_id": f"e{i}", "ts": f"2026-03-02T09:{i // 60 % 60:02d}:{i % 60:02d}Z",
               "agent_id": draw(st.sampled_from(["a0", "a1", "a2"])), "operator_id": "op",
               "tool": draw(st.sampled_from(["fs.read", "http.post", "mail.send"])),
               "action": draw(st.sampled_from(["read", "write", "send", "delete", "exec"])),
               "resource": draw(st.sampled_from(["repo://x/y", "db://crm/customers", "s3://b/k"])),
               "sensitivity": draw(st.sampled_from(["public", "internal", "confidential", "restricted"])),
               "records": draw(st.integers(0, 10**6)), "bytes": draw(st.integers(0, 10**9)),
               "destinations": dests}
        for key in ("task_id", "parent_event_id", "requested_by", "instruction_hash", "approval_id"):
            if draw(st.booleans()):
                raw[key] = f"{key}-{draw(st.integers(0, 3))}"
        ev = decode_event(raw)
        classes = tuple(draw(st.sampled_from(_CLASSES)) for _ in dests)
        score = draw(st.floats(0.0, 50.0, allow_nan=False))
        out.append((ev, score, draw(st.sampled_from(["none", "low", "medium", "high"])), classes))
    return out


def _blocks(store: TraceStore) -> list:
    """Every block the store holds: ``(count, data)`` (a resting ring kept as bytes: its one block)."""
    return [(r[0], r[1:]) if type(r) is bytes else b for r in store._rings.values()
            for b in ((r,) if type(r) is bytes else r.blocks)]


@settings(max_examples=30, deadline=None)
@given(_items(100), st.lists(st.sampled_from(["append"] * 6 + ["rest", "snapshot"]), min_size=100, max_size=100),
       st.sampled_from([1, 31, 32, 70, 200]), st.sampled_from([1, 2, 5000]), st.sampled_from([0, 700, 10**9]),
       st.sampled_from([1, 300, 10**9]))
def test_snapshots_are_exactly_the_trace_entries_of_the_last_actions_whatever_is_deflated(
        items, ops, length, max_agents, unpacked, dictionary):
    """Whatever was deflated, at once or later, against the store's dictionary or before it had one."""
    store = TraceStore(length=length, max_agents=max_agents, unpacked_bytes=unpacked)
    store._dictionary = _Dictionary(dictionary)  # its first bytes deflated (some blocks before it, some after)
    kept: OrderedDict[str, list[dict]] = OrderedDict()  # least recently appended to first
    for item, op in zip(items, ops):
        agent = item[0].agent_id
        if op == "append":
            store.append(agent, item)
            kept.setdefault(agent, []).append(trace_entry(item))
            kept.move_to_end(agent)
            if len(kept) > max_agents:
                kept.popitem(last=False)
        elif op == "rest":
            store.rest(agent)
            ring = store._rings.get(agent)
            # a resting ring: deflated blocks, nothing live; one block alone as bytes (its count, then the block)
            assert ring is None or type(ring) is bytes or (
                ring.live is None and len(ring.blocks) > 1 and all(type(b) is tuple and type(b[1]) is bytes
                                                                   for b in ring.blocks))
        want = kept.get(agent, [])[-length:]
        got = store.snapshot(agent)
        assert got == want
        # the same keys in the same order, the same types (what an incident's JSON shows)
        assert msgspec.json.encode(got) == msgspec.json.encode(want)
        held = [b for _, b in _blocks(store) if type(b) is bytearray]
        assert sum(map(len, held)) == store._held <= unpacked and len(held) == store._count
        # a deflated block names what it was deflated against: nothing (0), or the dictionary once it has one
        assert all(b[0] == 0 or (b[0] == 1 and store._dictionary.zdict) for _, b in _blocks(store) if type(b) is bytes)


def test_blocks_are_deflated_oldest_first_once_the_store_holds_more_than_its_bound_undeflated():
    items = []
    for i in range(40 * CHUNK):
        ev = decode_event({"event_id": f"e{i}", "ts": "2026-03-02T09:00:00Z", "agent_id": f"a{i % 8}",
                           "operator_id": "op", "tool": "fs.read", "action": "read", "resource": f"repo://x/{i}",
                           "sensitivity": "internal"})
        items.append((ev, 0.5, "low", ()))
    free, bound = TraceStore(length=200), TraceStore(length=200, unpacked_bytes=20_000)
    for it in items:
        free.append(it[0].agent_id, it)
        bound.append(it[0].agent_id, it)
    kinds = [type(b) for r in free._rings.values() for _, b in r.blocks]
    assert kinds and set(kinds) == {bytearray}  # nothing deflated while under the bound
    assert 0 < bound._held <= 20_000
    for agent, ring in bound._rings.items():
        deflated = [type(b) is bytes for _, b in ring.blocks]
        assert deflated == sorted(deflated, reverse=True)  # a ring's deflated blocks are its oldest
        assert bound.snapshot(agent) == free.snapshot(agent)
    assert len(bound._unpacked) <= 2 * bound._count + 64  # the queue does not keep what it no longer needs
    assert free.rest("a0") and all(type(b) is bytes for _, b in free._rings["a0"].blocks)
    assert free._held == sum(len(b) for r in free._rings.values() for _, b in r.blocks if type(b) is bytearray)


def test_a_ring_dropped_for_max_agents_no_longer_counts_against_the_bound():
    store = TraceStore(length=200, max_agents=1)
    for agent in ("a", "b"):
        for i in range(CHUNK):
            ev = decode_event({"event_id": f"{agent}{i}", "ts": "2026-03-02T09:00:00Z", "agent_id": agent,
                               "operator_id": "op", "tool": "t", "action": "read", "resource": "r://x",
                               "sensitivity": "internal"})
            store.append(agent, (ev, 1.0, "low", ()))
    assert list(store._rings) == ["b"] and store._count == 1
    assert store._held == len(store._rings["b"].blocks[0][1])


@settings(max_examples=40, deadline=None)
@given(_items(1))
def test_a_packed_action_is_never_larger_than_its_nineteen_values(items):
    [item] = items
    full = _encode([trace_entry(item)[k] for k in TRACE_FIELDS])
    store = TraceStore()
    store.append("a", item)
    [packed] = store._rings["a"].live
    assert len(packed) <= len(full) and packed == _encode(_row(item))
    if len(item[0].destinations) > 10:  # the trace keeps 10 of them: kept as the entry's values
        assert packed == full


@settings(max_examples=30, deadline=None)
@given(_items(70), st.lists(st.floats(allow_nan=False), min_size=70, max_size=70))
def test_the_engine_s_call_keeps_the_trace_entries_with_the_score_it_was_given(items, scores):
    """:meth:`TraceStore.add` is the engine's call: the score comes rounded already (the decision record's), and
    is kept as given; :meth:`TraceStore.append` of an engine item rounds it (:func:`trace_entry`)."""
    added, appended = TraceStore(length=50), TraceStore(length=50)
    want: dict[str, list[dict]] = {}
    for (ev, _, severity, classes), score in zip(items, scores):
        added.add(ev.agent_id, ev, round(score, 4), severity, classes)
        appended.append(ev.agent_id, (ev, score, severity, classes))
        want.setdefault(ev.agent_id, []).append(trace_entry((ev, score, severity, classes)))
    for agent, entries in want.items():
        assert msgspec.json.encode(added.snapshot(agent)) == msgspec.json.encode(entries[-50:])
        assert msgspec.json.encode(appended.snapshot(agent)) == msgspec.json.encode(entries[-50:])
    ev, _, severity, classes = items[0]
    added.add("b", ev, 0.123456789, severity, classes)
    assert added.snapshot("b")[0]["score"] == 0.123456789  # no second rounding: the caller's number


def _fleet(n_agents: int, n_events: int) -> list[tuple]:
    """Simulated actions relabelled over ``n_agents`` agents in turn (as bench/bench_memory.py does): engine items."""
    from models.simulate import simulate

    evs, _ = simulate(n_agents=20, days=1, seed=5)
    assert len(evs) >= n_events
    items = []
    for i, raw in enumerate(evs[:n_events]):
        ev = decode_event(dict(raw, agent_id=f"agent-{i % n_agents:04d}", event_id=f"e{i}"))
        items.append((ev, i % 7 / 3, "low", ("external",) * len(ev.destinations)))
    return items


def test_resting_rings_deflated_against_the_dictionary_read_back_the_same_and_take_less():
    items = _fleet(400, 2400)  # six actions each
    store, alone = TraceStore(), TraceStore()
    alone._dictionary = _Dictionary(10**12)  # never has one
    for it in items:
        store.append(it[0].agent_id, it)
        alone.append(it[0].agent_id, it)
    agents = list(store._rings)
    for a in agents[:200]:
        assert store.rest(a) and alone.rest(a)
    zdict = store._dictionary.zdict
    assert zdict and len(zdict) == store._dictionary.limit
    for a in agents[200:]:
        assert store.rest(a) and alone.rest(a)
    assert store._dictionary.zdict is zdict  # fixed once made
    want = {}
    for it in items:
        want.setdefault(it[0].agent_id, []).append(trace_entry(it))
    # each resting ring is one bytes: its entry count, then the block; the first ones deflated alone (0)
    firsts = [store._rings[a][1] for a in agents]
    assert all(type(store._rings[a]) is bytes and store._rings[a][0] == 6 for a in agents)
    assert firsts == sorted(firsts) and 0 < firsts.count(0) < 40 and set(firsts) == {0, 1}
    assert all(type(alone._rings[a]) is bytes and alone._rings[a][1] == 0 for a in agents)
    for a in agents:
        assert store.snapshot(a) == alone.snapshot(a) == want[a]
        assert msgspec.json.encode(store.snapshot(a)) == msgspec.json.encode(want[a])
    late = agents[200:]
    with_dict = sum(len(store._rings[a]) for a in late)
    without = sum(len(alone._rings[a]) for a in late)
    assert with_dict < 0.8 * without
    # a resting ring woken by an action is a ring again, and reads back all of them
    for it in items[:50]:
        store.append(it[0].agent_id, it)
        want[it[0].agent_id].append(trace_entry(it))
    for a in agents[:50]:
        assert type(store._rings[a]) is not bytes and store.snapshot(a) == want[a]
        assert store.rest(a) and store.snapshot(a) == want[a]
        assert [n for n, _ in store._rings[a].blocks] == [6, 1]  # two blocks: a ring, as before


def test_a_block_deflated_against_an_unknown_dictionary_is_refused():
    dictionary = _Dictionary(100)
    plain = dictionary.deflate(bytearray(b"\x91\xa1x" * 50))
    against = dictionary.deflate(bytearray(b"\x91\xa1y" * 50))
    assert (plain[0], against[0]) == (0, 1)
    assert dictionary.inflate(plain) == b"\x91\xa1x" * 50 and dictionary.inflate(against) == b"\x91\xa1y" * 50
    for data in (against, b"\x02" + against[1:]):
        with pytest.raises(ValueError):
            _Dictionary(100).inflate(data)
    # a block of more than DICT_UP_TO bytes (a full one: it repeats enough of itself) is deflated alone
    big = bytearray(b"\x91\xa1z" * (DICT_UP_TO // 3 + 1))
    assert dictionary.deflate(big)[0] == 0 and dictionary.inflate(dictionary.deflate(big)) == big
