"""Bearer tokens -> principals and roles (streams/api/auth.py): loading, matching, permissions."""
from __future__ import annotations

import hashlib
import hmac
import json
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest

from streams.api import auth
from streams.api.auth import PERMISSIONS, ROLES, Principal, TokenFileError, TokenRegistry, allowed, load_registry

REPO = Path(__file__).resolve().parents[2]


def entry(name: str, role: str, token: str) -> dict:
    return {"name": name, "role": role, "sha256": hashlib.sha256(token.encode()).hexdigest()}


def test_a_tokens_file_in_toml_maps_each_token_to_its_principal(tmp_path):
    path = tmp_path / "tokens.toml"
    path.write_text("\n".join(
        f'[[token]]\nname = "{e["name"]}"\nrole = "{e["role"]}"\nsha256 = "{e["sha256"]}"\n'
        for e in (entry("alice", "lead", "a-secret"), entry("rt", "runtime", "r-secret"))))
    reg = load_registry(path, environ={})
    assert len(reg) == 2
    assert reg.authenticate("Bearer a-secret") == Principal("alice", "lead")
    assert reg.authenticate("bearer r-secret") == Principal("rt", "runtime")


def test_a_tokens_file_in_json_works_the_same(tmp_path):
    path = tmp_path / "tokens.json"
    path.write_text(json.dumps({"tokens": [entry("bob", "viewer", "b-secret")]}))
    assert load_registry(path, environ={}).authenticate("Bearer b-secret") == Principal("bob", "viewer")


def test_tokens_can_come_from_the_environment_when_there_is_no_file():
    e = entry("carol", "analyst", "c-secret")
    reg = load_registry(None, environ={"FLOWBREAKER_API_TOKENS": f"carol:analyst:{e['sha256']}; "})
    assert reg.authenticate("Bearer c-secret") == Principal("carol", "analyst")
    with pytest.raises(TokenFileError):
        load_registry(None, environ={"FLOWBREAKER_API_TOKENS": "carol:analyst"})


def test_without_any_tokens_nobody_is_authenticated():
    reg = load_registry(None, environ={})
    assert len(reg) == 0 and reg.authenticate("Bearer anything") is None


@pytest.mark.parametrize("header", [None, "", "Bearer", "Bearer ", "Basic a-secret", "Token a-secret", "a-secret",
                                    "Bearer a-secretx", "Bearer A-SECRET", "Bearer " + "x" * 5000])
def test_anything_but_a_known_bearer_token_is_refused(header):
    reg = TokenRegistry.from_entries([entry("alice", "lead", "a-secret")])
    assert reg.authenticate(header) is None


