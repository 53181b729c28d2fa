"""Detection that learns legitimate change (issue 18): novelty that settles, peers' adoptions, no settling
for novelty that came with evidence of harm, like-with-like magnitudes, analyst verdicts, alert episodes,
determinism with verdicts, and the agent state's round trip with the new fields.

The fleet here is hand-written: six agents of two operators doing the same routine (CRM reads, notes,
mail to colleagues) for ~3 days of history, a model trained on it, then the scenario of each test.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from detector.engine import AgentState, Engine
from detector.episodes import EpisodeBook
from detector.events import decode_event
from detector.features import FEATURE_INDEX, K_TOOL, item_key
from detector.sketch import bloom_has, stable_hash
from detector.policy import Policy, Thresholds, load_policy
from detector.timestamps import iso_utc
from detector.verdicts import Verdict
from models.playback import Analyst, Playback
from models.store import TrainedModel
from models.train import fit

REPO = Path(__file__).resolve().parents[2]
POLICY = load_policy(REPO / "examples" / "policy.toml")
T0 = 1772442000.0
#: the history's end: scenarios start here
T = 400 * 600.0
_n = [0]


def ev(at: float, agent: str = "a", *, op: str = "op-1", tool: str = "crm.read", action: str = "read",
       resource: str = "crm://accounts/1", sensitivity: str = "internal", records: int = 1, dests=(),
       task: str | None = None, who: str | None = None):
    _n[0] += 1
    return decode_event({"event_id": f"{agent}-{_n[0]}", "ts": iso_utc(T0 + at), "agent_id": agent,
                         "operator_id": op, "tool": tool, "action": action, "resource": resource,
                         "sensitivity": sensitivity, "records": records, "destinations": list(dests),
                         **({"task_id": task} if task else {}), **({"requested_by": who} if who else {})})


def history(agent: str, op: str, k: int = 400) -> list:
    out = []
    for i in range(k):
        task = f"{agent}-t{i // 3}"
        out.append(ev(600.0 * i, agent, op=op, tool="crm.read" if i % 3 else "docs.write",
                      action="read" if i % 3 else "write",
                      resource=f"crm://accounts/{i % 7}" if i % 3 else "docs://notes/1", task=task))
        if i % 10 == 0:
            out.append(ev(600.0 * i + 30, agent, op=op, tool="mail.send", action="send", resource="mail://outbox",
                          dests=[f"email:bob{i % 4}@corp.example"], task=task))
        if agent == "e" and i % 50 == 25:  # e announces to everyone now and then: 2% of its actions
            out.append(ev(600.0 * i + 40, agent, op=op, tool="mail.send", action="send", resource="mail://outbox",
                          dests=["email:all@corp.example"], task=task))
    return out


AGENTS = {"a": "op-1", "b": "op-1", "c": "op-1", "d": "op-2", "e": "op-2", "f": "op-2"}


@pytest.fixture(scope="module")
def model():
    events = [e for a, op in AGENTS.items() for e in history(a, op)]
    card, arrays = fit(events, POLICY, seed=0, n_estimators=20)
    return TrainedModel(card, arrays)


def engine(model, **th) -> Engine:
    policy = POLICY if not th else Policy(internal_domains=POLICY.internal_domains, internal=POLICY.internal,
                                          broadcast=POLICY.broadcast, sensitivity_weight=POLICY.sensitivity_weight,
                                          thresholds=Thresholds(**th))
    return Engine(policy=policy, model=model)


def new_tool(at: float, agent: str = "a", *, op: str | None = None, **kw):
    return ev(at, agent, op=op or AGENTS.get(agent, "op-9"), tool="newtool.run", action="write",
              resource="docs://notes/1", task=f"{agent}-n{int(at)}", **kw)


def alerted(d) -> bool:
    return d.record["action_taken"] in ("alert", "freeze")


# --------------------------------------------------------------------------- novelty that settles

def known(eng, agent: str = "a", tool: str = "newtool.run") -> bool:
    """The tool is in the agent's sketch of known tools (it settled)."""
    return bloom_has(eng.agents[agent].features.tools, stable_hash(tool), 255)


