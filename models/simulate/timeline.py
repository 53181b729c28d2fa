"""The simulation: a fleet over days, with incidents and look-alikes in a window at the end,
as contract events in time order and a labels file.

Timeline
--------
Days ``[0, incident_days_from)`` are clean: no incident and no look-alike starts
there, and no task crosses the boundary, so the events before it are a training
history (``--history-out``). Incidents and look-alikes start in
``[incident_days_from, days)``, during their agent's working hours, preferring
weekdays. Nothing happens at or after ``start + days``. Every agent works one
task at a time: arrivals follow its rate by hour (:meth:`Fleet.task_rate
<models.simulate.fleet.Fleet.task_rate>`), scheduled runs come at their hour, and a
task waits for the previous one. Incident tasks run beside the queue.

Labels file (JSON)
------------------
::

    {"format": "flowbreaker-labels/1", "seed": 0, "start": "2026-03-02T00:00:00.000Z",
     "days": 7, "clean_days": 4, "history_end": "2026-03-06T00:00:00.000Z",
     "agents": [{"agent_id", "operator_id", "role"}, ...],
     "incidents": [{"incident_id", "kind", "agent_id", "operator_id", "task_ids",
                    "start_ts", "end_ts", "event_ids", "harmful_event_ids",
                    "first_harmful_event_id", "first_harmful_ts"}, ...],
     "lookalikes": [{"kind", "agent_id", "event_ids"}, ...]}

Timestamps in the labels are UTC (``Z``); ``event_ids`` are in time order.
``history_end`` is the instant the incident window opens (``split_history``
cuts there). ``agents`` includes the ``new_agent`` look-alike. Events not listed
in any incident are benign; look-alike events are benign too, listed so that an
evaluation can count false alarms on them. What is harmful per incident kind:
:mod:`models.simulate.incidents`.

Every random draw comes from a stream seeded by ``seed`` and what it is for (the
plan, an agent's arrivals, an incident), so the output is a pure function of the
arguments and the history does not depend on the incidents or look-alikes asked for.
"""
from __future__ import annotations

import dataclasses
import random
from collections.abc import Mapping, Sequence
from datetime import datetime

from detector.timestamps import instant
from models.simulate.clock import DAY_MS, DEFAULT_START, HOUR_MS, format_ts, from_ms, to_ms, weekday, working_instant
from models.simulate.fleet import Fleet
from models.simulate.incidents import INCIDENT_KINDS, stage_incidents
from models.simulate.lookalikes import LookalikePlan, stage_lookalikes
from models.simulate.profile import AgentProfile
from models.simulate.tasks import Placed, layout, render
from models.simulate.world import new_instruction_hash

__all__ = ["LABELS_FORMAT", "simulate", "split_history"]

LABELS_FORMAT = "flowbreaker-labels/1"


def _parse_incidents(incidents: Sequence[str] | None) -> list[str]:
    if incidents is None:
        return list(INCIDENT_KINDS)
    kinds = list(incidents)
    for k in kinds:
        if k not in INCIDENT_KINDS:
            raise ValueError(f"unknown incident kind {k!r}; known: {', '.join(INCIDENT_KINDS)}")
    return kinds


