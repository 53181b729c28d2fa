"""The simulated organisation's vocabulary: its domain, roles and the tools each role uses,
how busy each role is by hour, and the pools of names, repositories, vendors and outside
domains that agents draw from; plus the random identifiers (ids, IBANs, hashes).

An organisation on ``corp.example`` (``examples/policy.toml`` is its policy). About one
operator (team) per five agents; every operator has a time zone and its agents act
mostly 08-19 local time on weekdays (support bots 24/7, quieter at night and weekends).
Outside addresses come from fixed pools: customers' and partners' domains (legitimate
correspondents) and the ``EXFIL_*`` destinations only incidents send to.

Everything here is data: changing a pool changes every simulated fleet, so the
simulator's output for a seed changes with it.

>>> import random
>>> hexid(random.Random(0), 32), new_instruction_hash(random.Random(0))
('d82c07cd', 'sha256:629f6fbed82c07cd')
>>> sorted(ROLE_TOOLS) == sorted(ROLES)
True
"""
from __future__ import annotations

import random
from collections.abc import Mapping

ROLES = ("hr_assistant", "coding_agent", "finance_bot", "support_bot", "mail_assistant")

DOMAIN = "corp.example"
BROADCAST_SLACK = "slack:#all-hands"
BROADCAST_EMAIL = f"email:all@{DOMAIN}"

SENS_RANK = {"public": 0, "internal": 1, "confidential": 2, "restricted": 3}

# The tools each role uses in normal work. Incidents are built from this too:
# a tool outside the set is "never seen" for an agent of that role.
ROLE_TOOLS: Mapping[str, frozenset[str]] = {
    "hr_assistant": frozenset({
        "hr_db.query", "hr_db.get_employee", "docs.read", "slack.post_message", "email.send",
        "drive.write", "drive.delete", "calendar.create_event", "mail.read_inbound",
        "ats.update_candidate",
    }),
    "coding_agent": frozenset({
        "git.clone", "repo.read_file", "fs.write", "fs.delete", "ci.run", "ci.logs", "git.push",
        "git.delete_branch", "web.fetch", "gh.comment", "slack.post_message",
    }),
    "finance_bot": frozenset({
        "erp.read", "erp.query", "erp.write", "payments.create", "payments.submit",
        "payments.void", "bank.read_statement", "drive.write", "slack.post_message", "email.send",
        "mail.read_inbound",
    }),
    "support_bot": frozenset({
        "mail.read_inbound", "tickets.read", "tickets.update", "tickets.search", "tickets.delete",
        "crm.get_customer", "orders.read", "kb.search", "email.send", "slack.post_message",
    }),
    "mail_assistant": frozenset({
        "mail.list_inbox", "mail.read", "mail.draft", "mail.send", "mail.forward", "mail.delete",
        "calendar.find_slots", "calendar.create_event",
    }),
}

ROLE_SHORT = {
    "hr_assistant": "hr",
    "coding_agent": "code",
    "finance_bot": "fin",
    "support_bot": "support",
    "mail_assistant": "mail",
}
# Share of each role in a fleet beyond the first five agents (one of each).
ROLE_WEIGHTS = {
    "hr_assistant": 0.15,
    "coding_agent": 0.25,
    "finance_bot": 0.15,
    "support_bot": 0.25,
    "mail_assistant": 0.20,
}
# Tasks per hour at the busiest local hour of a weekday, before the agent's own factor.
ROLE_RATE = {
    "hr_assistant": 2.6,
    "coding_agent": 2.2,
    "finance_bot": 2.0,
    "support_bot": 2.6,
    "mail_assistant": 3.6,
}
# Relative activity by local hour for office roles: arrivals ramp up at 08,
# dip at lunch, fade after 18.
HOUR_WEIGHT = (
    0.01, 0.0, 0.0, 0.0, 0.0, 0.01, 0.03, 0.2, 0.75, 1.0, 1.0, 1.0,
    0.6, 0.9, 1.0, 1.0, 0.9, 0.7, 0.35, 0.1, 0.04, 0.02, 0.01, 0.01,
)
ALWAYS_ON_FLOOR = 0.3
WEEKEND_FACTOR = 0.04
WEEKEND_FACTOR_ALWAYS_ON = 0.6
MONTH_END_FACTOR = 5.0

