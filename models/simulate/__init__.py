"""Synthetic fleet simulator: seeded agent action events with labelled incidents.

Behind ``flowbreaker simulate`` (its command line is ``streams/cli/simulate.py``). It
writes a fleet's action events (docs/contract.md, section 1) and a labels file, so the
detector can be trained on a clean history, replayed on a later stretch with injected
incidents and benign look-alikes, and scored against the labels. The same pieces
(``Fleet.normal_task``, ``Fleet.incident_task``, ``task_events``) let a live runtime
generate traffic task by task.

The modules, from the bottom up:

* :mod:`.clock`: epoch milliseconds, RFC 3339 text in an operator's zone, weekdays,
  month ends, an agent's working hours;
* :mod:`.world`: the organisation's vocabulary (domain, roles and their tools, activity
  by hour, pools of names, vendors and outside domains) and random identifiers;
* :mod:`.profile`: operators and agents as data;
* :mod:`.tasks`: tasks and steps as data; a task as contract events; what a task script
  may ask of the fleet (:class:`~models.simulate.tasks.FleetView`);
* :mod:`.roles`: the everyday work of each role (about 30 task scripts);
* :mod:`.incidents`: the 7 incident kinds, which events are harmful, where they go;
* :mod:`.lookalikes`: the 4 benign look-alikes (approved export, month-end peak, new
  agent, a support bot's ramp);
* :mod:`.fleet`: :class:`Fleet`, the organisation as an object (agents, pacing, one task);
* :mod:`.timeline`: :func:`simulate`, the fleet over days with the labels, and
  :func:`split_history`.

Example:

>>> events, labels = simulate(n_agents=5, days=1, seed=3, incidents=["mass_delete"])
>>> labels["format"], [i["kind"] for i in labels["incidents"]]
('flowbreaker-labels/1', ['mass_delete'])
>>> first = labels["incidents"][0]["first_harmful_event_id"]
>>> next(e["action"] for e in events if e["event_id"] == first)
'delete'

The output for a seed is part of the project's results (benchmarks and the README quote
figures on ``seed 0``): a change to any module here that draws a random number in
another order changes every simulated fleet.
"""
from __future__ import annotations

from models.simulate.clock import DEFAULT_START, format_ts
from models.simulate.fleet import Fleet
from models.simulate.incidents import INCIDENT_KINDS
from models.simulate.lookalikes import LOOKALIKE_KINDS
from models.simulate.profile import AgentProfile, Operator
from models.simulate.tasks import Step, Task, task_events
from models.simulate.timeline import LABELS_FORMAT, simulate, split_history
from models.simulate.world import BROADCAST_EMAIL, BROADCAST_SLACK, DOMAIN, ROLE_TOOLS, ROLES

__all__ = [
    "ROLES",
    "INCIDENT_KINDS",
    "LOOKALIKE_KINDS",
    "LABELS_FORMAT",
    "ROLE_TOOLS",
    "DOMAIN",
    "BROADCAST_SLACK",
    "BROADCAST_EMAIL",
    "DEFAULT_START",
    "AgentProfile",
    "Operator",
    "Step",
    "Task",
    "Fleet",
    "task_events",
    "format_ts",
    "simulate",
    "split_history",
]