def simulate(*, n_agents: int = 40, days: int = 7, seed: int = 0, start: datetime = DEFAULT_START,
             incidents: Sequence[str] | None = None, incident_days_from: int | None = None,
             lookalikes: bool = True) -> tuple[list[dict], dict]:
    """Events of a fleet over ``days`` days, with incidents and look-alikes; and labels.

    ``incidents``: kinds to inject once each (repeat a kind to inject it more
    often); None = every kind, [] = none. ``incident_days_from``: number of
    clean days before the incident window (default 70 % of ``days``, rounded
    down). Events are sorted by instant (ties by event id). The result is a
    pure function of the arguments; the history part (before the window) does
    not depend on ``incidents`` or ``lookalikes``.

    Raises ``ValueError`` on an unknown incident kind, ``days <= 0``,
    ``n_agents <= 0`` or an ``incident_days_from`` that leaves no window for the
    requested incidents.
    """
    kinds = _parse_incidents(incidents)
    if days <= 0:
        raise ValueError(f"days must be > 0, got {days}")
    if n_agents < 1:
        raise ValueError(f"agents must be >= 1, got {n_agents}")
    clean = days * 7 // 10 if incident_days_from is None else incident_days_from
    if not 0 <= clean <= days or (clean == days and kinds):
        raise ValueError(f"clean days must be in [0, {days - 1}] to leave room for incidents, got {clean}")
    start_ms = to_ms(start)
    end_ms = start_ms + days * DAY_MS
    lo = start_ms + clean * DAY_MS
    has_window = lo < end_ms

    fleet = Fleet.make(n_agents=n_agents, seed=seed)
    base_agents = list(fleet.agents)
    plan = random.Random(f"flowbreaker-sim/{seed}/plan")
    prefix = "ev-"

    # Benign configuration updates, drawn per agent so they do not depend on the plan.
    hashes: dict[str, list[tuple[int, str]]] = {}
    for a in base_agents:
        crng = random.Random(f"flowbreaker-sim/{seed}/config/{a.agent_id}")
        hashes[a.agent_id] = [(start_ms, a.instruction_hash)]
        if crng.random() < 0.1:
            hashes[a.agent_id].append((working_instant(a, start_ms, end_ms, crng), new_instruction_hash(crng)))

    used: set[str] = set()

    def choose(roles: Sequence[str], strict: bool = False) -> AgentProfile | None:
        for pool in (
            [a for a in base_agents if a.role in roles and a.agent_id not in used],
            [] if strict else [a for a in base_agents if a.agent_id not in used],
            [a for a in base_agents if a.role in roles] if strict else list(base_agents),
        ):
            if pool:
                a = plan.choice(pool)
                used.add(a.agent_id)
                return a
        return None

    overlay, incident_meta = stage_incidents(fleet, kinds, choose, lo, end_ms, seed, hashes)

    # Look-alikes: an approved export of its own, and rates and tags for the ones that are
    # "more of the normal work" (a month-end close, a ramp, a new agent).
    looks = stage_lookalikes(fleet, choose, lo, end_ms, seed, hashes) if lookalikes and has_window else LookalikePlan()
    overlay += looks.overlay
    multipliers, tagger, active_from, lookalike_meta = looks.multipliers, looks.tagger, looks.active_from, looks.meta

    # Normal work, one sequential queue per agent.
    placed_all: list[Placed] = list(overlay)
    tag_of_agent = {m["agent"].agent_id: i for i, m in enumerate(lookalike_meta) if m["kind"] != "approved_export"}
    for agent in fleet.agents:
        # Separate streams so that what happens in the window never shifts the history.
        arng = random.Random(f"flowbreaker-sim/{seed}/arrivals/{agent.agent_id}")
        srng = random.Random(f"flowbreaker-sim/{seed}/scheduled/{agent.agent_id}")
        trng = random.Random(f"flowbreaker-sim/{seed}/tasks/{agent.agent_id}")
        begin = active_from.get(agent.agent_id, start_ms)
        mult = multipliers.get(agent.agent_id)
        arrivals: list[tuple[int, str | None]] = []
        h0 = begin - (begin - start_ms) % HOUR_MS
        for h in range(h0, end_ms, HOUR_MS):
            rate = fleet.task_rate_ms(agent, h)
            if mult is not None:
                rate *= mult(h)
            if rate <= 0:
                continue
            t = h + arng.expovariate(rate) * HOUR_MS
            while t < h + HOUR_MS:
                if t >= begin:
                    arrivals.append((int(t), None))
                t += arng.expovariate(rate) * HOUR_MS
        off = agent.tz_offset_minutes * 60_000
        for d in range((begin + off) // DAY_MS, (end_ms + off) // DAY_MS + 1):
            if agent.nightly:
                t = d * DAY_MS + 2 * HOUR_MS + srng.randint(0, 900_000) - off
                if begin <= t < end_ms:
                    arrivals.append((t, "code.dependency_update"))
            if agent.role == "finance_bot" and weekday(d) < 5:
                t = d * DAY_MS + 16 * HOUR_MS + srng.randint(0, 600_000) - off
                if begin <= t < end_ms:
                    arrivals.append((t, "fin.payment_run"))
        arrivals.sort(key=lambda x: (x[0], x[1] or ""))
        timeline = hashes.get(agent.agent_id, [(start_ms, agent.instruction_hash)])
        busy = -1
        tag_fn = tagger.get(agent.agent_id)
        for t, kind in arrivals:
            s = max(t, busy + 2000)
            ihash = timeline[0][1]
            for since, hsh in timeline:
                if since <= s:
                    ihash = hsh
            prof = agent if ihash == agent.instruction_hash else dataclasses.replace(agent, instruction_hash=ihash)
            task = fleet.normal_task(prof, from_ms(s), trng, kind=kind)
            offsets = layout(task, trng)
            if s < lo <= s + offsets[-1]:
                s = lo  # keep every task on one side of the history boundary
            if s + offsets[-1] >= end_ms:
                continue
            tag = ("lookalike", tag_of_agent[agent.agent_id]) if tag_fn is not None and tag_fn(s) else None
            placed_all.append(Placed(s, offsets, task, tag))
            busy = s + offsets[-1]

    # Task ids are 64 random bits; make a collision impossible rather than unlikely.
    seen: set[str] = set()
    for p in placed_all:
        if p.task.task_id in seen:
            raise RuntimeError(f"task id collision {p.task.task_id}")  # pragma: no cover
        seen.add(p.task.task_id)

    rows: list[tuple[int, str, dict, Placed, int]] = []
    for p in placed_all:
        for i, ev in enumerate(render(p.task, p.offsets, p.start_ms, prefix)):
            rows.append((p.start_ms + p.offsets[i], ev["event_id"], ev, p, i))
    rows.sort(key=lambda r: (r[0], r[1]))
    events = [r[2] for r in rows]

    inc_events: dict[int, list[tuple[int, str, bool]]] = {}
    look_events: dict[int, list[str]] = {}
    for t, eid, _, p, i in rows:
        if p.tag is None:
            continue
        kind, idx = p.tag
        if kind == "incident":
            inc_events.setdefault(idx, []).append((t, eid, p.task.steps[i].harmful))
        else:
            look_events.setdefault(idx, []).append(eid)

    def z(ms: int) -> str:
        return format_ts(ms, 0, True)

    labels_incidents = []
    for idx, meta in enumerate(incident_meta):
        evs = inc_events[idx]
        harmful = [e for e in evs if e[2]]
        labels_incidents.append({
            "incident_id": f"inc-{idx + 1:03d}",
            "kind": meta["kind"],
            "agent_id": meta["agent"].agent_id,
            "operator_id": meta["agent"].operator_id,
            "task_ids": meta["tasks"],
            "start_ts": z(evs[0][0]),
            "end_ts": z(evs[-1][0]),
            "event_ids": [e[1] for e in evs],
            "harmful_event_ids": [e[1] for e in harmful],
            "first_harmful_event_id": harmful[0][1],
            "first_harmful_ts": z(harmful[0][0]),
        })
    labels = {
        "format": LABELS_FORMAT,
        "seed": seed,
        "start": z(start_ms),
        "days": days,
        "clean_days": clean,
        "history_end": z(lo),
        "agents": [{"agent_id": a.agent_id, "operator_id": a.operator_id, "role": a.role} for a in fleet.agents],
        "incidents": labels_incidents,
        "lookalikes": [
            {"kind": m["kind"], "agent_id": m["agent"].agent_id, "event_ids": look_events.get(i, [])}
            for i, m in enumerate(lookalike_meta)
        ],
    }
    return events, labels


def split_history(events: Sequence[dict], labels: Mapping) -> tuple[list[dict], list[dict]]:
    """Split ``simulate``'s events at ``labels["history_end"]``: (history, rest)."""
    cut = instant(labels["history_end"])
    history, rest = [], []
    for ev in events:
        (history if instant(ev["ts"]) < cut else rest).append(ev)
    return history, rest