def test_a_new_tool_used_without_harm_is_news_once_and_settles_after_k_uses_over_t(model):
    eng = engine(model)
    ds, settled = [], []
    for i in range(6):
        ds.append(eng.process(new_tool(T + 900 * i)))
        settled.append(known(eng))
    # news once: while it settles its uses are not news again (pending, counted)
    assert [alerted(d) for d in ds] == [True, False, False, False, False, False]
    assert "novel_tool" in [r["feature"] for r in ds[0].record["reasons"]]
    # uses at 0, 15 and 30 minutes: the third is three uses over 30 min, after which the tool is the agent's own
    assert settled == [False, False, True, True, True, True]


def test_a_new_tool_used_k_times_in_less_than_t_does_not_settle_yet(model):
    eng = engine(model)
    ds = [eng.process(new_tool(T + 60 * i)) for i in range(5)]  # five uses within four minutes
    assert [alerted(d) for d in ds] == [True] + [False] * 4 and not known(eng)
    eng.process(new_tool(T + 1800))  # the use that completes 30 min settles it
    assert known(eng)


def test_settling_follows_the_policy_settle_uses_and_settle_s(model):
    eng = engine(model, settle_uses=5, settle_s=7200)
    settled = []
    for i in range(6):
        eng.process(new_tool(T + 1800 * i))
        settled.append(known(eng))
    # five uses over two hours: the uses at 0, 30, 60, 90 and 120 min, the last of them settles it
    assert settled == [False] * 4 + [True, True]


def test_a_pending_tool_that_comes_with_evidence_of_harm_is_news_again_on_every_use(model):
    eng = engine(model)
    assert alerted(eng.process(new_tool(T)))
    assert not alerted(eng.process(new_tool(T + 60)))  # pending: not news again
    # the same never-seen tool now sends confidential data out of the company: tainted
    bad = eng.process(ev(T + 120, "a", tool="newtool.run", action="send", resource="crm://accounts/1",
                         sensitivity="confidential", records=5, dests=["email:drop@evil.example"], task="x1"))
    assert alerted(bad)
    later = [eng.process(new_tool(T + 900 * i)) for i in range(1, 5)]
    assert all("novel_tool" in [r["feature"] for r in d.record["reasons"]] for d in later)
    assert not known(eng)


def test_a_new_tool_reading_confidential_data_settles_too_novelty_is_not_evidence_that_taints(model):
    # never-used access to sensitive data is evidence of harm only through its novelty: it cannot keep the
    # same novelty from settling (a tool rolled out to read the same customer records)
    eng = engine(model)
    read = lambda at: ev(at, "a", tool="crm_v2.read", action="read", resource="crm://accounts/2",  # noqa: E731
                         sensitivity="confidential", task=f"r{at}")
    ds = [eng.process(read(T + 900 * i)) for i in range(5)]
    assert alerted(ds[0])
    assert bloom_has(eng.agents["a"].features.tools, stable_hash("crm_v2.read"), 255)
    assert not alerted(ds[-1])


def test_novelty_that_came_with_evidence_of_harm_never_settles_without_a_verdict(model):
    eng = engine(model)
    bad = []
    for i in range(8):
        # a never-seen tool reading confidential data and sending it out of the company, again and again
        bad.append(eng.process(ev(T + 900 * i, "a", tool="exfil.push", action="send", resource="crm://accounts/1",
                                  sensitivity="confidential", records=5, dests=["email:drop@evil.example"],
                                  task=f"x{i}")))
    assert all(alerted(d) for d in bad)
    st = eng.agents["a"]
    h = stable_hash("exfil.push")
    assert not bloom_has(st.features.tools, h, 255)  # never settled, though used 8 times over 1 h 45 min
    tainted = {int(st.pending[i]): st.pending[i + 3] for i in range(0, len(st.pending), 4)}
    assert tainted[item_key(K_TOOL, h)] == 1.0
    # a benign verdict is what teaches it
    target = next((d.freeze["incident_id"] for d in bad if d.freeze), None) or eng.episodes.open_of("a")
    eng.apply_verdict(Verdict("v-ok", "a", target, "benign", T0 + T + 9000))
    assert bloom_has(st.features.tools, h, 255)


