"""The per-agent circuit breaker: a pure state machine ``closed -> open -> half_open -> closed``.

- ``closed``: the agent works. A critical action, or an accumulated risk budget
  (a decayed sum of how far scores exceed ``budget_floor``, so a slow drip of
  individually small sends trips it too), opens it: one freeze per incident,
  with a stable ``incident_id`` derived from the agent and the tripping event.
- ``open``: frozen. Nothing inside the stream closes it; only :func:`release`
  (a human, from outside) moves it to ``half_open``. A human can also open it
  from outside (:func:`trip_manual`): the same outcome as a trip, one incident.
- ``half_open``: probation. Thresholds are tighter by ``probation_tighten`` and the
  budget is halved; it closes again only after ``probation_s`` of event time *and*
  ``probation_min_events`` actions without trouble, so one event dated far in the
  future cannot end probation by itself.

Each trip is a new incident: the id is derived from the agent, the tripping event
and how many times the breaker has tripped before, so the same trigger sent again
after a release opens a new incident with a new id.

>>> from detector.policy import Thresholds
>>> th = Thresholds()
>>> b = BreakerState()
>>> step(b, t=0.0, score=0.99, severity="critical", agent_id="a", event_id="e1", th=th)
('freeze', ('closed', 'open'))
>>> step(b, t=1.0, score=0.99, severity="critical", agent_id="a", event_id="e2", th=th)  # no second freeze
('alert', None)
>>> release(b, t=2.0)
('open', 'half_open')
"""

from __future__ import annotations

import hashlib
import json
from math import exp

from detector.policy import Thresholds

__all__ = ["BreakerState", "step", "release", "trip_manual", "incident_id_for", "CLOSED", "OPEN", "HALF_OPEN"]

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"
_LN2 = 0.6931471805599453
_ALERTING = frozenset(("medium", "high", "critical"))
#: what :func:`step` returns for an action that changes no state (the same tuple each time)
_NONE, _ALERT = ("none", None), ("alert", None)


def incident_id_for(agent_id: str, event_id: str, trip: int = 0) -> str:
    """Stable across replays and worker restarts: the same trip gives the same id. ``trip`` is
    how many times this agent's breaker tripped before, so a re-trip after a release on the same
    event id is a different incident.

    >>> incident_id_for("a", "e1") == incident_id_for("a", "e1"), incident_id_for("a", "e1") == incident_id_for("a", "e1", 1)
    (True, False)
    """
    key = [agent_id, event_id] if trip == 0 else [agent_id, event_id, trip]
    return "inc-" + hashlib.sha256(json.dumps(key).encode()).hexdigest()[:20]


class BreakerState:
    __slots__ = ("state", "risk", "risk_t", "incident_id", "opened_t", "probation_until", "trips", "probation_seen")

    def __init__(self) -> None:
        self.state = CLOSED
        self.risk = 0.0
        self.risk_t = 0.0
        self.incident_id: str | None = None
        self.opened_t = 0.0
        self.probation_until = 0.0
        self.trips = 0
        #: actions seen on probation since the last release
        self.probation_seen = 0

    def to_tuple(self) -> tuple:
        return (self.state, self.risk, self.risk_t, self.incident_id, self.opened_t, self.probation_until, self.trips,
                self.probation_seen)

    @classmethod
    def from_tuple(cls, t: tuple | list) -> "BreakerState":
        b = cls()
        if len(t) == 7:  # written before probation counted actions
            t = (*t, 0)
        b.state, b.risk, b.risk_t, b.incident_id, b.opened_t, b.probation_until, b.trips, b.probation_seen = t
        if b.state not in (CLOSED, OPEN, HALF_OPEN):
            raise ValueError(f"unknown breaker state {b.state!r}")
        return b


