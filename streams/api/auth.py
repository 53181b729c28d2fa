"""Who may call the control plane: bearer tokens mapped to a principal and a role.

Tokens are never stored: the tokens file (TOML or JSON, chosen by its extension)
holds the SHA-256 of each token with the principal's name and role::

    # tokens.toml -- one [[token]] per person or runtime
    [[token]]
    name = "alice"          # the principal: written to the audit trail (never the token)
    role = "lead"           # viewer | analyst | lead | runtime | monitor
    sha256 = "<64 hex>"     # sha256 of the token, e.g. printf %s "$TOKEN" | sha256sum

Names match :data:`NAME_PATTERN`: 1 to 128 characters, letters, digits and
``._@+-``, starting with a letter or a digit (no spaces, no quotes);
``flowbreaker`` is reserved. One name may hold several tokens (to rotate one's
own token) but only one role.

The JSON form is ``{"tokens": [{"name": ..., "role": ..., "sha256": ...}]}``. The
file is named by ``--tokens FILE`` or ``FLOWBREAKER_TOKENS``; without a file,
``FLOWBREAKER_API_TOKENS`` may hold ``name:role:sha256`` entries separated by
``;`` or ``,`` (for containers). With neither, every authenticated route
answers 401: the API fails closed. ``python -m streams.api.auth new NAME ROLE``
prints a fresh random token and the entry to add (exit 2 with one line for a
name or role the workers would refuse).

A file that cannot be used is an error naming the file and, where it can, the
line (``tokens.toml:7: entry 2: name must be ...``), never quoting its text. At
start the worker then exits 2. A running worker re-reads the file when it
changes (its modification time, size or inode, looked at once a second) and on
``SIGHUP`` (:class:`ReloadingRegistry`): a removed token stops working within
about a second. A changed file that cannot be used is logged and no token at
all is accepted until it is fixed: a broken edit never keeps a revoked token
alive nor widens anyone's access.

Roles (each a set of permissions, not a ladder, so ``runtime`` cannot read agents):

========== ==================================================================
viewer     read agents, breakers, incidents, approvals
analyst    viewer + manual freeze, feedback on decisions, approve/deny
lead       analyst + release a frozen agent
runtime    the pre-action check, status of its approval requests, report fallbacks
monitor    ``/metrics`` and ``/status`` only (for Prometheus, with ``--metrics-auth``)
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
import logging
import os
import re
import secrets
import sys
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

__all__ = ["Principal", "TokenRegistry", "ReloadingRegistry", "TokenFileError", "ROLES", "PERMISSIONS", "allowed",
           "load_registry", "open_registry", "hash_token", "check_name", "NAME_PATTERN"]

log = logging.getLogger("flowbreaker.api")

ROLES = ("viewer", "analyst", "lead", "runtime", "monitor")
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
    "metrics": frozenset({"viewer", "analyst", "lead", "monitor"}),
    "whoami": frozenset({"viewer", "analyst", "lead", "runtime"}),  # GET /v1/whoami: a client learns its role
}
#: names that may not be principals: ``flowbreaker`` issues automatic freezes
RESERVED_NAMES = frozenset({"flowbreaker"})
MAX_TOKEN_LENGTH = 512
#: what a principal's name looks like (documented in the module docstring and docs/api.md)
NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._@+-]{0,127}"
_NAME = re.compile(NAME_PATTERN + r"\Z")
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


def check_name(name: Any) -> str | None:
    """Why ``name`` cannot be a principal, or None when it can.

    >>> check_name("alice@corp.example"), check_name("flowbreaker lead")
    (None, 'name must be 1-128 characters of letters, digits and ._@+-, starting with a letter or a digit')
    """
    if not isinstance(name, str) or not _NAME.match(name):
        return "name must be 1-128 characters of letters, digits and ._@+-, starting with a letter or a digit"
    if name in RESERVED_NAMES:
        return f"name {name!r} is reserved for automatic freezes"
    return None


class TokenRegistry:
    """Hashed tokens -> principals. Build with :func:`load_registry` or :meth:`from_entries`."""

    def __init__(self, entries: Iterable[tuple[bytes, Principal]] = ()) -> None:
        self._entries = list(entries)

    def __len__(self) -> int:
        return len(self._entries)

    @classmethod
    def from_entries(cls, items: Iterable[Mapping[str, Any]], where: str = "tokens",
                     lines: list[int] | None = None) -> "TokenRegistry":
        """A registry of ``items``; raises :class:`TokenFileError` naming ``where`` (and the entry's line from
        ``lines``, when known) for the first entry that cannot be used: nothing of a bad file is used."""
        entries: list[tuple[bytes, Principal]] = []
        seen: set[str] = set()
        roles: dict[str, str] = {}
        for i, item in enumerate(items):
            line = f":{lines[i]}" if lines and i < len(lines) else ""
            at = f"{where}{line}: entry {i + 1}"
            if not isinstance(item, Mapping):
                raise TokenFileError(f"{at}: must be a table/object with name, role and sha256")
            unknown = set(item) - {"name", "role", "sha256"}
            if unknown:
                hint = " (store the sha256 of a token, never the token)" if unknown & {"token", "secret"} else ""
                raise TokenFileError(f"{at}: unknown key(s) {', '.join(sorted(unknown))}{hint}")
            name, role, digest = item.get("name"), item.get("role"), item.get("sha256")
            why = check_name(name)
            if why is not None:
                raise TokenFileError(f"{at}: {why}")
            if role not in ROLES:
                raise TokenFileError(f"{at}: role must be one of {', '.join(ROLES)}")
            if roles.setdefault(name, role) != role:
                raise TokenFileError(f"{at}: {name!r} already has role {roles[name]!r}; one name, one role")
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
        is_json = p.suffix.lower() == ".json"
        lines: list[int] | None = None
        try:
            text = raw.decode("utf-8")
            if is_json:
                data = json.loads(text)
            else:
                data = tomllib.loads(text)
                # the line of each [[token]] header, to name the line of a bad entry
                lines = [i + 1 for i, ln in enumerate(text.splitlines()) if re.match(r"\s*\[\[\s*token\s*\]\]", ln)]
        except UnicodeDecodeError:
            raise TokenFileError(f"tokens file {p} is not UTF-8 text") from None
        except (ValueError, RecursionError) as err:
            # the parser's message may quote the file's text: name the file, the line and the kind of error only
            line = getattr(err, "lineno", None)
            if line is None:
                m = re.search(r"\(at line (\d+), column \d+\)", str(err))
                line = m.group(1) if m else None
            raise TokenFileError(f"{p}{f':{line}' if line else ''}: not valid {'JSON' if is_json else 'TOML'}"
                                 f" ({type(err).__name__})") from None
        if not isinstance(data, dict):
            raise TokenFileError(f"tokens file {p}: must be a table/object")
        unknown = set(data) - {"token", "tokens"}
        if unknown:
            raise TokenFileError(f"tokens file {p}: unknown top-level key(s) {', '.join(sorted(unknown))} "
                                 "(expected [[token]] entries)")
        items = data.get("token", data.get("tokens", []))
        if not isinstance(items, list):
            raise TokenFileError(f"tokens file {p}: 'token' must be an array of tables")
        return TokenRegistry.from_entries(items, where=str(p), lines=lines)
    inline = env.get("FLOWBREAKER_API_TOKENS", "")
    if inline.strip():
        return TokenRegistry.from_entries(_parse_inline(inline), where="FLOWBREAKER_API_TOKENS")
    return TokenRegistry()


class ReloadingRegistry:
    """A tokens file that follows its edits: re-read when its modification time, size or inode changed
    (looked at, at most once every ``check_s`` seconds, when a request is authenticated) and on
    :meth:`reload` (``SIGHUP``). Starts from a file that must be usable (raises :class:`TokenFileError`).

    A change that cannot be used (unreadable, removed, malformed) is logged with the file's reason and
    leaves *no* token accepted until the file is fixed (``error`` says why): failing closed, so an edit
    that broke the file never keeps a revoked token working.
    """

    def __init__(self, path: str | os.PathLike, *, check_s: float = 1.0, clock=time.monotonic) -> None:
        self.path = Path(path)
        self.check_s = check_s
        self.clock = clock
        self._sig = self._stat()
        self._registry = load_registry(self.path, environ={})
        self._checked = clock()
        self.error: str | None = None
        self.reloads = 0

    def _stat(self):
        try:
            st = self.path.stat()
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def __len__(self) -> int:
        return len(self._registry)

    def reload(self) -> bool:
        """Re-read the file now; True if it could be used."""
        self._sig = self._stat()
        self._checked = self.clock()
        self.reloads += 1
        try:
            self._registry = load_registry(self.path, environ={})
        except TokenFileError as err:
            self._registry = TokenRegistry()
            self.error = str(err)
            log.error("tokens file changed and cannot be used: %s; no token is accepted until it is fixed", err)
            return False
        if self.error is not None:
            log.warning("tokens file %s is usable again: %d tokens", self.path, len(self._registry))
        else:
            log.info("tokens file %s reloaded: %d tokens", self.path, len(self._registry))
        self.error = None
        return True

    def maybe_reload(self) -> None:
        now = self.clock()
        if now - self._checked < self.check_s:
            return
        self._checked = now
        if self._stat() != self._sig:
            self.reload()

    def authenticate(self, header: str | None) -> Principal | None:
        self.maybe_reload()
        return self._registry.authenticate(header)


def open_registry(path: str | os.PathLike | None = None, environ: Mapping[str, str] | None = None):
    """The API's tokens: a :class:`ReloadingRegistry` over ``path``, else the static tokens of
    ``FLOWBREAKER_API_TOKENS`` (or none). Raises :class:`TokenFileError` when they cannot be used."""
    if path:
        return ReloadingRegistry(path)
    return load_registry(None, environ)


def _main(argv: list[str]) -> int:
    if len(argv) != 3 or argv[0] != "new":
        print(f"usage: python -m streams.api.auth new NAME ROLE   (ROLE: {', '.join(ROLES)})", file=sys.stderr)
        return 2
    why = check_name(argv[1])
    if why is not None:
        print(f"streams.api.auth new: {why}", file=sys.stderr)
        return 2
    if argv[2] not in ROLES:
        print(f"streams.api.auth new: role must be one of {', '.join(ROLES)}", file=sys.stderr)
        return 2
    token = secrets.token_urlsafe(32)
    print(f"# token for {argv[1]} (give it to them once; it is not stored anywhere):\n# {token}")
    print(f'[[token]]\nname = "{argv[1]}"\nrole = "{argv[2]}"\nsha256 = "{hash_token(token)}"')
    return 0


if __name__ == "__main__":
    raise SystemExit(_main(sys.argv[1:]))
