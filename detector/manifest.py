"""Intended-use manifests: what an agent is meant to do, and the check of one action against it.

A manifest declares, per agent or per role (its agents inherit it), the scope of
its intended use. Every clause is optional (an absent clause restricts nothing)
and says what happens to an action outside it (``on_violation``:
``needs_approval``, the default, or ``deny``)::

    version = 3                       # required; a higher version replaces a lower one
    agent = "support-agent-003"       # or  role = "support_bot"  (a role manifest)
    role = "support_bot"              # an agent's role, whose clauses it inherits (optional)
    # agents = ["support-agent-*"]    # a role's agents that have no manifest of their own

    [tools]                           # globs over the tool name
    allow = ["crm.get_customer", "tickets.*", "email.send"]
    [resources]                       # globs over the resource URI (resource families)
    allow = ["crm://customers/*", "tickets://*"]
    [sensitivity]                     # the most sensitive data it may touch, and may send out
    max_read = "confidential"
    max_sent = "confidential"
    on_violation = "deny"
    [destinations]                    # globs over `scheme:address`, and/or whole classes (policy)
    allow = ["email:*@acme-retail.example"]
    classes = ["internal"]
    [principals]                      # who may direct it: `requested_by` values or globs, its operator
    allow = ["*@corp.example"]
    operator = true
    [ceilings]                        # records and bytes sent out (actions with destinations)
    records_out_per_hour = 400
    records_out_per_day = 2000
    bytes_out_per_day = 50000000

A clause without its list (``allow``; for destinations ``allow`` and ``classes``) restricts nothing
on that dimension; an empty list allows nothing. An agent's effective scope is its role's clauses with its own keys laid over
them, key by key (an agent may replace ``allow`` of one clause and keep the
rest of the role's). Globs are ``fnmatch`` patterns, case-sensitive, where ``*``
also crosses ``/``. Ceilings are measured over a sliding hour and day
(:class:`Usage`), on actions that have destinations.

:func:`parse_manifest` reads one manifest and raises :class:`ManifestError`,
whose text is one line naming the source and the line: ``FILE:LINE: why``.
:class:`ManifestBook` holds the manifests in force and resolves an agent to its
:class:`Scope`; :meth:`Scope.check` lists the :class:`Violation` of an action,
each naming the clause it breaks. :class:`ManifestGate` adds them to the learned
pre-action check (:mod:`detector.gate`) by composition; :func:`stream_effect`
says how an out-of-scope action counts in the stream. Nothing here reads the
clock or a file.

>>> m = parse_manifest('''version = 1
... agent = "a"
... [tools]
... allow = ["crm.*"]
... [destinations]
... classes = ["internal"]
... on_violation = "deny"
... ''', "a.toml")
>>> from detector.events import decode_event
>>> from detector.policy import Policy
>>> ev = decode_event({"event_id": "e1", "ts": "2026-03-02T09:00:00Z", "agent_id": "a", "operator_id": "o",
...     "tool": "mail.send", "action": "send", "resource": "crm://customers/1", "sensitivity": "confidential",
...     "destinations": ["email:eve@evil.example"]})
>>> book = ManifestBook([m])
>>> [(v.clause, v.on_violation) for v in book.scope_for("a").check(ev, classify=Policy().classify)]
[('tools', 'needs_approval'), ('destinations', 'deny')]
>>> book.scope_for("someone-else") is None
True
>>> parse_manifest('version = 1\\nagent = "a"\\n[tools]\\nallow = "crm.*"\\n', "a.toml")
Traceback (most recent call last):
...
detector.manifest.ManifestError: a.toml:4: tools.allow must be a list of strings
"""

from __future__ import annotations

import fnmatch
import re
import tomllib
from array import array
from dataclasses import dataclass, field
from math import floor
from typing import Any, Callable, Iterable, Mapping, NamedTuple

from detector.events import SENSITIVITIES, ActionEvent
from detector.native import kernels as _kernels

__all__ = [
    "Manifest", "ManifestError", "ManifestBook", "Scope", "Violation", "Usage", "ManifestGate",
    "parse_manifest", "render_manifest", "check", "stream_effect",
    "CLAUSES", "VIOLATION_CLAUSES", "ON_VIOLATION", "DEST_CLASSES", "CEILINGS", "FORMAT",
]

