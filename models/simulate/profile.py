"""Who works in the simulated organisation, as data: an operator (a team and its time zone) and an
agent's profile (role, zone, instruction hash, habits, activity).

The bottom floor of the simulator with :mod:`.clock` and :mod:`.world`: it imports nothing of
the package, so the clock's working hours and the task scripts can both name an agent.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = ["Operator", "AgentProfile"]


@dataclass(frozen=True, slots=True)
class Operator:
    """A team accountable for some agents: time zone and people."""

    operator_id: str
    tz_offset_minutes: int
    zulu: bool
    members: tuple[str, ...]


@dataclass(frozen=True)
class AgentProfile:
    """One agent of the fleet.

    ``habits`` holds the role's stable working set (repos, payees, contacts,
    channels ...) as tuples; ``activity`` scales the role's task rate;
    ``zulu`` renders offset 0 as ``Z`` rather than ``+00:00``.
    """

    agent_id: str
    operator_id: str
    role: str
    tz_offset_minutes: int
    instruction_hash: str
    zulu: bool = True
    activity: float = 1.0
    always_on: bool = False
    nightly: bool = False
    habits: Mapping[str, tuple] = field(default_factory=dict, hash=False)