def test_a_long_task_is_news_when_it_crosses_and_when_it_doubles_not_on_every_action(model):
    eng = engine(model)
    named = []
    for i in range(40):  # a's tasks take three actions; this one takes forty
        d = eng.process(ev(T + 30 * i, "a", resource=f"crm://accounts/{i % 7}", task="long-1"))
        if "task_actions" in [r["feature"] for r in d.record["reasons"]]:
            named.append(int(d.x[FEATURE_INDEX["task_actions"]]))
    assert named, "a task thirteen times the usual length is news"
    assert all(b >= 2 * a for a, b in zip(named, named[1:])), named  # again only once it doubled
    assert len(named) <= 4
    # another long task is news again
    d = [eng.process(ev(T + 2000 + 30 * i, "a", resource="crm://accounts/1", task="long-2")) for i in range(named[0])]
    assert "task_actions" in [r["feature"] for r in d[-1].record["reasons"]]


# --------------------------------------------------------------------------- peers

def test_peers_adoption_is_off_by_default_so_every_worker_decides_as_replay_does(model):
    eng = engine(model)
    for i, agent in enumerate("abc"):
        eng.process(new_tool(T + 10 * i, agent))
    assert not eng._adopted and not eng._peer_items

def test_a_tool_rolled_out_to_an_operators_agents_is_not_novel_for_the_next_of_them(model):
    eng = engine(model, peer_adopters=3)
    for i, agent in enumerate("abc"):  # three agents of op-1 take it up without harm
        assert alerted(eng.process(new_tool(T + 10 * i, agent)))
    # a fourth agent of op-1 never used it: not novel for it; an agent of op-2 still is
    eng.process_batch([ev(T + 50, "g", op="op-1")])  # g joins op-1 (a new agent, judged by its peers' prior)
    d_peer = eng.process(new_tool(T + 100, "g", op="op-1"))
    d_other = eng.process(new_tool(T + 100, "d"))
    assert "novel_tool" not in [r["feature"] for r in d_peer.record["reasons"]]
    assert alerted(d_other) and "novel_tool" in [r["feature"] for r in d_other.record["reasons"]]
    # and the adopting agents settle it sooner than alone: it is in g's sketch now
    assert not alerted(eng.process(new_tool(T + 200, "g", op="op-1")))


def test_peers_adoption_of_a_tool_that_came_with_evidence_of_harm_never_counts(model):
    eng = engine(model, peer_adopters=3)
    for i, agent in enumerate("abc"):
        eng.process(ev(T + 10 * i, agent, tool="exfil.push", action="send", resource="crm://accounts/1",
                       sensitivity="confidential", records=5, dests=["email:drop@evil.example"], task=f"x{agent}"))
    d = eng.process(ev(T + 100, "d", op="op-2", tool="exfil.push", action="write", resource="docs://notes/1",
                       task="xd"))
    # op-2 never adopted it, and op-1's uses were tainted: op-1's sketch of adoptions stays empty
    assert not eng._adopted.get("op-1")
    assert "novel_tool" in [r["feature"] for r in d.record["reasons"]]


# --------------------------------------------------------------------------- like with like

