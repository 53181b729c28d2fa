"""Destination habits (issue 18, detector/habits.py): an agent whose work is paying new payees is not asked
about every new payee for ever, an agent that pays the same suppliers still is, and what came with evidence
of harm never makes a habit."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from hypothesis import given, settings, strategies as st

from detector.engine import AgentState, Engine
from detector.events import decode_event
from detector.gate import Gate
from detector.habits import HALF_AT, MIN_SENDS, SLOTS, Habits, family_key, pooled, sends_of
from detector.policy import Policy
from models.store import TrainedModel
from models.train import fit

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=timezone.utc)
POLICY = Policy()
NEVER_SEEN = "a never-seen external or broadcast destination that nothing in the task names"


def _ev(n: int, agent: str, t: datetime, **kw) -> dict:
    e = {"event_id": f"{agent}-{n:05d}", "ts": t.isoformat().replace("+00:00", "Z"), "agent_id": agent,
         "operator_id": "finance", "task_id": f"{agent}-t{n:05d}", "requested_by": "ops@corp.example",
         "tool": "erp.read", "action": "read", "resource": "erp://invoices", "sensitivity": "internal",
         "records": 3, "bytes": 900}
    e.update(kw)
    return e


def _history(agent: str, days: int = 6, payees=("payee:acme", "payee:globex", "payee:initech")) -> list[dict]:
    """An agent that reads invoices and pays the same three suppliers, ten times a working day."""
    out, n = [], 0
    for d in range(days):
        for k in range(10):
            t = T0 + timedelta(days=d, minutes=45 * k)
            out.append(_ev(n, agent, t))
            n += 1
            out.append(_ev(n, agent, t + timedelta(seconds=20), tool="erp.pay", action="send",
                           resource="erp://payments", records=1, bytes=300, destinations=[payees[(d + k) % 3]]))
            n += 1
    return out


def _engine(agents=("fin-01", "fin-02", "fin-03")) -> Engine:
    hist = [decode_event(e) for a in agents for e in _history(a)]
    card, arrays = fit(hist, POLICY, n_estimators=20)
    return Engine(policy=POLICY, model=TrainedModel(card, arrays))


def _payments(agent: str, payees: list[str], start: datetime, n0: int = 10_000, **kw) -> list:
    out = []
    for i, p in enumerate(payees):
        t = start + timedelta(minutes=40 * i)
        out.append(decode_event(_ev(n0 + 2 * i, agent, t)))
        out.append(decode_event(_ev(n0 + 2 * i + 1, agent, t + timedelta(seconds=20), tool="erp.pay",
                                    action="send", resource="erp://payments", records=1, bytes=300,
                                    destinations=[p], **kw)))
    return out


def _asked(eng: Engine, events: list) -> list[bool]:
    """For each payment: whether the check asked because its payee is new (then the event happens)."""
    gate, out = Gate(eng), []
    for ev in events:
        if ev.destinations:
            verdict, _, why = gate.check(ev)
            out.append(verdict == "needs_approval" and any(NEVER_SEEN in w or "never-seen" in w for w in why))
        eng.process(ev)
    return out


def test_a_payee_never_paid_is_asked_about_while_the_agent_pays_the_same_suppliers():
    eng = _engine()
    start = T0 + timedelta(days=7)
    asked = _asked(eng, _payments("fin-01", ["payee:acme", "payee:globex", "payee:newco-1"], start))
    assert asked == [False, False, True]


def test_paying_new_payees_becomes_routine_after_a_few_and_stops_being_asked():
    eng = _engine()
    start = T0 + timedelta(days=7)
    payees = []
    for i in range(14):  # the agent's work changed: every other payment goes to a payee never paid before
        payees.append(f"payee:newco-{i}" if i % 2 == 0 else "payee:acme")
    asked = _asked(eng, _payments("fin-01", payees, start))
    new = [a for a, p in zip(asked, payees) if "newco" in p]
    assert new[0] is True, "the first new payee is news"
    assert not any(new[-3:]), f"paying new payees is this agent's work by now: {new}"
    assert sum(new) <= 4
    fam = family_key("payee:x")
    assert eng.agents["fin-01"].habits.habitual(fam)


def test_sends_after_untrusted_input_never_make_a_habit():
    eng = _engine()
    start = T0 + timedelta(days=7)
    payees = [f"payee:newco-{i}" if i % 2 == 0 else "payee:acme" for i in range(14)]
    events = []
    for i, ev in enumerate(_payments("fin-02", payees, start)):
        if ev.destinations:  # each payment follows untrusted input in its task (an injection's shape)
            events.append(decode_event(_ev(50_000 + i, "fin-02", datetime.fromtimestamp(ev.t - 5, timezone.utc),
                                           task_id=ev.task_id, tool="web.fetch", resource="https://x.example/p",
                                           sensitivity="public")))
        events.append(ev)
    for ev in events:
        eng.process(ev)
    h = eng.agents["fin-02"].habits
    assert not h.habitual(family_key("payee:x"))


def test_training_gives_each_agent_its_habits_and_a_newcomer_its_peers_items():
    eng = _engine()
    prior = eng.model.prior_for("fin-01", "finance", "erp.pay")
    assert prior.habits and not Habits(prior.habits).habitual(family_key("payee:x"))  # 3 payees, hundreds paid
    newcomer = eng.model.prior_for("fin-99", "finance", "erp.pay")
    assert newcomer.sketches is not None and newcomer.habits is not None
    # the suppliers the whole desk pays are not new to a newcomer of the desk
    asked = _asked(eng, _payments("fin-99", ["payee:acme", "payee:globex"], T0 + timedelta(days=7)))
    assert asked == [False, False]
    other = eng.model.prior_for("ops-01", "another-operator", "erp.pay")
    assert other.sketches is None


def test_a_state_written_before_habits_loads_with_none():
    import msgspec

    st = AgentState(Engine()._generic, "op")
    parts = msgspec.msgpack.decode(st.dump())
    old = msgspec.msgpack.encode([4, *parts[1:12]])  # before habits and the open episode
    loaded = AgentState.load(old)
    assert not loaded.habits and AgentState.breaker_of(old).state == "closed"
    assert AgentState.load(st.dump()).habits.to_bytes() == st.habits.to_bytes()


def test_only_external_and_broadcast_sends_count_and_the_first_of_a_family_is_not_new():
    sends = sends_of(["email:bob@corp.example", "payee:acme", "email:x@gmail.com"],
                     ("internal", "external", "external"), ["payee:acme"])
    assert [s[:2] for s in sends] == [(family_key("payee:acme"), True), (family_key("email:x@gmail.com"), False)]
    h = Habits()
    h.observe(sends)
    assert list(h.a)[1::4] == [1.0, 1.0] and list(h.a)[2::4] == [0.0, 0.0]
    h.observe(sends)  # the same destinations again: one use each
    assert list(h.a)[1::4] == [1.0, 1.0]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(st.tuples(st.integers(0, 12), st.booleans(), st.integers(0, 3)), max_size=4), max_size=120))
def test_habits_stay_bounded_and_a_habit_needs_enough_sends_and_share(actions):
    h = Habits()
    for sends in actions:
        h.observe(sends)
        assert len(h.a) <= 4 * SLOTS
        for b in range(0, len(h.a), 4):
            sends_n, new_n = h.a[b + 1], h.a[b + 2]
            assert 0.0 <= new_n <= sends_n < HALF_AT
            assert h.habitual(int(h.a[b])) == (sends_n >= MIN_SENDS and new_n >= 0.15 * sends_n)
    assert Habits(h.to_bytes()).to_bytes() == h.to_bytes()
    assert len(pooled([h, h]).a) == len(h.a)
