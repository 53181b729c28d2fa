"""The roles of the simulated fleet and the scripts of their everyday work.

Each role has a few task scripts (``TEMPLATES``: role -> kind -> (weight, script)); a
normal task draws one by the weights (weight 0: scheduled only, such as
``fin.payment_run`` at 16:00 and ``code.dependency_update`` at 02:00). A script fills a
:class:`~models.simulate.tasks.TaskBuilder` with 2-12 steps and no harmful step.

* ``hr_assistant`` reads personnel records (``hr://personnel/...``, restricted),
  answers managers on internal Slack and email, writes reports, schedules
  onboarding, reads candidates' emails (untrusted), rarely posts a public
  announcement to ``slack:#all-hands``.
* ``coding_agent`` clones repos, reads and writes files, runs CI, pushes to
  ``git.corp.example``, fetches web docs (untrusted ``https:`` resources), deletes
  branches; some run a nightly dependency update at 02:00 local, weekends too.
* ``finance_bot`` reads the ERP (confidential), pays invoices to a stable set of
  known payees (``payee:``/``iban:`` destinations, approvals on large amounts),
  runs a payment batch at 16:00 on weekdays and works five times as much on the
  last two business days of a month.
* ``support_bot`` (24/7, quieter at night and weekends) reads inbound customer
  emails (untrusted), tickets and customer records, and replies to the customer's
  external address: external email with that customer's confidential data is
  its normal work.
* ``mail_assistant`` works for one person: reads the inbox (``email:sender``
  resources, untrusted when external), drafts, replies to known correspondents,
  schedules meetings with internal invitees, forwards internally, deletes spam.

The scripts draw from the caller's ``random.Random`` in a fixed order: changing one
changes every simulated fleet's events for a seed. :func:`bulk_source`,
:func:`record_source` and :func:`send_tool` say what data a role can reach and how it
sends, for the incidents built on top of a role's normal access.
"""
from __future__ import annotations

import random
from collections.abc import Callable, Mapping

from models.simulate.clock import from_ms, month_of
from models.simulate.profile import AgentProfile
from models.simulate.tasks import FleetView, TaskBuilder
from models.simulate.world import (BROADCAST_SLACK, CUSTOMER_DOMAINS, DOMAIN, FIRST_NAMES, LAST_NAMES, SRC_FILES,
                                   TEAMS, WEB_DOCS, hexid)

__all__ = ["TEMPLATES", "Template", "bulk_source", "record_source", "send_tool"]


# --------------------------------------------------------------------------- what a role can reach


def bulk_source(agent: AgentProfile, ms: int) -> tuple[str, str, str, int]:
    """The most sensitive bulk store ``agent``'s role can reach, at instant ``ms``:
    ``(tool, resource, sensitivity, bytes per record)`` (incidents read thousands of records from it)."""
    role = agent.role
    if role == "hr_assistant":
        return "hr_db.query", "hr://personnel/records", "restricted", 2200
    if role == "finance_bot":
        return "erp.query", f"erp://payroll/{month_of(ms)}", "restricted", 900
    if role == "support_bot":
        return "crm.export", "crm://customers/all", "confidential", 1200
    if role == "coding_agent":
        return "repo.read_file", f"repo://corp/{agent.habits['repos'][0]}/.env.production", "restricted", 120
    principal = agent.habits["principal"][0]
    return "mail.search", f"mail://mailbox/{principal}/search?q=contract", "confidential", 8000


def record_source(fleet: FleetView, agent: AgentProfile, rng: random.Random) -> tuple[str, str, str, int]:
    """One confidential record ``agent``'s role reads in its work, drawn from ``rng``:
    ``(tool, resource, sensitivity, bytes per record)`` (a slow drip sends them out one by one;
    the runtime's legitimate export reads a few)."""
    role = agent.role
    if role == "hr_assistant":
        return "hr_db.get_employee", f"hr://personnel/E{rng.randint(10000, 99999)}/compensation", "confidential", 1800
    if role == "finance_bot":
        payee = rng.choice(sorted(fleet.vendors))
        return "erp.read", f"erp://vendors/{payee}/bank-details", "confidential", 700
    if role == "support_bot":
        return "crm.get_customer", f"crm://customers/C-{rng.randint(100000, 999999)}", "confidential", 1500
    if role == "coding_agent":
        repo = rng.choice(agent.habits["repos"])
        name = rng.choice(("db", "keys", "tokens", "smtp"))
        return "repo.read_file", f"repo://corp/{repo}/config/prod/{name}.yaml", "confidential", 400
    principal = agent.habits["principal"][0]
    return "mail.read", f"mail://mailbox/{principal}/inbox/{hexid(rng, 32)}", "confidential", 6000