#: what a clause asks for an action outside it
ON_VIOLATION = ("needs_approval", "deny")
DEST_CLASSES = ("internal", "external", "broadcast")
#: ceiling key -> (period index in Usage.PERIODS, 0 records | 1 bytes)
CEILINGS = {"records_out_per_hour": (0, 0), "bytes_out_per_hour": (0, 1),
            "records_out_per_day": (1, 0), "bytes_out_per_day": (1, 1)}
#: the keys of each clause table
CLAUSES: dict[str, tuple[str, ...]] = {
    "tools": ("allow", "on_violation"),
    "resources": ("allow", "on_violation"),
    "sensitivity": ("max_read", "max_sent", "on_violation"),
    "destinations": ("allow", "classes", "on_violation"),
    "principals": ("allow", "operator", "on_violation"),
    "ceilings": tuple(CEILINGS) + ("on_violation",),
}
#: every clause a violation can name (a bounded set: usable as a metric label)
VIOLATION_CLAUSES = ("tools", "resources", "sensitivity.max_read", "sensitivity.max_sent", "destinations",
                     "principals") + tuple(f"ceilings.{k}" for k in CEILINGS)
TOP_KEYS = ("version", "agent", "role", "agents", "description")
#: the ``format`` of manifest records on the ``agent-manifests`` topic (streams/manifests.py)
FORMAT = "flowbreaker-manifest/1"
MAX_NAME = 128
MAX_GLOBS = 10_000
MAX_GLOB = 1024
_RANK = {s: i for i, s in enumerate(SENSITIVITIES)}
_DETAIL_ITEMS = 3
_DETAIL_CHARS = 100


class ManifestError(ValueError):
    """A manifest that cannot be used. ``str(err)`` is one line: ``SOURCE:LINE: why``."""

    def __init__(self, source: str, line: int, message: str) -> None:
        self.source, self.line, self.reason = source, line, message
        super().__init__(f"{source}:{line}: {message}")


# --------------------------------------------------------------------------- the manifest
@dataclass(frozen=True)
class Manifest:
    """One parsed manifest. ``kind`` is ``agent`` or ``role``; ``name`` the agent id or role name;
    ``role`` the role an agent inherits from; ``agents`` the globs of a role's agents; ``clauses``
    maps a clause name to its validated keys (see :data:`CLAUSES`)."""

    kind: str
    name: str
    version: int
    clauses: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    role: str | None = None
    agents: tuple[str, ...] = ()
    description: str = ""
    source: str = ""

    @property
    def key(self) -> str:
        """``agent:<id>`` or ``role:<name>``: the identity a newer version replaces (the topic's key)."""
        return f"{self.kind}:{self.name}"

    @property
    def label(self) -> str:
        return f"{self.kind} {self.name} v{self.version}"

    def same_content(self, other: "Manifest") -> bool:
        return (self.kind, self.name, self.version, dict(self.clauses), self.role, self.agents, self.description) \
            == (other.kind, other.name, other.version, dict(other.clauses), other.role, other.agents,
                other.description)


class _Lines:
    """Where keys are in a TOML text, for errors about valid TOML with wrong values (tomllib keeps no
    positions). Good for the layouts people write: ``[table]`` headers, ``key = ...`` lines, dotted keys."""

    _HEADER = re.compile(r"\s*\[\s*([^\]\[]+?)\s*\]")
    _KEY = re.compile(r"""\s*((?:"[^"]*"|'[^']*'|[A-Za-z0-9_-]+)(?:\s*\.\s*(?:"[^"]*"|'[^']*'|[A-Za-z0-9_-]+))*)\s*=""")

    def __init__(self, text: str) -> None:
        self.at: dict[tuple[str, ...], int] = {}
        table: tuple[str, ...] = ()
        for no, line in enumerate(text.splitlines(), 1):
            m = self._HEADER.match(line)
            if m and not line.lstrip().startswith("[["):
                table = self._split(m.group(1))
                self.at.setdefault(table, no)
                continue
            m = self._KEY.match(line)
            if m:
                self.at.setdefault(table + self._split(m.group(1)), no)

    @staticmethod
    def _split(dotted: str) -> tuple[str, ...]:
        parts, cur, quote = [], [], ""
        for ch in dotted:
            if quote:
                if ch == quote:
                    quote = ""
                else:
                    cur.append(ch)
            elif ch in "\"'":
                quote = ch
            elif ch == ".":
                parts.append("".join(cur).strip())
                cur = []
            else:
                cur.append(ch)
        parts.append("".join(cur).strip())
        return tuple(parts)

    def of(self, *path: str) -> int:
        """The line of ``path`` (or of its nearest enclosing key or table); 1 when unknown."""
        for n in range(len(path), 0, -1):
            line = self.at.get(tuple(path[:n]))
            if line is not None:
                return line
        return 1


