"""The pre-action verdict: what a check just before an action would have said.

``allow``, ``needs_approval`` or ``deny`` for actions with destinations and for
deletes (other actions get ``None``). ``deny`` when the agent is frozen;
``needs_approval`` when the action carries no ``approval_id`` and

- its evidence of harm (:mod:`detector.evidence`: data going out, deletes, fan-out,
  the rule of two, a detour after untrusted input, with an unfamiliar principal, a
  never-seen destination or an unusual step adding to it) reaches the policy's
  ``gate_evidence``: the case for a human look before the data leaves, well below
  what a freeze needs (``evidence``). The reasons say which signs were seen;
- or it sends to a never-seen destination that nothing in the task names (not the
  requester, not what the task read), when that is rare for this agent;
- or its score is above the policy's ``approval_threshold``;
- or, with no trained model (nothing says what is usual), it sends confidential or
  restricted data to a never-seen external or broadcast destination.

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
_OUTSIDER = FEATURE_INDEX["outsider_principal"]


class Gate:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def check(self, event: ActionEvent) -> tuple[str, float, list[str]]:
        """``(verdict, score, why)`` for any proposed action."""
        approvals = self.engine.approvals
        if event.approval_id is not None and approvals is not None and approvals.screen(event) is not None:
            event = event.replace(approval_id=None)  # an id that does not cover the action signs nothing off
        score, obs, z, state, harm = self.engine.assess(event)
        if state == OPEN:
            return DENY, score, ["the agent is frozen"]
        if event.approval_id is not None:
            return ALLOW, score, ["carries an approval"]
        why = []
        th = self.engine.policy.thresholds
        if harm >= th.gate_evidence:
            x = obs.x
            if x[_EXFIL] > 0 and z[_EXFIL] >= REASON_Z:
                why.append("sensitive data read in this task is being sent outward, which is unusual for this agent")
            if x[_RULE2] > 0 and z[_RULE2] >= REASON_Z:
                why.append("rule of two: untrusted input, sensitive data and an outward action in one task")
            if x[_DETOUR] > 0 and z[_DETOUR] >= REASON_Z:
                why.append("after untrusted input, this task sends to a destination nothing in it points to, or takes a "
                           "step it never took")
            if x[_WHO] >= 2.0 and z[_WHO] >= REASON_Z:
                why.append(f"{event.requested_by!r}, whom this agent has never worked for, directs it to send or delete")
            if x[_OUTSIDER] >= 2.0 and z[_OUTSIDER] >= REASON_Z:
                why.append(f"{event.requested_by!r}, from outside the organisation and never worked for, directs it "
                           "to send or delete")
            if obs.new_outbound and z[_NOVEL] >= REASON_Z:
                why.append("a never-seen external or broadcast destination: " + ", ".join(obs.new_outbound))
            if max(z[_FAN], z[_EVFAN], z[_DEL]) >= REASON_Z:
                why.append("a fan-out or delete burst beyond this agent's baseline")
            if not why:
                why.append(f"evidence of harm {harm:.2f} (volume, destinations, data flows together)")
        if not why and obs.new_outbound and obs.x[_NOVEL] >= 1.0 and z[_NOVEL] >= REASON_Z:
            # a single send to a destination nothing in the task names, rare for this agent: a human looks
            why.append("a never-seen external or broadcast destination that nothing in the task names: "
                       + ", ".join(obs.new_outbound))
        if self.engine.model is None and obs.x[_EXFIL] > 0 and obs.new_outbound \
                and not any("never-seen" in w for w in why):
            # no trained profile to say what is usual: when unsure, sensitive data to a new place waits
            why.append("sensitive data to a never-seen external or broadcast destination (no trained profile yet)")
        if score > self.engine.policy.approval_threshold:
            why.append(f"score {score:.2f} above the approval threshold")
        return (NEEDS_APPROVAL if why else ALLOW), score, why

    def verdict(self, event: ActionEvent) -> str | None:
        """The verdict for actions with destinations and deletes; ``None`` for the rest."""
        if not event.destinations and event.action != "delete":
            return None
        return self.check(event)[0]
