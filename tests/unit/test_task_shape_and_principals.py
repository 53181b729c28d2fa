"""Task shape, who asked, detours after untrusted input, and the agent's own rate of novelty
(detector/features.py), and how the engine and the gate use them (freezes need evidence of harm)."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

from hypothesis import given, settings
from hypothesis import strategies as st

from detector.engine import Engine
from detector.events import decode_event
from detector.features import FEATURE_INDEX, FeatureState, commit_novelty, extract
from detector.gate import NEEDS_APPROVAL, Gate
from detector.policy import Policy

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=timezone.utc)
POLICY = Policy.from_dict({"internal_domains": ["corp.example"], "internal": ["slack:*"],
                           "broadcast": {"slack:#all-hands": 500}})
_n = 0


def ev(at: float = 0.0, **kw):
    global _n
    _n += 1
    d = {"event_id": f"e{_n}", "ts": (T0 + timedelta(seconds=at)).isoformat(), "agent_id": "a",
         "operator_id": "owner", "tool": "db.query", "action": "read", "resource": "db://table/1",
         "sensitivity": "internal"}
    d.update(kw)
    return decode_event(d)


def f(obs, name: str) -> float:
    return obs.x[FEATURE_INDEX[name]]


def run(events, state=None, commit=True):
    s = state or FeatureState()
    out = []
    for e in events:
        o = extract(s, e, POLICY)
        if commit:
            commit_novelty(s, o)
        out.append(o)
    return s, out


def usual_task(k: int, at: float, outward: bool = False):
    """read the inbox, look up the customer, reply to the team (or to one of five partners outside):
    the agent's usual shape."""
    dest = f"email:partner{k % 5}@partners.example" if outward else "email:team@corp.example"
    return [ev(at, task_id=f"T{k}", tool="mail.read", resource="mail://inbox/1"),
            ev(at + 5, task_id=f"T{k}", tool="crm.lookup", resource="crm://customers/1"),
            ev(at + 10, task_id=f"T{k}", tool="mail.send", action="send", resource="mail://outbox",
               destinations=[dest])]


# ------------------------------------------------------------------ task shape

def test_steps_the_agent_always_takes_are_not_news_and_a_new_step_is():
    s, _ = run([e for k in range(5) for e in usual_task(k, 600.0 * k)])
    _, obs = run(usual_task(9, 9000.0), state=s)
    assert [f(o, "task_novel_steps") for o in obs] == [0.0, 0.0, 0.0]
    assert [f(o, "task_actions") for o in obs] == [1.0, 2.0, 3.0]
    detour = [ev(9500, task_id="T10", tool="mail.read", resource="mail://inbox/2"),
              ev(9505, task_id="T10", tool="files.search", resource="drive://files"),
              ev(9510, task_id="T10", tool="mail.send", action="send", resource="mail://outbox",
                 destinations=["email:team@corp.example"])]
    _, obs = run(detour, state=s)
    # read -> search is new, search -> send is new: the send carries both
    assert [f(o, "task_novel_steps") for o in obs] == [0.0, 1.0, 2.0]


def test_an_action_without_a_task_has_no_task_shape():
    _, (o,) = run([ev(0)])
    assert f(o, "task_actions") == 0.0 and f(o, "task_novel_steps") == 0.0


# ------------------------------------------------------------------ who asked

def who_asked(o) -> tuple[float, float]:
    return f(o, "unfamiliar_principal"), f(o, "outsider_principal")


def test_a_principal_never_seen_directing_a_send_of_sensitive_data_weighs_most():
    s, _ = run([ev(k, requested_by="alice@corp.example") for k in range(5)])
    _, obs = run([ev(10, requested_by="alice@corp.example", action="send", sensitivity="confidential",
                     tool="mail.send", destinations=["email:x@evil.example"]),
                  ev(20, requested_by="mallory@corp.example", action="send", sensitivity="confidential",
                     tool="mail.send", destinations=["email:x@evil.example"]),
                  ev(30, requested_by="mallory2@corp.example", action="delete"),
                  ev(40, requested_by="mallory3@corp.example", action="read"),
                  ev(50, requested_by="owner", action="delete")], state=s, commit=False)
    assert [who_asked(o)[0] for o in obs] == [0.0, 3.0, 3.0, 0.25, 0.0]


def test_a_principal_from_outside_the_organisation_counts_as_an_outsider():
    _, obs = run([ev(0, requested_by="eve@evil.example", action="delete"),
                  ev(1, requested_by="unknown", action="delete"),
                  ev(2, requested_by="eve@corp-example.com", action="delete"),   # a look-alike domain
                  ev(3, requested_by="bob@corp.example", action="delete")], commit=False)
    assert [who_asked(o) for o in obs] == [(0.0, 3.0), (0.0, 3.0), (0.0, 3.0), (3.0, 0.0)]


def test_a_principal_is_familiar_once_a_normal_action_taught_it():
    s, (first,) = run([ev(0, requested_by="bob@corp.example", action="delete")])
    _, (second,) = run([ev(10, requested_by="bob@corp.example", action="delete")], state=s)
    assert who_asked(first) == (3.0, 0.0) and who_asked(second) == (0.0, 0.0)


def test_a_task_started_by_a_stranger_stays_a_strangers_task():
    s = FeatureState()
    # the stranger's first step (a harmless read) is normal and teaches the principal ...
    _, (read,) = run([ev(0, task_id="T", requested_by="eve@evil.example")], state=s)
    # ... but the deletes that follow in the same task are still directed by someone unfamiliar
    _, (delete,) = run([ev(5, task_id="T", requested_by="eve@evil.example", action="delete")], state=s)
    assert who_asked(read) == (0.0, 0.25) and who_asked(delete) == (0.0, 3.0)


