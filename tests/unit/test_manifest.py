"""Intended-use manifests (detector/manifest.py): parsing, inheritance, the check of an action, usage
windows, and the pre-action gate with manifests composed over the learned check."""
from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from detector.engine import Engine
from detector.events import SENSITIVITIES, decode_event
from detector.gate import Gate
from detector.manifest import (
    CEILINGS, CLAUSES, VIOLATION_CLAUSES, Manifest, ManifestBook, ManifestError, ManifestGate, Usage,
    check, parse_manifest, render_manifest, stream_effect,
)
from detector.policy import Policy, Thresholds

POLICY = Policy.from_dict({"internal_domains": ["corp.example"], "internal": ["slack:*"],
                           "broadcast": {"slack:#all-hands": 4800}})
FULL = """\
version = 3
agent = "support-1"
role = "support"
description = "answers customers"

[tools]
allow = ["crm.*", "email.send"]

[resources]
allow = ["crm://customers/*"]

[sensitivity]
max_read = "confidential"
max_sent = "internal"
on_violation = "deny"

[destinations]
allow = ["email:*@client.example"]
classes = ["internal"]

[principals]
allow = ["*@corp.example"]
operator = false

[ceilings]
records_out_per_hour = 100
records_out_per_day = 500
bytes_out_per_hour = 1000000
bytes_out_per_day = 5000000
on_violation = "needs_approval"
"""


def ev(**kw):
    base = {"event_id": "e1", "ts": "2026-03-02T09:00:00Z", "agent_id": "support-1", "operator_id": "ops",
            "tool": "crm.read", "action": "read", "resource": "crm://customers/C-1", "sensitivity": "internal",
            "requested_by": "bob@corp.example"}
    base.update(kw)
    return decode_event(base)


def scope_of(text: str, agent: str = "support-1"):
    return ManifestBook([parse_manifest(text, "m.toml")]).scope_for(agent)


def clauses_broken(text: str, event, usage=None) -> list[str]:
    return [v.clause for v in scope_of(text, event.agent_id).check(event, usage, classify=POLICY.classify)]


# --------------------------------------------------------------------------- parsing

def test_a_full_manifest_parses_into_its_clauses():
    m = parse_manifest(FULL, "support-1.toml")
    assert (m.kind, m.name, m.version, m.role, m.key) == ("agent", "support-1", 3, "support", "agent:support-1")
    assert m.clauses["tools"]["allow"] == ("crm.*", "email.send")
    assert m.clauses["sensitivity"] == {"max_read": "confidential", "max_sent": "internal", "on_violation": "deny"}
    assert m.clauses["principals"]["operator"] is False
    assert m.source == "support-1.toml"


def test_a_role_manifest_names_its_agents():
    m = parse_manifest('version = 1\nrole = "support"\nagents = ["support-*"]\n', "r.toml")
    assert (m.kind, m.name, m.agents, m.role) == ("role", "support", ("support-*",), None)


@pytest.mark.parametrize("text,line,needle", [
    ('version = 1\nagent = "a"\n[tools]\nallow = ["x"\n', 5, "not valid TOML"),
    ('version = 1\nagent = "a"\n\n[sensitivity]\nmax_read = "secret"\n', 5, "sensitivity.max_read"),
    ('agent = "a"\n', 1, "version is required"),
    ('version = 0\nagent = "a"\n', 1, "version must be an integer >= 1"),
    ('version = true\nagent = "a"\n', 1, "version must be an integer"),
    ('version = 1\nagent = "a"\nfoo = 1\n', 3, "unknown key 'foo'"),
    ('version = 1\nagent = "a"\n[ceilings]\nrecords_out_per_hour = -1\n', 4, "ceilings.records_out_per_hour"),
    ('version = 1\nagent = "a"\n[ceilings]\nrecords_out_per_week = 1\n', 4, "unknown key 'records_out_per_week'"),
    ('version = 1\nagent = "a"\ntools.allow = 3\n', 3, "tools.allow must be a list of strings"),
    ('version = 1\nagent = "a"\n[destinations]\nclasses = ["outer"]\n', 4, "destinations.classes"),
    ('version = 1\nagent = "a"\n[tools]\nallow = ["x"]\n\non_violation = "block"\n', 6, "on_violation"),
    ('version = 1\nagent = "a"\nagents = ["x"]\n', 3, "belongs in a role manifest"),
    ('version = 1\n', 1, "names its agent"),
    ('version = 1\nagent = ""\n', 2, "agent must be a string"),
    ('version = 1\nagent = "a"\ntools = 1\n', 3, "tools must be a table"),
    ('version = 1\nagent = "a"\n[principals]\noperator = "yes"\n', 4, "principals.operator"),
    ('version = 1\nagent = "a"\n[tools]\nallow = [""]\n', 4, "glob of 1 to"),
    ('version = 1\nagent = "a"\ndescription = 3\n', 3, "description must be a string"),
])
def test_a_bad_manifest_is_one_line_naming_file_and_line(text, line, needle):
    with pytest.raises(ManifestError) as info:
        parse_manifest(text, "dir/a.toml")
    msg = str(info.value)
    assert msg.startswith(f"dir/a.toml:{line}: "), msg
    assert needle in msg
    assert "\n" not in msg
    assert (info.value.source, info.value.line) == ("dir/a.toml", line)