def test_a_routine_post_to_a_broadcast_channel_the_agent_posts_to_is_not_news_in_fan_out(model):
    eng = engine(model)
    post = lambda at: ev(at, "a", tool="mail.send", action="send", resource="mail://outbox",  # noqa: E731
                         dests=["email:all@corp.example"], task=f"p{at}")
    fan = FEATURE_INDEX["event_fanout"]
    first = eng.process(post(T))
    assert first.x[fan] == 5000 and first.z[fan] > 3.0 and "event_fanout" in [
        r["feature"] for r in first.record["reasons"]]
    # e posts there now and then (its history): the channel's reach is not news for it
    routine_post = eng.process(ev(T, "e", op="op-2", tool="mail.send", action="send", resource="mail://outbox",
                                  dests=["email:all@corp.example"], task="e-p"))
    assert routine_post.x[fan] == 5000 and routine_post.z[fan] == 0.0
    assert not {"event_fanout", "fanout_15m"} & {r["feature"] for r in routine_post.record["reasons"]}
    # and once a benign verdict taught the channel to a, the same for a
    eng.apply_verdict(Verdict("v-post", "a", eng.episodes.open_of("a"), "benign", T0 + T + 60))
    again = eng.process(post(T + 4000))
    assert again.x[fan] == 5000 and again.z[fan] == 0.0
    assert not {"event_fanout", "fanout_15m"} & {r["feature"] for r in again.record["reasons"]}


def test_per_action_magnitudes_are_compared_with_the_same_kind_of_action(model):
    eng = engine(model)
    st = None
    # the agent's exports (a kind of its own: export via the "bulk" tool family) always move ~2,000 records
    for i in range(12):
        eng.process(ev(T + 600 * i, "a", tool="bulk.export", action="write", resource="crm://accounts/1",
                       records=2000 + i, task=f"e{i}"))
    st = eng.agents["a"]
    zl = [0.0] * len(FEATURE_INDEX)
    from math import log1p

    xl = [0.0] * len(FEATURE_INDEX)
    xl[FEATURE_INDEX["event_volume"]] = log1p(2000.0)
    kind = int(st.kinds.a[0])  # the first kind profiled: the exports (the other actions all learned as usual)
    assert st.kinds.compare(kind, xl, zl)
    assert abs(zl[FEATURE_INDEX["event_volume"]]) < 2.0  # against all its actions (1 record each): far out
    assert st.baseline.deviations_log(xl)[FEATURE_INDEX["event_volume"]] > 5.0
    d = eng.process(ev(T + 600 * 13, "a", tool="bulk.export", action="write", resource="crm://accounts/1",
                       records=2005, task="e13"))
    assert "event_volume" not in [r["feature"] for r in d.record["reasons"]]


# --------------------------------------------------------------------------- verdicts

def _alerting_episode(eng, agent="a", t=T, **kw):
    d = eng.process(new_tool(t, agent, **kw))
    assert alerted(d) and d.episodes and d.episodes[0]["state"] == "open"
    return d.episodes[0]["episode_id"]


def test_a_benign_verdict_teaches_the_episodes_actions_at_once(model):
    eng = engine(model)
    ep = _alerting_episode(eng)
    recs = eng.apply_verdict(Verdict("v1", "a", ep, "benign", T0 + T + 60, by="alice"))
    assert recs and recs[0]["verdict"]["verdict"] == "benign" and recs[0]["episode_id"] == ep
    assert not alerted(eng.process(new_tool(T + 120)))  # the second use: no longer novel
    assert eng.apply_verdict(Verdict("v1", "a", ep, "benign", T0 + T + 60)) == []  # idempotent by verdict id


def test_a_confirmed_verdict_teaches_nothing_and_the_novelty_never_settles(model):
    eng = engine(model)
    ep = _alerting_episode(eng)
    recs = eng.apply_verdict(Verdict("v2", "a", ep, "confirmed", T0 + T + 60, by="alice"))
    assert recs[0]["verdict"]["verdict"] == "confirmed"
    ds = [eng.process(new_tool(T + 900 * (i + 1))) for i in range(5)]  # would have settled by the third
    assert all(alerted(d) for d in ds)