def _escape(s: str) -> str:
    out = ['"']
    for ch in s:
        o = ord(ch)
        if ch == '"' or ch == "\\":
            out.append("\\" + ch)
        elif o < 0x20 or o == 0x7F:
            out.append(f"\\u{o:04x}")
        elif 0xD800 <= o <= 0xDFFF:  # a lone surrogate is not text TOML can hold
            out.append("\\ufffd")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def parse_manifest(text: str | bytes, source: str = "<manifest>") -> Manifest:
    """Parse and validate one manifest (TOML text). Raises :class:`ManifestError` (``SOURCE:LINE: why``)."""
    if isinstance(text, (bytes, bytearray, memoryview)):
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError as err:
            line = bytes(text)[: err.start].count(b"\n") + 1
            raise ManifestError(source, line, "not UTF-8 text") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        msg = str(err)
        m = re.search(r"\(at line (\d+), column (\d+)\)", msg)
        if m is not None:
            line, why, col = int(m.group(1)), msg[: m.start()].rstrip(), f" (column {m.group(2)})"
        else:  # "(at end of document)"
            line, why, col = text.count("\n") + 1, re.sub(r"\s*\(at end of document\)", "", msg), ""
        raise ManifestError(source, line, f"not valid TOML: {why}{col}") from None
    lines = _Lines(text)

    def fail(message: str, *path: str) -> ManifestError:
        return ManifestError(source, lines.of(*path), message)

    unknown = [k for k in data if k not in TOP_KEYS and k not in CLAUSES]
    if unknown:
        raise fail(f"unknown key {unknown[0]!r} (keys: {', '.join(TOP_KEYS + tuple(CLAUSES))})", unknown[0])
    version = data.get("version")
    if version is None:
        raise fail("version is required (an integer >= 1; a higher version replaces a lower one)")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise fail("version must be an integer >= 1", "version")

    def name(key: str) -> str | None:
        val = data.get(key)
        if val is None:
            return None
        if not isinstance(val, str) or not 1 <= len(val) <= MAX_NAME:
            raise fail(f"{key} must be a string of 1 to {MAX_NAME} characters", key)
        return val

    agent, role = name("agent"), name("role")
    if agent is None and role is None:
        raise fail('a manifest names its agent (agent = "...") or its role (role = "...")')
    kind = "agent" if agent is not None else "role"
    agents: tuple[str, ...] = ()
    if "agents" in data:
        if kind == "agent":
            raise fail("agents = [...] belongs in a role manifest, not an agent's", "agents")
        agents = _globs(data["agents"], "agents", fail, ("agents",))
    description = data.get("description", "")
    if not isinstance(description, str):
        raise fail("description must be a string", "description")

    clauses: dict[str, dict[str, Any]] = {}
    for clause, keys in CLAUSES.items():
        if clause not in data:
            continue
        table = data[clause]
        if not isinstance(table, dict):
            raise fail(f"{clause} must be a table ([{clause}])", clause)
        bad = [k for k in table if k not in keys]
        if bad:
            raise fail(f"{clause}: unknown key {bad[0]!r} (keys: {', '.join(keys)})", clause, bad[0])
        out: dict[str, Any] = {}
        for k, v in table.items():
            where = (clause, k)
            if k == "on_violation":
                if v not in ON_VIOLATION:
                    raise fail(f"{clause}.on_violation must be one of {', '.join(ON_VIOLATION)}", *where)
                out[k] = v
            elif k in ("allow",):
                out[k] = _globs(v, f"{clause}.allow", fail, where)
            elif k == "classes":
                if not isinstance(v, list) or not all(c in DEST_CLASSES for c in v):
                    raise fail(f"destinations.classes must be a list of {', '.join(DEST_CLASSES)}", *where)
                out[k] = tuple(dict.fromkeys(v))
            elif k in ("max_read", "max_sent"):
                if v not in SENSITIVITIES:
                    raise fail(f"sensitivity.{k} must be one of {', '.join(SENSITIVITIES)}", *where)
                out[k] = v
            elif k == "operator":
                if not isinstance(v, bool):
                    raise fail("principals.operator must be true or false", *where)
                out[k] = v
            else:  # a ceiling
                if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                    raise fail(f"ceilings.{k} must be an integer >= 0", *where)
                out[k] = v
        clauses[clause] = out
    return Manifest(kind=kind, name=agent if agent is not None else role, version=version, clauses=clauses,
                    role=role if kind == "agent" else None, agents=agents, description=description, source=source)


