"""Signed freeze and release commands: HMAC-SHA256 keys with ids, signing and verification.

Every command on ``agent-control`` (contract section 4) carries a ``signature``
``"hmac-sha256:KID:HEX"``: the HMAC-SHA256, with the key named ``KID``, of the
command's canonical encoding (:func:`canonical`). Workers sign the freezes they
publish and the releases the API grants; ``flowbreaker release`` signs when run
by a key holder. Guards, the actuator and the workers verify: a release is
honoured only when its signature verifies (and it names the agent's open
incident, :mod:`streams.clients.commands`).

Keys are read from a TOML file (``--signing-keys FILE`` or
``FLOWBREAKER_SIGNING_KEYS``), mode 600, the same on every worker, actuator,
runtime and key holder::

    active = "k2026-03"            # new commands are signed with this key
    [[key]]
    id = "k2026-03"                # [A-Za-z0-9._-], 1-32 characters
    secret = "<64+ hex digits>"    # 32 random bytes or more
    [[key]]
    id = "k2025-12"                # an older key: still verifies what it signed
    secret = "..."

or, for containers, from ``FLOWBREAKER_SIGNING_KEYS_INLINE="k2026-03=HEX,k2025-12=HEX"``
(the first is the active one). ``python -m streams.clients.signing new [KID]`` prints a
fresh key file.

Rotation (no command is ever unverifiable):

1. add the new key (not active) to every consumer's and signer's file; the
   processes read it at their next start (restart them one by one);
2. make it ``active`` on the signers (workers, key holders) and restart them;
3. keep the old key for as long as commands it signed are on ``agent-control``
   (the topic's retention, 90 days by default): a guard that starts later reads
   those commands from the beginning and must still verify the old releases.
   Then remove it.

When it works, when it fails:

- :meth:`KeyRing.verify` never raises: it answers one of :data:`VERDICTS`.
  Anything but ``ok`` means the command is not authenticated.
- :meth:`KeyRing.sign` raises :class:`SigningError` without an active key, and
  when a signed field is not a string or null.
- HMAC keys are symmetric: whoever can verify can also sign. A host that runs a
  guard holds the key and could forge a release; the README's security model
  says what that means.
- A file that cannot be used raises :class:`SigningKeyError` naming the file
  and, where it can, the line; it never quotes a secret.

>>> ring = KeyRing({"k1": bytes(32)}, active="k1")
>>> cmd = ring.sign({"command": "release", "agent_id": "a", "incident_id": "inc-1",
...                  "issued_at": "2026-03-02T09:00:00Z", "reason": "ok", "issued_by": "alice"})
>>> cmd["signature"][:15], ring.verify(cmd)
('hmac-sha256:k1:', 'ok')
>>> ring.verify(dict(cmd, incident_id="inc-2")), ring.verify(dict(cmd, signature=None))
('bad_signature', 'unsigned')
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import secrets
import sys
import tomllib
from pathlib import Path
from typing import Any, Mapping

__all__ = ["KeyRing", "SigningError", "SigningKeyError", "canonical", "load_keyring", "keyring_for", "new_key_file",
           "SIGNED_FIELDS", "VERDICTS", "ALGORITHM"]

ALGORITHM = "hmac-sha256"
#: the fields a signature covers, in this order
SIGNED_FIELDS = ("command", "agent_id", "incident_id", "issued_at", "reason", "issued_by")
#: what :meth:`KeyRing.verify` answers (a bounded set: usable as a metric label)
VERDICTS = ("ok", "unsigned", "malformed_signature", "unknown_key", "bad_signature")
_DOMAIN = b"flowbreaker-command-v1\n"
_KID = re.compile(r"[A-Za-z0-9._-]{1,32}\Z")
_HEX = re.compile(r"(?:[0-9a-fA-F]{2}){32,}\Z")
_SIG = re.compile(r"hmac-sha256:([A-Za-z0-9._-]{1,32}):([0-9a-f]{64})\Z")
MIN_SECRET_BYTES = 32


class SigningError(ValueError):
    """A command that cannot be signed (no active key, or a field that is not text)."""


class SigningKeyError(ValueError):
    """A key file or variable that cannot be used; the text names where and why, never a secret."""


def canonical(command: Mapping[str, Any]) -> bytes:
    """The bytes a signature covers: a domain tag, then the :data:`SIGNED_FIELDS` values as a JSON array
    (ASCII, no spaces); a missing field is ``null``. Raises :class:`SigningError` for a value that is not
    a string or null.

    >>> canonical({"command": "freeze", "agent_id": "å"})
    b'flowbreaker-command-v1\\n["freeze","\\\\u00e5",null,null,null,null]'
    """
    values = []
    for name in SIGNED_FIELDS:
        value = command.get(name)
        if value is not None and not isinstance(value, str):
            raise SigningError(f"{name}: must be a string or null to be signed")
        values.append(value)
    return _DOMAIN + json.dumps(values, ensure_ascii=True, separators=(",", ":")).encode("ascii")


class KeyRing:
    """HMAC-SHA256 keys by id; ``active`` names the key new signatures use (None: verify only)."""

    def __init__(self, keys: Mapping[str, bytes], active: str | None = None, *, where: str = "keys") -> None:
        for kid, secret in keys.items():
            if not _KID.match(kid):
                raise SigningKeyError(f"{where}: key id {kid!r} must be 1-32 characters of letters, digits and ._-")
            if len(secret) < MIN_SECRET_BYTES:
                raise SigningKeyError(f"{where}: key {kid!r} is shorter than {MIN_SECRET_BYTES} bytes")
        if active is not None and active not in keys:
            raise SigningKeyError(f"{where}: the active key {active!r} is not among the keys")
        self._keys = dict(keys)
        self.active = active
        self.where = where

    def __repr__(self) -> str:  # never the secrets
        return f"KeyRing(ids={sorted(self._keys)}, active={self.active!r})"

    def __len__(self) -> int:
        return len(self._keys)

    @property
    def ids(self) -> list[str]:
        return sorted(self._keys)

    @property
    def can_sign(self) -> bool:
        return self.active is not None

    def signature(self, command: Mapping[str, Any], kid: str | None = None) -> str:
        """``hmac-sha256:KID:HEX`` of ``command`` with key ``kid`` (default: the active key)."""
        kid = kid or self.active
        if kid is None:
            raise SigningError(f"{self.where}: no active signing key (verify-only key ring)")
        if kid not in self._keys:
            raise SigningError(f"{self.where}: no key {kid!r}")
        digest = hmac.new(self._keys[kid], canonical(command), hashlib.sha256).hexdigest()
        return f"{ALGORITHM}:{kid}:{digest}"

    def sign(self, command: Mapping[str, Any]) -> dict:
        """A copy of ``command`` with its ``signature`` (any previous one replaced)."""
        out = dict(command)
        out.pop("signature", None)
        out["signature"] = self.signature(out)
        return out

    def verify(self, command: Mapping[str, Any]) -> str:
        """One of :data:`VERDICTS`; ``ok`` only for a signature by a listed key over exactly these fields."""
        sig = command.get("signature")
        if sig is None or sig == "":
            return "unsigned"
        m = _SIG.match(sig) if isinstance(sig, str) else None
        if m is None:
            return "malformed_signature"
        kid, given = m.group(1), m.group(2)
        key = self._keys.get(kid)
        if key is None:
            return "unknown_key"
        try:
            want = hmac.new(key, canonical(command), hashlib.sha256).hexdigest()
        except SigningError:
            return "bad_signature"
        return "ok" if hmac.compare_digest(want, given) else "bad_signature"

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_file(cls, path: str | os.PathLike) -> "KeyRing":
        p = Path(path)
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
        keys: dict[str, bytes] = {}
        for i, entry in enumerate(entries):
            at = f"{p}:{lines[i] if i < len(lines) else '?'}: key {i + 1}"
            if not isinstance(entry, dict) or set(entry) - {"id", "secret"} or not {"id", "secret"} <= set(entry):
                raise SigningKeyError(f"{at}: must have exactly id and secret")
            kid, secret = entry["id"], entry["secret"]
            if not isinstance(kid, str) or not _KID.match(kid):
                raise SigningKeyError(f"{at}: id must be 1-32 characters of letters, digits and ._-")
            if kid in keys:
                raise SigningKeyError(f"{at}: id {kid!r} appears twice")
            if not isinstance(secret, str) or not _HEX.match(secret):
                raise SigningKeyError(f"{at}: secret must be at least {2 * MIN_SECRET_BYTES} hex digits")
            keys[kid] = bytes.fromhex(secret)
        active = data.get("active")
        if active is not None and not isinstance(active, str):
            raise SigningKeyError(f"{p}: active must be a key id")
        return cls(keys, active, where=str(p))

    @classmethod
    def from_inline(cls, text: str, where: str = "FLOWBREAKER_SIGNING_KEYS_INLINE") -> "KeyRing":
        keys: dict[str, bytes] = {}
        for i, part in enumerate(p.strip() for p in re.split(r"[,;\n]", text)):
            if not part:
                continue
            kid, sep, secret = part.partition("=")
            if not sep or not _KID.match(kid.strip()) or not _HEX.match(secret.strip()):
                raise SigningKeyError(f"{where}: entry {i + 1} must be KID=HEX (at least "
                                      f"{2 * MIN_SECRET_BYTES} hex digits)")
            if kid.strip() in keys:
                raise SigningKeyError(f"{where}: key id {kid.strip()!r} appears twice")
            keys[kid.strip()] = bytes.fromhex(secret.strip())
        if not keys:
            raise SigningKeyError(f"{where}: no keys")
        return cls(keys, next(iter(keys)), where=where)


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


def new_key_file(kid: str | None = None) -> str:
    """The text of a key file with one fresh random key, active."""
    from datetime import datetime, timezone

    kid = kid or "k" + datetime.now(timezone.utc).strftime("%Y%m%d") + "-" + secrets.token_hex(2)
    if not _KID.match(kid):
        raise SigningKeyError(f"key id {kid!r} must be 1-32 characters of letters, digits and ._-")
    return (f"# flowbreaker command signing keys: keep secret (chmod 600); the same file on every worker,\n"
            f"# actuator, runtime and key holder. Rotation: README, security model.\n"
            f'active = "{kid}"\n\n[[key]]\nid = "{kid}"\nsecret = "{secrets.token_hex(32)}"\n')


def _main(argv: list[str]) -> int:
    if not argv or argv[0] != "new" or len(argv) > 2:
        print("usage: python -m streams.clients.signing new [KEY_ID]   (prints a fresh key file)", file=sys.stderr)
        return 2
    try:
        print(new_key_file(argv[1] if len(argv) > 1 else None), end="")
    except SigningKeyError as err:
        print(f"streams.clients.signing: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(_main(sys.argv[1:]))
