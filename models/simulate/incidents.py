"""The incidents the simulator injects: what each kind does, which of its events are harmful,
and where in the incident window it is placed.

An incident is one task of one agent (:func:`models.simulate.fleet.Fleet.incident_task`).
Its ``event_ids`` are all events of that task; ``harmful_event_ids`` are the events that
move data out or do damage; ``first_harmful_event_id`` is the earliest of them. Reads
that only prepare the harm are incident events, not harmful ones.

* ``bulk_read_broadcast``: a bulk read of the agent's most sensitive store
  (thousands of records), then posts to broadcast destinations. Harmful: each
  broadcast post; first = the first post.
* ``slow_drip``: every 6-25 minutes for hours, a read of 1-5 confidential records
  and a send of them to one never-seen external address. Harmful: each send;
  first = the first send.
* ``mass_fanout``: a contact-list read, then one send to 300-3000 destinations
  (sometimes a second one). Harmful: the fan-out sends; first = the first one.
* ``mass_delete``: a listing, then a burst of 40-250 deletes seconds apart.
  Harmful: every delete; first = the first delete of the burst.
* ``privilege_creep``: over 4-10 hours, tools the role never uses on resources of
  rising sensitivity (directory and IAM listings, then shared finance files,
  vault secrets, a permission grant, personnel and payroll data). Harmful: each
  step with a never-used tool that touches confidential or restricted data or
  writes (grants); first = the first of those. The internal listings before it
  are incident events, not harmful.
* ``instruction_change``: the agent's ``instruction_hash`` changes at this task
  (and stays changed for its later, normal tasks); the task does a normal read,
  then bulk sensitive reads and sends to never-seen external addresses (a
  finance bot pays a never-seen payee instead). Harmful: the outward sends or
  payments; first = the first of them.
* ``prompt_injection``: a normal-looking task reads untrusted input (an inbound
  email from an external address, or an ``https:`` page), reads confidential or
  restricted data, sends it to a never-seen external address, and may finish
  its normal work. Harmful: the exfiltrating send; first = that send.

Each kind goes to an agent of a role it fits (``INCIDENT_ROLES``), one agent per
incident while there are unused ones, at a working hour of the agent's zone,
weekdays preferred (:func:`stage_incidents`).
"""
from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence

from models.simulate.clock import from_ms, month_of, working_instant
from models.simulate.roles import bulk_source, record_source, send_tool
from models.simulate.profile import AgentProfile
from models.simulate.tasks import FleetView, Placed, TaskBuilder, fit, layout
from models.simulate.world import (BROADCAST_EMAIL, BROADCAST_SLACK, CUSTOMER_DOMAINS, EXFIL_EMAIL_DOMAINS,
                                   EXFIL_URLS, FIRST_NAMES, LAST_NAMES, PARTNER_DOMAINS, ROLE_TOOLS, ROLES,
                                   SENS_RANK, SRC_FILES, WEB_DOCS, hexid, random_iban)

__all__ = ["INCIDENT_KINDS", "INCIDENT_ROLES", "BUILDERS", "exfil_dest", "stage_incidents"]

INCIDENT_KINDS = (
    "bulk_read_broadcast",
    "slow_drip",
    "mass_fanout",
    "mass_delete",
    "privilege_creep",
    "instruction_change",
    "prompt_injection",
)
#: the roles an incident kind is staged on (its story needs that role's data or tools)
INCIDENT_ROLES = {
    "bulk_read_broadcast": ("hr_assistant", "finance_bot"),
    "slow_drip": ("support_bot", "finance_bot", "hr_assistant"),
    "mass_fanout": ("mail_assistant", "support_bot"),
    "mass_delete": ("coding_agent", "mail_assistant", "support_bot"),
    "privilege_creep": ("coding_agent",),
    "instruction_change": ROLES,
    "prompt_injection": ("mail_assistant", "support_bot", "coding_agent"),
}


