"""The simulated organisation as an object: its operators and agents, how busy each agent is
at an instant, and one task of its normal work, of an incident or of a look-alike.

:class:`Fleet` is what a live runtime needs (``flowbreaker runtime`` paces
``normal_task`` with ``task_rate``); the simulation over days (:mod:`.timeline`) is
built on it. About one operator (team) per five agents, every operator with a time zone;
about one agent in ten gets a benign configuration update (a new ``instruction_hash``,
the same behaviour) at some point of a simulation.
"""
from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from models.simulate.clock import DAY_MS, HOUR_MS, is_month_end_day, to_ms, weekday
from models.simulate.incidents import BUILDERS, INCIDENT_KINDS
from models.simulate.lookalikes import LOOKALIKE_KINDS, approved_export
from models.simulate.roles import TEMPLATES
from models.simulate.profile import AgentProfile, Operator
from models.simulate.tasks import Task, TaskBuilder
from models.simulate.world import (ALWAYS_ON_FLOOR, CUSTOMER_DOMAINS, DOMAIN, FIRST_NAMES, HOUR_WEIGHT, LAST_NAMES,
                                   MONTH_END_FACTOR, OPERATOR_ZONES, PARTNER_DOMAINS, REPOS, ROLE_RATE, ROLE_SHORT,
                                   ROLE_WEIGHTS, ROLES, TEAMS, VENDORS, WEEKEND_FACTOR, WEEKEND_FACTOR_ALWAYS_ON,
                                   hexid, new_instruction_hash, random_iban, slug_person)

__all__ = ["Fleet"]


