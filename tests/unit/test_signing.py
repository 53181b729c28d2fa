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
import streams.cli.keys
import streams.cli.release
import streams.api.control_feed
import streams.clients.signing
from streams.clients.commands import REASONS, CommandFold, RecordError, decode_command, decode_record
from streams.clients.signing import (KeyRing, SigningError, SigningKeyError, canonical, load_keyring,
                                     new_key_file, public_key_file)

K1 = KeyRing({"k1": b"1" * 32}, active="k1")
ROTATED = KeyRing({"k1": b"1" * 32, "k2": b"2" * 32}, active="k2")
SIGNED_FIELDS = ("command", "agent_id", "incident_id", "issued_at", "reason", "issued_by", "seq")


def release(**kw) -> dict:
    cmd = {"command": "release", "agent_id": "fin-agent-7", "incident_id": "inc-42", "seq": 8,
           "issued_at": "2026-03-02T09:00:00Z", "reason": "false positive", "issued_by": "lee"}
    cmd.update(kw)
    return cmd


@pytest.mark.parametrize("module", [streams.clients.signing, streams.clients.commands, streams.api.control_feed,
                                    streams.api.audit_trail, streams.api.auth, streams.api.approvals,
                                    streams.cli.release, streams.cli.keys])
def test_the_module_examples_run(module):
    assert doctest.testmod(module).failed == 0


def test_a_signature_is_ed25519_verifies_and_names_its_key():
    cmd = K1.sign(release())
    assert cmd["signature"].startswith("ed25519:k1:") and len(cmd["signature"]) == len("ed25519:k1:") + 86
    assert K1.verify(cmd) == "ok"
    assert K1.sign(cmd) == cmd  # re-signing replaces, deterministically (Ed25519 signatures are deterministic)


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(SIGNED_FIELDS), st.one_of(st.none(), st.text(max_size=40), st.integers(1, 2 ** 53)))
def test_changing_any_signed_field_breaks_the_signature(field, value):
    cmd = K1.sign(release())
    if cmd.get(field) == value:
        return
    assert K1.verify(dict(cmd, **{field: value})) != "ok"


def test_the_signature_covers_every_field_but_itself_and_a_null_is_an_absent_field():
    cmd = K1.sign(release())
    assert K1.verify(dict(cmd, extra="added")) == "bad_signature"  # a field the signer did not write
    assert K1.verify(dict(cmd, absent=None)) == "ok"
    assert canonical({"b": 1, "a": None, "signature": "x"}) == canonical({"b": 1})
    verdict = K1.sign({"command": "verdict", "agent_id": "a", "verdict": "benign", "at": 1.5})  # any record
    assert K1.verify(verdict) == "ok" and K1.verify(dict(verdict, verdict="confirmed")) == "bad_signature"


def test_unsigned_malformed_unknown_key_and_wrong_key_are_told_apart():
    cmd = release()
    assert K1.verify(cmd) == "unsigned"
    assert K1.verify(dict(cmd, signature="sha1:k1:00")) == "malformed_signature"
    assert K1.verify(dict(cmd, signature="hmac-sha256:k1:" + "0" * 64)) == "malformed_signature"  # the former HMAC
    assert K1.verify(dict(cmd, signature={"x": 1})) == "malformed_signature"
    assert K1.verify(KeyRing({"k9": b"9" * 32}, active="k9").sign(cmd)) == "unknown_key"
    assert K1.verify(KeyRing({"k1": b"x" * 32}, active="k1").sign(cmd)) == "bad_signature"
    sig = K1.sign(cmd)["signature"]
    flipped = sig[:20] + ("B" if sig[20] == "A" else "A") + sig[21:]
    assert K1.verify(dict(cmd, signature=flipped)) == "bad_signature"
    respelled = sig[:-1] + chr(ord(sig[-1]) + 1)  # the last character's unused bits: not a second spelling
    assert K1.verify(dict(cmd, signature=respelled)) in ("malformed_signature", "bad_signature")