def _globs(value: Any, what: str, fail: Callable[..., ManifestError], where: tuple[str, ...]) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(g, str) for g in value):
        raise fail(f"{what} must be a list of strings", *where)
    if len(value) > MAX_GLOBS:
        raise fail(f"{what} has {len(value)} entries; at most {MAX_GLOBS}", *where)
    for g in value:
        if not 1 <= len(g) <= MAX_GLOB:
            raise fail(f"{what}: every entry is a glob of 1 to {MAX_GLOB} characters", *where)
    return tuple(dict.fromkeys(value))


def render_manifest(m: Manifest, *, comments: Mapping[str, str] | None = None) -> str:
    """The manifest as TOML text that :func:`parse_manifest` reads back equal. ``comments`` maps a
    clause name (or ``""`` for the head) to a comment put above it (one or more lines).

    >>> m = Manifest("agent", "a", 2, {"tools": {"allow": ("x.*",)}}, role="r")
    >>> print(render_manifest(m), end="")
    version = 2
    agent = "a"
    role = "r"
    <BLANKLINE>
    [tools]
    allow = ["x.*"]
    >>> parse_manifest(render_manifest(m)).same_content(m)
    True
    """
    notes = comments or {}

    def comment(key: str) -> list[str]:
        text = notes.get(key)
        return [f"# {line}".rstrip() for line in text.splitlines()] if text else []

    out = comment("")
    out.append(f"version = {m.version}")
    out.append(f"{m.kind} = {_escape(m.name)}")
    if m.role is not None:
        out.append(f"role = {_escape(m.role)}")
    if m.agents:
        out.append(f"agents = {_list(m.agents)}")
    if m.description:
        out.append(f"description = {_escape(m.description)}")
    for clause, keys in CLAUSES.items():
        table = m.clauses.get(clause)
        if table is None:
            continue
        out.append("")
        out.extend(comment(clause))
        out.append(f"[{clause}]")
        for k in keys:
            if k not in table:
                continue
            v = table[k]
            if isinstance(v, bool):
                out.append(f"{k} = {'true' if v else 'false'}")
            elif isinstance(v, int):
                out.append(f"{k} = {v}")
            elif isinstance(v, str):
                out.append(f"{k} = {_escape(v)}")
            else:
                out.append(f"{k} = {_list(v)}")
    return "\n".join(out) + "\n"


def _list(values: Iterable[str]) -> str:
    items = [_escape(v) for v in values]
    one = "[" + ", ".join(items) + "]"
    if len(one) <= 100:
        return one
    return "[\n" + "".join(f"    {i},\n" for i in items) + "]"


# --------------------------------------------------------------------------- usage (ceilings)
def _py_usage_add(v: array, periods: tuple[float, ...], t: float, records: float, nbytes: float) -> None:
    """:meth:`Usage.add` on its numbers ``v`` (the reference of ``detector._native.usage_add``)."""
    for i, p in enumerate(periods):
        o = 5 * i
        k = float(floor(t / p))
        if k > v[o]:
            if k == v[o] + 1:
                v[o + 1], v[o + 2] = v[o + 3], v[o + 4]
            else:
                v[o + 1] = v[o + 2] = 0.0
            v[o + 3] = v[o + 4] = 0.0
            v[o] = k
        v[o + 3] += records
        v[o + 4] += nbytes


#: the periods :class:`Usage` keeps, the hour and the day: the only ones the compiled step takes
_PERIODS = (3600.0, 86400.0)
#: the compiled step when it is built (detector/native.py), else None: the reference
_usage_add = getattr(_kernels, "usage_add", None)


