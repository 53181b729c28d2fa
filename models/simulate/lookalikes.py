"""Benign look-alikes: activity that looks like an incident but is legitimate, injected so that
an evaluation can count false alarms on it.

* ``approved_export``: a large confidential export read, then a send to an
  external partner carrying an ``approval_id`` (its own task, :func:`approved_export`).
* ``month_end_peak``: a finance bot on the last two business days of a month
  (five times its usual volume); when no month end falls in the incident window
  one business day is staged as a close day for one finance bot.
* ``new_agent``: an agent that starts mid-window with no history, doing its
  role's normal work.
* ``external_email_role``: a support bot whose volume (external replies with
  customer data) ramps up to three times its usual rate over the window.

Only ``approved_export`` is a task of its own; the others are the agent's normal work at
another rate, so :func:`stage_lookalikes` returns rate multipliers and a tag per agent
(which of its normal tasks count as the look-alike) for the simulation's normal queues.
"""
from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

from models.simulate.clock import DAY_MS, from_ms, is_month_end_day, month_of, weekday, working_instant
from models.simulate.profile import AgentProfile
from models.simulate.tasks import FleetView, Placed, TaskBuilder, fit, layout
from models.simulate.world import APPROVED_PARTNERS, MONTH_END_FACTOR, ROLES, hexid

__all__ = ["LOOKALIKE_KINDS", "LOOKALIKE_ROLES", "LookalikePlan", "approved_export", "stage_lookalikes"]

LOOKALIKE_KINDS = ("approved_export", "month_end_peak", "new_agent", "external_email_role")
#: the roles a look-alike is staged on (``new_agent`` takes any role)
LOOKALIKE_ROLES = {
    "approved_export": ("finance_bot", "hr_assistant"),
    "month_end_peak": ("finance_bot",),
    "external_email_role": ("support_bot",),
}


def approved_export(f: FleetView, b: TaskBuilder, ms: int) -> None:
    """A large confidential export read (through a drive file for finance and HR), then one send
    to an approved partner carrying an ``approval_id``: data out, to a stranger, but signed off."""
    rng, agent = b.rng, b.agent
    role = agent.role
    dest = rng.choice(APPROVED_PARTNERS).format(yyyymm=f"{from_ms(ms):%Y%m}")
    if role == "finance_bot":
        n = rng.randint(8000, 40000)
        r = b.add("erp.query", "read", f"erp://ledger/{month_of(ms)}", "confidential", n, n * 700)
    elif role == "hr_assistant":
        n = rng.randint(2000, 5000)
        r = b.add("hr_db.query", "read", "hr://personnel/records?fields=payroll", "confidential", n, n * 1500)
    elif role == "support_bot":
        n = rng.randint(5000, 30000)
        r = b.add("tickets.search", "read", f"tickets://{agent.habits['queue'][0]}/export?month={month_of(ms)}",
                  "confidential", n, n * 2000)
    elif role == "coding_agent":
        n = rng.randint(1000, 8000)
        r = b.add("repo.read_file", "read", "repo://corp/reporting/exports/usage.csv", "confidential", n, n * 500)
    else:
        n = rng.randint(1000, 8000)
        r = b.add("mail.list_inbox", "read", f"mail://mailbox/{agent.habits['principal'][0]}/archive",
                  "confidential", n, n * 500)
    if role in ("finance_bot", "hr_assistant"):
        r = b.add("drive.write", "write", f"drive://file/export-{hexid(rng, 24)}", "confidential", n, n * 400,
                  ["file:drive://folder/exports"], parent=r)
    approval = f"APR-{from_ms(ms):%Y}-{rng.randint(10000, 99999)}"
    tool = "sftp.upload" if dest.startswith("sftp:") else "email.send"
    b.add(tool, "send", dest, "confidential", n, n * 400, [dest], parent=r, approval_id=approval)