def test_a_verify_only_ring_verifies_but_cannot_sign_and_holds_no_private_key(tmp_path):
    signed = K1.sign(release())
    public = K1.public()
    assert not public.can_sign and public.active is None and public.verify(signed) == "ok"
    with pytest.raises(SigningError, match="verify-only"):
        public.sign(release())
    path = tmp_path / "keys.toml"
    path.write_text(new_key_file("k-2026"))
    pub = tmp_path / "keys.pub"
    pub.write_text(public_key_file(path))
    text = pub.read_text()
    assert "private" not in text.replace("PRIVATE", "") and "active" not in text
    assert "private" not in pub.read_text().split("\n", 2)[2]
    ring, verifier = KeyRing.from_file(path), KeyRing.from_file(pub)
    assert verifier.ids == ["k-2026"] and not verifier.can_sign
    assert verifier.verify(ring.sign(release())) == "ok"
    with pytest.raises(SigningError):
        verifier.sign(release())


def test_rotation_signs_with_the_active_key_and_verifies_with_every_listed_one():
    old = K1.sign(release())
    new = ROTATED.sign(release(incident_id="inc-43"))
    assert new["signature"].startswith("ed25519:k2:")
    assert ROTATED.verify(old) == ROTATED.verify(new) == "ok"
    assert K1.verify(new) == "unknown_key"  # a consumer not yet given k2 cannot verify: add keys everywhere first
    verify_only = ROTATED.public()
    assert not verify_only.can_sign and verify_only.verify(old) == verify_only.verify(new) == "ok"


def test_rotation_with_the_key_tool_reaches_a_running_verifier_without_a_restart(tmp_path, monkeypatch, capsys):
    """keys new -> keys add (verifiers reload the public file) -> keys activate (signers reload) -> old key
    dropped from the public file: every step is picked up by rings already loaded."""
    from streams.cli.main import main

    monkeypatch.setattr(streams.clients.signing, "RELOAD_CHECK_S", 0.0)
    private, public = tmp_path / "signer.toml", tmp_path / "signer.toml.pub"
    assert main(["keys", "new", str(private), "--id", "k-old"]) == 0
    assert private.stat().st_mode & 0o777 == 0o600
    signer, verifier = KeyRing.from_file(private), KeyRing.from_file(public)
    before = signer.sign(release())
    assert main(["keys", "add", str(private), "--id", "k-new"]) == 0           # step 1: not active yet
    assert signer.active == "k-old" and verifier.ids == ["k-new", "k-old"]
    assert main(["keys", "activate", str(private), "k-new"]) == 0              # step 2
    after = signer.sign(release(seq=9))
    assert after["signature"].startswith("ed25519:k-new:")
    assert verifier.verify(before) == verifier.verify(after) == "ok"
    only_new = KeyRing.from_file(private).file_text(public_only=True)        # step 3: the old key retired
    public.write_text(only_new.split("[[key]]")[0] + "[[key]]" + [p for p in only_new.split("[[key]]")
                                                                   if "k-new" in p][0])
    assert verifier.ids == ["k-new"] and verifier.verify(before) == "unknown_key" and verifier.verify(after) == "ok"
    assert main(["keys", "new", str(private)]) == 2                          # never overwritten
    assert main(["keys", "activate", str(private), "k-none"]) == 2
    assert main(["keys", "add", str(private), "--id", "k-new"]) == 2
    err = capsys.readouterr().err
    assert all(line.startswith("flowbreaker keys: ") for line in err.strip().splitlines())
    assert main(["keys", "public", str(private)]) == 0 and "k-new" in capsys.readouterr().out