class Usage:
    """Records and bytes an agent sent out over a sliding hour and day. Fixed size (10 numbers).

    Each period keeps the current and the previous calendar bucket; the estimate at ``t`` weighs
    the previous bucket by the part of it still inside the window (``prev * (1 - f) + cur``), so it
    is never below what was sent in the current bucket and never above what was sent in the last
    two periods. Events a little out of order count in the current bucket.

    >>> u = Usage()
    >>> u.add(3600.0 * 10 + 1800, 100, 1000)     # 10:30
    >>> u.estimate(3600.0 * 10 + 2700)            # 10:45: all of it is within the last hour
    (100.0, 1000.0)
    >>> u.estimate(3600.0 * 11 + 1800)            # 11:30: half of the 10:00 bucket still counts
    (50.0, 500.0)
    >>> Usage.from_tuple(u.to_tuple()).estimate(3600.0 * 11 + 1800)
    (50.0, 500.0)
    """

    PERIODS = _PERIODS
    __slots__ = ("v",)

    def __init__(self) -> None:
        # per period: bucket index, prev records, prev bytes, cur records, cur bytes
        self.v = array("d", [-1.0, 0.0, 0.0, 0.0, 0.0] * len(self.PERIODS))

    def add(self, t: float, records: float, nbytes: float) -> None:
        if self.PERIODS is not _PERIODS or _usage_add is None or _usage_add(self.v, t, records, nbytes) is None:
            _py_usage_add(self.v, self.PERIODS, t, records, nbytes)

    def estimate(self, t: float, period: int = 0) -> tuple[float, float]:
        """``(records, bytes)`` sent out in the sliding period ending at ``t`` (0: hour, 1: day)."""
        v, p, o = self.v, self.PERIODS[period], 5 * period
        k = floor(t / p)
        f = t / p - k
        if k == v[o]:
            return v[o + 1] * (1.0 - f) + v[o + 3], v[o + 2] * (1.0 - f) + v[o + 4]
        if k == v[o] + 1:
            return v[o + 3] * (1.0 - f), v[o + 4] * (1.0 - f)
        if k < v[o]:  # asked about the past: the most it could have been
            return v[o + 1] + v[o + 3], v[o + 2] + v[o + 4]
        return 0.0, 0.0

    def to_tuple(self) -> tuple[float, ...]:
        return tuple(self.v)

    @classmethod
    def from_tuple(cls, t: Iterable[float]) -> "Usage":
        u = cls()
        vals = [float(x) for x in t]
        if len(vals) != len(u.v):
            raise ValueError(f"usage state has {len(vals)} numbers, not {len(u.v)}")
        u.v = array("d", vals)
        return u


def counts_as_out(ev: ActionEvent) -> bool:
    """Ceilings and ``max_sent`` apply to actions with destinations: data leaves the agent."""
    return bool(ev.destinations)


# --------------------------------------------------------------------------- matching
class _Globs:
    """A set of globs compiled once: exact strings in a set, the rest in one regular expression."""

    __slots__ = ("exact", "rx", "globs")

    def __init__(self, globs: Iterable[str]) -> None:
        self.globs = tuple(globs)
        self.exact = frozenset(g for g in self.globs if not any(c in g for c in "*?["))
        wild = [fnmatch.translate(g) for g in self.globs if g not in self.exact]
        self.rx = re.compile("|".join(wild)) if wild else None

    def __call__(self, value: str) -> bool:
        return value in self.exact or (self.rx is not None and self.rx.match(value) is not None)

    def which(self, value: str) -> list[str]:
        """The globs that match ``value`` (slow: for reports, not the hot path)."""
        return [g for g in self.globs if fnmatch.fnmatchcase(value, g)]


class Violation(NamedTuple):
    """One clause an action breaks: the clause (:data:`VIOLATION_CLAUSES`), what it asks
    (``needs_approval`` or ``deny``), a sentence for the analyst, and the manifest(s) it comes from."""

    clause: str
    on_violation: str
    detail: str
    manifest: str


def _short(items: Iterable[str]) -> str:
    items = list(items)
    shown = ", ".join(repr(i if len(i) <= _DETAIL_CHARS else i[:_DETAIL_CHARS] + "...") for i in items[:_DETAIL_ITEMS])
    more = f" and {len(items) - _DETAIL_ITEMS} more" if len(items) > _DETAIL_ITEMS else ""
    return shown + more