@dataclass
class LookalikePlan:
    """The look-alikes of one simulation, as the normal queues need them."""

    #: tasks of their own (an approved export), already placed in the window
    overlay: list[Placed] = field(default_factory=list)
    #: agent id -> factor on its normal task rate at an instant (a month-end close, a ramp)
    multipliers: dict[str, Callable[[int], float]] = field(default_factory=dict)
    #: agent id -> whether its normal task starting at an instant belongs to its look-alike
    tagger: dict[str, Callable[[int], bool]] = field(default_factory=dict)
    #: agent id -> the instant it starts working (a new agent)
    active_from: dict[str, int] = field(default_factory=dict)
    #: ``{"kind", "agent"}`` per look-alike, in the labels' order (a ``("lookalike", i)`` tag indexes it)
    meta: list[dict] = field(default_factory=list)


def stage_lookalikes(fleet: FleetView, choose: Callable[..., AgentProfile | None], lo: int, hi: int, seed: int,
                     hashes: dict[str, list[tuple[int, str]]]) -> LookalikePlan:
    """One look-alike of each kind in the incident window ``[lo, hi)`` (epoch ms) of ``fleet``.

    ``choose(roles, strict=False)`` picks an agent (the simulation's, shared with the
    incidents so that one agent carries one story where the fleet allows); a kind with no
    agent of its roles (``strict``) is left out. The new agent is added to ``fleet`` and its
    configuration to ``hashes``. Draws from its own seeded streams, in a fixed order.
    """
    plan = LookalikePlan()
    lrng = random.Random(f"flowbreaker-sim/{seed}/lookalikes")
    a = choose(LOOKALIKE_ROLES["approved_export"])
    if a is not None:
        at = working_instant(a, lo, hi, lrng)
        task = fleet.lookalike_task("approved_export", a, from_ms(at), lrng)
        placed = Placed(at, layout(task, lrng), task, ("lookalike", len(plan.meta)))
        fit(placed, lo, hi)
        plan.overlay.append(placed)
        plan.meta.append({"kind": "approved_export", "agent": a})
    a = choose(LOOKALIKE_ROLES["month_end_peak"], strict=True)
    if a is not None:
        off = a.tz_offset_minutes * 60_000
        local_days = range((lo + off) // DAY_MS, (hi - 1 + off) // DAY_MS + 1)
        peak = {d for d in local_days if weekday(d) < 5 and is_month_end_day(d)}
        if not peak:
            weekdays = [d for d in local_days if weekday(d) < 5] or list(local_days)
            staged = weekdays[-1]
            peak = {staged}
            plan.multipliers[a.agent_id] = (
                lambda ms, off=off, staged=staged:
                MONTH_END_FACTOR if ms >= lo and (ms + off) // DAY_MS == staged else 1.0)
        plan.tagger[a.agent_id] = lambda ms, off=off, peak=frozenset(peak): (ms + off) // DAY_MS in peak and ms >= lo
        plan.meta.append({"kind": "month_end_peak", "agent": a})
    a = choose(LOOKALIKE_ROLES["external_email_role"], strict=True)
    if a is not None:
        span = hi - lo
        plan.multipliers[a.agent_id] = lambda ms: 1.0 + 2.0 * max(0, ms - lo) / span if ms >= lo else 1.0
        plan.tagger[a.agent_id] = lambda ms: ms >= lo
        plan.meta.append({"kind": "external_email_role", "agent": a})
    nrng = random.Random(f"flowbreaker-sim/{seed}/new-agent")
    new = fleet.add_agent(role=nrng.choice(ROLES), rng=nrng)
    first_day_end = min(hi, lo + 2 * DAY_MS)
    plan.active_from[new.agent_id] = working_instant(new, lo, first_day_end, nrng, (8, 12))
    hashes[new.agent_id] = [(lo, new.instruction_hash)]
    plan.tagger[new.agent_id] = lambda ms: True
    plan.meta.append({"kind": "new_agent", "agent": new})
    return plan