def send_tool(agent: AgentProfile) -> str:
    """The tool ``agent``'s role sends data out with (``email.send`` unless it has its own)."""
    return {"mail_assistant": "mail.send", "coding_agent": "http.post"}.get(agent.role, "email.send")


# --------------------------------------------------------------------------- normal work
# Each script fills a TaskBuilder with 2-12 steps of one role's everyday work.


def _hr_employee_question(f: FleetView, b: TaskBuilder, ms: int) -> None:
    rng, a = b.rng, b.agent
    mgr = rng.choice(a.habits["managers"])
    b.requested_by = f"{mgr}@{DOMAIN}"
    emp = f"E{rng.randint(10000, 99999)}"
    r = b.add("hr_db.get_employee", "read", f"hr://personnel/{emp}", "restricted", 1, rng.randint(2000, 7000))
    if rng.random() < 0.5:
        b.add("docs.read", "read", f"docs://hr/policies/{rng.choice(('leave', 'benefits', 'travel', 'remote-work'))}",
              "internal", 1, rng.randint(5000, 30000))
    if rng.random() < 0.6:
        d = f"slack:@{mgr}"
        b.add("slack.post_message", "send", d, "confidential", 1, rng.randint(400, 2000), [d], parent=r)
    else:
        d = f.email(mgr)
        b.add("email.send", "send", d, "confidential", 1, rng.randint(1500, 6000), [d], parent=r)


def _hr_team_summary(f: FleetView, b: TaskBuilder, ms: int) -> None:
    rng, a = b.rng, b.agent
    if rng.random() < 0.5:
        b.requested_by = f"{rng.choice(a.habits['managers'])}@{DOMAIN}"
    n = rng.randint(5, 40)
    r = b.add("hr_db.query", "read", f"hr://personnel/records?team={rng.choice(TEAMS)}", "restricted", n, n * 2200)
    d = rng.choice(a.habits["channels"])
    b.add("slack.post_message", "send", d, "confidential", n, n * 250, [d], parent=r)


def _hr_headcount_report(f: FleetView, b: TaskBuilder, ms: int) -> None:
    rng, a = b.rng, b.agent
    n = rng.randint(200, 600)
    r = b.add("hr_db.query", "read", "hr://personnel/records", "restricted", n, n * 2200)
    w = b.add("drive.write", "write", f"drive://file/hr-headcount-{month_of(ms)}-{rng.randint(1, 99)}", "confidential",
              rng.randint(10, 40), rng.randint(20_000, 90_000), ["file:drive://folder/hr-reports"], parent=r)
    dests = [f.email(m) for m in rng.sample(a.habits["managers"], rng.randint(1, 3))]
    b.add("email.send", "send", f"drive://file/{hexid(rng, 24)}", "confidential", rng.randint(10, 40),
          rng.randint(20_000, 90_000), dests, parent=w)


def _hr_onboarding(f: FleetView, b: TaskBuilder, ms: int) -> None:
    rng, a = b.rng, b.agent
    mgr = rng.choice(a.habits["managers"])
    b.requested_by = f"{mgr}@{DOMAIN}"
    hire = rng.choice(f.people)
    r = b.add("hr_db.get_employee", "read", f"hr://personnel/E{rng.randint(10000, 99999)}", "restricted", 1, 4000)
    # sorted: a set's order follows the process's string hashing (PYTHONHASHSEED), the output must not
    invitees = [f.email(p) for p in sorted({hire, mgr, rng.choice(f.people)})]
    b.add("calendar.create_event", "write", f"calendar://hr/events/{hexid(rng, 32)}", "internal", 1, 1200, invitees)
    b.add("email.send", "send", "docs://hr/templates/welcome", "internal", 1, rng.randint(3000, 8000),
          [f.email(hire)], parent=r)


