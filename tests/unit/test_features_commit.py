"""commit_novel (detector/features.py): what commit_novelty teaches, at the cost of the action's novel items.

The engine settles the items an action's peers adopted for every action it reads; with that, teaching
only ``obs.novel`` must leave every sketch bit for bit where ``commit_novelty`` leaves it."""
from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from detector.events import decode_event
from detector.features import (K_DEST, K_PRINCIPAL, K_STEP, K_TOOL, FeatureState, Observation, commit_novel,
                               commit_novelty, extract, item_key, settle)
from detector.policy import Policy
from detector.sketch import stable_hash

POLICY = Policy(internal_domains=("corp.example",), internal=("slack:#eng",), broadcast={"slack:#general": 250})
_TOOLS = tuple(f"tool{i}.run" for i in range(40)) + ("mail.send", "bash")
_DESTS = tuple(f"email:u{i}@d{i % 7}.example" for i in range(60)) + ("slack:#general", "slack:#eng")
_PEOPLE = ("alice", "op-1", "email:stranger@outside.example", "bob@corp.example")

_event = st.fixed_dictionaries({
    "tool": st.sampled_from(_TOOLS), "action": st.sampled_from(("read", "write", "delete", "send")),
    "resource": st.sampled_from(tuple(f"r{i}://fam{i}/x" for i in range(30))),
    "sensitivity": st.sampled_from(("public", "internal", "confidential")),
    "destinations": st.lists(st.sampled_from(_DESTS), max_size=5),
    "task_id": st.one_of(st.none(), st.sampled_from(("t1", "t2", "t3"))),
    "requested_by": st.one_of(st.none(), st.sampled_from(_PEOPLE)),
})


def _sketches(s: FeatureState) -> tuple:
    return (s.tools, s.resources, s.dests, s.steps, s.principals)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(_event, st.booleans()), min_size=1, max_size=60), st.binary(min_size=8, max_size=8),
       st.booleans())
def test_teaching_the_novel_items_equals_commit_novelty_once_adopted_items_are_settled(draws, seed, peers):
    a, b = FeatureState(), FeatureState()
    for s in (a, b):  # dense sketches: many items are known by collision
        s.seed_sketches((seed[:1] * 32, seed[1:2] * 128, seed[2:3] * 256, seed[3:4] * 128, seed[4:5] * 32))
    adopted = {item_key(K_TOOL, stable_hash("bash")), item_key(K_DEST, stable_hash("slack:#eng"))} if peers else None
    for i, (d, learned) in enumerate(draws):
        ev = decode_event({"event_id": f"e{i}", "ts": "2026-03-02T09:00:00Z", "agent_id": "a",
                           "operator_id": "op-1", **{k: v for k, v in d.items() if v is not None}})
        oa, ob = extract(a, ev, POLICY, adopted), extract(b, ev, POLICY, adopted)
        assert oa.novel == ob.novel and oa.adopted == ob.adopted
        if learned:
            commit_novelty(a, oa)
            commit_novel(b, ob)
        for s, o in ((a, oa), (b, ob)):
            for key in o.adopted:
                settle(s, key)
        assert _sketches(a) == _sketches(b)


def test_a_step_or_principal_hashed_to_zero_is_left_out_as_commit_novelty_leaves_it_out():
    for kind in (K_STEP, K_PRINCIPAL, K_TOOL, K_DEST):
        a, b = FeatureState(), FeatureState()
        o = Observation()
        o.pending = (5, 6, [0] if kind == K_DEST else [])
        o.step, o.principal = 0, 0
        o.novel = [item_key(kind, 0)] if kind != K_TOOL else [item_key(K_TOOL, 5)]
        commit_novelty(a, o)
        commit_novel(b, o)
        settle(b, item_key(0, 5))  # commit_novelty teaches the tool and resource family whatever is novel
        settle(b, item_key(1, 6))
        assert _sketches(a) == _sketches(b)
    assert a.dests & 1  # a destination hashed to 0 is taught