@dataclass
class Fleet:
    """The simulated organisation: operators, agents and the shared world.

    Build it with ``Fleet.make``; it is deterministic in ``seed``. Task
    generators take the caller's ``random.Random`` so a caller controls the
    stream (one per agent keeps agents independent of each other).

    >>> fleet = Fleet.make(n_agents=5, seed=1)
    >>> sorted(a.role for a in fleet.agents) == sorted(ROLES)
    True
    >>> from datetime import timedelta
    >>> from models.simulate.clock import DEFAULT_START
    >>> rng = random.Random(0)
    >>> task = fleet.normal_task(fleet.agents[0], DEFAULT_START + timedelta(hours=10), rng)
    >>> 2 <= len(task.steps) <= 12 and not task.harmful
    True
    """

    seed: int
    operators: list[Operator]
    agents: list[AgentProfile]
    people: tuple[str, ...]
    vendors: Mapping[str, str]  # payee slug -> IBAN

    # ------------------------------------------------------------- construction

    @classmethod
    def make(cls, *, n_agents: int, seed: int) -> Fleet:
        """A fleet of ``n_agents`` agents over about ``n_agents / 5`` operators.

        Every role is present when ``n_agents >= 5``. Raises ``ValueError`` when
        ``n_agents < 1``.
        """
        if n_agents < 1:
            raise ValueError(f"n_agents must be >= 1, got {n_agents}")
        rng = random.Random(f"flowbreaker-fleet/{seed}")
        people = cls._make_people(rng, 420)
        vendors = {v: random_iban(rng) for v in VENDORS}
        n_ops = max(1, round(n_agents / 5))
        operators = []
        pool = list(people)
        for i in range(n_ops):
            team = TEAMS[i % len(TEAMS)] + ("" if i < len(TEAMS) else f"-{i // len(TEAMS) + 1}")
            tz, zulu = OPERATOR_ZONES[i % len(OPERATOR_ZONES)]
            members = tuple(rng.sample(pool, rng.randint(8, 18)))
            operators.append(Operator(f"team-{team}", tz, zulu, members))
        roles = list(ROLES[:min(n_agents, len(ROLES))])
        names, weights = zip(*ROLE_WEIGHTS.items())
        roles += rng.choices(names, weights=weights, k=n_agents - len(roles))
        rng.shuffle(roles)
        fleet = cls(seed=seed, operators=operators, agents=[], people=people, vendors=vendors)
        counters: dict[str, int] = {}
        for i, role in enumerate(roles):
            op = operators[i % n_ops] if i < n_ops else rng.choice(operators)
            fleet._append_agent(role, op, rng, counters)
        return fleet

    @staticmethod
    def _make_people(rng: random.Random, n: int) -> tuple[str, ...]:
        seen: set[str] = set()
        while len(seen) < n:
            name = slug_person(rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES))
            if name in seen:
                name = f"{name}{rng.randint(2, 9)}"
            seen.add(name)
        return tuple(sorted(seen))

    def _append_agent(self, role: str, op: Operator, rng: random.Random,
                      counters: dict[str, int] | None = None) -> AgentProfile:
        if counters is None:
            counters = {}
            for a in self.agents:
                counters[a.role] = counters.get(a.role, 0) + 1
        counters[role] = counters.get(role, 0) + 1
        agent_id = f"{ROLE_SHORT[role]}-agent-{counters[role]:03d}"
        while any(a.agent_id == agent_id for a in self.agents):
            counters[role] += 1
            agent_id = f"{ROLE_SHORT[role]}-agent-{counters[role]:03d}"
        habits = self._habits(role, op, rng)
        agent = AgentProfile(
            agent_id=agent_id,
            operator_id=op.operator_id,
            role=role,
            tz_offset_minutes=op.tz_offset_minutes,
            instruction_hash=new_instruction_hash(rng),
            zulu=op.zulu,
            activity=round(rng.uniform(0.6, 1.5), 3),
            always_on=role == "support_bot",
            nightly=role == "coding_agent" and rng.random() < 0.5,
            habits=habits,
        )
        self.agents.append(agent)
        return agent

    def _habits(self, role: str, op: Operator, rng: random.Random) -> dict[str, tuple]:
        team_channel = f"slack:#{op.operator_id.removeprefix('team-')}"
        h: dict[str, tuple] = {"team": op.members, "team_channel": (team_channel,)}
        if role == "hr_assistant":
            h["managers"] = tuple(rng.sample(self.people, rng.randint(8, 16)))
            h["channels"] = ("slack:#hr-ops", team_channel)
        elif role == "coding_agent":
            h["repos"] = tuple(rng.sample(REPOS, rng.randint(2, 5)))
            h["channels"] = ("slack:#eng-ci", team_channel)
        elif role == "finance_bot":
            h["payees"] = tuple(rng.sample(sorted(self.vendors), rng.randint(10, 24)))
            h["channels"] = ("slack:#finance-ops", team_channel)
            h["approvers"] = tuple(rng.sample(op.members, min(3, len(op.members))))
        elif role == "support_bot":
            h["queue"] = (rng.choice(("zendesk", "freshdesk")),)
            h["channels"] = ("slack:#cx-escalations", team_channel)
            h["region_domains"] = tuple(rng.sample(CUSTOMER_DOMAINS, 10))
        elif role == "mail_assistant":
            principal = rng.choice(op.members)
            h["principal"] = (principal,)
            h["contacts"] = tuple(rng.sample(self.people, rng.randint(10, 28)))
            h["externals"] = tuple(
                f"{rng.choice(FIRST_NAMES)}.{rng.choice(LAST_NAMES)}@{rng.choice(PARTNER_DOMAINS)}"
                for _ in range(rng.randint(4, 12)))
        return h

    def add_agent(self, *, role: str, rng: random.Random, operator_id: str | None = None) -> AgentProfile:
        """Append a new agent of ``role`` (for ``new_agent``); returns its profile.

        Raises ``ValueError`` for an unknown role or operator.
        """
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r}")
        if operator_id is None:
            op = rng.choice(self.operators)
        else:
            matches = [o for o in self.operators if o.operator_id == operator_id]
            if not matches:
                raise ValueError(f"unknown operator {operator_id!r}")
            op = matches[0]
        return self._append_agent(role, op, rng)

    def agent(self, agent_id: str) -> AgentProfile:
        for a in self.agents:
            if a.agent_id == agent_id:
                return a
        raise KeyError(agent_id)

    # ------------------------------------------------------------- pacing

    def task_rate(self, agent: AgentProfile, at: datetime) -> float:
        """Expected normal tasks per hour for ``agent`` at instant ``at``.

        Working hours of the operator's zone, quiet weekends (support bots run
        24/7 with quieter nights and weekends), finance month-end peaks. A live
        runtime can pace arrivals with it.
        """
        return self.task_rate_ms(agent, to_ms(at))

    def task_rate_ms(self, agent: AgentProfile, ms: int) -> float:
        """:meth:`task_rate` at an epoch-millisecond instant (the simulation's hourly arrivals)."""
        local = ms + agent.tz_offset_minutes * 60_000
        hour = (local // HOUR_MS) % 24
        day = local // DAY_MS
        w = HOUR_WEIGHT[hour]
        if agent.always_on:
            w = max(w, ALWAYS_ON_FLOOR)
        if weekday(day) >= 5:
            w *= WEEKEND_FACTOR_ALWAYS_ON if agent.always_on else WEEKEND_FACTOR
        elif agent.role == "finance_bot" and is_month_end_day(day):
            w *= MONTH_END_FACTOR
        return ROLE_RATE[agent.role] * agent.activity * w

    # ------------------------------------------------------------- normal work

    def normal_task(self, agent: AgentProfile, at: datetime, rng: random.Random, *,
                    kind: str | None = None) -> Task:
        """One task of ``agent``'s normal work starting around ``at``.

        ``kind`` forces a template (``fin.payment_run``, ``code.dependency_update``
        are the scheduled ones); otherwise one is drawn by the role's weights.
        Normal tasks have 2-12 steps and no harmful step. Raises ``KeyError`` for
        a template the role does not have.
        """
        templates = TEMPLATES[agent.role]
        if kind is None:
            names = [n for n, (w, _) in templates.items() if w > 0]
            kind = rng.choices(names, weights=[templates[n][0] for n in names])[0]
        _, fn = templates[kind]
        b = TaskBuilder(agent, "tsk-" + hexid(rng), rng)
        fn(self, b, to_ms(at))
        return b.task(kind)

    # ------------------------------------------------------------- incidents

    def incident_task(self, kind: str, agent: AgentProfile, at: datetime, rng: random.Random) -> Task:
        """The task of one incident of ``kind`` by ``agent`` starting at ``at``.

        ``slow_drip`` and ``privilege_creep`` tasks run for hours (minutes
        between steps), beside the agent's normal queue. For
        ``instruction_change`` the task carries a new ``instruction_hash``; the
        caller should use it for the agent's later tasks. Raises ``ValueError``
        for an unknown kind.
        """
        if kind not in INCIDENT_KINDS:
            raise ValueError(f"unknown incident kind {kind!r}; known: {', '.join(INCIDENT_KINDS)}")
        ihash = new_instruction_hash(rng) if kind == "instruction_change" else None
        b = TaskBuilder(agent, "tsk-" + hexid(rng), rng, instruction_hash=ihash)
        BUILDERS[kind](self, b, to_ms(at))
        task = b.task(kind)
        assert task.harmful, kind
        return task

    def lookalike_task(self, kind: str, agent: AgentProfile, at: datetime, rng: random.Random) -> Task:
        """One task of a benign look-alike of ``kind``.

        ``approved_export`` is its own task; the others are the role's normal
        work (``month_end_peak``: a finance task; ``external_email_role``: a
        support reply; ``new_agent``: any normal task) and only their rate makes
        them look-alikes. Raises ``ValueError`` for an unknown kind.
        """
        if kind not in LOOKALIKE_KINDS:
            raise ValueError(f"unknown look-alike kind {kind!r}; known: {', '.join(LOOKALIKE_KINDS)}")
        if kind == "approved_export":
            b = TaskBuilder(agent, "tsk-" + hexid(rng), rng)
            approved_export(self, b, to_ms(at))
            return b.task(kind)
        forced = "cx.reply" if kind == "external_email_role" and agent.role == "support_bot" else None
        return self.normal_task(agent, at, rng, kind=forced)

    # ------------------------------------------------------------- world helpers

    def email(self, person: str) -> str:
        """A person's internal address as a destination: ``email:first.last@corp.example``."""
        return f"email:{person}@{DOMAIN}"

    def customer(self, rng: random.Random, agent: AgentProfile) -> tuple[str, str]:
        """A customer of ``agent``'s region: ``(customer id, external address)``."""
        domains = agent.habits.get("region_domains") or CUSTOMER_DOMAINS
        addr = f"{rng.choice(FIRST_NAMES)}.{rng.choice(LAST_NAMES)}{rng.randint(1, 999)}@{rng.choice(domains)}"
        return f"C-{rng.randint(100000, 999999)}", addr

    def payment_dests(self, payee: str) -> tuple[str, str]:
        """The destinations of a payment to a known vendor: ``payee:<slug>`` and its ``iban:``."""
        return f"payee:{payee}", f"iban:{self.vendors[payee]}"
