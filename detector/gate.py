"""The pre-action verdict: what a check just before an action would have said.

``allow``, ``needs_approval`` or ``deny`` for actions with destinations and for
deletes (other actions get ``None``). ``deny`` when the agent is frozen;
``needs_approval`` when the action would be a critical flow *for this agent*
and carries no ``approval_id``:

- confidential or restricted data from this task going to an external or
  broadcast destination the agent has no history with, when that is unusual for it;
- a "rule of two" task (untrusted input + sensitive data + outward), when unusual for it;
- a detour: after untrusted input, a send to a destination the agent never used, when unusual for it;
- someone the agent never worked for directing it to send out, delete or broadcast, when unusual for it;
- a fan-out or delete burst far beyond its baseline;
- a score above the policy's ``approval_threshold``.

The check reads the engine's state and changes nothing (:meth:`Engine.assess`).

>>> from detector.engine import Engine
>>> from detector.events import decode_event
>>> ev = decode_event({"event_id": "e1", "ts": "2026-03-02T09:00:00Z", "agent_id": "a", "operator_id": "o",
...     "tool": "mail.send", "action": "send", "resource": "hr://personnel", "sensitivity": "restricted",
...     "records": 500, "destinations": ["email:eve@evil.example"]})
>>> Gate(Engine()).verdict(ev)
'needs_approval'
"""

from __future__ import annotations

from detector.breaker import OPEN
from detector.engine import Engine
from detector.events import ActionEvent
from detector.features import FEATURE_INDEX
from detector.scoring import REASON_Z

__all__ = ["Gate", "ALLOW", "NEEDS_APPROVAL", "DENY"]

ALLOW, NEEDS_APPROVAL, DENY = "allow", "needs_approval", "deny"
_EXFIL, _RULE2, _NOVEL = FEATURE_INDEX["task_exfil"], FEATURE_INDEX["rule_of_two"], FEATURE_INDEX["novel_outbound"]
_FAN, _EVFAN, _DEL = FEATURE_INDEX["fanout_15m"], FEATURE_INDEX["event_fanout"], FEATURE_INDEX["deletes_15m"]
_DETOUR, _WHO = FEATURE_INDEX["untrusted_detour"], FEATURE_INDEX["unfamiliar_principal"]
#: "far beyond its baseline" for bursts, in robust deviations
BURST_Z = 6.0


class Gate:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def check(self, event: ActionEvent) -> tuple[str, float, list[str]]:
        """``(verdict, score, why)`` for any proposed action."""
        approvals = self.engine.approvals
        if event.approval_id is not None and approvals is not None and approvals.screen(event) is not None:
            event = event.replace(approval_id=None)  # an id that does not cover the action signs nothing off
        score, obs, z, state = self.engine.assess(event)
        if state == OPEN:
            return DENY, score, ["the agent is frozen"]
        if event.approval_id is not None:
            return ALLOW, score, ["carries an approval"]
        why = []
        x = obs.x
        if x[_EXFIL] > 0 and obs.new_outbound and max(z[_EXFIL], z[_NOVEL]) >= REASON_Z:
            why.append("sensitive data from this task to a never-seen external or broadcast destination")
        if x[_RULE2] > 0 and z[_RULE2] >= REASON_Z:
            why.append("rule of two: untrusted input, sensitive data and an outward action in one task")
        if x[_DETOUR] > 0 and z[_DETOUR] >= REASON_Z:
            why.append("after untrusted input, this task sends to a destination the agent has never used")
        if x[_WHO] >= 2.0 and z[_WHO] >= REASON_Z:
            why.append(f"{event.requested_by!r}, whom this agent has never worked for, directs it to send or delete")
        if max(z[_FAN], z[_EVFAN], z[_DEL]) >= BURST_Z:
            why.append("a fan-out or delete burst far beyond this agent's baseline")
        if score > self.engine.policy.approval_threshold:
            why.append(f"score {score:.2f} above the approval threshold")
        return (NEEDS_APPROVAL if why else ALLOW), score, why

    def verdict(self, event: ActionEvent) -> str | None:
        """The verdict for actions with destinations and deletes; ``None`` for the rest."""
        if not event.destinations and event.action != "delete":
            return None
        return self.check(event)[0]