def test_a_key_file_reloads_when_it_changes_and_a_broken_edit_keeps_the_keys_in_use(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(streams.clients.signing, "RELOAD_CHECK_S", 0.0)
    path = tmp_path / "keys.toml"
    path.write_text(new_key_file("k-a"))
    ring = KeyRing.from_file(path)
    signed_a = ring.sign(release())
    path.write_text(new_key_file("k-b"))
    assert ring.verify(signed_a) == "unknown_key" and ring.active == "k-b" and ring.reloads == 1
    path.write_text("not = = toml")
    assert ring.active == "k-b" and ring.ids == ["k-b"]                      # kept
    assert "not reloaded" in caplog.text and "keeping the keys in use" in caplog.text
    path.unlink()
    assert ring.active == "k-b"


def test_a_private_key_file_others_may_read_is_named_in_a_warning(tmp_path, caplog):
    path = tmp_path / "keys.toml"
    path.write_text(new_key_file("k-a"))
    path.chmod(0o600)
    KeyRing.from_file(path)
    assert "chmod 600" not in caplog.text
    path.chmod(0o644)
    KeyRing.from_file(path)
    assert f"{path} holds private signing keys and other users may read it" in caplog.text
    public = tmp_path / "keys.pub"
    public.write_text(public_key_file(path))
    public.chmod(0o644)
    caplog.clear()
    KeyRing.from_file(public)  # a public file is meant to be read
    assert "chmod" not in caplog.text


def test_reload_reads_the_file_at_once_as_on_sighup(tmp_path):
    path = tmp_path / "keys.toml"
    path.write_text(new_key_file("k-a"))
    ring = KeyRing.from_file(path)  # looked at again at most once a second on its own ...
    path.write_text(new_key_file("k-b"))
    assert ring.reload() is True and ring.ids == ["k-b"]                    # ... at once when asked
    assert ring.reload() is False


def test_a_key_file_loads_and_its_errors_name_the_file_and_line_without_the_key(tmp_path):
    path = tmp_path / "keys.toml"
    path.write_text(new_key_file("k-2026"))
    ring = load_keyring(path, environ={})
    assert ring.active == "k-2026" and ring.ids == ["k-2026"]
    assert path.read_text().split('private = "')[1][:64] not in repr(ring)
    secret = "ab" * 32
    path.write_text(f'active = "k1"\n\n[[key]]\nid = "k1"\nprivate = "{secret}"\n\n[[key]]\nid = "k 2"\n'
                    f'public = "{secret}"\n')
    with pytest.raises(SigningKeyError, match=rf"{path}:7: key 2: id must be") as err:
        load_keyring(path, environ={})
    assert secret not in str(err.value)
    for text, needle in (('active = "k9"\n[[key]]\nid = "k1"\nprivate = "' + "ab" * 32 + '"\n', "not among"),
                         ('active = "k1"\n[[key]]\nid = "k1"\npublic = "' + "ab" * 32 + '"\n',
                          "not among the private"),
                         ('[[key]]\nid = "k1"\nprivate = "abcd"\n', "64 hex"),
                         ('[[key]]\nid = "k1"\nprivate = "' + "ab" * 32 + '"\npublic = "' + "ab" * 32 + '"\n',
                          "exactly one of private or public"),
                         ('[[key]]\nid = "k1"\nsecret = "' + "ab" * 32 + '"\n', "HMAC secret.*flowbreaker keys new"),
                         ('[[key]]\nid = "k1"\nprivate = = "x"\n', f"{path}:3: not valid TOML"),
                         ('actve = "k1"\n', "unknown key"), ("", r"no \[\[key\]\] entries")):
        path.write_text(text)
        with pytest.raises(SigningKeyError, match=needle):
            load_keyring(path, environ={})


def test_keys_come_from_the_file_setting_else_inline_else_none(tmp_path):
    path = tmp_path / "keys.toml"
    path.write_text(new_key_file("kf"))
    assert load_keyring(None, environ={"FLOWBREAKER_SIGNING_KEYS": str(path)}).active == "kf"
    pub = K1.file_text(public_only=True).split('public = "')[1][:64]
    inline = load_keyring(None, environ={"FLOWBREAKER_SIGNING_KEYS_INLINE": f"ka=private:{'aa' * 32},k1=public:{pub}"})
    assert inline.active == "ka" and inline.ids == ["k1", "ka"] and inline.verify(K1.sign(release())) == "ok"
    verify_only = load_keyring(None, environ={"FLOWBREAKER_SIGNING_KEYS_INLINE": f"k1=public:{pub}"})
    assert not verify_only.can_sign
    assert load_keyring(None, environ={}) is None
    for bad in ("ka:short", f"ka={'aa' * 32}", f"ka=secret:{'aa' * 32}"):
        with pytest.raises(SigningKeyError, match="entry 1 must be KID=public:HEX"):
            load_keyring(None, environ={"FLOWBREAKER_SIGNING_KEYS_INLINE": bad})


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
    signed_without_seq = decode_command(K1.sign({"command": "release", "agent_id": "a", "incident_id": "i1"}))
    assert CommandFold(K1).verify(signed_without_seq) == "unsequenced"  # the former format: not ordered
    fold = CommandFold(K1, unverified_freezes=False)  # the workers' index: unsigned freezes are not breakers
    assert fold.apply(decode_command({"command": "freeze", "agent_id": "a", "incident_id": "i1"})) == "freeze_ignored"
    assert not fold.is_frozen("a")