def test_bytes_that_are_not_utf8_are_refused_with_their_line():
    with pytest.raises(ManifestError, match=r"^m.toml:2: not UTF-8"):
        parse_manifest(b'version = 1\nagent = "\xff"\n', "m.toml")


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_any_text_parses_or_raises_a_manifest_error(text):
    try:
        m = parse_manifest(text, "f.toml")
    except ManifestError as err:
        assert str(err).startswith("f.toml:")
        assert err.line >= 1
    else:
        assert m.version >= 1


_name = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=20)
_globs = st.lists(st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=15), max_size=4,
                  unique=True).map(tuple)
_on = st.sampled_from(["needs_approval", "deny"])


@st.composite
def manifests(draw):
    clauses = {}
    if draw(st.booleans()):
        clauses["tools"] = {"allow": draw(_globs), "on_violation": draw(_on)}
    if draw(st.booleans()):
        clauses["resources"] = {"allow": draw(_globs)}
    if draw(st.booleans()):
        clauses["sensitivity"] = {"max_read": draw(st.sampled_from(SENSITIVITIES)),
                                  "max_sent": draw(st.sampled_from(SENSITIVITIES))}
    if draw(st.booleans()):
        clauses["destinations"] = {"allow": draw(_globs),
                                   "classes": tuple(draw(st.lists(st.sampled_from(["internal", "external",
                                                                                  "broadcast"]), unique=True)))}
    if draw(st.booleans()):
        clauses["principals"] = {"allow": draw(_globs), "operator": draw(st.booleans())}
    if draw(st.booleans()):
        clauses["ceilings"] = {k: draw(st.integers(0, 10**12)) for k in CEILINGS if draw(st.booleans())}
    kind = draw(st.sampled_from(["agent", "role"]))
    return Manifest(kind=kind, name=draw(_name), version=draw(st.integers(1, 10**6)), clauses=clauses,
                    role=draw(st.one_of(st.none(), _name)) if kind == "agent" else None,
                    agents=draw(_globs) if kind == "role" else (), description=draw(st.text(max_size=30)))


@settings(max_examples=200, deadline=None)
@given(manifests())
def test_rendering_then_parsing_gives_the_same_manifest(m):
    text = render_manifest(m, comments={"": "a head\nof two lines", "tools": "why these tools"})
    back = parse_manifest(text, "r.toml")
    assert back.same_content(m), text


# --------------------------------------------------------------------------- matching

def test_an_action_inside_every_clause_breaks_none():
    assert clauses_broken(FULL, ev()) == []


@pytest.mark.parametrize("change,clause", [
    ({"tool": "vault.read"}, "tools"),
    ({"resource": "hr://personnel/1"}, "resources"),
    ({"sensitivity": "restricted"}, "sensitivity.max_read"),
    ({"requested_by": "eve@evil.example"}, "principals"),
    ({"requested_by": None}, "principals"),                 # operator = false
    ({"requested_by": "ops"}, "principals"),                # the operator by name is the operator
])
def test_each_clause_is_named_when_broken(change, clause):
    assert clauses_broken(FULL, ev(**change)) == [clause]


def test_sending_out_checks_destinations_by_glob_and_class_and_the_sent_sensitivity():
    ok = ev(tool="email.send", action="send", destinations=["email:x@client.example", "slack:@bob"])
    assert clauses_broken(FULL, ok) == []
    bad = ev(tool="email.send", action="send", sensitivity="confidential",
             destinations=["email:x@evil.example", "slack:#all-hands", "email:y@client.example"])
    assert clauses_broken(FULL, bad) == ["sensitivity.max_sent", "destinations"]
    v = scope_of(FULL).check(bad, classify=POLICY.classify)
    assert v[0].on_violation == "deny" and v[1].on_violation == "needs_approval"
    assert "2 destination(s)" in v[1].detail and "evil.example" in v[1].detail and "all-hands" in v[1].detail
    assert v[1].manifest == "agent support-1 v3"


