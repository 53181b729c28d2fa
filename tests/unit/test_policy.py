"""The policy file (detector/policy.py) against the outside contract, section 2."""
from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from detector.policy import DEFAULT_WEIGHTS, Policy, PolicyError, Thresholds, load_policy

CORP = Policy.from_dict({
    "internal_domains": ["corp.example"],
    "internal": ["slack:*", "file:*", "sftp:backup.corp.example/*"],
    "broadcast": {"slack:#all-hands": 48000, "email:all@corp.example": 5000},
})


# --------------------------------------------------------------------------- classification

@pytest.mark.parametrize("dest,expected", [
    ("email:bob@corp.example", ("internal", 1)),
    ("email:Bob@CORP.Example", ("internal", 1)),
    ("email:bob@eng.corp.example", ("internal", 1)),
    ("email:eve@evil.example", ("external", 1)),
    ("email:eve@notcorp.example", ("external", 1)),
    ("email:eve@corp.example.evil.example", ("external", 1)),
    ("http:https://wiki.corp.example/page", ("internal", 1)),
    ("http:http://corp.example/x", ("internal", 1)),
    ("http:https://git.corp.example:8443/repo", ("internal", 1)),
    ("http:https://corp.example.evil.example/x", ("external", 1)),
    ("http:https://corp.example@evil.example/x", ("external", 1)),
    ("http:https://paste.example/x?to=bob@corp.example", ("external", 1)),
    ("slack:@alice", ("internal", 1)),
    ("slack:#eng", ("internal", 1)),
    ("file:drive://file/9", ("internal", 1)),
    ("sftp:backup.corp.example/nightly", ("internal", 1)),
    ("sftp:elsewhere.example/nightly", ("external", 1)),
    ("iban:GB29NWBK60161331926819", ("external", 1)),
    ("payee:acme", ("external", 1)),
])
def test_destinations_are_classified_internal_or_external(dest, expected):
    assert CORP.classify(dest) == expected


def test_a_listed_broadcast_destination_is_broadcast_with_its_reach_even_when_an_internal_pattern_matches():
    assert CORP.classify("slack:#all-hands") == ("broadcast", 48000)
    assert CORP.classify("email:all@corp.example") == ("broadcast", 5000)


def test_internal_patterns_are_globs_over_the_whole_scheme_address_string():
    p = Policy.from_dict({"internal": ["payee:acme-*", "email:*@partner.example"]})
    assert p.classify("payee:acme-ltd") == ("internal", 1)
    assert p.classify("payee:acme") == ("external", 1)
    assert p.classify("email:x@partner.example") == ("internal", 1)
    assert p.classify("email:x@partner.example.evil") == ("external", 1)
    assert p.classify("xpayee:acme-ltd") == ("external", 1)


def test_internal_domains_also_match_a_leading_dot_and_uppercase_entries():
    p = Policy.from_dict({"internal_domains": [".Corp.Example"]})
    assert p.classify("email:bob@sub.corp.example") == ("internal", 1)


@pytest.mark.parametrize("dest", ["email:bob@corp.example", "slack:#all-hands", "http:https://corp.example/",
                                  "file:drive://file/1", ""])
def test_with_no_policy_every_destination_is_external(dest):
    assert Policy().classify(dest) == ("external", 1)
    assert load_policy(None).classify(dest) == ("external", 1)


def test_classification_is_the_same_when_asked_twice():
    p = Policy.from_dict({"internal_domains": ["corp.example"]})
    first = [p.classify(d) for d in ("email:a@corp.example", "email:a@x.example")]
    assert [p.classify(d) for d in ("email:a@corp.example", "email:a@x.example")] == first


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=60))
def test_classification_of_any_text_is_one_of_the_three_classes(dest):
    cls, reach = CORP.classify(dest)
    assert cls in ("internal", "external", "broadcast")
    assert reach >= 1


# --------------------------------------------------------------------------- untrusted sources

@pytest.mark.parametrize("resource,untrusted", [
    ("https://docs.example/page", True),
    ("http://docs.example/page", True),
    ("email:eve@evil.example", True),
    ("email:bob@corp.example", False),
    ("email:bob@eng.corp.example", False),
    ("hr://personnel/records", False),
    ("slack://channel/general", False),
])
def test_untrusted_sources_are_web_pages_and_mail_from_outside(resource, untrusted):
    assert CORP.is_untrusted_source(resource) is untrusted