class Scope:
    """An agent's effective intended use (its role's clauses with its own over them), compiled."""

    def __init__(self, agent_id: str, clauses: Mapping[str, Mapping[str, Any]], label: str,
                 manifests: tuple[Manifest, ...] = ()) -> None:
        self.agent_id = agent_id
        self.clauses = {k: dict(v) for k, v in clauses.items()}
        self.label = label
        self.manifests = manifests
        c = self.clauses
        on = {k: v.get("on_violation", "needs_approval") for k, v in c.items()}
        self.on = on
        # a clause without its list restricts nothing on that dimension (an empty list allows nothing)
        self.tools = _Globs(c["tools"]["allow"]) if "allow" in c.get("tools", {}) else None
        self.resources = _Globs(c["resources"]["allow"]) if "allow" in c.get("resources", {}) else None
        sens = c.get("sensitivity", {})
        self.max_read = _RANK[sens["max_read"]] if "max_read" in sens else None
        self.max_sent = _RANK[sens["max_sent"]] if "max_sent" in sens else None
        dest = c.get("destinations", {})
        if "allow" in dest or "classes" in dest:
            self.dest_globs = _Globs(dest.get("allow", ()))
            self.dest_classes = frozenset(dest.get("classes", ()))
        else:
            self.dest_globs, self.dest_classes = None, frozenset()
        who = c.get("principals", {})
        self.principals = _Globs(who["allow"]) if "allow" in who else None
        self.operator_ok = bool(who.get("operator", True))
        self.ceilings = [(k, CEILINGS[k], int(v)) for k, v in c.get("ceilings", {}).items() if k in CEILINGS]

    def dest_allowed(self, dest: str, classify: Callable[[str], tuple[str, int]] | None) -> bool:
        if self.dest_globs is None:
            return True
        if self.dest_globs(dest):
            return True
        if self.dest_classes:
            cls = classify(dest)[0] if classify is not None else "external"
            return cls in self.dest_classes
        return False

    def check(self, ev: ActionEvent, usage: Usage | None = None, *,
              classify: Callable[[str], tuple[str, int]] | None = None) -> list[Violation]:
        """Every clause ``ev`` breaks (empty when it is within its intended use). ``usage`` is what the
        agent sent out before ``ev`` (for ceilings; ``None``: only ``ev`` itself counts); ``classify`` is
        the policy's destination classifier (``Policy.classify``; ``None``: every destination external)."""
        out: list[Violation] = []
        label, on = self.label, self.on
        if self.tools is not None and not self.tools(ev.tool):
            out.append(Violation("tools", on["tools"], f"tool {_short([ev.tool])} is not among its tools", label))
        if self.resources is not None and not self.resources(ev.resource):
            out.append(Violation("resources", on["resources"],
                                 f"resource {_short([ev.resource])} is outside its resource families", label))
        rank = _RANK[ev.sensitivity]
        if self.max_read is not None and rank > self.max_read:
            out.append(Violation("sensitivity.max_read", on["sensitivity"],
                                 f"{ev.sensitivity} data, above the most sensitive it may touch "
                                 f"({SENSITIVITIES[self.max_read]})", label))
        out_bound = counts_as_out(ev)
        if out_bound and self.max_sent is not None and rank > self.max_sent:
            out.append(Violation("sensitivity.max_sent", on["sensitivity"],
                                 f"sends {ev.sensitivity} data out, above the most sensitive it may send "
                                 f"({SENSITIVITIES[self.max_sent]})", label))
        if self.dest_globs is not None and ev.destinations:
            bad = [d for d in dict.fromkeys(ev.destinations) if not self.dest_allowed(d, classify)]
            if bad:
                out.append(Violation("destinations", on["destinations"],
                                     f"{len(bad)} destination(s) outside its destinations: {_short(bad)}", label))
        who = ev.requested_by
        if self.principals is not None or not self.operator_ok:
            if who is None or who == ev.operator_id:
                if not self.operator_ok:
                    out.append(Violation("principals", on["principals"],
                                         f"directed by its operator {_short([ev.operator_id])}, which its manifest "
                                         "does not allow (operator = false)", label))
            elif self.principals is not None and not self.principals(who):
                out.append(Violation("principals", on["principals"],
                                     f"requested by {_short([who])}, not among the principals who may direct it",
                                     label))
        if out_bound and self.ceilings:
            for key, (period, kind), ceiling in self.ceilings:
                used = usage.estimate(ev.t, period)[kind] if usage is not None else 0.0
                amount = used + (ev.records if kind == 0 else ev.bytes)
                if amount > ceiling:
                    unit = "records" if kind == 0 else "bytes"
                    span = "hour" if period == 0 else "day"
                    out.append(Violation(f"ceilings.{key}", on["ceilings"],
                                         f"{amount:,.0f} {unit} sent out in the last {span}, above its ceiling of "
                                         f"{ceiling:,}", label))
        return out


