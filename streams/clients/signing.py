"""Signed control records: Ed25519 keys with ids, signing, verification, key files that reload.

Every command on ``agent-control`` (contract section 4), and every record that
must be authentic the same way (analyst verdicts on ``agent-verdicts``),
carries a ``signature`` ``"ed25519:KID:B64"``: the Ed25519 signature, by the
private key named ``KID``, of the record's canonical encoding
(:func:`canonical`: every field but ``signature``, keys sorted, nulls left
out), base64url without padding (86 characters).

Who holds what (README, "Security model"):

- **signers** hold private keys: the workers (they sign the freezes their
  breakers make and the releases the SOC API grants) and key holders
  (``flowbreaker release --by NAME``);
- **verifiers** hold only public keys: guards (runtimes), the actuator,
  gateways, the simulated runtime. A verify-only key ring cannot sign
  (:class:`SigningError`), so a compromised runtime host cannot forge a release.

Key files are TOML (``--signing-keys FILE`` or ``FLOWBREAKER_SIGNING_KEYS``). A
signer's file (keep it secret, mode 600)::

    active = "k2026-03"            # new signatures use this key
    [[key]]
    id = "k2026-03"                # [A-Za-z0-9._-], 1-32 characters
    private = "<64 hex digits>"    # the Ed25519 private key (its 32-byte seed)
    [[key]]
    id = "k2025-12"                # an older key: only verifies what it signed
    public = "<64 hex digits>"

A verifier's file has only ``public`` entries and no ``active``: ``flowbreaker
keys public FILE`` derives it from the signer's file. For containers,
``FLOWBREAKER_SIGNING_KEYS_INLINE="k2026-03=public:HEX,k2025-12=public:HEX"``
(``KID=private:HEX`` for a signer; the first private key is the active one).

Reloading: a key ring read from a file looks at the file again (one ``stat``)
at most once a second when it signs or verifies, and reloads it when it
changed; :meth:`KeyRing.reload` forces it (guards' hosts and the actuator call
it on SIGHUP). A file that no longer loads is logged and the keys in use are
kept: a bad edit never leaves a consumer without keys.

Rotation (no command is ever unverifiable, nothing restarts):

1. ``flowbreaker keys add FILE`` on the signers' file (a new private key, not
   active) and hand the new public file to every verifier: they reload it;
2. ``flowbreaker keys activate FILE KID`` on the signers: they reload it and
   sign with the new key from then on;
3. keep the old public key for as long as commands it signed are on
   ``agent-control`` (its retention, 90 days by default): a guard that starts
   later reads those commands from the beginning. Then delete its ``[[key]]``.

When it works, when it fails:

- :meth:`KeyRing.verify` never raises: it answers one of :data:`VERDICTS`.
  Anything but ``ok`` means the record is not authenticated.
- :meth:`KeyRing.sign` raises :class:`SigningError` for a verify-only ring
  (no active private key) and for a record that is not JSON-encodable.
- A file that cannot be used raises :class:`SigningKeyError` naming the file
  and, where it can, the line; it never quotes a key. Files of the former HMAC
  scheme (``secret = ...``) are refused with a pointer to ``flowbreaker keys new``.

>>> ring = KeyRing({"k1": bytes(32)}, active="k1")     # bytes: a private key's 32-byte seed
>>> cmd = ring.sign({"command": "release", "agent_id": "a", "incident_id": "inc-1", "seq": 2,
...                  "issued_at": "2026-03-02T09:00:00Z", "reason": "ok", "issued_by": "alice"})
>>> cmd["signature"][:11], ring.verify(cmd)
('ed25519:k1:', 'ok')
>>> public = ring.public()
>>> public.can_sign, public.verify(cmd), public.verify(dict(cmd, seq=3)), public.verify(dict(cmd, signature=None))
(False, 'ok', 'bad_signature', 'unsigned')
"""

from __future__ import annotations

import base64
import json
import logging
import os
import re
import secrets
import sys
import time
import tomllib
from pathlib import Path
from typing import Any, Mapping

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PrivateFormat, PublicFormat, NoEncryption

__all__ = ["KeyRing", "SigningError", "SigningKeyError", "canonical", "load_keyring", "keyring_for", "new_key_file",
           "public_key_file", "key_file_text", "VERDICTS", "ALGORITHM", "RELOAD_CHECK_S"]