def test_after_a_benign_verdict_on_an_incident_the_same_routine_does_not_trip_again_on_probation(model):
    eng = engine(model)
    # a young agent's burst of never-seen mass deletes trips the breaker
    d = None
    for i in range(40):
        d = eng.process(ev(T + 5 * i, "a", tool="docs.purge", action="delete", resource="docs://old/1",
                           records=500, task="purge"))
        if d.freeze:
            break
    assert d.freeze is not None
    inc = d.freeze["incident_id"]
    eng.release("a", at=T0 + T + 3600, by="lead", reason="quarterly cleanup")
    eng.apply_verdict(Verdict("v3", "a", inc, "benign", T0 + T + 3600, by="lead"))
    assert eng.breaker_state("a") == "half_open" and eng.agents["a"].breaker.risk == 0.0
    again = eng.process(ev(T + 3700, "a", tool="docs.purge", action="delete", resource="docs://old/1",
                           records=500, task="purge2"))
    assert again.record["action_taken"] == "none", again.record


def test_a_verdict_for_an_agent_the_engine_does_not_hold_changes_nothing_and_is_not_remembered(model):
    eng = engine(model)
    assert eng.apply_verdict(Verdict("v4", "nobody", "ep-x", "benign", T0)) == []
    assert "v4" not in eng._verdicts


# --------------------------------------------------------------------------- episodes

def test_an_episode_opens_changes_and_closes_after_thirty_quiet_minutes():
    book = EpisodeBook(quiet_s=1800.0)
    opened = book.observe("a", 0.0, "e1", "medium", ["novel_tool"], alerted=True)
    assert [r["state"] for r in opened] == ["open"] and opened[0]["severity"] == "medium"
    assert book.observe("a", 100.0, "e2", "medium", ["novel_tool"], alerted=True) == []  # nothing new
    changed = book.observe("a", 200.0, "e3", "critical", ["novel_tool", "event_volume"], alerted=True,
                           incident_id="inc-1")
    assert changed[0]["severity"] == "critical" and changed[0]["incidents"] == ["inc-1"]
    assert changed[0]["reasons"][0] == {"code": "novel_tool", "count": 3} and changed[0]["actions"] == 3
    assert book.observe("a", 1000.0, "e4", "ok", [], alerted=False) == []  # quiet actions keep it open
    assert book.close_quiet(1999.0) == []
    closed = book.close_quiet(5000.0)
    assert closed[0]["state"] == "closed" and closed[0]["closed"] == iso_utc(2000.0)
    assert book.find("a", "inc-1").episode_id == closed[0]["episode_id"]  # a verdict still finds it


def test_the_next_alert_after_the_quiet_time_closes_the_old_episode_and_opens_a_new_one():
    book = EpisodeBook(quiet_s=1800.0)
    first = book.observe("a", 0.0, "e1", "high", ["x"], alerted=True)[0]["episode_id"]
    recs = book.observe("a", 4000.0, "e2", "medium", ["x"], alerted=True)
    assert [(r["state"], r["episode_id"] == first) for r in recs] == [("closed", True), ("open", False)]


def test_the_engine_publishes_episode_records_on_decisions_and_close_quiet(model):
    eng = engine(model)
    d = eng.process(new_tool(T))
    assert [e["schema"] for e in d.episodes] == ["flowbreaker-episode/1"]
    assert d.episodes[0]["event_ids"] == [d.record["event_id"]]
    assert eng.close_quiet(T0 + T + 1000) == []
    assert [e["state"] for e in eng.close_quiet(T0 + T + 1800)] == ["closed"]


def test_an_open_episode_travels_with_the_agents_state_and_a_benign_verdict_still_teaches_after_it(model):
    eng = engine(model)
    ep = _alerting_episode(eng)
    blob = eng.dump_agent("a")
    assert AgentState.episode_of(blob)[0] == ep
    other = engine(model)  # a restarted worker, or the partition's next owner
    other.load_agent("a", blob)
    assert other.episodes.open_of("a") == ep
    recs = other.apply_verdict(Verdict("v9", "a", ep, "benign", T0 + T + 60, by="alice"))
    assert recs and recs[0]["episode_id"] == ep
    assert not alerted(other.process(new_tool(T + 120)))  # taught from the episode carried over
    # loading the state again (the agent woke) does not bring back an episode the book closed meanwhile
    assert [r["episode_id"] for r in other.close_quiet(T0 + T + 4000)] == [ep]
    other.load_agent("a", blob)
    assert other.episodes.open_of("a") is None


