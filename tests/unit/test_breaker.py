"""The per-agent circuit breaker (detector/breaker.py): a pure state machine.

The hypothesis state machine below drives the breaker with arbitrary scores, time
steps, human freezes and human releases and checks, after every step, the promises
of the design: no freeze without cause, never a second freeze without a release in
between, a critical action trips a closed breaker, a human freeze opens a closed or
half-open breaker as one new incident and changes nothing on an open one, only a
release leaves ``open`` and only towards ``half_open``, probation ends by itself.
"""
from __future__ import annotations

import re

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from detector.breaker import CLOSED, HALF_OPEN, OPEN, BreakerState, incident_id_for, release, step, trip_manual
from detector.policy import Thresholds

TH = Thresholds()
T0 = 1_772_442_000.0


def feed(b: BreakerState, scores, *, start: float = T0, every: float = 60.0, agent: str = "a", th=TH):
    out = []
    for k, s in enumerate(scores):
        out.append(step(b, t=start + k * every, score=s, severity=th.severity(s), agent_id=agent,
                        event_id=f"e{k}", th=th))
    return out


# --------------------------------------------------------------------------- examples

def test_a_critical_action_freezes_a_closed_breaker_once():
    b = BreakerState()
    (first,) = feed(b, [0.99])
    assert first == ("freeze", (CLOSED, OPEN))
    assert b.state == OPEN
    assert b.incident_id == incident_id_for("a", "e0")


def test_an_open_breaker_alerts_but_never_freezes_again():
    b = BreakerState()
    results = feed(b, [0.99, 1.0, 0.99, 0.2])
    assert [r[0] for r in results] == ["freeze", "alert", "alert", "none"]
    assert b.trips == 1


def test_ordinary_scores_never_freeze():
    b = BreakerState()
    results = feed(b, [0.1, 0.3, 0.5, TH.budget_floor] * 200)
    assert {r[0] for r in results} == {"none"}
    assert b.state == CLOSED and b.risk == 0.0


def test_a_slow_drip_of_medium_scores_exhausts_the_budget_and_freezes():
    b = BreakerState()
    results = feed(b, [0.8] * 20, every=20 * 60)  # each below critical
    actions = [r[0] for r in results]
    assert "freeze" in actions
    k = actions.index("freeze")
    assert 0 < k < 19
    assert actions[:k] == ["alert"] * k


def test_the_same_scores_spread_thinly_over_days_never_freeze():
    b = BreakerState()
    results = feed(b, [0.7] * 100, every=24 * 3600)
    assert "freeze" not in [r[0] for r in results]


def test_alerts_follow_severity_below_the_trip_point():
    for s, expected in [(0.1, "none"), (TH.low, "none"), (TH.medium, "alert"), (TH.high, "alert")]:
        fresh = BreakerState()
        assert step(fresh, t=T0, score=s, severity=TH.severity(s), agent_id="a", event_id="e", th=TH)[0] == expected
        assert fresh.state == CLOSED


def test_release_moves_open_to_half_open_only():
    b = BreakerState()
    assert release(b, t=T0) is None and b.state == CLOSED
    feed(b, [0.99])
    assert release(b, t=T0 + 10, probation_s=3600) == (OPEN, HALF_OPEN)
    assert b.state == HALF_OPEN and b.probation_until == T0 + 10 + 3600
    assert release(b, t=T0 + 20) is None and b.state == HALF_OPEN


def test_probation_is_tighter_than_closed():
    score = TH.critical - TH.probation_tighten / 2  # below critical, above the tightened threshold
    closed = BreakerState()
    assert feed(closed, [score])[0][0] != "freeze"
    b = BreakerState()
    feed(b, [0.99])
    release(b, t=T0 + 1)
    assert feed(b, [score], start=T0 + 2)[0] == ("freeze", (HALF_OPEN, OPEN))


def test_half_open_closes_after_probation_without_trouble():
    b = BreakerState()
    feed(b, [0.99])
    release(b, t=T0 + 1, probation_s=3600)
    assert feed(b, [0.1], start=T0 + 100)[0] == ("none", None)
    assert b.state == HALF_OPEN
    # time alone is not enough: probation also lasts probation_min_events actions
    assert feed(b, [0.1] * 9, start=T0 + 1 + 3600)[-1] == ("none", None) and b.state == HALF_OPEN
    assert feed(b, [0.1], start=T0 + 1 + 7200)[0] == ("none", (HALF_OPEN, CLOSED))
    assert b.state == CLOSED


