"""Drill agents: the designated agents ``flowbreaker drill`` plays a synthetic incident as.

A drill rehearses a freeze on a live deployment, so its events go through the
real pipeline; they must never count as a real agent's behaviour. They are
marked by the agent id: every agent whose id starts with :data:`DRILL_PREFIX`
is a drill agent (events also carry ``"drill": true``, an extra field the
contract keeps and ignores, for people reading the topic). The mark survives
everything that only sees ``agent_id``: decoding, the engine, metrics,
training, the API. What honours it:

- ``flowbreaker train`` leaves drill agents' events out (no baseline, no peer
  prior, no calibration row comes from a drill);
- the worker's metrics count drill agents' decisions, freezes and frozen state
  apart (``flowbreaker_drill_*``), never in the SOC's incident counts or the
  ``AgentFrozen`` alert;
- a drill agent has its own per-agent state, like any agent, so no real agent's
  baseline sees its events.

>>> is_drill("flowbreaker-drill-1"), is_drill("support-agent-003")
(True, False)
"""

from __future__ import annotations

__all__ = ["DRILL_PREFIX", "DEFAULT_DRILL_AGENT", "is_drill"]

DRILL_PREFIX = "flowbreaker-drill-"
DEFAULT_DRILL_AGENT = DRILL_PREFIX + "1"


def is_drill(agent_id: str) -> bool:
    """Is ``agent_id`` a drill agent (its events are a rehearsal, not behaviour)?"""
    return agent_id.startswith(DRILL_PREFIX)
