"""Signed freeze/release commands (streams/clients/signing.py) and the control-side decoder (streams/clients/commands.py)."""
from __future__ import annotations

import doctest

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import streams.api.approvals
import streams.api.audit_trail
import streams.api.auth
import streams.clients.commands
import streams.cli.release
import streams.api.control_feed
import streams.clients.signing
from streams.clients.commands import REASONS, CommandFold, RecordError, decode_command, decode_record
from streams.clients.signing import SIGNED_FIELDS, KeyRing, SigningError, SigningKeyError, load_keyring, new_key_file

K1 = KeyRing({"k1": b"1" * 32}, active="k1")
ROTATED = KeyRing({"k1": b"1" * 32, "k2": b"2" * 32}, active="k2")


def release(**kw) -> dict:
    cmd = {"command": "release", "agent_id": "fin-agent-7", "incident_id": "inc-42",
           "issued_at": "2026-03-02T09:00:00Z", "reason": "false positive", "issued_by": "lee"}
    cmd.update(kw)
    return cmd


@pytest.mark.parametrize("module", [streams.clients.signing, streams.clients.commands, streams.api.control_feed,
                                    streams.api.audit_trail, streams.api.auth, streams.api.approvals,
                                    streams.cli.release])
def test_the_module_examples_run(module):
    assert doctest.testmod(module).failed == 0


def test_a_signature_verifies_and_names_its_key():
    cmd = K1.sign(release())
    assert cmd["signature"].startswith("hmac-sha256:k1:") and len(cmd["signature"]) == len("hmac-sha256:k1:") + 64
    assert K1.verify(cmd) == "ok"
    assert K1.sign(cmd) == cmd  # re-signing replaces, deterministically


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(SIGNED_FIELDS), st.one_of(st.none(), st.text(max_size=40)))
def test_changing_any_signed_field_breaks_the_signature(field, value):
    cmd = K1.sign(release())
    if cmd.get(field) == value:
        return
    assert K1.verify(dict(cmd, **{field: value})) != "ok"


def test_unsigned_malformed_unknown_key_and_wrong_key_are_told_apart():
    cmd = release()
    assert K1.verify(cmd) == "unsigned"
    assert K1.verify(dict(cmd, signature="sha1:k1:00")) == "malformed_signature"
    assert K1.verify(dict(cmd, signature={"x": 1})) == "malformed_signature"
    assert K1.verify(KeyRing({"k9": b"9" * 32}, active="k9").sign(cmd)) == "unknown_key"
    assert K1.verify(KeyRing({"k1": b"x" * 32}, active="k1").sign(cmd)) == "bad_signature"
    assert K1.verify(dict(K1.sign(cmd), extra="not covered")) == "ok"  # unknown fields are not signed (and dropped)


def test_rotation_signs_with_the_active_key_and_verifies_with_every_listed_one():
    old = K1.sign(release())
    new = ROTATED.sign(release(incident_id="inc-43"))
    assert new["signature"].startswith("hmac-sha256:k2:")
    assert ROTATED.verify(old) == ROTATED.verify(new) == "ok"
    assert K1.verify(new) == "unknown_key"  # a consumer not yet given k2 cannot verify: add keys everywhere first
    verify_only = KeyRing({"k1": b"1" * 32})
    assert not verify_only.can_sign and verify_only.verify(old) == "ok"
    with pytest.raises(SigningError):
        verify_only.sign(release())


def test_fields_that_are_not_text_cannot_be_signed_and_never_verify():
    with pytest.raises(SigningError):
        K1.sign(release(reason=7))
    assert K1.verify(dict(K1.sign(release()), reason=7)) == "bad_signature"