def _hr_policy_lookup(f: FleetView, b: TaskBuilder, ms: int) -> None:
    rng, a = b.rng, b.agent
    asker = rng.choice(a.habits["team"] + a.habits["managers"])
    b.requested_by = f"{asker}@{DOMAIN}"
    topic = rng.choice(("leave", "expenses", "conduct", "parental", "equipment"))
    r = b.add("docs.read", "read", f"docs://hr/handbook/{topic}",
              "internal", 1, rng.randint(5000, 40000))
    d = f"slack:@{asker}"
    b.add("slack.post_message", "send", d, "internal", 1, rng.randint(300, 1500), [d], parent=r)


def _hr_candidate_email(f: FleetView, b: TaskBuilder, ms: int) -> None:
    rng, a = b.rng, b.agent
    sender = f"{rng.choice(FIRST_NAMES)}.{rng.choice(LAST_NAMES)}{rng.randint(1, 99)}@{rng.choice(CUSTOMER_DOMAINS)}"
    r = b.add("mail.read_inbound", "read", f"email:{sender}", "confidential", 1, rng.randint(5000, 400_000))
    b.add("ats.update_candidate", "write", f"ats://candidates/CAND-{rng.randint(1000, 9999)}", "confidential", 1, 3000,
          parent=r)
    if rng.random() < 0.4:
        d = rng.choice(a.habits["channels"])
        b.add("slack.post_message", "send", d, "confidential", 1, 800, [d], parent=r)


def _hr_announcement(f: FleetView, b: TaskBuilder, ms: int) -> None:
    rng, a = b.rng, b.agent
    r = b.add("docs.read", "read", f"docs://hr/announcements/{hexid(rng, 16)}", "internal", 1, 6000)
    b.add("slack.post_message", "send", BROADCAST_SLACK, "public", 1, rng.randint(500, 3000), [BROADCAST_SLACK], parent=r)


def _hr_cleanup(f: FleetView, b: TaskBuilder, ms: int) -> None:
    rng, a = b.rng, b.agent
    b.add("docs.read", "read", "drive://folder/hr-drafts", "internal", rng.randint(5, 30), 20_000)
    for _ in range(rng.randint(1, 3)):
        b.add("drive.delete", "delete", f"drive://file/hr-draft-{rng.randint(100, 9999)}", "internal", 1, 0)


def _code_fix_bug(f: FleetView, b: TaskBuilder, ms: int) -> None:
    rng, a = b.rng, b.agent
    repo = rng.choice(a.habits["repos"])
    if rng.random() < 0.4:
        b.requested_by = f"{rng.choice(a.habits['team'])}@{DOMAIN}"
    b.add("git.clone", "read", f"repo://corp/{repo}", "internal", 1, rng.randint(5_000_000, 80_000_000))
    for p in rng.sample(SRC_FILES, rng.randint(1, 4)):
        b.add("repo.read_file", "read", f"repo://corp/{repo}/{p}", "internal", 1, rng.randint(1000, 40000))
    if rng.random() < 0.35:
        b.add("web.fetch", "read", rng.choice(WEB_DOCS) + hexid(rng, 16), "public", 1, rng.randint(20_000, 300_000))
    w = None
    for p in rng.sample(SRC_FILES, rng.randint(1, 2)):
        w = b.add("fs.write", "write", f"repo://corp/{repo}/{p}", "internal", 1, rng.randint(1000, 40000))
    b.add("ci.run", "exec", f"ci://pipelines/{repo}", "internal", 1, rng.randint(2000, 20000))
    dest = f"http:https://git.{DOMAIN}/eng/{repo}.git"
    b.add("git.push", "write", f"repo://corp/{repo}/branches/fix-{rng.randint(100, 9999)}", "internal", 1,
          rng.randint(2000, 60000), [dest], parent=w)


