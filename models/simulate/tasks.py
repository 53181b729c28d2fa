"""What an agent does, as data: tasks and their steps; how a task becomes contract events at an
instant; and :class:`FleetView`, what a task script may ask of the fleet.

A :class:`Task` is a unit of an agent's queue: ordered :class:`Step` objects sharing one
``task_id``, each carrying the event's fields except ``event_id`` and ``ts`` and the think
time before it. :func:`task_events` lays a task out in time (step delays plus up to
250 ms of tool latency jitter) and renders it as events, which is how a live runtime
turns a task into traffic; the simulation places many tasks (:class:`Placed`, :func:`fit`)
and renders them together.
"""
from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from models.simulate.clock import format_ts, to_ms
from models.simulate.profile import AgentProfile

__all__ = ["FleetView", "Step", "Task", "TaskBuilder", "Placed", "layout", "fit", "render",
           "task_events"]


@dataclass(frozen=True, slots=True)
class Step:
    """One action of a task: the event's fields except ``event_id`` and ``ts``.

    ``parent`` is the index, in the same task, of the step whose data this one
    carries on (it becomes ``parent_event_id``); ``delay_s`` is the time since the
    previous step (since the task start for the first); ``harmful`` marks an
    incident's damaging actions.
    """

    agent_id: str
    operator_id: str
    task_id: str
    instruction_hash: str
    tool: str
    action: str
    resource: str
    sensitivity: str
    records: int = 0
    bytes: int = 0
    destinations: tuple[str, ...] = ()
    requested_by: str | None = None
    approval_id: str | None = None
    parent: int | None = None
    delay_s: float = 0.0
    harmful: bool = False


@dataclass(frozen=True, slots=True)
class Task:
    """A unit of an agent's queue: ordered steps sharing one ``task_id``.

    ``kind`` names the template (``hr.employee_question``, an incident kind, a
    look-alike kind). ``utc_offset_minutes``/``zulu`` say how its timestamps are
    rendered (the operator's zone).
    """

    task_id: str
    agent_id: str
    kind: str
    steps: tuple[Step, ...]
    utc_offset_minutes: int = 0
    zulu: bool = True

    @property
    def harmful(self) -> bool:
        return any(s.harmful for s in self.steps)


class TaskBuilder:
    """Collects the steps of one task; ``add`` returns the new step's index.

    The role scripts (:mod:`.roles`), incident builders (:mod:`.incidents`) and look-alike
    builders (:mod:`.lookalikes`) fill one with ``add``; ``task(kind)`` freezes it. ``add``
    draws the think time before a step from ``rng`` unless ``delay`` is given, so the
    order of ``add`` calls is part of a seed's output.
    """

    __slots__ = ("agent", "task_id", "ihash", "requested_by", "rng", "steps")

    def __init__(self, agent: AgentProfile, task_id: str, rng: random.Random,
                 requested_by: str | None = None, instruction_hash: str | None = None) -> None:
        self.agent = agent
        self.task_id = task_id
        self.ihash = instruction_hash or agent.instruction_hash
        self.requested_by = requested_by
        self.rng = rng
        self.steps: list[Step] = []

    def add(self, tool: str, action: str, resource: str, sensitivity: str, records: int = 0,
            nbytes: int = 0, dests: Sequence[str] = (), *, parent: int | None = None,
            delay: float | None = None, approval_id: str | None = None,
            harmful: bool = False) -> int:
        if delay is None:
            # Model think time between tool calls; the first call starts the task.
            delay = 0.0 if not self.steps else self.rng.uniform(1.5, 14.0)
        self.steps.append(Step(
            agent_id=self.agent.agent_id,
            operator_id=self.agent.operator_id,
            task_id=self.task_id,
            instruction_hash=self.ihash,
            tool=tool,
            action=action,
            resource=resource,
            sensitivity=sensitivity,
            records=int(records),
            bytes=int(nbytes),
            destinations=tuple(dests),
            requested_by=self.requested_by,
            approval_id=approval_id,
            parent=parent,
            delay_s=float(delay),
            harmful=harmful,
        ))
        return len(self.steps) - 1

    def task(self, kind: str) -> Task:
        return Task(self.task_id, self.agent.agent_id, kind, tuple(self.steps),
                    self.agent.tz_offset_minutes, self.agent.zulu)


# --------------------------------------------------------------------------- placing in time


def layout(task: Task, rng: random.Random) -> list[int]:
    """Millisecond offsets of the steps from the task start, strictly increasing."""
    offsets: list[int] = []
    t = 0
    for i, s in enumerate(task.steps):
        d = round(s.delay_s * 1000)
        if i:
            d = max(1, d) + rng.randint(0, 250)  # tool latency jitter
        t += d
        offsets.append(t)
    return offsets