# ------------------------------------------------------------------ detours and relative novelty

def test_a_send_to_a_new_address_after_untrusted_input_in_the_same_task_is_a_detour():
    _, obs = run([ev(0, task_id="T", tool="web.fetch", resource="https://evil.example/page"),
                  ev(5, task_id="T", tool="mail.send", action="send", resource="mail://outbox",
                     destinations=["email:eve@evil.example"])])
    assert f(obs[1], "untrusted_detour") > 0
    # the same send in a task that took in nothing untrusted is no detour
    _, obs = run([ev(0, task_id="U", tool="db.query"),
                  ev(5, task_id="U", tool="mail.send", action="send", resource="mail://outbox",
                     destinations=["email:eve@evil.example"])])
    assert f(obs[1], "untrusted_detour") == 0.0


def test_new_destinations_per_day_decay_and_count_only_new_outward_ones():
    sends = [ev(600.0 * k, tool="mail.send", action="send", destinations=[f"email:c{k}@ext.example"])
             for k in range(4)]
    s, obs = run(sends)
    assert 3.9 < f(obs[-1], "novel_destinations_1d") <= 4.0
    _, (later,) = run([ev(600.0 * 3 + 86400.0, tool="mail.send", action="send",
                          destinations=["email:c1@ext.example"])], state=s)
    assert 1.3 < f(later, "novel_destinations_1d") < 1.6  # a day later: e**-1 of 4, and nothing new


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["T1", "T2", "T3", "T4", "T5", None]),
                          st.sampled_from(["mail.read", "mail.send", "db.query", "web.fetch"]),
                          st.sampled_from([None, "owner", "alice", "zed"]),
                          st.floats(0.0, 4000.0)), max_size=40))
def test_new_features_are_finite_non_negative_and_survive_a_state_round_trip(steps):
    s = FeatureState()
    t = 0.0
    for task, tool, who, dt in steps:
        t += dt
        e = ev(t, task_id=task, tool=tool, requested_by=who,
               action="send" if tool == "mail.send" else "read",
               destinations=["email:x@ext.example"] if tool == "mail.send" else [],
               resource="https://x.example" if tool == "web.fetch" else "db://t")
        o = extract(s, e, POLICY)
        commit_novelty(s, o)
        for name in ("novel_destinations_1d", "task_actions", "task_novel_steps", "unfamiliar_principal",
                     "untrusted_detour"):
            v = f(o, name)
            assert v >= 0.0 and v == v and v != float("inf")
        s = FeatureState.from_tuple(s.to_tuple())
        assert FeatureState.from_tuple(s.to_tuple()).to_tuple() == s.to_tuple()


# ------------------------------------------------------------------ freezes need evidence of harm

_MODELS: dict = {}


def _routine_engine(outward: bool = False) -> Engine:
    """An engine with a model trained on 150 usual tasks of agents a, b and c, then agent a's usual day."""
    if outward not in _MODELS:
        from models.store import TrainedModel
        from models.train import fit

        history = [e.replace(agent_id=a, event_id=f"{a}-{e.event_id}") for a in "abc"
                   for k in range(150) for e in usual_task(k, 300.0 * k, outward)]
        card, arrays = fit(history, POLICY, seed=0, n_estimators=20)
        _MODELS[outward] = TrainedModel({**card, "checksum": ""}, arrays)
    eng = Engine(policy=POLICY, model=_MODELS[outward])
    for k in range(150, 160):
        eng.process_batch(usual_task(k, 300.0 * k, outward))
    return eng


def test_one_small_send_to_a_never_seen_address_is_not_a_freeze_but_is_held_by_the_check():
    """An agent that sends outward every day (to addresses it knows): a first small send to a stranger."""
    eng = _routine_engine(outward=True)
    new_addr = ev(300.0 * 161, task_id="Tn", tool="mail.send", action="send", resource="mail://outbox",
                  sensitivity="internal", records=1, destinations=["email:stranger@elsewhere.example"],
                  requested_by="owner")
    verdict = Gate(eng).check(new_addr)[0]
    d = eng.process(new_addr)
    assert d.record["action_taken"] != "freeze" and eng.breaker_state("a") == "closed"
    assert d.record["severity"] in ("medium", "high", "critical")
    assert verdict == NEEDS_APPROVAL


def test_sensitive_data_sent_out_by_an_unfamiliar_principal_after_untrusted_input_freezes():
    eng = _routine_engine()
    at = 300.0 * 161
    d = None
    for e in [ev(at, task_id="Tx", tool="mail.read", resource="email:stranger@evil.example",
                 requested_by="stranger"),
              ev(at + 5, task_id="Tx", tool="crm.lookup", resource="crm://customers/all", sensitivity="restricted",
                 records=200, requested_by="stranger"),
              ev(at + 10, task_id="Tx", tool="mail.send", action="send", resource="mail://outbox",
                 sensitivity="restricted", records=200, destinations=["email:drop@evil.example"],
                 requested_by="stranger")]:
        d = eng.process(e)
    assert d.record["action_taken"] == "freeze"
    features = {r["feature"] for r in d.record["reasons"]}
    assert features & {"task_exfil", "untrusted_detour", "unfamiliar_principal", "rule_of_two"}