def step(b: BreakerState, *, t: float, score: float, severity: str, agent_id: str, event_id: str,
         th: Thresholds, harm: float = 1.0, solo_trip: bool = True,
         evidence: float | None = None) -> tuple[str, tuple[str, str] | None]:
    """Feed one scored action; return ``(action_taken, transition)``. Mutates ``b``.

    ``harm`` in [0, 1] is how much damage the action can do by itself (the engine gives
    1 to data leaving or being destroyed, less to data only read): it scales what the
    action spends of the risk budget. A harmless action (0: public data, nothing
    destroyed) is alerted on when rare but never trips: rarity alone is not harm.
    With ``solo_trip`` false a critical action alone does not trip (it still spends the
    budget): the engine says so for a young agent's action that moves nothing sensitive out.
    ``evidence`` (on the score scale), when given, is what the action spends of the budget instead
    of its score: the engine gives the evidence of harm, so rare-but-harmless novelty never adds up
    to a freeze.
    """
    transition = None
    state = b.state
    if state == HALF_OPEN:
        b.probation_seen += 1
        if t >= b.probation_until and b.probation_seen > th.probation_min_events:
            b.state = state = CLOSED
            transition = (HALF_OPEN, CLOSED)
    # decayed risk budget (decays in event time; events out of order decay by nothing)
    if t > b.risk_t:
        if b.risk:
            b.risk *= exp(-(t - b.risk_t) * _LN2 / th.budget_half_life_s)
        b.risk_t = t
    excess = (score if evidence is None else evidence) - th.budget_floor
    if excess > 0 and harm > 0.0:
        b.risk += excess * harm
    if state == OPEN or harm <= 0.0:
        if transition is None:  # most actions: the outcome is one of two constants, no tuple made
            return _ALERT if severity in _ALERTING else _NONE
        return ("alert" if severity in _ALERTING else "none"), transition
    if state == HALF_OPEN:  # probation: tighter
        crit, budget = th.critical - th.probation_tighten, th.risk_budget * 0.5
    else:
        crit, budget = th.critical, th.risk_budget
    if (solo_trip and score >= crit) or b.risk >= budget:
        b.state = OPEN
        b.incident_id = incident_id_for(agent_id, event_id, b.trips)
        b.opened_t = t
        b.trips += 1
        b.risk = 0.0
        return "freeze", (state, OPEN)
    if transition is None:
        return _ALERT if severity in _ALERTING else _NONE
    return ("alert" if severity in _ALERTING else "none"), transition


def trip_manual(b: BreakerState, *, t: float, agent_id: str, key: str) -> tuple[str, str] | None:
    """A human froze the agent from outside: ``closed`` or ``half_open -> open``, exactly as a trip
    (one incident: a new id, the trip counted, ``opened_t`` set, the risk budget spent). The id
    starts with ``man-`` and is derived from the agent, ``key`` (what makes this freeze itself,
    such as who froze it and when) and the trips before, so it is stable when the same freeze is
    applied again and differs after a release. Returns the transition; ``None``, changing nothing,
    when the breaker is already ``open`` (one freeze per incident).

    >>> b = BreakerState()
    >>> trip_manual(b, t=5.0, agent_id="a", key="manual|alice|t5"), b.incident_id[:4], b.trips
    (('closed', 'open'), 'man-', 1)
    >>> trip_manual(b, t=6.0, agent_id="a", key="manual|bob|t6"), b.opened_t
    (None, 5.0)
    """
    if b.state == OPEN:
        return None
    old = b.state
    b.state, b.opened_t, b.risk = OPEN, t, 0.0
    b.incident_id = "man-" + incident_id_for(agent_id, key, b.trips)[4:]
    b.trips += 1
    return (old, OPEN)


def release(b: BreakerState, *, t: float, probation_s: float = Thresholds.probation_s) -> tuple[str, str] | None:
    """A human released the agent: ``open -> half_open`` (probation). Anything else is a no-op."""
    if b.state != OPEN:
        return None
    b.state = HALF_OPEN
    b.probation_until = t + probation_s
    b.probation_seen = 0
    b.risk = 0.0
    return (OPEN, HALF_OPEN)