def exfil_dest(rng: random.Random, http: bool = False) -> str:
    """A never-seen outside destination for stolen data: a throwaway mailbox, or with ``http`` an upload URL."""
    if http:
        return "http:" + rng.choice(EXFIL_URLS) + hexid(rng, 48)
    local = f"{rng.choice(FIRST_NAMES)}{rng.choice(('.backup', '.archive', '.sync', '.files', ''))}{rng.randint(10, 9999)}"
    return f"email:{local}@{rng.choice(EXFIL_EMAIL_DOMAINS)}"


# --------------------------------------------------------------------------- builders


def _bulk_read_broadcast(f: FleetView, b: TaskBuilder, ms: int) -> None:
    rng, agent = b.rng, b.agent
    tool, res, sens, per = bulk_source(agent, ms)
    n = rng.randint(2500, 4800)
    r = b.add(tool, "read", res, sens, n, n * per * rng.uniform(0.8, 1.2))
    first = rng.choice((BROADCAST_SLACK, BROADCAST_EMAIL))
    tool_for = {BROADCAST_SLACK: "slack.post_message", BROADCAST_EMAIL: "email.send"}
    b.add(tool_for[first], "send", first, sens, n, n * per * rng.uniform(0.3, 0.6), [first],
          parent=r, harmful=True)
    if rng.random() < 0.5:
        other = BROADCAST_EMAIL if first == BROADCAST_SLACK else BROADCAST_SLACK
        b.add(tool_for[other], "send", other, sens, n, n * 300, [other], parent=r, harmful=True)


def _slow_drip(f: FleetView, b: TaskBuilder, ms: int) -> None:
    rng, agent = b.rng, b.agent
    dest = exfil_dest(rng, http=agent.role == "coding_agent")
    tool = "http.post" if dest.startswith("http:") else send_tool(agent)
    for i in range(rng.randint(12, 28)):
        rtool, res, sens, per = record_source(f, agent, rng)
        k = rng.randint(1, 5)
        r = b.add(rtool, "read", res, sens, k, k * per * rng.uniform(0.7, 1.3),
                  delay=0.0 if i == 0 else rng.uniform(360, 1500))
        b.add(tool, "send", dest, sens, k, k * per * rng.uniform(0.5, 1.0) + 400, [dest], parent=r,
              harmful=True)