def check(scope: Scope | None, ev: ActionEvent, usage: Usage | None = None, *,
          classify: Callable[[str], tuple[str, int]] | None = None) -> list[Violation]:
    """The violations of ``ev`` against ``scope`` (none for an agent without a manifest)."""
    return [] if scope is None else scope.check(ev, usage, classify=classify)


# --------------------------------------------------------------------------- the book
class ManifestBook:
    """The manifests in force, by ``agent:<id>`` / ``role:<name>``; resolves an agent to its :class:`Scope`.

    :meth:`put` keeps a manifest only if it is newer (higher ``version``) than the one held;
    :meth:`remove` drops one (a tombstone on the topic). A book is changed by one writer;
    readers on other threads take :meth:`copy` snapshots (the stream swaps in a new book
    between batches). An agent's scope: its own manifest (over its ``role``'s, if that role is
    loaded), else the first role, by name, whose ``agents`` globs match it, else none.
    """

    _CACHE_MAX = 100_000

    def __init__(self, manifests: Iterable[Manifest] = ()) -> None:
        self.manifests: dict[str, Manifest] = {}
        self._cache: dict[str, Scope | None] = {}
        self._roles: list[tuple[Manifest, _Globs]] | None = None
        for m in manifests:
            self.put(m)

    def __len__(self) -> int:
        return len(self.manifests)

    def __contains__(self, key: str) -> bool:
        return key in self.manifests

    def get(self, key: str) -> Manifest | None:
        return self.manifests.get(key)

    def put(self, m: Manifest) -> str:
        """``added``, ``replaced`` (a newer version) or ``stale`` (same or older version: ignored)."""
        old = self.manifests.get(m.key)
        if old is not None and m.version <= old.version:
            return "stale"
        self.manifests[m.key] = m
        self._changed()
        return "added" if old is None else "replaced"

    def remove(self, key: str) -> bool:
        if self.manifests.pop(key, None) is None:
            return False
        self._changed()
        return True

    def _changed(self) -> None:
        self._cache = {}
        self._roles = None

    def copy(self) -> "ManifestBook":
        b = ManifestBook()
        b.manifests = dict(self.manifests)
        return b

    def agents(self) -> list[str]:
        return sorted(m.name for m in self.manifests.values() if m.kind == "agent")

    def scope_for(self, agent_id: str) -> Scope | None:
        """The agent's effective scope, or ``None`` when no manifest covers it (it behaves as without)."""
        if not self.manifests:
            return None
        try:
            return self._cache[agent_id]
        except KeyError:
            pass
        scope = self._resolve(agent_id)
        if len(self._cache) >= self._CACHE_MAX:
            self._cache = {}
        self._cache[agent_id] = scope
        return scope

    def role_of(self, agent_id: str) -> Manifest | None:
        own = self.manifests.get(f"agent:{agent_id}")
        if own is not None:
            return self.manifests.get(f"role:{own.role}") if own.role is not None else None
        if self._roles is None:
            self._roles = [(m, _Globs(m.agents)) for _, m in sorted(self.manifests.items())
                           if m.kind == "role" and m.agents]
        for m, globs in self._roles:
            if globs(agent_id):
                return m
        return None

    def _resolve(self, agent_id: str) -> Scope | None:
        own = self.manifests.get(f"agent:{agent_id}")
        role = self.role_of(agent_id)
        if own is None and role is None:
            return None
        layers = [m for m in (role, own) if m is not None]
        clauses: dict[str, dict[str, Any]] = {}
        for m in layers:
            for name, keys in m.clauses.items():
                clauses.setdefault(name, {}).update(keys)
        label = " + ".join(m.label for m in reversed(layers))
        return Scope(agent_id, clauses, label, tuple(layers))