def _code_review(f: FleetView, b: TaskBuilder, ms: int) -> None:
    rng, a = b.rng, b.agent
    repo = rng.choice(a.habits["repos"])
    b.requested_by = f"{rng.choice(a.habits['team'])}@{DOMAIN}"
    last = 0
    for p in rng.sample(SRC_FILES, rng.randint(2, 5)):
        last = b.add("repo.read_file", "read", f"repo://corp/{repo}/{p}", "internal", 1, rng.randint(1000, 40000))
    dest = f"http:https://git.{DOMAIN}/eng/{repo}/pulls/{rng.randint(100, 5000)}"
    b.add("gh.comment", "write", f"repo://corp/{repo}/pulls", "internal", 1, rng.randint(300, 4000), [dest], parent=last)


def _code_dependency_update(f: FleetView, b: TaskBuilder, ms: int) -> None:
    rng, a = b.rng, b.agent
    repo = rng.choice(a.habits["repos"])
    b.add("git.clone", "read", f"repo://corp/{repo}", "internal", 1, rng.randint(5_000_000, 80_000_000))
    for _ in range(rng.randint(1, 3)):
        pkg = rng.choice(("requests", "numpy", "django", "boto3", "pydantic"))
        b.add("web.fetch", "read", f"https://pypi.org/pypi/{pkg}/json",
              "public", 1, rng.randint(20_000, 200_000))
    w = b.add("fs.write", "write", f"repo://corp/{repo}/pyproject.toml", "internal", 1, rng.randint(1000, 5000))
    b.add("ci.run", "exec", f"ci://pipelines/{repo}", "internal", 1, 8000)
    b.add("git.push", "write", f"repo://corp/{repo}/branches/deps-{month_of(ms)}", "internal", 1, 4000,
          [f"http:https://git.{DOMAIN}/eng/{repo}.git"], parent=w)


def _code_ci_triage(f: FleetView, b: TaskBuilder, ms: int) -> None:
    rng, a = b.rng, b.agent
    repo = rng.choice(a.habits["repos"])
    r = b.add("ci.logs", "read", f"ci://pipelines/{repo}/runs/{rng.randint(1000, 99999)}", "internal", 1,
              rng.randint(20_000, 2_000_000))
    if rng.random() < 0.5:
        b.add("repo.read_file", "read", f"repo://corp/{repo}/{rng.choice(SRC_FILES)}", "internal", 1, 12000)
    d = rng.choice(a.habits["channels"])
    b.add("slack.post_message", "send", d, "internal", 1, rng.randint(300, 3000), [d], parent=r)


def _code_cleanup(f: FleetView, b: TaskBuilder, ms: int) -> None:
    rng, a = b.rng, b.agent
    repo = rng.choice(a.habits["repos"])
    b.add("repo.read_file", "read", f"repo://corp/{repo}/branches", "internal", rng.randint(5, 60), 8000)
    for _ in range(rng.randint(1, 3)):
        b.add("git.delete_branch", "delete", f"repo://corp/{repo}/branches/feature-{rng.randint(100, 9999)}",
              "internal", 1, 0)
    if rng.random() < 0.3:
        b.add("fs.delete", "delete", f"repo://corp/{repo}/tmp/build-{rng.randint(1, 999)}", "internal",
              rng.randint(1, 20), 0)


def _fin_pay_invoice(f: FleetView, b: TaskBuilder, ms: int) -> None:
    rng, a = b.rng, b.agent
    payee = rng.choice(a.habits["payees"])
    approval = None
    if rng.random() < 0.2:  # large amounts: a controller asked and signed off
        approval = f"APR-{from_ms(ms):%Y}-{rng.randint(10000, 99999)}"
        b.requested_by = f"{rng.choice(a.habits['approvers'])}@{DOMAIN}"
    inv = b.add("erp.read", "read", f"erp://invoices/INV-{rng.randint(10000, 99999)}", "confidential", 1,
                rng.randint(2000, 9000))
    b.add("erp.read", "read", f"erp://vendors/{payee}", "confidential", 1, rng.randint(1000, 3000))
    dests = f.payment_dests(payee)
    pmt = f"erp://payments/PMT-{rng.randint(100000, 999999)}"
    c = b.add("payments.create", "write", pmt, "confidential", 1, rng.randint(800, 2000), dests, parent=inv,
              approval_id=approval)
    b.add("payments.submit", "send", pmt, "confidential", 1, rng.randint(800, 2000), dests, parent=c,
          approval_id=approval)