def test_a_key_file_loads_and_its_errors_name_the_file_and_line_without_the_secret(tmp_path):
    path = tmp_path / "keys.toml"
    path.write_text(new_key_file("k-2026"))
    ring = load_keyring(path, environ={})
    assert ring.active == "k-2026" and ring.ids == ["k-2026"] and "secret" not in repr(ring)
    secret = "ab" * 32
    path.write_text(f'active = "k1"\n\n[[key]]\nid = "k1"\nsecret = "{secret}"\n\n[[key]]\nid = "k 2"\nsecret = "{secret}"\n')
    with pytest.raises(SigningKeyError, match=rf"{path}:7: key 2: id must be") as err:
        load_keyring(path, environ={})
    assert secret not in str(err.value)
    for text, needle in (('active = "k9"\n[[key]]\nid = "k1"\nsecret = "' + "ab" * 32 + '"\n', "not among"),
                         ('[[key]]\nid = "k1"\nsecret = "abcd"\n', "at least 64 hex"),
                         ('[[key]]\nid = "k1"\nsecret = = "x"\n', f"{path}:3: not valid TOML"),
                         ('actve = "k1"\n', "unknown key"), ("", r"no \[\[key\]\] entries")):
        path.write_text(text)
        with pytest.raises(SigningKeyError, match=needle):
            load_keyring(path, environ={})


def test_keys_come_from_the_file_setting_else_inline_else_none(tmp_path):
    path = tmp_path / "keys.toml"
    path.write_text(new_key_file("kf"))
    assert load_keyring(None, environ={"FLOWBREAKER_SIGNING_KEYS": str(path)}).active == "kf"
    inline = load_keyring(None, environ={"FLOWBREAKER_SIGNING_KEYS_INLINE": f"ka={'aa' * 32},kb={'bb' * 32}"})
    assert inline.active == "ka" and inline.ids == ["ka", "kb"]
    assert load_keyring(None, environ={}) is None
    with pytest.raises(SigningKeyError, match="entry 1 must be KID=HEX"):
        load_keyring(None, environ={"FLOWBREAKER_SIGNING_KEYS_INLINE": "ka:short"})


def test_the_worker_settings_expose_the_key_ring_and_name_a_bad_file():
    from streams.clients.signing import keyring_for
    from streams.settings import Settings, SettingsError

    with pytest.raises(SettingsError, match="cannot read signing key file"):
        keyring_for(Settings(signing_keys="/nonexistent/keys.toml"))


# ---------------------------------------------------------------------- decoding never raises anything else

@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=400))
def test_any_bytes_decode_to_a_command_or_a_record_error_with_a_bounded_reason(raw):
    try:
        decode_command(raw)
    except RecordError as err:
        assert err.reason in REASONS


@pytest.mark.parametrize("raw, reason", [
    (b'{"a":' * 1000, "too_deep"), (b"[" * 100_000, "too_large"), (b'{"command": "freeze", "agent_id": "\xff"}',
                                                                  "encoding"),
    (b'{"command": "freeze", "agent_id": ""}', "schema"), (b'{"command": "freeze", "agent_id": "' + b"a" * 2000 + b'"}',
                                                          "schema"),
    (b"1e99999", "schema"), (b"1", "not_object"), (b"   ", "empty"),
])
def test_hostile_records_get_their_reason(raw, reason):
    with pytest.raises(RecordError) as err:
        decode_command(raw)
    assert err.value.reason == reason


def test_a_mapping_fed_in_process_is_checked_like_bytes():
    with pytest.raises(RecordError):
        decode_record({"x": object()})
    assert decode_command({"command": "freeze", "agent_id": "a"}).agent_id == "a"


def test_without_keys_the_fold_trusts_its_feed_and_with_keys_a_release_needs_both_rules():
    trusted = CommandFold(None)
    trusted.apply(decode_command({"command": "freeze", "agent_id": "a", "incident_id": "i1"}))
    assert trusted.apply(decode_command({"command": "release", "agent_id": "a", "incident_id": "i1"})) == "released"
    fold = CommandFold(K1, unverified_freezes=False)  # the workers' index: unsigned freezes are not breakers
    assert fold.apply(decode_command({"command": "freeze", "agent_id": "a", "incident_id": "i1"})) == "freeze_ignored"
    assert not fold.is_frozen("a")