def test_probation_is_not_ended_by_one_action_dated_far_ahead():
    b = BreakerState()
    feed(b, [0.99])
    release(b, t=T0 + 1, probation_s=3600)
    assert feed(b, [0.1], start=T0 + 100 * 365 * 86400)[0] == ("none", None)
    assert b.state == HALF_OPEN


def test_a_new_trip_after_a_release_is_a_new_incident():
    b = BreakerState()
    feed(b, [0.99])
    first = b.incident_id
    release(b, t=T0 + 1)
    step(b, t=T0 + 2, score=0.99, severity="critical", agent_id="a", event_id="later", th=TH)
    assert b.incident_id == incident_id_for("a", "later", 1) != first
    assert b.trips == 2


def test_the_same_trigger_after_a_release_opens_a_new_incident_id():
    b = BreakerState()
    step(b, t=T0, score=0.99, severity="critical", agent_id="a", event_id="x", th=TH)
    first = b.incident_id
    release(b, t=T0 + 1)
    step(b, t=T0 + 2, score=0.99, severity="critical", agent_id="a", event_id="x", th=TH)
    assert b.state == OPEN and b.incident_id != first


def test_incident_ids_are_stable_and_distinct():
    assert incident_id_for("agent-1", "ev-1") == incident_id_for("agent-1", "ev-1")
    assert re.fullmatch(r"inc-[0-9a-f]{20}", incident_id_for("agent-1", "ev-1"))
    ids = {incident_id_for(a, e) for a in ("a", "b", "ab", "agent-1") for e in ("1", "2", "b1", "ev-1")}
    assert len(ids) == 16


def test_incident_ids_of_different_agent_event_pairs_never_collide_even_with_separator_characters():
    assert incident_id_for("a\x1fb", "1") != incident_id_for("a", "b\x1f1")


def test_two_replays_of_the_same_actions_give_the_same_incidents():
    scores = [0.3, 0.8, 0.99, 0.4, 0.9]
    a, b = BreakerState(), BreakerState()
    assert feed(a, scores) == feed(b, scores)
    assert a.to_tuple() == b.to_tuple()


def test_breaker_state_round_trips_through_its_tuple():
    b = BreakerState()
    feed(b, [0.7, 0.8, 0.99])
    release(b, t=T0 + 500)
    c = BreakerState.from_tuple(b.to_tuple())
    assert c.to_tuple() == b.to_tuple()
    assert feed(c, [0.9, 0.2], start=T0 + 600) == feed(b, [0.9, 0.2], start=T0 + 600)


def test_an_unknown_breaker_state_is_refused():
    with pytest.raises(ValueError, match="unknown breaker state"):
        BreakerState.from_tuple(("ajar", 0.0, 0.0, None, 0.0, 0.0, 0))


def test_a_human_freeze_is_one_incident_of_its_own_and_an_open_breaker_stays_as_it_is():
    b = BreakerState()
    feed(b, [0.8])  # some risk spent
    assert trip_manual(b, t=T0 + 10, agent_id="a", key="manual|alice|1") == (CLOSED, OPEN)
    assert b.state == OPEN and b.risk == 0.0 and b.opened_t == T0 + 10 and b.trips == 1
    assert b.incident_id == "man-" + incident_id_for("a", "manual|alice|1")[4:]
    frozen = b.to_tuple()
    assert trip_manual(b, t=T0 + 20, agent_id="a", key="manual|bob|2") is None and b.to_tuple() == frozen
    # the stream's critical actions do not freeze it again either
    assert feed(b, [0.99], start=T0 + 30) == [("alert", None)]
    release(b, t=T0 + 40)
    assert trip_manual(b, t=T0 + 50, agent_id="a", key="manual|alice|1") == (HALF_OPEN, OPEN)
    assert b.incident_id == "man-" + incident_id_for("a", "manual|alice|1", 1)[4:] != frozen[3]


def test_events_out_of_order_do_not_decay_the_budget():
    b = BreakerState()
    step(b, t=T0 + 1000, score=0.8, severity="medium", agent_id="a", event_id="e1", th=TH)
    risk = b.risk
    step(b, t=T0, score=0.5, severity="ok", agent_id="a", event_id="e0", th=TH)
    assert b.risk == risk and b.risk_t == T0 + 1000


# --------------------------------------------------------------------------- state machine