def test_every_stored_hash_is_compared_in_constant_time_whichever_matches(monkeypatch):
    reg = TokenRegistry.from_entries([entry(f"u{i}", "viewer", f"tok-{i}") for i in range(5)])
    calls = []
    real = hmac.compare_digest

    def counting(a, b):
        calls.append(1)
        return real(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", counting)
    for token in ("tok-0", "tok-4", "nope"):
        calls.clear()
        reg.authenticate(f"Bearer {token}")
        assert len(calls) == 5  # no early exit on a match


@pytest.mark.parametrize("item, needle", [
    ({"name": "alice", "role": "lead", "token": "plain"}, "never the token"),
    ({"name": "alice", "role": "admin", "sha256": "0" * 64}, "role must be one of"),
    ({"name": "alice", "role": "lead", "sha256": "xyz"}, "64 hex digits"),
    ({"name": "flowbreaker", "role": "lead", "sha256": "0" * 64}, "reserved"),
    ({"name": "", "role": "lead", "sha256": "0" * 64}, "name must be"),
    ({"name": "a b", "role": "lead", "sha256": "0" * 64}, "name must be"),
])
def test_a_bad_entry_is_refused_with_a_reason(item, needle):
    with pytest.raises(TokenFileError, match=needle):
        TokenRegistry.from_entries([item])


def test_the_same_token_twice_is_refused():
    with pytest.raises(TokenFileError, match="twice"):
        TokenRegistry.from_entries([entry("a", "lead", "same"), entry("b", "viewer", "same")])


def test_an_unparseable_file_is_named_without_quoting_its_content(tmp_path):
    path = tmp_path / "tokens.toml"
    path.write_text('[[token]]\nname = "alice"\nsecret = super-secret-value\n')
    with pytest.raises(TokenFileError) as err:
        load_registry(path, environ={})
    assert "super-secret-value" not in str(err.value) and str(path) in str(err.value)
    with pytest.raises(TokenFileError, match="cannot read"):
        load_registry(tmp_path / "missing.toml", environ={})


def test_roles_are_sets_of_permissions_and_only_a_lead_releases():
    assert set(ROLES) == {"viewer", "analyst", "lead", "runtime", "monitor"}
    assert {p for p, roles in PERMISSIONS.items() if "monitor" in roles} == {"metrics"}
    assert {r for r in ROLES if allowed(r, "release")} == {"lead"}
    assert {r for r in ROLES if allowed(r, "freeze")} == {"analyst", "lead"}
    assert {r for r in ROLES if allowed(r, "check")} == {"runtime"}
    assert not allowed("runtime", "read") and not allowed("viewer", "feedback")
    assert not allowed("lead", "no-such-permission")
    assert all(set(roles) <= set(ROLES) for roles in PERMISSIONS.values())


def test_new_prints_a_fresh_token_and_an_entry_that_accepts_it():
    out = subprocess.run([sys.executable, "-m", "streams.api.auth", "new", "dana", "analyst"], cwd=REPO,
                         capture_output=True, text=True, timeout=30, check=True).stdout
    token = [line for line in out.splitlines() if line.startswith("# ") and " " not in line[2:]][0][2:]
    toml = "\n".join(line for line in out.splitlines() if not line.startswith("#"))
    reg = TokenRegistry.from_entries(tomllib.loads(toml)["token"])
    assert reg.authenticate(f"Bearer {token}") == Principal("dana", "analyst")
    assert token not in toml


# ---------------------------------------------------------------------- names, lines, reloading (issue 10, items 10-11)

def toml_entries(*entries) -> str:
    return "\n".join(f'[[token]]\nname = "{e["name"]}"\nrole = "{e["role"]}"\nsha256 = "{e["sha256"]}"\n'
                     for e in entries)


@pytest.mark.parametrize("name", ["flowbreaker lead", 'al"ice', "flowbreaker", "", "-lead", "x" * 129, "ali\u200bce",
                                  "a\nb"])
def test_new_refuses_a_name_the_workers_would_refuse_with_one_line_and_exit_2(name):
    res = subprocess.run([sys.executable, "-m", "streams.api.auth", "new", name, "lead"], cwd=REPO, capture_output=True,
                         text=True, timeout=30)
    assert res.returncode == 2 and res.stdout == ""
    assert len(res.stderr.strip().splitlines()) == 1 and "name" in res.stderr


def test_every_name_new_accepts_is_accepted_by_the_tokens_file():
    for name in ("alice", "bob.smith@corp.example", "rt-7_a+b"):
        assert auth.check_name(name) is None
        TokenRegistry.from_entries([entry(name, "viewer", "t-" + name)])


def test_a_bad_entry_in_a_file_names_the_file_and_its_line(tmp_path):
    path = tmp_path / "tokens.toml"
    path.write_text(toml_entries(entry("alice", "lead", "a"), entry("flowbreaker lead", "lead", "b")))
    with pytest.raises(TokenFileError, match=rf"{path}:6: entry 2: name must be"):
        load_registry(path, environ={})
    path.write_text('[[token]]\nname = "alice"\nrole = "lead"\nsha256 = "' + "0" * 64 + '"\nname2 = = "x"\n')
    with pytest.raises(TokenFileError, match=rf"{path}:5: not valid TOML"):
        load_registry(path, environ={})


def test_a_name_cannot_hold_two_roles_and_a_stray_table_is_refused(tmp_path):
    with pytest.raises(TokenFileError, match="one name, one role"):
        TokenRegistry.from_entries([entry("alice", "viewer", "a"), entry("alice", "lead", "b")])
    TokenRegistry.from_entries([entry("alice", "lead", "old"), entry("alice", "lead", "new")])  # rotating her own
    path = tmp_path / "tokens.toml"
    path.write_text('[tokn]\nname = "alice"\n')  # a typo must not load as "no tokens" silently
    with pytest.raises(TokenFileError, match="unknown top-level"):
        load_registry(path, environ={})


def test_a_removed_token_stops_working_within_the_check_interval(tmp_path):
    path = tmp_path / "tokens.toml"
    path.write_text(toml_entries(entry("alice", "lead", "a-secret"), entry("mallory", "lead", "m-secret")))
    reg = auth.ReloadingRegistry(path, check_s=0.05)
    assert reg.authenticate("Bearer m-secret") == Principal("mallory", "lead")
    path.write_text(toml_entries(entry("alice", "lead", "a-secret")))  # mallory revoked
    deadline = time.monotonic() + 5
    while reg.authenticate("Bearer m-secret") is not None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert reg.authenticate("Bearer m-secret") is None
    assert reg.authenticate("Bearer a-secret") == Principal("alice", "lead")


def test_a_broken_edit_accepts_no_token_until_it_is_fixed_and_a_removed_file_neither(tmp_path):
    path = tmp_path / "tokens.toml"
    good = toml_entries(entry("alice", "lead", "a-secret"))
    path.write_text(good)
    reg = auth.ReloadingRegistry(path, check_s=0.0)
    path.write_text(good + 'name = "oops"\n')  # a malformed line
    assert reg.authenticate("Bearer a-secret") is None and f"{path}:5" in reg.error
    path.write_text(good + "\n")
    assert reg.authenticate("Bearer a-secret") == Principal("alice", "lead") and reg.error is None
    path.unlink()
    assert reg.authenticate("Bearer a-secret") is None and "cannot read" in reg.error


def test_reload_rereads_at_once_whatever_the_clock():
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "tokens.toml"
        path.write_text(toml_entries(entry("alice", "lead", "a-secret")))
        reg = auth.ReloadingRegistry(path, check_s=3600)
        path.write_text(toml_entries(entry("bob", "viewer", "b-secret")))
        assert reg.authenticate("Bearer b-secret") is None  # not looked at yet (an hour between looks)
        assert reg.reload()                                  # what SIGHUP does
        assert reg.authenticate("Bearer b-secret") == Principal("bob", "viewer")