def test_untrusted_sources_come_from_the_policy():
    p = Policy.from_dict({"untrusted_sources": ["ticket://inbound"]})
    assert p.is_untrusted_source("ticket://inbound/42")
    assert not p.is_untrusted_source("https://docs.example/page")
    assert not Policy.from_dict({"untrusted_sources": []}).is_untrusted_source("https://x.example")


def test_with_no_policy_all_mail_is_untrusted():
    assert Policy().is_untrusted_source("email:bob@corp.example")


# --------------------------------------------------------------------------- values and defaults

def test_defaults_with_no_policy():
    p = Policy()
    assert p.sensitivity_weight == DEFAULT_WEIGHTS
    assert p.approval_threshold == 0.9
    assert p.thresholds == Thresholds()
    assert p.broadcast == {}


def test_sensitivity_weights_not_given_keep_their_defaults():
    p = Policy.from_dict({"sensitivity_weight": {"restricted": 100}})
    assert p.sensitivity_weight == {**DEFAULT_WEIGHTS, "restricted": 100.0}


def test_thresholds_can_be_set_and_severities_follow_them():
    p = Policy.from_dict({"thresholds": {"low": 0.1, "medium": 0.2, "high": 0.3, "critical": 0.4}})
    th = p.thresholds
    assert [th.severity(s) for s in (0.05, 0.1, 0.25, 0.3, 0.4, 1.0)] == \
        ["ok", "low", "medium", "high", "critical", "critical"]


@settings(max_examples=200, deadline=None)
@given(st.floats(0, 1), st.floats(0, 1))
def test_severity_never_decreases_as_the_score_rises(a, b):
    order = ["ok", "low", "medium", "high", "critical"]
    th = Thresholds()
    lo, hi = sorted((a, b))
    assert order.index(th.severity(lo)) <= order.index(th.severity(hi))


# --------------------------------------------------------------------------- invalid policies

@pytest.mark.parametrize("data,words", [
    ({"internal_domain": ["x"]}, ["unknown", "internal_domain"]),
    ({"internal_domains": "corp.example"}, ["internal_domains", "list of strings"]),
    ({"internal_domains": ["corp.example", 3]}, ["internal_domains", "list of strings"]),
    ({"internal": {"slack": "*"}}, ["internal", "list of strings"]),
    ({"untrusted_sources": [None]}, ["untrusted_sources", "list of strings"]),
    ({"approval_threshold": 1.5}, ["approval_threshold", "[0, 1]"]),
    ({"approval_threshold": -0.1}, ["approval_threshold", "[0, 1]"]),
    ({"approval_threshold": "high"}, ["approval_threshold"]),
    ({"approval_threshold": True}, ["approval_threshold"]),
    ({"broadcast": ["slack:#all-hands"]}, ["broadcast", "reach"]),
    ({"broadcast": {"slack:#all-hands": 0}}, ["broadcast", "reach"]),
    ({"broadcast": {"slack:#all-hands": 2.5}}, ["broadcast", "reach"]),
    ({"broadcast": {"slack:#all-hands": True}}, ["broadcast", "reach"]),
    ({"sensitivity_weight": [1, 2]}, ["sensitivity_weight", "table"]),
    ({"sensitivity_weight": {"secret": 3}}, ["sensitivity_weight", "secret"]),
    ({"sensitivity_weight": {"restricted": -1}}, ["sensitivity_weight.restricted", ">= 0"]),
    ({"sensitivity_weight": {"restricted": "a lot"}}, ["sensitivity_weight.restricted"]),
    ({"sensitivity_weight": {"public": False}}, ["sensitivity_weight.public"]),
    ({"thresholds": {"urgent": 0.5}}, ["thresholds", "critical"]),
    ({"thresholds": "strict"}, ["thresholds"]),
    ({"thresholds": {"low": -0.5}}, ["thresholds.low", ">= 0"]),
    ({"thresholds": {"risk_budget": "big"}}, ["thresholds.risk_budget"]),
    ({"thresholds": {"low": 0.9, "medium": 0.5}}, ["low <= medium"]),
    ({"thresholds": {"critical": 1.5}}, ["critical <= 1"]),
])
def test_every_invalid_key_or_value_is_a_policy_error_that_names_it(data, words):
    with pytest.raises(PolicyError) as info:
        Policy.from_dict(data)
    text = str(info.value)
    assert "\n" not in text
    for w in words:
        assert w in text