def _fin_payment_run(f: FleetView, b: TaskBuilder, ms: int) -> None:
    rng, a = b.rng, b.agent
    k = rng.randint(3, 10)
    q = b.add("erp.query", "read", "erp://invoices?status=approved", "confidential", k * rng.randint(1, 3), k * 6000)
    payees = rng.sample(a.habits["payees"], min(k, len(a.habits["payees"])))
    dests = [d for p in payees for d in f.payment_dests(p)]
    approval = f"APR-{from_ms(ms):%Y}-{rng.randint(10000, 99999)}"
    s = b.add("payments.submit", "send", f"erp://payment-runs/RUN-{from_ms(ms):%Y%m%d}", "confidential",
              len(payees), len(payees) * 1500, dests, parent=q, approval_id=approval)
    d = a.habits["channels"][0]
    b.add("slack.post_message", "send", d, "internal", 1, 800, [d], parent=s)


def _fin_reconcile(f: FleetView, b: TaskBuilder, ms: int) -> None:
    rng, a = b.rng, b.agent
    n = rng.randint(200, 3000)
    l = b.add("erp.query", "read", f"erp://ledger/{month_of(ms)}", "confidential", n, n * 500)
    m = rng.randint(100, 800)
    b.add("bank.read_statement", "read", f"bank://statements/{month_of(ms)}/{rng.randint(1, 4)}", "confidential", m, m * 300)
    w = b.add("drive.write", "write", f"drive://file/recon-{month_of(ms)}-{rng.randint(1, 99)}", "confidential",
              rng.randint(10, 80), rng.randint(10_000, 200_000), ["file:drive://folder/finance-close"], parent=l)
    d = a.habits["channels"][0]
    b.add("slack.post_message", "send", d, "internal", 1, 600, [d], parent=w)


def _fin_expense_question(f: FleetView, b: TaskBuilder, ms: int) -> None:
    rng, a = b.rng, b.agent
    asker = rng.choice(f.people)
    b.requested_by = f"{asker}@{DOMAIN}"
    expense = f"erp://expenses/EXP-{rng.randint(10000, 99999)}"
    r = b.add("erp.read", "read", expense, "confidential", 1, 2500)
    b.add("email.send", "send", expense, "confidential", 1,
          rng.randint(1500, 5000), [f.email(asker)], parent=r)


def _fin_invoice_intake(f: FleetView, b: TaskBuilder, ms: int) -> None:
    rng, a = b.rng, b.agent
    payee = rng.choice(a.habits["payees"])
    r = b.add("mail.read_inbound", "read", f"email:billing@{payee}.example", "confidential", 1, rng.randint(20_000, 400_000))
    b.add("erp.read", "read", f"erp://vendors/{payee}", "confidential", 1, 2000)
    b.add("erp.write", "write", f"erp://invoices/INV-{rng.randint(10000, 99999)}", "confidential", 1, 5000, parent=r)


def _fin_void_draft(f: FleetView, b: TaskBuilder, ms: int) -> None:
    rng, a = b.rng, b.agent
    pmt = f"erp://payments/PMT-{rng.randint(100000, 999999)}"
    b.add("erp.read", "read", pmt, "confidential", 1, 1500)
    b.add("payments.void", "delete", pmt, "confidential", 1, 0)