def test_a_clause_without_its_list_restricts_nothing_and_an_empty_list_allows_nothing():
    open_ = 'version = 1\nagent = "support-1"\n[tools]\non_violation = "deny"\n[destinations]\n'
    assert clauses_broken(open_, ev(tool="x", destinations=["email:e@evil.example"])) == []
    closed = 'version = 1\nagent = "support-1"\n[tools]\nallow = []\n[destinations]\nallow = []\n'
    assert clauses_broken(closed, ev(tool="x", destinations=["slack:@a"])) == ["tools", "destinations"]


def test_globs_are_case_sensitive_and_star_crosses_slashes():
    text = 'version = 1\nagent = "support-1"\n[resources]\nallow = ["crm://customers/*"]\n'
    assert clauses_broken(text, ev(resource="crm://customers/a/b/c")) == []
    assert clauses_broken(text, ev(resource="CRM://customers/a")) == ["resources"]
    assert clauses_broken(text, ev(resource="crm://customers")) == ["resources"]


def test_without_a_policy_every_destination_is_external():
    s = scope_of('version = 1\nagent = "support-1"\n[destinations]\nclasses = ["external"]\n')
    assert s.check(ev(destinations=["email:bob@corp.example"])) == []
    assert [v.clause for v in s.check(ev(destinations=["email:bob@corp.example"]), classify=POLICY.classify)] \
        == ["destinations"]


def test_ceilings_count_what_was_sent_before_plus_this_action():
    text = 'version = 1\nagent = "support-1"\n[ceilings]\nrecords_out_per_hour = 100\nbytes_out_per_day = 1000\n'
    u = Usage()
    send = ev(action="send", records=60, bytes=400, destinations=["email:a@client.example"])
    assert clauses_broken(text, send, u) == []
    u.add(send.t, 60, 400)
    assert clauses_broken(text, send, u) == ["ceilings.records_out_per_hour"]
    u.add(send.t, 0, 400)
    assert clauses_broken(text, send, u) == ["ceilings.records_out_per_hour", "ceilings.bytes_out_per_day"]
    # a read carries nothing out: ceilings do not apply
    assert clauses_broken(text, ev(records=10**6), u) == []
    # the hour has passed
    later = decode_event({**send.to_dict(), "ts": "2026-03-02T11:30:00Z"})
    assert clauses_broken(text, later, u) == ["ceilings.bytes_out_per_day"]


def test_violation_clauses_are_a_bounded_set_covering_every_clause():
    assert {c.split(".")[0] for c in VIOLATION_CLAUSES} == set(CLAUSES)
    assert len(VIOLATION_CLAUSES) == 10


# --------------------------------------------------------------------------- the book

ROLE = 'version = 2\nrole = "support"\nagents = ["support-*"]\n[tools]\nallow = ["crm.*"]\non_violation = "deny"\n' \
       '[resources]\nallow = ["crm://*"]\n'


def test_agents_inherit_their_roles_clauses_and_override_them_key_by_key():
    own = 'version = 1\nagent = "support-1"\nrole = "support"\n[tools]\nallow = ["crm.*", "email.send"]\n'
    book = ManifestBook([parse_manifest(ROLE, "r"), parse_manifest(own, "a")])
    s = book.scope_for("support-1")
    assert s.label == "agent support-1 v1 + role support v2"
    assert s.clauses["tools"] == {"allow": ("crm.*", "email.send"), "on_violation": "deny"}
    assert s.clauses["resources"] == {"allow": ("crm://*",)}
    # another agent of the role, without its own manifest, gets the role's scope
    other = book.scope_for("support-2")
    assert other.label == "role support v2" and other.clauses["tools"]["allow"] == ("crm.*",)
    # an agent nobody declared behaves as without manifests
    assert book.scope_for("hr-1") is None
    assert check(book.scope_for("hr-1"), ev(agent_id="hr-1", tool="anything")) == []


def test_an_agent_whose_role_is_not_loaded_keeps_its_own_clauses():
    own = 'version = 1\nagent = "a"\nrole = "ghost"\n[tools]\nallow = ["x"]\n'
    s = ManifestBook([parse_manifest(own)]).scope_for("a")
    assert s.label == "agent a v1" and s.clauses == {"tools": {"allow": ("x",)}}


def test_a_newer_version_replaces_an_older_one_and_an_older_one_is_ignored():
    book = ManifestBook()
    v1 = parse_manifest('version = 1\nagent = "a"\n[tools]\nallow = ["x"]\n')
    v2 = parse_manifest('version = 2\nagent = "a"\n[tools]\nallow = ["y"]\n')
    assert book.put(v1) == "added"
    assert book.scope_for("a").clauses["tools"]["allow"] == ("x",)
    assert book.put(v2) == "replaced"
    assert book.scope_for("a").clauses["tools"]["allow"] == ("y",)  # the cached scope was dropped
    assert book.put(v1) == "stale" and book.put(v2) == "stale"
    assert book.remove("agent:a") and book.scope_for("a") is None and not book.remove("agent:a")