# --------------------------------------------------------------------------- composition
def stream_effect(violations: list[Violation], thresholds: Any) -> tuple[float, dict] | None:
    """How an out-of-scope action counts in the stream: ``(score floor, reason)``, or ``None``.

    The floor is the policy's ``medium`` cut-off (an alert, and ``medium - budget_floor`` spent from
    the risk budget) for clauses that ask for approval, ``high`` where a clause says ``deny``; neither
    freezes on one action, a run of them does. The reason leads the decision's reasons.

    >>> from detector.policy import Thresholds
    >>> v = [Violation("tools", "needs_approval", "tool 'x' is not among its tools", "agent a v1")]
    >>> floor, reason = stream_effect(v, Thresholds())
    >>> floor, reason["feature"], reason["detail"]
    (0.7, 'out_of_scope', "outside its intended use (agent a v1): tools: tool 'x' is not among its tools.")
    """
    if not violations:
        return None
    deny = any(v.on_violation == "deny" for v in violations)
    floor_ = thresholds.high if deny else thresholds.medium
    detail = "; ".join(f"{v.clause}: {v.detail}" for v in violations)
    reason = {"feature": "out_of_scope", "value": float(len(violations)), "baseline": 0.0,
              "detail": f"outside its intended use ({violations[0].manifest}): {detail}."}
    return floor_, reason


class ManifestGate:
    """The pre-action check with manifests enforced: wraps a :class:`detector.gate.Gate` (composition).

    ``check(ev) -> (verdict, score, why)`` as ``Gate.check``: the learned verdict, raised to
    ``needs_approval`` (or ``deny``) when ``ev`` breaks a clause of its agent's manifest, with
    one reason per broken clause first. A frozen agent stays ``deny``. An action carrying an
    ``approval_id`` passes clauses that ask for approval (the shell validates the approval's
    scope and time) but never a ``deny`` clause. Agents without a manifest get the learned
    verdict unchanged.

    ``manifests``: a book, or a callable returning the current one (default: the engine's
    ``manifests`` attribute, read on every check, so a swapped book takes effect at once).
    ``usage_of(agent_id)``: the agent's :class:`Usage` (default: the engine's per-agent
    ``usage``, when the engine keeps one).
    """

    def __init__(self, gate: Any, manifests: ManifestBook | Callable[[], ManifestBook | None] | None = None,
                 usage_of: Callable[[str], Usage | None] | None = None) -> None:
        self.gate = gate
        self.engine = gate.engine
        if manifests is None:
            self._book = lambda: getattr(self.engine, "manifests", None)
        elif isinstance(manifests, ManifestBook):
            self._book = lambda: manifests
        else:
            self._book = manifests
        self._usage_of = usage_of or (lambda a: getattr(self.engine.agents.get(a), "usage", None))

    def violations(self, ev: ActionEvent) -> list[Violation]:
        book = self._book()
        scope = book.scope_for(ev.agent_id) if book is not None else None
        if scope is None:
            return []
        return scope.check(ev, self._usage_of(ev.agent_id), classify=self.engine.policy.classify)

    def check_both(self, ev: ActionEvent) -> tuple[str, float, list[str], list[Violation]]:
        """``(verdict, score, why, violations)``: the combined verdict and the manifest's part of it."""
        verdict, score, why = self.gate.check(ev)
        if verdict == "deny":
            return verdict, score, why, []
        found = self.violations(ev)
        if not found:
            return verdict, score, why, found
        if any(v.on_violation == "deny" for v in found):
            wanted = "deny"
        elif ev.approval_id is not None:
            wanted = "allow"
        else:
            wanted = "needs_approval"
        order = ("allow", "needs_approval", "deny")
        if order.index(wanted) > order.index(verdict):
            verdict = wanted
        why = [f"outside its intended use ({v.manifest}), {v.clause}: {v.detail}" for v in found] + list(why)
        return verdict, score, why, found

    def check(self, ev: ActionEvent) -> tuple[str, float, list[str]]:
        verdict, score, why, _ = self.check_both(ev)
        return verdict, score, why

    def verdict(self, ev: ActionEvent) -> str | None:
        """The verdict for actions with destinations and deletes; ``None`` for the rest (as ``Gate``)."""
        if not ev.destinations and ev.action != "delete":
            return None
        return self.check(ev)[0]