@pytest.mark.parametrize("bad", [
    "not a tuple", ["ep-x", 0.0, 0.0, 9, 1, [], [], [], None, [], [], []],           # severity out of range
    ["ep-x", 0.0, 0.0, 2, 1, [["r", 1]] * 1000, [], [], None, [], [], []],            # unbounded reasons
    ["ep-x", 0.0, 0.0, 2, 1, [], [], [], None, [], [b"\x00" * 8], []],                # a row of another shape
    ["ep-x", 0.0, 0.0, 2, 1, [], [], [], None, [], [], [[99999, 1.0]]],                 # a cap of no feature
])
def test_a_state_carrying_something_that_is_not_an_episode_loads_without_it(model, bad):
    import msgspec

    eng = engine(model)
    eng.process(new_tool(T))
    parts = msgspec.msgpack.decode(eng.dump_agent("a"))
    blob = msgspec.msgpack.encode([*parts[:-1], bad])
    other = engine(model)
    other.load_agent("a", blob)  # a changelog record someone else wrote: the state stands, the episode not
    assert "a" in other.agents and other.episodes.open_of("a") is None


# --------------------------------------------------------------------------- determinism and state

def _scenario():
    evs = []
    for i in range(30):
        evs.append(new_tool(T + 700 * i, "abc"[i % 3]))
        evs.append(ev(T + 700 * i + 5, "d", op="op-2", tool="mail.send", action="send", resource="mail://outbox",
                      dests=[f"email:new{i}@partner.example"], sensitivity="confidential", records=3, task=f"m{i}"))
    return evs


def test_replay_with_the_same_verdicts_gives_byte_identical_decisions(model):
    import json

    evs = _scenario()
    labels = Analyst(frozenset({evs[7].event_id}), 1800.0)
    pb = Playback(engine(model), analyst=labels)
    first = [json.dumps(d.record, sort_keys=True) for d in pb.run(evs)]
    assert pb.verdicts, "the analyst gave no verdict: the test would prove nothing"
    from detector.verdicts import parse_verdict

    recorded = [parse_verdict(v) for v in pb.verdicts]
    again = [json.dumps(d.record, sort_keys=True) for d in Playback(engine(model), verdicts=recorded).run(evs)]
    assert again == first
    plain = [json.dumps(d.record, sort_keys=True) for d in Playback(engine(model)).run(evs)]
    assert plain != first  # the verdicts changed something


def test_agent_state_round_trips_with_pending_novelty_caps_and_kind_profiles(model):
    eng = engine(model)
    ep = _alerting_episode(eng, records=3000)  # alerted for its volume too: the verdict caps it
    eng.apply_verdict(Verdict("v5", "a", ep, "benign", T0 + T + 20))
    assert alerted(eng.process(ev(T + 30, "a", tool="other.tool", action="write", resource="docs://x/1", task="z")))
    st = eng.agents["a"]
    assert len(st.pending) and st.caps is not None and len(st.kinds.a)
    blob = st.dump()
    back = AgentState.load(blob)
    assert back.dump() == blob
    assert (back.pending, back.caps, back.kinds.a) == (st.pending, st.caps, st.kinds.a)
    assert AgentState.breaker_of(blob).to_tuple() == st.breaker.to_tuple()


def test_a_version_3_state_still_loads_without_the_new_fields():
    import msgspec

    st = AgentState.load(Engine().agents.setdefault("x", AgentState(Engine()._generic, "op")).dump())
    parts = msgspec.msgpack.decode(st.dump())
    v3 = msgspec.msgpack.encode([3, *parts[1:9]])
    old = AgentState.load(v3)
    assert len(old.pending) == 0 and old.caps is None and len(old.kinds.a) == 0