def _mass_fanout(f: FleetView, b: TaskBuilder, ms: int) -> None:
    rng, agent = b.rng, b.agent
    n = rng.randint(300, 3000)
    if agent.role == "support_bot":
        r = b.add("crm.export", "read", "crm://customers/segment/all-active", "confidential", n, n * 600)
        dests = {f"email:{f.customer(rng, agent)[1]}" for _ in range(n)}
    else:
        r = b.add("directory.export", "read", "directory://users/all", "internal", n, n * 300)
        internal = [f.email(p) for p in f.people]
        dests = set(rng.sample(internal, min(len(internal), n // 3)))
        while len(dests) < n:
            local = f"{rng.choice(FIRST_NAMES)}.{rng.choice(LAST_NAMES)}{rng.randint(1, 9999)}"
            dests.add(f"email:{local}@{rng.choice(CUSTOMER_DOMAINS)}")
    dests_t = sorted(dests)
    rng.shuffle(dests_t)
    attach = rng.randint(1, 20)
    tool = "mail.send" if agent.role == "mail_assistant" else "email.send"
    b.add(tool, "send",
          f"mail://outbox/{hexid(rng, 32)}", "confidential", attach, attach * 250_000, dests_t,
          parent=r, harmful=True)
    if rng.random() < 0.4:
        more = sorted({f"email:{f.customer(rng, agent)[1]}" for _ in range(rng.randint(200, 800))})
        b.add(tool, "send", f"mail://outbox/{hexid(rng, 32)}", "confidential", attach, attach * 250_000, more,
              parent=r, harmful=True, delay=rng.uniform(30, 120))


def _mass_delete(f: FleetView, b: TaskBuilder, ms: int) -> None:
    rng, agent = b.rng, b.agent
    role = agent.role
    n = rng.randint(40, 250)
    if role == "coding_agent":
        repo = rng.choice(agent.habits["repos"])
        b.add("repo.read_file", "read", f"repo://corp/{repo}/tree", "internal", 400, 60_000)
        targets = [("git.delete_branch", f"repo://corp/{repo}/branches/{w}-{i}", "internal", 1)
                   for i, w in enumerate(rng.choices(("main", "release", "feature", "hotfix"), k=n // 4))]
        targets += [("fs.delete", f"repo://corp/{repo}/{p}.{i}", "internal", rng.randint(1, 40))
                    for i, p in enumerate(rng.choices(SRC_FILES, k=n - len(targets)))]
        rng.shuffle(targets)
    elif role == "mail_assistant":
        p = agent.habits["principal"][0]
        b.add("mail.list_inbox", "read", f"mail://mailbox/{p}/inbox", "internal", 5000, 900_000)
        targets = [("mail.delete", f"mail://mailbox/{p}/{rng.choice(('inbox', 'archive', 'sent'))}/{hexid(rng, 32)}",
                    "confidential", rng.randint(20, 200)) for _ in range(n)]
    elif role == "support_bot":
        q = agent.habits["queue"][0]
        b.add("tickets.search", "read", f"tickets://{q}/search?status=open", "internal", 2000, 400_000)
        targets = [("tickets.delete", f"tickets://{q}/ticket/{rng.randint(100000, 999999)}",
                    "confidential", 1) for _ in range(n)]
    elif role == "finance_bot":
        b.add("erp.query", "read", "erp://invoices?status=open", "confidential", 1500, 900_000)
        targets = [("erp.delete", f"erp://invoices/INV-{rng.randint(10000, 99999)}", "confidential", 1)
                   for _ in range(n)]
    else:
        b.add("hr_db.query", "read", "hr://personnel/records", "restricted", 3000, 6_000_000)
        targets = [("hr_db.delete", f"hr://personnel/E{rng.randint(10000, 99999)}", "restricted", 1)
                   for _ in range(n)]
    for i, (tool, res, sens, k) in enumerate(targets):
        b.add(tool, "delete", res, sens, k, 0, delay=rng.uniform(8, 30) if i == 0 else rng.uniform(0.4, 6.0),
              harmful=True)


# privilege_creep's ladder of rising sensitivity: (tool, action, resource, sensitivity, (min, max) records).
# An agent skips the rungs whose tool its role uses anyway: only never-used tools make the creep.
_CREEP = (
    ("directory.list_groups", "read", "directory://groups", "internal", (40, 200)),
    ("iam.list_roles", "read", "iam://roles", "internal", (20, 80)),
    ("drive.search", "read", "drive://shared/finance/board", "confidential", (10, 60)),
    ("vault.read", "read", "vault://kv/prod/payments-db", "restricted", (1, 1)),
    ("iam.attach_policy", "write", "iam://roles/{agent_id}", "restricted", (1, 1)),
    ("hr_db.query", "read", "hr://personnel/records", "restricted", (50, 400)),
    ("erp.read", "read", "erp://payroll/{month}", "restricted", (100, 800)),
)


def _privilege_creep(f: FleetView, b: TaskBuilder, ms: int) -> None:
    rng, agent = b.rng, b.agent
    own = ROLE_TOOLS[agent.role]
    steps = [s for s in _CREEP if s[0] not in own]
    for i, (tool, action, res, sens, (lo, hi)) in enumerate(steps):
        res = res.format(agent_id=agent.agent_id, month=month_of(ms))
        k = rng.randint(lo, hi)
        harmful = SENS_RANK[sens] >= SENS_RANK["confidential"] or action != "read"
        b.add(tool, action, res, sens, k, k * rng.randint(200, 3000),
              delay=0.0 if i == 0 else rng.uniform(1800, 5400), harmful=harmful)


def _instruction_change(f: FleetView, b: TaskBuilder, ms: int) -> None:
    rng, agent = b.rng, b.agent
    # Start like the role's normal work, under the new configuration.
    normal = f.normal_task(agent, from_ms(ms), rng)
    s0 = normal.steps[0]
    b.add(s0.tool, s0.action, s0.resource, s0.sensitivity, s0.records, s0.bytes, s0.destinations)
    if agent.role == "finance_bot":
        b.add("erp.query", "read", "erp://vendors?fields=bank-details", "confidential",
              rng.randint(40, 300), 200_000)
        payee = "-".join((rng.choice(("nordic", "atlas", "meridian", "apex")),
                          rng.choice(("trading", "holdings", "consult")), str(rng.randint(10, 99))))
        dests = (f"payee:{payee}", f"iban:{random_iban(rng)}")
        for _ in range(rng.randint(1, 3)):
            inv = b.add("erp.read", "read", f"erp://invoices/INV-{rng.randint(10000, 99999)}",
                        "confidential", 1, 3000)
            c = b.add("payments.create", "write", f"erp://payments/PMT-{rng.randint(100000, 999999)}",
                      "confidential", 1, 1500, dests, parent=inv, harmful=True)
            b.add("payments.submit", "send", f"erp://payments/PMT-{rng.randint(100000, 999999)}",
                  "confidential", 1, 1500, dests, parent=c, harmful=True)
        return
    tool, res, sens, per = bulk_source(agent, ms)
    n = rng.randint(200, 1500)
    r1 = b.add(tool, "read", res, sens, n, n * per)
    rtool, rres, rsens, rper = record_source(f, agent, rng)
    r2 = b.add(rtool, "read", rres, rsens, 5, 5 * rper)
    dest = exfil_dest(rng, http=agent.role == "coding_agent")
    stool = "http.post" if dest.startswith("http:") else send_tool(agent)
    b.add(stool, "send", dest, sens, n, n * per * 0.6, [dest], parent=r1, harmful=True)
    if rng.random() < 0.6:
        dest2 = exfil_dest(rng, http=True)
        b.add("http.post", "send", dest2, rsens, 5, 5 * rper, [dest2], parent=r2, harmful=True)


def _prompt_injection(f: FleetView, b: TaskBuilder, ms: int) -> None:
    rng, agent = b.rng, b.agent
    role = agent.role
    dest = exfil_dest(rng, http=role == "coding_agent")
    stool = "http.post" if dest.startswith("http:") else send_tool(agent)
    if role == "coding_agent":
        repo = rng.choice(agent.habits["repos"])
        b.add("web.fetch", "read", rng.choice(WEB_DOCS) + hexid(rng, 24), "public", 1, rng.randint(20_000, 200_000))
        b.add("repo.read_file", "read", f"repo://corp/{repo}/{rng.choice(SRC_FILES)}", "internal", 1, 8000)
        s = b.add("repo.read_file", "read", f"repo://corp/{repo}/.env.production", "restricted", 24, 3000)
        b.add(stool, "send", dest, "restricted", 24, 3500, [dest], parent=s, harmful=True)
        b.add("fs.write", "write", f"repo://corp/{repo}/{rng.choice(SRC_FILES)}", "internal", 1, 9000)
        return
    if role == "support_bot":
        cid, addr = f.customer(rng, agent)
        q = agent.habits["queue"][0]
        inbound = b.add("mail.read_inbound", "read", f"email:{addr}", "confidential", 1, rng.randint(2000, 9000))
        b.add("tickets.read", "read", f"tickets://{q}/ticket/{rng.randint(100000, 999999)}", "confidential", 1, 4000)
        b.add("crm.get_customer", "read", f"crm://customers/{cid}", "confidential", 1, 1500)
        n = rng.randint(200, 2000)
        s = b.add("crm.export", "read", "crm://customers/segment/vip", "confidential", n, n * 1200)
        b.add(stool, "send", dest, "confidential", n, n * 700, [dest], parent=s, harmful=True)
        b.add("email.send", "send", f"email:{addr}", "confidential", 1, 3000, [f"email:{addr}"], parent=inbound)
        return
    if role == "mail_assistant":
        p = agent.habits["principal"][0]
        sender = f"{rng.choice(FIRST_NAMES)}.{rng.choice(LAST_NAMES)}@{rng.choice(PARTNER_DOMAINS)}"
        b.add("mail.list_inbox", "read", f"mail://mailbox/{p}/inbox", "internal", 30, 40_000)
        b.add("mail.read", "read", f"email:{sender}", "internal", 1, rng.randint(3000, 20000))
        n = rng.randint(20, 120)
        s = b.add("mail.search", "read", f"mail://mailbox/{p}/search?q=invoice+OR+password", "confidential",
                  n, n * 9000)
        b.add(stool, "send", dest, "confidential", n, n * 9000, [dest], parent=s, harmful=True)
        return
    # hr / finance: an inbound email (a candidate's, a vendor's invoice) carries the instructions.
    sender = f"{rng.choice(FIRST_NAMES)}.{rng.choice(LAST_NAMES)}@{rng.choice(CUSTOMER_DOMAINS + PARTNER_DOMAINS)}"
    b.add("mail.read_inbound", "read", f"email:{sender}", "internal", 1, rng.randint(3000, 30000))
    tool, res, sens, per = bulk_source(agent, ms)
    n = rng.randint(50, 600)
    s = b.add(tool, "read", res, sens, n, n * per)
    b.add(stool, "send", dest, sens, n, n * per * 0.5, [dest], parent=s, harmful=True)


#: incident kind -> the builder that fills its task (every step ``add``ed in order; at least one harmful)
BUILDERS: Mapping[str, Callable[[FleetView, TaskBuilder, int], None]] = {
    "bulk_read_broadcast": _bulk_read_broadcast,
    "slow_drip": _slow_drip,
    "mass_fanout": _mass_fanout,
    "mass_delete": _mass_delete,
    "privilege_creep": _privilege_creep,
    "instruction_change": _instruction_change,
    "prompt_injection": _prompt_injection,
}


# --------------------------------------------------------------------------- placing


def stage_incidents(fleet: FleetView, kinds: Sequence[str], choose: Callable[..., AgentProfile | None], lo: int,
                    hi: int, seed: int, hashes: dict[str, list[tuple[int, str]]]) -> tuple[list[Placed], list[dict]]:
    """One task per entry of ``kinds`` (in order), placed in the incident window ``[lo, hi)`` (epoch ms).

    ``choose(roles)`` picks the agent (the simulation's, shared with the look-alikes). Long
    incidents (``slow_drip``, ``privilege_creep``) start between 09 and 13 local time, the others
    between 09 and 17; a task that would run past ``hi`` is moved or compressed to fit. An
    ``instruction_change`` records its new configuration in ``hashes`` (agent id -> sorted
    ``(since, instruction_hash)``) so the agent's later normal tasks carry it. Returns the placed
    tasks (tagged ``("incident", i)``) and ``{"kind", "agent", "tasks"}`` per incident.
    Each incident draws from its own stream (seed, index, kind), so adding one moves no other.
    """
    placed_tasks: list[Placed] = []
    meta: list[dict] = []
    for idx, kind in enumerate(kinds):
        agent = choose(INCIDENT_ROLES[kind])
        assert agent is not None
        irng = random.Random(f"flowbreaker-sim/{seed}/incident/{idx}/{kind}")
        at = working_instant(agent, lo, hi, irng, (9, 13) if kind in ("slow_drip", "privilege_creep") else (9, 17))
        task = fleet.incident_task(kind, agent, from_ms(at), irng)
        placed = Placed(at, layout(task, irng), task, ("incident", idx))
        fit(placed, lo, hi)
        placed_tasks.append(placed)
        if kind == "instruction_change":
            hashes[agent.agent_id].append((placed.start_ms, task.steps[0].instruction_hash))
            hashes[agent.agent_id].sort()
        meta.append({"kind": kind, "agent": agent, "tasks": [task.task_id]})
    return placed_tasks, meta