def render(task: Task, offsets: Sequence[int], start_ms: int, id_prefix: str) -> list[dict]:
    """The contract events (section 1) of ``task`` with its steps at ``start_ms + offsets``;
    the keys in the contract's order, optional ones only when set."""
    ids = [f"{id_prefix}{task.task_id}.{i}" for i in range(len(task.steps))]
    events = []
    for i, (s, off) in enumerate(zip(task.steps, offsets)):
        ev: dict = {
            "schema_version": 1,
            "event_id": ids[i],
            "ts": format_ts(start_ms + off, task.utc_offset_minutes, task.zulu),
            "agent_id": s.agent_id,
            "operator_id": s.operator_id,
        }
        if s.requested_by:
            ev["requested_by"] = s.requested_by
        ev["task_id"] = s.task_id
        ev["instruction_hash"] = s.instruction_hash
        ev["tool"] = s.tool
        ev["action"] = s.action
        ev["resource"] = s.resource
        ev["sensitivity"] = s.sensitivity
        ev["records"] = s.records
        ev["bytes"] = s.bytes
        ev["destinations"] = list(s.destinations)
        if s.approval_id:
            ev["approval_id"] = s.approval_id
        if s.parent is not None:
            ev["parent_event_id"] = ids[s.parent]
        events.append(ev)
    return events


def task_events(task: Task, start: datetime, rng: random.Random, id_prefix: str = "ev-") -> list[dict]:
    """The contract events of ``task`` when it starts at ``start``.

    Event ids are ``<id_prefix><task_id>.<step>`` (unique as long as task ids
    are); timestamps follow the steps' delays plus up to 250 ms of jitter drawn
    from ``rng``, rendered in the task's zone. A step's ``parent`` becomes the
    ``parent_event_id`` of the earlier event.

    >>> from models.simulate import DEFAULT_START, Fleet
    >>> fleet = Fleet.make(n_agents=5, seed=0)
    >>> agent = next(a for a in fleet.agents if a.role == "finance_bot")
    >>> rng = random.Random(1)
    >>> task = fleet.normal_task(agent, DEFAULT_START, rng, kind="fin.pay_invoice")
    >>> evs = task_events(task, DEFAULT_START, rng)
    >>> evs[-1]["action"], evs[-1]["parent_event_id"] == evs[-2]["event_id"]
    ('send', True)
    """
    return render(task, layout(task, rng), to_ms(start), id_prefix)


@dataclass
class Placed:
    """A task put on the timeline: its first step at ``start_ms``, step ``i`` at
    ``start_ms + offsets[i]``; ``tag`` says which incident or look-alike it belongs to."""

    start_ms: int
    offsets: list[int]
    task: Task
    tag: tuple[str, int] | None = None  # ("incident", index) or ("lookalike", index)


def fit(placed: Placed, lo: int, hi: int) -> None:
    """Move (or compress) a placed task so that it lies inside [lo, hi)."""
    dur = placed.offsets[-1]
    if placed.start_ms + dur >= hi:
        placed.start_ms = max(lo, hi - dur - 60_000)
    if placed.start_ms + dur >= hi:
        room = max(len(placed.offsets), hi - placed.start_ms - 1000)
        scaled, prev = [], -1
        for o in placed.offsets:
            v = max(prev + 1, o * room // max(1, dur))
            scaled.append(v)
            prev = v
        placed.offsets = scaled


class FleetView(Protocol):
    """What the task scripts (:mod:`.roles`, :mod:`.incidents`, :mod:`.lookalikes`) and the staging of
    incidents and look-alikes use of the fleet. :class:`models.simulate.fleet.Fleet` is the one
    implementation; naming it here keeps the scripts below the fleet, which calls them."""

    people: tuple[str, ...]
    vendors: Mapping[str, str]

    def add_agent(self, *, role: str, rng: random.Random, operator_id: str | None = None) -> AgentProfile: ...

    def normal_task(self, agent: AgentProfile, at: datetime, rng: random.Random, *,
                    kind: str | None = None) -> Task: ...

    def incident_task(self, kind: str, agent: AgentProfile, at: datetime, rng: random.Random) -> Task: ...

    def lookalike_task(self, kind: str, agent: AgentProfile, at: datetime, rng: random.Random) -> Task: ...

    def email(self, person: str) -> str: ...

    def customer(self, rng: random.Random, agent: AgentProfile) -> tuple[str, str]: ...

    def payment_dests(self, payee: str) -> tuple[str, str]: ...