# (tz offset minutes, render UTC as "Z") per operator, in order of creation.
OPERATOR_ZONES = (
    (60, False), (0, True), (120, False), (-300, False), (330, False), (0, False),
    (60, False), (-480, False), (540, False), (0, True), (-240, False), (120, False),
)
TEAMS = (
    "people-ops", "platform-eng", "finance-ops", "cx-emea", "data-office", "revenue-ops",
    "it-services", "cx-apac", "product-eng", "legal-ops", "security-eng", "cx-americas",
)
FIRST_NAMES = (
    "alice", "bob", "carla", "dmitri", "emma", "farid", "grace", "hiro", "ines", "jonas",
    "kavya", "liam", "maria", "noah", "olga", "pedro", "quinn", "rosa", "samir", "tara",
    "umar", "vera", "wei", "ximena", "yusuf", "zoe", "anna", "ben", "chloe", "david",
    "elena", "felix", "gita", "hugo", "ivy", "jamal", "kim", "lucas", "mei", "nina",
)
LAST_NAMES = (
    "nguyen", "smith", "garcia", "muller", "rossi", "kowalski", "tanaka", "silva", "khan",
    "novak", "dubois", "jensen", "okafor", "patel", "lopez", "schmidt", "cohen", "ivanova",
    "brown", "moreau", "fischer", "haddad", "larsen", "costa", "sato", "weber", "mendes",
    "yilmaz", "berg", "kim", "oconnor", "varga", "lindqvist", "ahmed", "romano", "becker",
)
REPOS = (
    "payments-api", "web-frontend", "mobile-app", "auth-service", "data-pipeline", "search",
    "billing-core", "infra-terraform", "notifications", "reporting", "ml-features",
    "admin-portal", "customer-api", "ledger-service", "design-system", "etl-jobs",
)
SRC_FILES = (
    "src/app.py", "src/handlers.py", "src/models.py", "src/utils.py", "src/config.py",
    "src/client.ts", "src/index.ts", "tests/test_api.py", "README.md", "Makefile",
    "src/db/queries.sql", "src/routes.go", "pyproject.toml", "package.json",
)
VENDORS = (
    "acme-supplies", "globex-logistics", "initech-software", "umbrella-cleaning", "stark-hardware",
    "wayne-catering", "cyberdyne-cloud", "hooli-ads", "vandelay-imports", "soylent-foods",
    "tyrell-print", "wonka-events", "oscorp-security", "duff-beverages", "pied-piper-storage",
    "monarch-travel", "gekko-consulting", "nakatomi-rentals", "dunder-paper", "massive-dynamic",
    "prestige-worldwide", "bluth-construction", "sterling-legal", "los-pollos-facilities",
    "aperture-labs", "black-mesa-research", "zorg-energy", "rekall-training", "virtucon-telecom",
    "cogswell-parts", "spacely-sprockets", "kramerica-office", "ollivander-tools", "gringotts-fx",
    "weyland-freight", "octan-fuel", "dinoco-fleet", "planet-express", "mom-corp", "lacuna-it",
)
IBAN_COUNTRIES = ("DE", "FR", "NL", "GB", "ES", "IT", "BE", "IE")
CUSTOMER_DOMAINS = (
    "mailbox.example", "inbox.example", "netmail.example", "webpost.example", "homemail.example",
    "acme-retail.example", "globex.example", "initech.example", "umbrella-health.example",
    "hooli.example", "stark-logistics.example", "wayne-foods.example", "brightmail.example",
    "postbox.example", "northwind.example", "contoso.example",
)
PARTNER_DOMAINS = (
    "lawfirm.example", "vendor-accounts.example", "recruit-agency.example", "auditco.example",
    "designstudio.example", "cloudpartner.example", "insurer.example", "bank-partner.example",
)
EXFIL_EMAIL_DOMAINS = ("protonmail.example", "tutamail.example", "anonbox.example", "dropmail.example")
EXFIL_URLS = (
    "https://paste.example/raw/", "https://transfer.example/u/", "https://webhook.example/hooks/",
    "https://files-drop.example/put/",
)
WEB_DOCS = (
    "https://docs.python.org/3/library/", "https://developer.mozilla.org/en-US/docs/",
    "https://pkg.go.dev/", "https://stackoverflow.example/questions/", "https://pypi.org/project/",
    "https://www.npmjs.com/package/", "https://github.com/issues/",
)
APPROVED_PARTNERS = (
    "sftp:sftp.auditco.example/inbound/{yyyymm}",
    "sftp:upload.payroll-partner.example/drop",
    "email:data-intake@bank-partner.example",
)


# --------------------------------------------------------------------------- identifiers


def slug_person(first: str, last: str) -> str:
    """A person's mailbox name: ``first.last``."""
    return f"{first}.{last}"


def random_iban(rng: random.Random) -> str:
    """A made-up IBAN (country, check digits, 18 digits); not checksum-valid, never a real account."""
    cc = rng.choice(IBAN_COUNTRIES)
    return cc + f"{rng.randint(10, 99)}" + "".join(str(rng.randint(0, 9)) for _ in range(18))


def hexid(rng: random.Random, bits: int = 64) -> str:
    """``bits`` random bits as fixed-width hex (task ids, message ids, file names)."""
    return f"{rng.getrandbits(bits):0{bits // 4}x}"


def new_instruction_hash(rng: random.Random) -> str:
    """A fresh ``instruction_hash`` (an agent's configuration): ``sha256:`` and 64 random bits."""
    return "sha256:" + hexid(rng, 64)