# --------------------------------------------------------------------------- files

def test_load_policy_reads_the_example_policy(tmp_path: Path):
    repo = Path(__file__).resolve().parents[2]
    p = load_policy(repo / "examples" / "policy.toml")
    assert p.classify("slack:#all-hands")[0] == "broadcast"
    assert p.classify("email:x@corp.example") == ("internal", 1)


def test_load_policy_reads_every_contract_key(tmp_path: Path):
    path = tmp_path / "p.toml"
    path.write_text("""
internal_domains = ["corp.example"]
internal = ["slack:*"]
untrusted_sources = ["https:"]
approval_threshold = 0.8
[broadcast]
"slack:#all-hands" = 48000
[sensitivity_weight]
public = 0.5
internal = 1.0
confidential = 4
restricted = 30.0
""")
    p = load_policy(path)
    assert p.internal_domains == ("corp.example",)
    assert p.classify("slack:#all-hands") == ("broadcast", 48000)
    assert p.classify("slack:#eng") == ("internal", 1)
    assert p.approval_threshold == 0.8
    assert p.sensitivity_weight == {"public": 0.5, "internal": 1.0, "confidential": 4.0, "restricted": 30.0}
    assert p.is_untrusted_source("https://x.example") and not p.is_untrusted_source("email:x@y.example")


def test_an_empty_policy_file_gives_the_defaults(tmp_path: Path):
    path = tmp_path / "empty.toml"
    path.write_text("")
    assert load_policy(path) == Policy()


def test_a_missing_policy_file_is_a_policy_error_naming_it(tmp_path: Path):
    path = tmp_path / "nope.toml"
    with pytest.raises(PolicyError, match="cannot read policy file .*nope.toml"):
        load_policy(path)


def test_a_policy_file_that_is_not_toml_is_a_policy_error(tmp_path: Path):
    path = tmp_path / "bad.toml"
    path.write_text("internal_domains = [corp.example\n")
    with pytest.raises(PolicyError, match="not valid TOML"):
        load_policy(path)


def test_a_valid_toml_file_with_a_bad_value_is_a_policy_error(tmp_path: Path):
    path = tmp_path / "bad.toml"
    path.write_text("approval_threshold = 7\n")
    with pytest.raises(PolicyError, match="approval_threshold"):
        load_policy(path)


def test_a_directory_given_as_policy_file_is_a_policy_error(tmp_path: Path):
    with pytest.raises(PolicyError, match="cannot read policy file"):
        load_policy(tmp_path)


_DOMAINS = st.lists(st.sampled_from(("corp.example", ".corp.example", "CORP.example", "example", ".", "x.corp.example",
                                     "ünï.example")), max_size=3)
_DESTS = st.sampled_from(("email:bob@corp.example", "email:bob@x.corp.example", "email:bob@evilcorp.example",
                          "email:bob@corp.example.", "email:<bob@Corp.Example>", "http:https://wiki.corp.example/x",
                          "https://corp.example:8080/a", "http://[::1", "slack:@alice", "slack:#eng", "bob@corp.example",
                          "email:x@ünï.example", "email:", "http:", "payee:acme"))


@given(_DOMAINS, st.lists(st.sampled_from(("slack:*", "email:*@corp.example", "payee:acme")), max_size=2), _DESTS)
def test_internal_is_a_host_under_an_internal_domain_or_a_matching_pattern(domains, patterns, dest):
    # the definition, written out: what Policy._is_internal answers (it skips the host when there are no domains)
    import fnmatch

    from detector.policy import _host_of

    p = Policy(internal_domains=tuple(domains), internal=tuple(patterns))
    host = _host_of(dest)
    doms = [d.lower().lstrip(".") for d in domains]
    expected = bool(host and any(host == d or host.endswith("." + d) for d in doms)) or any(
        fnmatch.fnmatchcase(dest, pat) for pat in patterns)
    assert p._is_internal(dest) is expected
    assert p.classify(dest)[0] == ("internal" if expected else "external")
