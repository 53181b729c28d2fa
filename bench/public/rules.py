"""A rule baseline: the list a SOC would write, scored with the same metrics as the detector.

No learning beyond a per-agent seen-set (destinations, tools and requesters met in
the history and since). Each rule has a severity; an event's score is that of the
most severe rule it fires (``critical`` 0.97, ``high`` 0.9, ``medium`` 0.75, ``low``
0.6, none 0.0). The first ``critical`` event freezes the agent until the end (nothing
releases it, as a replay without ``--release-after``); ``medium`` and ``high`` alert.
With ``gate=True`` actions with destinations and deletes get the verdict a rule-based
pre-action check would give: ``deny`` when frozen, ``needs_approval`` when a rule of
``high`` or above fires and the action carries no ``approval_id``, else ``allow``.

Rules (an ``approval_id`` silences all but the seen-set rules):

==========================  ========  ================================================================
rule                        severity  fires on
==========================  ========  ================================================================
restricted_out              critical  restricted data to an external or broadcast destination
bulk_out                    critical  more than ``bulk_records`` records to an external or broadcast one
sensitive_broadcast         critical  confidential or restricted data to a broadcast destination
mass_delete                 critical  a delete of more than ``delete_records`` records, or more than
                                      ``delete_burst`` deletes by the agent within 10 minutes
new_external_sensitive      high      confidential data to an external destination never seen for the agent
external_fanout             high      more than ``fanout`` distinct external destinations within 1 hour
new_requester_outbound      medium    a requester never seen for the agent directs a send, delete or outbound
new_tool                    low       a tool never seen for the agent
==========================  ========  ================================================================

>>> from detector.events import decode_event
>>> from detector.policy import Policy
>>> rb = RuleBaseline(Policy.from_dict({"internal_domains": ["corp.example"]}))
>>> ev = decode_event({"event_id": "e1", "ts": "2026-03-02T09:00:00Z", "agent_id": "a", "operator_id": "o",
...     "tool": "mail.send", "action": "send", "resource": "hr://x", "sensitivity": "restricted", "records": 3,
...     "destinations": ["email:eve@evil.example"]})
>>> r = rb.decide(ev, gate=True)
>>> r["severity"], r["action_taken"], r["breaker_state"], r["gate"], r["reasons"][0]["feature"]
('critical', 'freeze', 'open', 'needs_approval', 'restricted_out')
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import deque
from dataclasses import dataclass, field
from typing import Iterable

from detector.events import ActionEvent
from detector.policy import Policy

__all__ = ["RuleBaseline", "Limits", "RULES_VERSION", "main"]

RULES_VERSION = "rules-v1"
_SCORE = {"critical": 0.97, "high": 0.9, "medium": 0.75, "low": 0.6}
_RANK = {"ok": 0, "low": 1, "medium": 2, "high": 3, "critical": 4}


@dataclass(frozen=True)
class Limits:
    bulk_records: int = 1000
    delete_records: int = 20
    delete_burst: int = 20
    fanout: int = 20


@dataclass
class _Agent:
    dests: set = field(default_factory=set)
    tools: set = field(default_factory=set)
    requesters: set = field(default_factory=set)
    deletes: deque = field(default_factory=deque)
    ext: deque = field(default_factory=deque)  # (t, destination) of the last hour
    frozen: bool = False


class RuleBaseline:
    """See the module docstring. ``learn`` the history, then ``decide`` each stream event in order."""

    def __init__(self, policy: Policy | None = None, limits: Limits = Limits()) -> None:
        self.policy = policy or Policy()
        self.limits = limits
        self.agents: dict[str, _Agent] = {}

    def _agent(self, agent_id: str) -> _Agent:
        st = self.agents.get(agent_id)
        if st is None:
            st = self.agents[agent_id] = _Agent()
        return st

    def _remember(self, st: _Agent, ev: ActionEvent) -> None:
        st.dests.update(ev.destinations)
        st.tools.add(ev.tool)
        if ev.requested_by:
            st.requesters.add(ev.requested_by)

    def learn(self, events: Iterable[ActionEvent]) -> "RuleBaseline":
        """Fill the seen-sets from clean history."""
        for ev in events:
            self._remember(self._agent(ev.agent_id), ev)
        return self

    def fired(self, ev: ActionEvent) -> list[tuple[str, str, str]]:
        """``[(rule, severity, detail)]`` for ``ev`` against the current state (changes nothing)."""
        st = self._agent(ev.agent_id)
        lim = self.limits
        classes = [(d, self.policy.classify(d)[0]) for d in ev.destinations]
        out_ext = [d for d, c in classes if c in ("external", "broadcast")]
        bcast = [d for d, c in classes if c == "broadcast"]
        sens = ev.sensitivity
        approved = ev.approval_id is not None
        hits = []
        if not approved:
            if out_ext and sens == "restricted":
                hits.append(("restricted_out", "critical", f"restricted data to {out_ext[0]}"))
            if out_ext and ev.records > lim.bulk_records:
                hits.append(("bulk_out", "critical", f"{ev.records} records to {out_ext[0]}"))
            if bcast and sens in ("confidential", "restricted"):
                hits.append(("sensitive_broadcast", "critical", f"{sens} data to broadcast {bcast[0]}"))
            if ev.action == "delete":
                recent = sum(1 for t in st.deletes if ev.t - t <= 600) + 1
                if ev.records > lim.delete_records or recent > lim.delete_burst:
                    hits.append(("mass_delete", "critical", f"delete of {ev.records} records, {recent} in 10 min"))
            new_ext = [d for d, c in classes if c == "external" and d not in st.dests]
            if new_ext and sens in ("confidential", "restricted"):
                hits.append(("new_external_sensitive", "high", f"{sens} data to never-seen {new_ext[0]}"))
            ext_hour = {d for t, d in st.ext if ev.t - t <= 3600} | {d for d, c in classes if c == "external"}
            if len(ext_hour) > lim.fanout:
                hits.append(("external_fanout", "high", f"{len(ext_hour)} external destinations within 1 h"))
        if ev.requested_by and ev.requested_by not in st.requesters and (
                ev.action in ("send", "delete") or ev.destinations):
            hits.append(("new_requester_outbound", "medium", f"never-seen requester {ev.requested_by}"))
        if ev.tool not in st.tools:
            hits.append(("new_tool", "low", f"never-seen tool {ev.tool}"))
        hits.sort(key=lambda h: -_RANK[h[1]])
        return hits

    def decide(self, ev: ActionEvent, *, gate: bool = False) -> dict:
        """The decision record (contract section 3) for ``ev``; updates the state."""
        st = self._agent(ev.agent_id)
        hits = self.fired(ev)
        severity = hits[0][1] if hits else "ok"
        rec = {"event_id": ev.event_id, "agent_id": ev.agent_id, "ts": ev.ts, "score": _SCORE.get(severity, 0.0),
               "severity": severity,
               "reasons": [{"feature": r, "value": 1.0, "baseline": 0.0, "detail": d} for r, _, d in hits],
               "action_taken": "none", "breaker_state": "open" if st.frozen else "closed",
               "model_version": RULES_VERSION}
        if gate and (ev.destinations or ev.action == "delete"):
            if st.frozen:
                rec["gate"] = "deny"
            elif ev.approval_id is None and _RANK[severity] >= _RANK["high"]:
                rec["gate"] = "needs_approval"
            else:
                rec["gate"] = "allow"
        if not st.frozen:
            if severity == "critical":
                st.frozen = True
                rec["action_taken"], rec["breaker_state"] = "freeze", "open"
            elif _RANK[severity] >= _RANK["medium"]:
                rec["action_taken"] = "alert"
        if ev.action == "delete":
            st.deletes.append(ev.t)
            while st.deletes and ev.t - st.deletes[0] > 600:
                st.deletes.popleft()
        for d in ev.destinations:
            if self.policy.classify(d)[0] == "external":
                st.ext.append((ev.t, d))
        while st.ext and ev.t - st.ext[0][0] > 3600:
            st.ext.popleft()
        self._remember(st, ev)
        return rec


def _read(path: str) -> list[ActionEvent]:
    from streams.cli.replay import open_input, read_events

    fh = open_input(path)
    try:
        return list(read_events(fh))
    finally:
        fh.close()


def main(argv: list[str] | None = None) -> int:
    """``python -m bench.public.rules --history H --input E --out D [--policy P] [--gate]``."""
    from detector.policy import PolicyError, load_policy
    from detector.errors import UsageError

    p = argparse.ArgumentParser(prog="python -m bench.public.rules", description="the rule baseline")
    p.add_argument("--history", metavar="HISTORY.jsonl", help="clean history for the seen-sets")
    p.add_argument("--input", required=True, metavar="EVENTS.jsonl")
    p.add_argument("--out", required=True, metavar="DECISIONS.jsonl")
    p.add_argument("--policy", metavar="P.toml")
    p.add_argument("--gate", action="store_true")
    args = p.parse_args(argv)
    try:
        rb = RuleBaseline(load_policy(args.policy))
        if args.history:
            rb.learn(_read(args.history))
        events = _read(args.input)
    except (PolicyError, UsageError, OSError) as err:  # one line for any unusable input
        print(f"bench.public.rules: error: {err}", file=sys.stderr)
        return 2
    with open(args.out, "w", encoding="utf-8") as fh:
        for ev in events:
            fh.write(json.dumps(rb.decide(ev, gate=args.gate)) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