def test_a_copy_is_a_snapshot():
    book = ManifestBook([parse_manifest('version = 1\nagent = "a"\n')])
    snap = book.copy()
    book.put(parse_manifest('version = 1\nagent = "b"\n'))
    assert len(snap) == 1 and len(book) == 2


# --------------------------------------------------------------------------- usage

@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 3 * 86400, allow_nan=False), st.integers(0, 1000)), max_size=40),
       st.floats(0, 4 * 86400, allow_nan=False), st.sampled_from([0, 1]))
def test_the_sliding_estimate_lies_between_the_current_bucket_and_the_last_two_periods(adds, probe, period):
    adds = sorted(adds)
    u = Usage()
    for t, r in adds:
        u.add(t, r, 2 * r)
    t = max([probe] + [a for a, _ in adds])
    p = Usage.PERIODS[period]
    bucket = math.floor(t / p) * p
    in_bucket = sum(r for a, r in adds if a >= bucket)
    in_two = sum(r for a, r in adds if a > t - 2 * p)
    est_r, est_b = u.estimate(t, period)
    assert in_bucket - 1e-6 <= est_r <= in_two + 1e-6
    assert est_b == pytest.approx(2 * est_r)
    assert Usage.from_tuple(u.to_tuple()).estimate(t, period) == (est_r, est_b)


def test_usage_state_of_the_wrong_size_is_refused():
    with pytest.raises(ValueError):
        Usage.from_tuple((1.0, 2.0))


# --------------------------------------------------------------------------- gate and stream

def gate_with(text: str | None) -> ManifestGate:
    eng = Engine(policy=POLICY)
    book = ManifestBook([parse_manifest(text)]) if text else ManifestBook()
    return ManifestGate(Gate(eng), book)


SEND = dict(tool="email.send", action="send", sensitivity="internal", destinations=["email:x@evil.example"])


def test_the_check_asks_for_approval_naming_the_clause_broken():
    g = gate_with('version = 1\nagent = "support-1"\n[destinations]\nallow = ["email:*@client.example"]\n')
    verdict, _, why = g.check(ev(**SEND))
    assert verdict == "needs_approval"
    assert why[0].startswith("outside its intended use (agent support-1 v1), destinations: 1 destination(s)")
    assert g.verdict(ev()) is None  # a read: no pre-action verdict (as Gate)


def test_a_deny_clause_denies_even_with_an_approval():
    g = gate_with('version = 1\nagent = "support-1"\n[destinations]\nallow = []\non_violation = "deny"\n')
    assert g.check(ev(**SEND))[0] == "deny"
    assert g.check(ev(**SEND, approval_id="apr-1"))[0] == "deny"


def test_an_approval_covers_a_clause_that_asks_for_approval():
    g = gate_with('version = 1\nagent = "support-1"\n[destinations]\nallow = []\n')
    verdict, _, why = g.check(ev(**SEND, approval_id="apr-1"))
    assert verdict == "allow" and any("outside its intended use" in w for w in why)


def test_agents_without_a_manifest_get_the_learned_verdict_unchanged():
    g = gate_with(None)
    plain = Gate(g.engine)
    for e in (ev(**SEND), ev(**{**SEND, "records": 5000, "sensitivity": "restricted"})):
        assert g.check(e) == plain.check(e)


def test_a_frozen_agent_stays_denied_without_manifest_reasons():
    g = gate_with('version = 1\nagent = "support-1"\n[tools]\nallow = []\n')
    g.engine.process(ev())
    g.engine.agents["support-1"].breaker.state = "open"
    assert g.check(ev(**SEND))[0] == "deny"
    assert g.check_both(ev(**SEND))[3] == []


def test_the_gate_reads_the_engines_book_and_usage_by_default():
    eng = Engine(policy=POLICY)
    g = ManifestGate(Gate(eng))
    assert g.check_both(ev(**SEND))[3] == []
    eng.manifests = ManifestBook([parse_manifest('version = 1\nagent = "support-1"\n[tools]\nallow = []\n')])
    assert g.check_both(ev(**SEND))[3][0].clause == "tools"


def test_out_of_scope_actions_floor_the_score_at_medium_or_high_and_lead_the_reasons():
    th = Thresholds()
    ask = [("tools", "needs_approval")]
    deny = ask + [("destinations", "deny")]
    from detector.manifest import Violation

    f1, r1 = stream_effect([Violation(c, o, "d", "agent a v1") for c, o in ask], th)
    f2, r2 = stream_effect([Violation(c, o, "d", "agent a v1") for c, o in deny], th)
    assert (f1, f2) == (th.medium, th.high)
    assert r2["feature"] == "out_of_scope" and r2["value"] == 2.0 and "tools: d; destinations: d" in r2["detail"]
    assert stream_effect([], th) is None
