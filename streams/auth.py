"""Who may call the control plane: bearer tokens mapped to a principal and a role.

Tokens are never stored: the tokens file (TOML or JSON, chosen by its extension)
holds the SHA-256 of each token with the principal's name and role::

    # tokens.toml -- one [[token]] per person or runtime
    [[token]]
    name = "alice"          # the principal: written to the audit trail (never the token)
    role = "lead"           # viewer | analyst | lead | runtime
    sha256 = "<64 hex>"     # sha256 of the token, e.g. printf %s "$TOKEN" | sha256sum

The JSON form is ``{"tokens": [{"name": ..., "role": ..., "sha256": ...}]}``. The
file is named by ``--tokens FILE`` or ``FLOWBREAKER_TOKENS``; without a file,
``FLOWBREAKER_API_TOKENS`` may hold ``name:role:sha256`` entries separated by
``;`` or ``,`` (for containers). With neither, every authenticated route
answers 401: the API fails closed. ``python -m streams.auth new NAME ROLE``
prints a fresh random token and the entry to add.

Roles (each a set of permissions, not a ladder, so ``runtime`` cannot read agents):

========== ==================================================================
viewer     read agents, breakers, incidents, approvals
analyst    viewer + manual freeze, feedback on decisions, approve/deny
lead       analyst + release a frozen agent
runtime    the pre-action check, status of its approval requests, report fallbacks
========== ==================================================================

A presented token is hashed and compared with every stored hash by
:func:`hmac.compare_digest`, without stopping at a match, so the time taken does
not depend on which token (or how much of one) matched.

>>> import hashlib
>>> reg = TokenRegistry.from_entries([{"name": "alice", "role": "lead",
...                                    "sha256": hashlib.sha256(b"s3cret").hexdigest()}])
>>> reg.authenticate("Bearer s3cret")
Principal(name='alice', role='lead')
>>> reg.authenticate("Bearer wrong") is None, reg.authenticate(None) is None
(True, True)
>>> allowed("lead", "release"), allowed("analyst", "release"), allowed("runtime", "read")
(True, False, False)
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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

__all__ = ["Principal", "TokenRegistry", "TokenFileError", "ROLES", "PERMISSIONS", "allowed", "load_registry",
           "hash_token"]

ROLES = ("viewer", "analyst", "lead", "runtime")
#: permission -> roles that have it
PERMISSIONS: dict[str, frozenset[str]] = {
    "read": frozenset({"viewer", "analyst", "lead"}),
    "freeze": frozenset({"analyst", "lead"}),
    "feedback": frozenset({"analyst", "lead"}),
    "approve": frozenset({"analyst", "lead"}),
    "release": frozenset({"lead"}),
    "check": frozenset({"runtime"}),
    "approval_status": frozenset({"viewer", "analyst", "lead", "runtime"}),
    "report_fallback": frozenset({"runtime"}),
}
#: names that may not be principals: ``flowbreaker`` issues automatic freezes
RESERVED_NAMES = frozenset({"flowbreaker"})
MAX_TOKEN_LENGTH = 512
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+-]{0,127}\Z")
_HEX = re.compile(r"[0-9a-f]{64}\Z")


class TokenFileError(ValueError):
    """A tokens file or variable that cannot be used; the text says where and why (never a token)."""


@dataclass(frozen=True)
class Principal:
    name: str
    role: str


def hash_token(token: str) -> str:
    """The hex SHA-256 stored for ``token``."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def allowed(role: str, permission: str) -> bool:
    return role in PERMISSIONS.get(permission, ())