log = logging.getLogger("flowbreaker.signing")

ALGORITHM = "ed25519"
#: what :meth:`KeyRing.verify` answers (a bounded set: usable as a metric label)
VERDICTS = ("ok", "unsigned", "malformed_signature", "unknown_key", "bad_signature")
#: a key file is looked at (stat) at most this often, in seconds
RELOAD_CHECK_S = 1.0
_DOMAIN = b"flowbreaker-signed/2\n"
_KID = re.compile(r"[A-Za-z0-9._-]{1,32}\Z")
_HEX32 = re.compile(r"[0-9a-fA-F]{64}\Z")
_SIG = re.compile(r"ed25519:([A-Za-z0-9._-]{1,32}):([A-Za-z0-9_-]{86})\Z")
_ID_HELP = "1-32 characters of letters, digits and ._-"


class SigningError(ValueError):
    """A record that cannot be signed (a verify-only key ring, or a record that is not JSON)."""


class SigningKeyError(ValueError):
    """A key file or variable that cannot be used; the text names where and why, never a key."""


def canonical(record: Mapping[str, Any]) -> bytes:
    """The bytes a signature covers: a domain tag, then every field but ``signature`` as JSON with sorted keys
    (ASCII, no spaces); a field whose value is null counts as absent. Raises :class:`SigningError` for a
    record that is not JSON-encodable.

    >>> canonical({"command": "freeze", "agent_id": "å", "seq": 1, "reason": None, "signature": "x"})
    b'flowbreaker-signed/2\\n{"agent_id":"\\\\u00e5","command":"freeze","seq":1}'
    """
    fields = {k: v for k, v in record.items() if k != "signature" and v is not None}
    try:
        body = json.dumps(fields, sort_keys=True, ensure_ascii=True, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as err:
        raise SigningError(f"not signable: {err}") from None
    return _DOMAIN + body.encode("ascii")


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _raw_public(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def _raw_private(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())


class KeyRing:
    """Ed25519 keys by id. ``keys`` maps an id to an ``Ed25519PrivateKey`` (or its 32-byte seed as ``bytes``)
    or an ``Ed25519PublicKey``; ``active`` names the private key new signatures use (None: verify only).

    Read from a file (:meth:`from_file`), the ring follows the file: see the module docstring.
    """

    def __init__(self, keys: Mapping[str, Any], active: str | None = None, *, where: str = "keys") -> None:
        self.where = where
        self.path: Path | None = None
        self._stamp: tuple | None = None
        self._checked = 0.0
        self._bad_stamp: tuple | None = None
        self.reloads = 0
        self._state = self._build(keys, active, where)

    @staticmethod
    def _build(keys: Mapping[str, Any], active: str | None, where: str) -> tuple[dict, dict, str | None]:
        private: dict[str, Ed25519PrivateKey] = {}
        public: dict[str, Ed25519PublicKey] = {}
        for kid, key in keys.items():
            if not isinstance(kid, str) or not _KID.match(kid):
                raise SigningKeyError(f"{where}: key id {kid!r} must be {_ID_HELP}")
            if isinstance(key, (bytes, bytearray)):
                if len(key) != 32:
                    raise SigningKeyError(f"{where}: key {kid!r}: an Ed25519 private key is 32 bytes")
                key = Ed25519PrivateKey.from_private_bytes(bytes(key))
            if isinstance(key, Ed25519PrivateKey):
                private[kid] = key
                public[kid] = key.public_key()
            elif isinstance(key, Ed25519PublicKey):
                public[kid] = key
            else:
                raise SigningKeyError(f"{where}: key {kid!r} is not an Ed25519 key")
        if active is not None and active not in private:
            raise SigningKeyError(f"{where}: the active key {active!r} is not among the private keys")
        return private, public, active

    def __repr__(self) -> str:  # never the keys
        private, public, active = self._state
        return f"KeyRing(ids={sorted(public)}, active={active!r}, private={sorted(private)})"

    def __len__(self) -> int:
        return len(self._state[1])

    @property
    def ids(self) -> list[str]:
        self.refresh()
        return sorted(self._state[1])

    @property
    def active(self) -> str | None:
        self.refresh()
        return self._state[2]

    @property
    def can_sign(self) -> bool:
        return self.active is not None

    def public(self) -> "KeyRing":
        """A verify-only ring with the same public keys (no private key, no active key)."""
        return KeyRing(dict(self._state[1]), None, where=self.where + " (public)")

    # ------------------------------------------------------------------ signing and verifying
    def signature(self, record: Mapping[str, Any], kid: str | None = None) -> str:
        """``ed25519:KID:B64`` of ``record`` with private key ``kid`` (default: the active key)."""
        self.refresh()
        private, _, active = self._state
        kid = kid or active
        if kid is None:
            raise SigningError(f"{self.where}: no active signing key (a verify-only key ring cannot sign)")
        if kid not in private:
            raise SigningError(f"{self.where}: no private key {kid!r}")
        return f"{ALGORITHM}:{kid}:{_b64(private[kid].sign(canonical(record)))}"

    def sign(self, record: Mapping[str, Any]) -> dict:
        """A copy of ``record`` with its ``signature`` (any previous one replaced)."""
        out = dict(record)
        out.pop("signature", None)
        out["signature"] = self.signature(out)
        return out

    def verify(self, record: Mapping[str, Any]) -> str:
        """One of :data:`VERDICTS`; ``ok`` only for a signature by a listed key over exactly these fields."""
        sig = record.get("signature")
        if sig is None or sig == "":
            return "unsigned"
        m = _SIG.match(sig) if isinstance(sig, str) else None
        if m is None:
            return "malformed_signature"
        self.refresh()
        key = self._state[1].get(m.group(1))
        if key is None:
            return "unknown_key"
        raw = base64.urlsafe_b64decode(m.group(2) + "==")
        if _b64(raw) != m.group(2):  # unused low bits set: one signature, one spelling
            return "malformed_signature"
        try:
            key.verify(raw, canonical(record))
        except (InvalidSignature, SigningError, ValueError):
            return "bad_signature"
        return "ok"

    # ------------------------------------------------------------------ files
    @classmethod
    def from_file(cls, path: str | os.PathLike) -> "KeyRing":
        """The keys of a TOML key file (module docstring); the ring reloads the file when it changes."""
        p = Path(path)
        stamp = _stamp(p)
        keys, active = _read_file(p)
        ring = cls(keys, active, where=str(p))
        if ring._state[0] and os.name == "posix" and p.stat().st_mode & 0o077:
            log.warning("%s holds private signing keys and other users may read it: chmod 600 %s", p, p)
        ring.path, ring._stamp, ring._checked = p, stamp, time.monotonic()
        return ring

    def refresh(self, *, force: bool = False) -> bool:
        """Reload the key file if it changed (looked at most every :data:`RELOAD_CHECK_S`, or now with
        ``force``); True when new keys are in use. Never raises: a file that does not load is logged, once per
        change, and the keys in use are kept."""
        if self.path is None:
            return False
        now = time.monotonic()
        if not force and now - self._checked < RELOAD_CHECK_S:
            return False
        self._checked = now
        try:
            stamp = _stamp(self.path)
        except SigningKeyError as err:
            if self._bad_stamp != ("missing",):
                self._bad_stamp = ("missing",)
                log.error("%s; keeping the keys in use (%s)", err, ", ".join(sorted(self._state[1])))
            return False
        if stamp == self._stamp and not force:
            return False
        try:
            keys, active = _read_file(self.path)
            state = self._build(keys, active, str(self.path))
        except SigningKeyError as err:
            if stamp != self._bad_stamp:
                self._bad_stamp = stamp
                log.error("signing keys not reloaded: %s; keeping the keys in use (%s)", err,
                          ", ".join(sorted(self._state[1])))
            return False
        changed = state[1].keys() != self._state[1].keys() or state[2] != self._state[2] or any(
            _raw_public(state[1][k]) != _raw_public(self._state[1][k]) for k in state[1])
        self._state, self._stamp, self._bad_stamp = state, stamp, None
        if changed:
            self.reloads += 1
            log.warning("signing keys reloaded from %s: %s, active %s", self.path, ", ".join(sorted(state[1])),
                        state[2])
        return changed

    def reload(self) -> bool:
        """Reload the key file now (SIGHUP); True when the keys changed."""
        return self.refresh(force=True)

    @classmethod
    def from_inline(cls, text: str, where: str = "FLOWBREAKER_SIGNING_KEYS_INLINE") -> "KeyRing":
        keys: dict[str, Any] = {}
        active = None
        for i, part in enumerate(p.strip() for p in re.split(r"[,;\n]", text)):
            if not part:
                continue
            kid, sep, rest = part.partition("=")
            kind, sep2, value = rest.strip().partition(":")
            kid, value = kid.strip(), value.strip()
            if not sep or not sep2 or kind not in ("private", "public") or not _KID.match(kid) \
                    or not _HEX32.match(value):
                raise SigningKeyError(f"{where}: entry {i + 1} must be KID=public:HEX or KID=private:HEX "
                                      "(64 hex digits)")
            if kid in keys:
                raise SigningKeyError(f"{where}: key id {kid!r} appears twice")
            raw = bytes.fromhex(value)
            if kind == "private":
                keys[kid] = Ed25519PrivateKey.from_private_bytes(raw)
                active = active or kid
            else:
                keys[kid] = _public_from_bytes(raw, f"{where}: entry {i + 1}")
        if not keys:
            raise SigningKeyError(f"{where}: no keys")
        return cls(keys, active, where=where)

    def file_text(self, *, public_only: bool = False) -> str:
        """This ring as a key file's text (``public_only``: the verifiers' file)."""
        private, public, active = self._state
        return key_file_text({k: (None if public_only else private.get(k), public[k]) for k in sorted(public)},
                             None if public_only else active)


def _public_from_bytes(raw: bytes, at: str) -> Ed25519PublicKey:
    try:
        return Ed25519PublicKey.from_public_bytes(raw)
    except ValueError:
        raise SigningKeyError(f"{at}: not an Ed25519 public key") from None


def _stamp(p: Path) -> tuple:
    try:
        st = p.stat()
    except OSError as err:
        raise SigningKeyError(f"cannot read signing key file {p}: {err.strerror}") from None
    return (st.st_mtime_ns, st.st_size, st.st_ino, st.st_ctime_ns)


def _read_file(p: Path) -> tuple[dict, str | None]:
    try:
        text = p.read_bytes().decode("utf-8")
    except OSError as err:
        raise SigningKeyError(f"cannot read signing key file {p}: {err.strerror}") from None
    except UnicodeDecodeError:
        raise SigningKeyError(f"signing key file {p} is not UTF-8 text") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        # tomllib's message names the line and column, never the text
        where = re.search(r"\(at line (\d+), column \d+\)", str(err))
        raise SigningKeyError(f"{p}:{where.group(1) if where else '?'}: not valid TOML") from None
    unknown = set(data) - {"active", "key"}
    if unknown:
        raise SigningKeyError(f"{p}: unknown key(s) {', '.join(sorted(unknown))} (expected active and [[key]])")
    entries = data.get("key", [])
    if not isinstance(entries, list) or not entries:
        raise SigningKeyError(f"{p}: no [[key]] entries")
    lines = [i + 1 for i, line in enumerate(text.splitlines()) if re.match(r"\s*\[\[\s*key\s*\]\]", line)]
    keys: dict[str, Any] = {}
    for i, entry in enumerate(entries):
        at = f"{p}:{lines[i] if i < len(lines) else '?'}: key {i + 1}"
        if isinstance(entry, dict) and "secret" in entry:
            raise SigningKeyError(f"{at}: an HMAC secret: command keys are Ed25519 now (flowbreaker keys new FILE "
                                  "makes a signer's file, flowbreaker keys public FILE the verifiers'; README, "
                                  "security model)")
        if not isinstance(entry, dict) or "id" not in entry or len(set(entry) & {"private", "public"}) != 1 \
                or set(entry) - {"id", "private", "public"}:
            raise SigningKeyError(f"{at}: must have an id and exactly one of private or public")
        kid = entry["id"]
        if not isinstance(kid, str) or not _KID.match(kid):
            raise SigningKeyError(f"{at}: id must be {_ID_HELP}")
        if kid in keys:
            raise SigningKeyError(f"{at}: id {kid!r} appears twice")
        kind = "private" if "private" in entry else "public"
        value = entry[kind]
        if not isinstance(value, str) or not _HEX32.match(value):
            raise SigningKeyError(f"{at}: {kind} must be 64 hex digits (an Ed25519 {kind} key)")
        raw = bytes.fromhex(value)
        keys[kid] = Ed25519PrivateKey.from_private_bytes(raw) if kind == "private" else _public_from_bytes(raw, at)
    active = data.get("active")
    if active is not None and not isinstance(active, str):
        raise SigningKeyError(f"{p}: active must be a key id")
    if active is not None and not isinstance(keys.get(active), Ed25519PrivateKey):
        raise SigningKeyError(f"{p}: the active key {active!r} is not among the private keys")
    return keys, active


def load_keyring(path: str | os.PathLike | None = None, environ: Mapping[str, str] | None = None) -> KeyRing | None:
    """Keys from ``path``, else ``FLOWBREAKER_SIGNING_KEYS`` (a file), else
    ``FLOWBREAKER_SIGNING_KEYS_INLINE``; ``None`` when none is configured."""
    env = os.environ if environ is None else environ
    path = path or env.get("FLOWBREAKER_SIGNING_KEYS") or None
    if path:
        return KeyRing.from_file(path)
    inline = env.get("FLOWBREAKER_SIGNING_KEYS_INLINE", "")
    if inline.strip():
        return KeyRing.from_inline(inline)
    return None


def keyring_for(settings, environ: Mapping[str, str] | None = None) -> KeyRing | None:
    """The keys a process's settings name (``--signing-keys`` / ``FLOWBREAKER_SIGNING_KEYS``, or
    ``FLOWBREAKER_SIGNING_KEYS_INLINE``), or None when none is configured; raises
    :class:`streams.settings.SettingsError` for a key file or variable that cannot be used (exit 2)."""
    from streams.settings import SettingsError

    try:
        return load_keyring(settings.signing_keys, environ)
    except SigningKeyError as err:
        raise SettingsError(str(err)) from None


def key_file_text(keys: Mapping[str, tuple[Ed25519PrivateKey | None, Ed25519PublicKey]], active: str | None) -> str:
    """A key file's text: ``keys`` maps an id to (private key or None, public key)."""
    signer = any(priv is not None for priv, _ in keys.values())
    head = ("# flowbreaker command signing keys: PRIVATE (chmod 600), for workers and key holders only.\n"
            "# Verifiers (guards, actuators, gateways) get the public file: flowbreaker keys public FILE.\n"
            if signer else
            "# flowbreaker command verification keys (public, no secret): for guards, actuators, gateways.\n"
            "# Derived with flowbreaker keys public FILE; rotation: README, security model.\n")
    out = [head]
    if active is not None:
        out.append(f'active = "{active}"\n')
    for kid, (priv, pub) in keys.items():
        out.append(f'\n[[key]]\nid = "{kid}"\n')
        if priv is not None:
            out.append(f'private = "{_raw_private(priv).hex()}"\n')
        else:
            out.append(f'public = "{_raw_public(pub).hex()}"\n')
    return "".join(out)


def _fresh_kid() -> str:
    from datetime import datetime, timezone

    return "k" + datetime.now(timezone.utc).strftime("%Y%m%d") + "-" + secrets.token_hex(2)


def new_key_file(kid: str | None = None) -> str:
    """The text of a signer's key file with one fresh Ed25519 private key, active."""
    kid = kid or _fresh_kid()
    if not _KID.match(kid):
        raise SigningKeyError(f"key id {kid!r} must be {_ID_HELP}")
    key = Ed25519PrivateKey.generate()
    return key_file_text({kid: (key, key.public_key())}, kid)


def public_key_file(path: str | os.PathLike) -> str:
    """The verifiers' key file (public keys only) for the key file at ``path``."""
    return KeyRing.from_file(path).file_text(public_only=True)


def _main(argv: list[str]) -> int:
    """``python -m streams.clients.signing ...``: the same as ``flowbreaker keys ...``."""
    from streams.cli.keys import main as keys_main

    return keys_main(argv, prog="python -m streams.clients.signing")


if __name__ == "__main__":
    raise SystemExit(_main(sys.argv[1:]))