def _cx_reply(f: FleetView, b: TaskBuilder, ms: int) -> None:
    rng, a = b.rng, b.agent
    q = a.habits["queue"][0]
    cid, addr = f.customer(rng, a)
    ticket = f"tickets://{q}/ticket/{rng.randint(100000, 999999)}"
    b.add("mail.read_inbound", "read", f"email:{addr}", "confidential", 1, rng.randint(1500, 12000))
    b.add("tickets.read", "read", ticket, "confidential", 1, rng.randint(2000, 15000))
    c = b.add("crm.get_customer", "read", f"crm://customers/{cid}", "confidential", 1, rng.randint(800, 3000))
    if rng.random() < 0.5:
        c = b.add("orders.read", "read", f"orders://orders/O-{rng.randint(1000000, 9999999)}", "confidential",
                  rng.randint(1, 4), rng.randint(1000, 6000))
    if rng.random() < 0.4:
        b.add("kb.search", "read", f"kb://articles/{rng.randint(100, 999)}", "internal", rng.randint(1, 5), 8000)
    b.add("email.send", "send", ticket, "confidential", 1, rng.randint(1500, 8000), [f"email:{addr}"], parent=c)
    b.add("tickets.update", "write", ticket, "internal", 1, 600)


def _cx_followup(f: FleetView, b: TaskBuilder, ms: int) -> None:
    rng, a = b.rng, b.agent
    q = a.habits["queue"][0]
    _, addr = f.customer(rng, a)
    ticket = f"tickets://{q}/ticket/{rng.randint(100000, 999999)}"
    r = b.add("tickets.read", "read", ticket, "confidential", 1, rng.randint(2000, 15000))
    b.add("email.send", "send", ticket, "confidential", 1, rng.randint(1000, 5000), [f"email:{addr}"], parent=r)


def _cx_escalate(f: FleetView, b: TaskBuilder, ms: int) -> None:
    rng, a = b.rng, b.agent
    q = a.habits["queue"][0]
    cid, _ = f.customer(rng, a)
    b.add("tickets.read", "read", f"tickets://{q}/ticket/{rng.randint(100000, 999999)}", "confidential", 1, 9000)
    c = b.add("crm.get_customer", "read", f"crm://customers/{cid}", "confidential", 1, 2000)
    d = a.habits["channels"][0]
    b.add("slack.post_message", "send", d, "confidential", 1, rng.randint(500, 2500), [d], parent=c)


def _cx_spam_cleanup(f: FleetView, b: TaskBuilder, ms: int) -> None:
    rng, a = b.rng, b.agent
    q = a.habits["queue"][0]
    b.add("tickets.search", "read", f"tickets://{q}/search?tag=spam", "internal", rng.randint(1, 8), 6000)
    for _ in range(rng.randint(1, 3)):
        b.add("tickets.delete", "delete", f"tickets://{q}/ticket/{rng.randint(100000, 999999)}", "internal",
              rng.randint(1, 3), 0)


def _mail_triage(f: FleetView, b: TaskBuilder, ms: int) -> None:
    rng, a = b.rng, b.agent
    p = a.habits["principal"][0]
    b.requested_by = f"{p}@{DOMAIN}"
    b.add("mail.list_inbox", "read", f"mail://mailbox/{p}/inbox", "internal", rng.randint(10, 50),
          rng.randint(10_000, 60_000))
    last = None
    for _ in range(rng.randint(1, 4)):
        sender = rng.choice(a.habits["contacts"]) + f"@{DOMAIN}" if rng.random() < 0.7 else rng.choice(a.habits["externals"])
        last = b.add("mail.read", "read", f"email:{sender}", rng.choice(("internal", "internal", "confidential")), 1,
                     rng.randint(2000, 40000))
    if rng.random() < 0.3:
        b.add("mail.delete", "delete", f"mail://mailbox/{p}/inbox/{hexid(rng, 32)}", "internal", rng.randint(1, 10), 0)
    to = f.email(rng.choice(a.habits["contacts"]))
    b.add("mail.draft", "write", f"mail://mailbox/{p}/drafts/{hexid(rng, 32)}", "internal", 1, rng.randint(800, 5000),
          [to], parent=last)