class BreakerMachine(RuleBasedStateMachine):
    """Arbitrary scores, clock steps and releases; invariants after each."""

    @initialize(th=st.sampled_from([TH, Thresholds(risk_budget=0.5, budget_half_life_s=600.0, probation_s=300.0),
                                    Thresholds(critical=0.99, budget_floor=0.3, probation_tighten=0.3)]))
    def start(self, th):
        self.th = th
        self.b = BreakerState()
        self.t = T0
        self.n = 0
        # an upper bound of the risk: excess summed since the last reset, without decay
        self.excess = 0.0
        self.frozen_by_us = False
        self.probation_actions = 0

    @rule(dt=st.one_of(st.just(0.0), st.floats(0.0, 120.0), st.floats(0.0, 3 * 86400.0)),
          score=st.one_of(st.floats(0.0, 1.0), st.sampled_from([0.0, 0.55, 0.7, 0.85, 0.95, 0.99, 1.0])),
          approval_like=st.booleans())
    def act(self, dt, score, approval_like):
        self.t += dt
        self.n += 1
        event_id = f"e{self.n}"
        b, th = self.b, self.th
        before = b.state
        trips_before = b.trips
        if before == HALF_OPEN:
            self.probation_actions += 1
        on_probation = before == HALF_OPEN and (self.t < b.probation_until
                                                or self.probation_actions <= th.probation_min_events)
        crit = th.critical - (th.probation_tighten if on_probation else 0.0)
        budget = th.risk_budget * (0.5 if on_probation else 1.0)
        self.excess += max(0.0, score - th.budget_floor)
        severity = th.severity(score)

        action, transition = step(b, t=self.t, score=score, severity=severity, agent_id="agent-x",
                                  event_id=event_id, th=th)

        assert action in ("none", "alert", "freeze")
        if action == "freeze":
            # never two freezes without a release in between
            assert before != OPEN and not self.frozen_by_us
            # no freeze without cause
            assert score >= crit or self.excess >= budget - 1e-9, (score, crit, self.excess, budget)
            assert b.state == OPEN and transition == (before if not (before == HALF_OPEN and not on_probation)
                                                      else CLOSED, OPEN)
            assert b.incident_id == incident_id_for("agent-x", event_id, trips_before)
            self.frozen_by_us = True
            self.excess = 0.0
        else:
            assert action == ("alert" if severity in ("medium", "high", "critical") else "none")
            # a critical action trips a breaker that is not open
            assert before == OPEN or score < crit
        if before == OPEN:
            assert b.state == OPEN and transition is None  # nothing in the stream closes it
        if before == HALF_OPEN and not on_probation and action != "freeze":
            assert b.state == CLOSED and transition == (HALF_OPEN, CLOSED)
        if before == HALF_OPEN and on_probation and action != "freeze":
            assert b.state == HALF_OPEN and transition is None
        if before == CLOSED and action != "freeze":
            assert b.state == CLOSED and transition is None

    @rule(dt=st.floats(0.0, 86400.0))
    def human_release(self, dt):
        self.t += dt
        before = self.b.state
        result = release(self.b, t=self.t, probation_s=self.th.probation_s)
        if before == OPEN:
            assert result == (OPEN, HALF_OPEN)
            assert self.b.state == HALF_OPEN
            assert self.b.probation_until == self.t + self.th.probation_s
            self.frozen_by_us = False
            self.excess = 0.0
            self.probation_actions = 0
        else:
            assert result is None and self.b.state == before

    @rule(dt=st.floats(0.0, 86400.0), who=st.sampled_from(["alice", "bob"]))
    def human_freeze(self, dt, who):
        self.t += dt
        b = self.b
        before, trips_before, kept = b.state, b.trips, b.to_tuple()
        key = f"manual|{who}|{self.t}"
        result = trip_manual(b, t=self.t, agent_id="agent-x", key=key)
        if before == OPEN:  # already frozen: nothing changes, no second incident
            assert result is None and b.to_tuple() == kept
        else:  # closed or half_open -> open, one new incident, as a trip
            assert result == (before, OPEN)
            assert b.state == OPEN and b.trips == trips_before + 1 and b.opened_t == self.t and b.risk == 0.0
            assert b.incident_id == "man-" + incident_id_for("agent-x", key, trips_before)[4:]
            self.frozen_by_us = True
            self.excess = 0.0

    @rule()
    def round_trip(self):
        copy = BreakerState.from_tuple(self.b.to_tuple())
        assert copy.to_tuple() == self.b.to_tuple()
        self.b = copy

    @invariant()
    def state_is_known_and_risk_bounded(self):
        if not hasattr(self, "b"):
            return
        assert self.b.state in (CLOSED, OPEN, HALF_OPEN)
        assert 0.0 <= self.b.risk <= self.excess + 1e-9
        assert (self.b.state == OPEN) == self.frozen_by_us


TestBreakerMachine = BreakerMachine.TestCase
TestBreakerMachine.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