class TokenRegistry:
    """Hashed tokens -> principals. Build with :func:`load_registry` or :meth:`from_entries`."""

    def __init__(self, entries: Iterable[tuple[bytes, Principal]] = ()) -> None:
        self._entries = list(entries)

    def __len__(self) -> int:
        return len(self._entries)

    @classmethod
    def from_entries(cls, items: Iterable[Mapping[str, Any]], where: str = "tokens") -> "TokenRegistry":
        entries: list[tuple[bytes, Principal]] = []
        seen: set[str] = set()
        for i, item in enumerate(items):
            at = f"{where}: entry {i + 1}"
            if not isinstance(item, Mapping):
                raise TokenFileError(f"{at}: must be a table/object with name, role and sha256")
            unknown = set(item) - {"name", "role", "sha256"}
            if unknown:
                hint = " (store the sha256 of a token, never the token)" if unknown & {"token", "secret"} else ""
                raise TokenFileError(f"{at}: unknown key(s) {', '.join(sorted(unknown))}{hint}")
            name, role, digest = item.get("name"), item.get("role"), item.get("sha256")
            if not isinstance(name, str) or not _NAME.match(name):
                raise TokenFileError(f"{at}: name must be 1-128 characters of letters, digits and ._@+-")
            if name in RESERVED_NAMES:
                raise TokenFileError(f"{at}: name {name!r} is reserved for automatic freezes")
            if role not in ROLES:
                raise TokenFileError(f"{at}: role must be one of {', '.join(ROLES)}")
            if not isinstance(digest, str) or not _HEX.match(digest.lower()):
                raise TokenFileError(f"{at}: sha256 must be 64 hex digits")
            digest = digest.lower()
            if digest in seen:
                raise TokenFileError(f"{at}: the same token hash appears twice")
            seen.add(digest)
            entries.append((bytes.fromhex(digest), Principal(name, role)))
        return cls(entries)

    def authenticate(self, header: str | None) -> Principal | None:
        """The principal of an ``Authorization: Bearer <token>`` header value, or ``None``."""
        if not header or not self._entries:
            return None
        scheme, _, token = header.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token or len(token) > MAX_TOKEN_LENGTH:
            return None
        digest = hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()
        found: Principal | None = None
        for stored, principal in self._entries:  # every entry, no early exit
            if hmac.compare_digest(stored, digest):
                found = principal
        return found


def _parse_inline(text: str) -> list[dict[str, str]]:
    out = []
    for part in re.split(r"[;,\n]", text):
        part = part.strip()
        if not part:
            continue
        bits = part.split(":")
        if len(bits) != 3:
            raise TokenFileError("FLOWBREAKER_API_TOKENS: each entry must be name:role:sha256")
        out.append({"name": bits[0], "role": bits[1], "sha256": bits[2]})
    return out


def load_registry(path: str | os.PathLike | None = None,
                  environ: Mapping[str, str] | None = None) -> TokenRegistry:
    """Tokens from ``path`` (TOML, or JSON for ``*.json``), else from ``FLOWBREAKER_API_TOKENS``; else empty."""
    env = os.environ if environ is None else environ
    if path:
        p = Path(path)
        try:
            raw = p.read_bytes()
        except OSError as err:
            raise TokenFileError(f"cannot read tokens file {p}: {err.strerror}") from None
        try:
            if p.suffix.lower() == ".json":
                data = json.loads(raw)
            else:
                data = tomllib.loads(raw.decode("utf-8"))
        except (ValueError, UnicodeDecodeError) as err:
            # the parser's message may quote the file's text: name the file and the kind of error only
            raise TokenFileError(f"tokens file {p} is not valid {'JSON' if p.suffix.lower() == '.json' else 'TOML'}"
                                 f" ({type(err).__name__})") from None
        if not isinstance(data, dict):
            raise TokenFileError(f"tokens file {p}: must be a table/object")
        items = data.get("token", data.get("tokens", []))
        if not isinstance(items, list):
            raise TokenFileError(f"tokens file {p}: 'token' must be an array of tables")
        return TokenRegistry.from_entries(items, where=str(p))
    inline = env.get("FLOWBREAKER_API_TOKENS", "")
    if inline.strip():
        return TokenRegistry.from_entries(_parse_inline(inline), where="FLOWBREAKER_API_TOKENS")
    return TokenRegistry()


def _main(argv: list[str]) -> int:
    if len(argv) != 3 or argv[0] != "new" or argv[2] not in ROLES:
        print(f"usage: python -m streams.auth new NAME ROLE   (ROLE: {', '.join(ROLES)})", file=sys.stderr)
        return 2
    token = secrets.token_urlsafe(32)
    print(f"# token for {argv[1]} (give it to them once; it is not stored anywhere):\n# {token}")
    print(f'[[token]]\nname = "{argv[1]}"\nrole = "{argv[2]}"\nsha256 = "{hash_token(token)}"')
    return 0


if __name__ == "__main__":
    raise SystemExit(_main(sys.argv[1:]))