def _mail_schedule(f: FleetView, b: TaskBuilder, ms: int) -> None:
    rng, a = b.rng, b.agent
    p = a.habits["principal"][0]
    b.requested_by = f"{p}@{DOMAIN}"
    sender = rng.choice(a.habits["contacts"])
    b.add("mail.read", "read", f"email:{sender}@{DOMAIN}", "internal", 1, rng.randint(2000, 15000))
    b.add("calendar.find_slots", "read", f"calendar://{p}", "internal", rng.randint(5, 40), 6000)
    invitees = {f.email(p), f.email(sender)} | {f.email(c) for c in rng.sample(a.habits["contacts"], rng.randint(0, 6))}
    b.add("calendar.create_event", "write", f"calendar://{p}/events/{hexid(rng, 32)}", "internal", 1, 1500,
          sorted(invitees))


def _mail_forward(f: FleetView, b: TaskBuilder, ms: int) -> None:
    rng, a = b.rng, b.agent
    p = a.habits["principal"][0]
    b.requested_by = f"{p}@{DOMAIN}"
    sender = rng.choice(a.habits["externals"]) if rng.random() < 0.5 else rng.choice(a.habits["contacts"]) + f"@{DOMAIN}"
    r = b.add("mail.read", "read", f"email:{sender}", "confidential", 1, rng.randint(3000, 200_000))
    dests = [f.email(c) for c in rng.sample(a.habits["contacts"], rng.randint(1, 2))]
    b.add("mail.forward", "send", f"mail://mailbox/{p}/inbox/{hexid(rng, 32)}", "confidential", 1,
          rng.randint(3000, 200_000), dests, parent=r)


def _mail_reply_external(f: FleetView, b: TaskBuilder, ms: int) -> None:
    rng, a = b.rng, b.agent
    p = a.habits["principal"][0]
    b.requested_by = f"{p}@{DOMAIN}"
    ext = rng.choice(a.habits["externals"])
    r = b.add("mail.read", "read", f"email:{ext}", "internal", 1, rng.randint(2000, 30000))
    d = b.add("mail.draft", "write", f"mail://mailbox/{p}/drafts/{hexid(rng, 32)}", "internal", 1, 3000,
              [f"email:{ext}"], parent=r)
    b.add("mail.send", "send", f"mail://mailbox/{p}/drafts/{hexid(rng, 32)}", "internal", 1, rng.randint(1500, 6000),
          [f"email:{ext}"], parent=d)


Template = Callable[[FleetView, TaskBuilder, int], None]
# role -> kind -> (weight when drawn at random, builder); weight 0 = scheduled only.
TEMPLATES: Mapping[str, Mapping[str, tuple[float, Template]]] = {
    "hr_assistant": {
        "hr.employee_question": (5, _hr_employee_question),
        "hr.team_summary": (3, _hr_team_summary),
        "hr.headcount_report": (0.6, _hr_headcount_report),
        "hr.onboarding": (1.5, _hr_onboarding),
        "hr.policy_lookup": (3, _hr_policy_lookup),
        "hr.candidate_email": (2, _hr_candidate_email),
        "hr.announcement": (0.15, _hr_announcement),
        "hr.cleanup": (0.4, _hr_cleanup),
    },
    "coding_agent": {
        "code.fix_bug": (5, _code_fix_bug),
        "code.review": (3, _code_review),
        "code.ci_triage": (2, _code_ci_triage),
        "code.cleanup": (0.8, _code_cleanup),
        "code.dependency_update": (0.3, _code_dependency_update),
    },
    "finance_bot": {
        "fin.pay_invoice": (5, _fin_pay_invoice),
        "fin.invoice_intake": (3, _fin_invoice_intake),
        "fin.reconcile": (1.5, _fin_reconcile),
        "fin.expense_question": (2, _fin_expense_question),
        "fin.void_draft": (0.4, _fin_void_draft),
        "fin.payment_run": (0, _fin_payment_run),
    },
    "support_bot": {
        "cx.reply": (7, _cx_reply),
        "cx.followup": (3, _cx_followup),
        "cx.escalate": (0.8, _cx_escalate),
        "cx.spam_cleanup": (0.5, _cx_spam_cleanup),
    },
    "mail_assistant": {
        "mail.triage": (4, _mail_triage),
        "mail.schedule": (3, _mail_schedule),
        "mail.forward": (1, _mail_forward),
        "mail.reply_external": (1.2, _mail_reply_external),
    },
}
