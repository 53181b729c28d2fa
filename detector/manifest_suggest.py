"""Least privilege from behaviour: what agents actually used, manifests suggested from it, unused grants.

:class:`Observed` folds one agent's actions into what it used: tools, resources,
destinations (and their classes), data sensitivity read and sent out, who
directed it, and its peak volume sent out per sliding hour and day (measured
exactly as the ceilings are enforced, :class:`detector.manifest.Usage`).
:func:`observe` builds one per agent from a stream of events.

:func:`suggest` turns an :class:`Observed` into a least-privilege
:class:`detector.manifest.Manifest` for an operator to review, with margins:

- tools: exactly those used;
- resources: their families, ``scheme://authority/*`` (``email:*@domain`` for
  opaque URIs seen at least ``min_group`` times per domain), and ``scheme:*``
  once ``wide_after`` families of one scheme were used;
- destinations: those used, as ``*@domain``, ``scheme:proto://host/*`` or
  ``scheme:stem[0-9]*`` (numbered ids) globs where ``min_group`` siblings were used, never a glob that would cover a
  broadcast destination of the policy the agent did not use; the whole
  ``internal`` class once ``class_after`` distinct internal destinations were
  used. External destinations are never granted as a class;
- sensitivity: the most sensitive data read, and sent out;
- principals: the ``requested_by`` values seen (``*@domain`` where
  ``min_group`` people of one domain directed it, ``kind:*`` once ``wide_after``
  requesters like ``customer:...`` did), and the operator if it ever acted
  without one;
- ceilings: the observed peak times ``margin``, rounded up to two significant
  digits.

Every clause asks for approval (``needs_approval``); the operator tightens
to ``deny`` where wanted. The suggestion is sound: the history it came from
breaks none of its clauses (a property test checks this).

:func:`unused_grants` lists what a manifest allows that the behaviour never
used (over-broad scopes); :func:`drift` compares two periods.

>>> from detector.events import decode_event
>>> from detector.policy import Policy
>>> evs = [decode_event({"event_id": f"e{i}", "ts": f"2026-03-02T09:0{i}:00Z", "agent_id": "a", "operator_id": "o",
...        "tool": "mail.send", "action": "send", "resource": "crm://customers/C-{i}", "sensitivity": "confidential",
...        "records": 2, "destinations": [f"email:c{i}@client.example"]}) for i in range(3)]
>>> seen = observe(evs, Policy())["a"]
>>> m = suggest(seen, policy=Policy())
>>> m.clauses["destinations"]["allow"], m.clauses["resources"]["allow"], m.clauses["ceilings"]["records_out_per_hour"]
(('email:*@client.example',), ('crm://customers/*',), 12)
"""

from __future__ import annotations

import fnmatch
import re
from collections import Counter
from datetime import datetime, timezone
from math import ceil, floor, log10
from typing import Any, Callable, Iterable, Mapping

from detector.events import SENSITIVITIES, ActionEvent
from detector.manifest import CEILINGS, Manifest, Scope, Usage, counts_as_out
from detector.policy import Policy

__all__ = ["Observed", "observe", "suggest", "unused_grants", "drift", "family_of", "parent_glob",
           "OPERATOR", "DEFAULT_MARGIN", "iso_utc"]

#: the principal key for actions directed by the agent's operator (no ``requested_by``)
OPERATOR = "(operator)"
DEFAULT_MARGIN = 2.0
#: distinct values kept per dimension and agent; more are counted in ``overflow`` only
MAX_DISTINCT = 20_000
_RANK = {s: i for i, s in enumerate(SENSITIVITIES)}


class Observed:
    """What one agent used over a stretch of time. ``add`` one event at a time, in time order."""

    def __init__(self, agent_id: str) -> None:
        self.agent_id = agent_id
        self.n = 0
        self.first_t = float("inf")
        self.last_t = float("-inf")
        self.operators: Counter[str] = Counter()
        self.tools: Counter[str] = Counter()
        self.resources: Counter[str] = Counter()
        self.destinations: Counter[str] = Counter()
        self.dest_class: dict[str, str] = {}
        self.dest_classes: Counter[str] = Counter()    # class -> destinations addressed
        self.sens_read: Counter[str] = Counter()       # every action, by the sensitivity of its data
        self.sens_sent: Counter[str] = Counter()       # actions with destinations
        self.principals: Counter[str] = Counter()      # requested_by, or OPERATOR
        self.actions: Counter[str] = Counter()
        self.out_events = 0
        self.out_records = 0
        self.out_bytes = 0
        self.hourly_out: Counter[int] = Counter()      # hour index (t // 3600) -> records sent out
        self.usage = Usage()
        self.peaks = {k: 0.0 for k in CEILINGS}
        self.overflow: Counter[str] = Counter()

    def _count(self, counter: Counter, key: str, what: str, n: int = 1) -> None:
        if key in counter or len(counter) < MAX_DISTINCT:
            counter[key] += n
        else:
            self.overflow[what] += n

    def add(self, ev: ActionEvent, classify: Callable[[str], tuple[str, int]]) -> None:
        t = ev.t
        self.n += 1
        self.first_t = min(self.first_t, t)
        self.last_t = max(self.last_t, t)
        self.operators[ev.operator_id] += 1
        self._count(self.tools, ev.tool, "tools")
        self._count(self.resources, ev.resource, "resources")
        self.sens_read[ev.sensitivity] += 1
        self.actions[ev.action] += 1
        who = ev.requested_by if ev.requested_by is not None and ev.requested_by != ev.operator_id else OPERATOR
        self._count(self.principals, who, "principals")
        for d in dict.fromkeys(ev.destinations):
            cls = self.dest_class.get(d)
            if cls is None:
                cls = classify(d)[0]
                if len(self.dest_class) < MAX_DISTINCT:
                    self.dest_class[d] = cls
            self.dest_classes[cls] += 1
            self._count(self.destinations, d, "destinations")
        if counts_as_out(ev):
            self.sens_sent[ev.sensitivity] += 1
            self.out_events += 1
            self.out_records += ev.records
            self.out_bytes += ev.bytes
            self.hourly_out[int(t // 3600)] += ev.records
            self.usage.add(t, ev.records, ev.bytes)
            for key, (period, kind) in CEILINGS.items():
                v = self.usage.estimate(t, period)[kind]
                if v > self.peaks[key]:
                    self.peaks[key] = v

    def max_sensitivity(self, sent: bool = False) -> str | None:
        c = self.sens_sent if sent else self.sens_read
        return max(c, key=_RANK.__getitem__) if c else None

    @property
    def operator_id(self) -> str:
        return self.operators.most_common(1)[0][0] if self.operators else ""


def observe(events: Iterable[ActionEvent], policy: Policy | None = None, *,
            agent: str | None = None) -> dict[str, Observed]:
    """One :class:`Observed` per agent (only ``agent`` when given), events taken in the order given."""
    classify = (policy or Policy()).classify
    out: dict[str, Observed] = {}
    for ev in events:
        if agent is not None and ev.agent_id != agent:
            continue
        o = out.get(ev.agent_id)
        if o is None:
            o = out[ev.agent_id] = Observed(ev.agent_id)
        o.add(ev, classify)
    return out


# --------------------------------------------------------------------------- generalising
def family_of(resource: str) -> str:
    """The resource family a resource belongs to: ``scheme://authority/*`` for a path under an
    authority, the resource itself otherwise (opaque URIs are grouped by :func:`parent_glob`).

    >>> family_of("crm://customers/C-1"), family_of("https://pypi.org/pypi/x/json"), family_of("hr://personnel")
    ('crm://customers/*', 'https://pypi.org/*', 'hr://personnel')
    """
    scheme, sep, rest = resource.partition("://")
    if sep and scheme:
        authority, slash, path = rest.partition("/")
        if slash and authority:
            return f"{scheme}://{authority}/*"
    return resource


def parent_glob(value: str) -> str | None:
    """A glob for ``value`` and its siblings, or ``None`` when it has none worth grouping:
    ``scheme:*@domain`` for an address, ``scheme:proto://host/*`` for a URL, ``scheme:first/*``
    for a path, ``scheme:@*`` for a person on a chat system, ``scheme:stem[0-9]*`` for a
    numbered id. Channels (``#...``) and plain names stay exact.

    >>> [parent_glob(v) for v in ("email:bob@corp.example", "http:https://git.corp.example/eng/x.git",
    ...                           "sftp:backup.example/nightly/1", "slack:@alice", "slack:#general", "payee:acme",
    ...                           "payment:credit_card_1061405", "chat:42")]
    ['email:*@corp.example', 'http:https://git.corp.example/*', 'sftp:backup.example/*', 'slack:@*', None, None, \
'payment:credit_card_[0-9]*', None]
    """
    scheme, sep, addr = value.partition(":")
    if not sep or not scheme or not addr:
        return None
    if "://" in addr:
        proto, _, rest = addr.partition("://")
        host, slash, _path = rest.partition("/")
        return f"{scheme}:{proto}://{host}/*" if slash and host else None
    if "@" in addr and "/" not in addr:
        local, _, domain = addr.rpartition("@")
        if not local:
            return f"{scheme}:@*" if domain else None
        return f"{scheme}:*@{domain}" if domain else None
    if "/" in addr:
        first, _, rest = addr.partition("/")
        return f"{scheme}:{first}/*" if first and rest else None
    stem = addr.rstrip("0123456789")
    if stem != addr and any(c.isalpha() for c in stem):  # an id with a number: credit_card_1061405, USR002
        return f"{scheme}:{stem}[0-9]*"
    return None


def _scheme_glob(value: str) -> str | None:
    scheme, sep, rest = value.partition(":")
    if not sep or not scheme:
        return None
    return f"{scheme}://*" if rest.startswith("//") else f"{scheme}:*"


def _group(values: Iterable[str], key: Callable[[str], str | None], min_group: int,
           avoid: Callable[[str], bool]) -> list[str]:
    """Values replaced by their group's glob where the group has ``min_group`` members and the glob
    covers nothing ``avoid`` says it must not."""
    groups: dict[str, list[str]] = {}
    single: list[str] = []
    for v in values:
        g = key(v)
        if g is None or g == v:
            single.append(v)
        else:
            groups.setdefault(g, []).append(v)
    out = list(single)
    for g, members in groups.items():
        if len(members) >= min_group and not avoid(g):
            out.append(g)
        else:
            out.extend(members)
    return sorted(dict.fromkeys(out))


def _principal_group(who: str) -> str | None:
    local, at, domain = who.rpartition("@")
    return f"*@{domain}" if at and local and domain else None


def _nice_ceiling(x: float) -> int:
    """``x`` rounded up to two significant digits (at least 1)."""
    if x <= 1:
        return 1
    step = 10 ** max(0, floor(log10(x)) - 1)
    return int(ceil(x / step - 1e-9) * step)


def suggest(seen: Observed, *, policy: Policy | None = None, margin: float = DEFAULT_MARGIN, min_group: int = 2,
            wide_after: int = 10, class_after: int = 5, version: int = 1, role: str | None = None) -> Manifest:
    """A least-privilege manifest for ``seen.agent_id`` (see the module docstring for the rules)."""
    if margin < 1:
        raise ValueError("margin must be >= 1 (a ceiling below the observed peak would hold normal work)")
    policy = policy or Policy()
    broadcast = list(policy.broadcast)

    def covers_unused_broadcast(glob: str) -> bool:
        return any(b not in seen.destinations and fnmatch.fnmatchcase(b, glob) for b in broadcast)

    clauses: dict[str, dict[str, Any]] = {}
    clauses["tools"] = {"allow": tuple(sorted(seen.tools))}

    opaque = _group([r for r in seen.resources if "://" not in r], parent_glob, min_group, lambda g: False)
    # under an authority the family is the unit of a grant, even when one resource of it was used
    fams = sorted({family_of(r) for r in seen.resources if "://" in r} | set(opaque))
    by_scheme: dict[str, list[str]] = {}
    for f in fams:
        s = _scheme_glob(f)
        if s is not None:
            by_scheme.setdefault(s, []).append(f)
    wide = {s for s, members in by_scheme.items() if len(members) >= wide_after}
    fams = sorted(dict.fromkeys(_scheme_glob(f) if _scheme_glob(f) in wide else f for f in fams))
    clauses["resources"] = {"allow": tuple(fams)}

    sens: dict[str, Any] = {}
    top_read, top_sent = seen.max_sensitivity(), seen.max_sensitivity(sent=True)
    if top_read is not None:
        sens["max_read"] = top_read
    if top_sent is not None:
        sens["max_sent"] = top_sent
    if sens:
        clauses["sensitivity"] = sens

    internal = [d for d in seen.destinations if seen.dest_class.get(d) == "internal"]
    classes: tuple[str, ...] = ("internal",) if len(internal) >= class_after else ()
    rest = [d for d in seen.destinations if not (classes and seen.dest_class.get(d) == "internal")]
    allow = _group(rest, lambda d: None if seen.dest_class.get(d) == "broadcast" else parent_glob(d), min_group,
                   covers_unused_broadcast)
    dest: dict[str, Any] = {"allow": tuple(allow)}
    if classes:
        dest["classes"] = classes
    clauses["destinations"] = dest

    people = [p for p in seen.principals if p != OPERATOR]
    who = _group(people, _principal_group, min_group, lambda g: False)
    # many requesters of one kind (customer:..., ticket:...) direct it: its job is to serve any of them
    kinds = Counter(p.partition(":")[0] + ":*" for p in who if ":" in p and "@" not in p and "*" not in p)
    wide_who = {k for k, n in kinds.items() if n >= wide_after}
    who = sorted(dict.fromkeys((p.partition(":")[0] + ":*") if p.partition(":")[0] + ":*" in wide_who else p
                               for p in who))
    clauses["principals"] = {"allow": tuple(who), "operator": seen.principals.get(OPERATOR, 0) > 0}

    if seen.out_events:
        clauses["ceilings"] = {k: _nice_ceiling(v * margin) for k, v in seen.peaks.items()}
    return Manifest(kind="agent", name=seen.agent_id, version=version, clauses=clauses, role=role,
                    description=f"suggested from {seen.n} actions ({iso_utc(seen.first_t)} to {iso_utc(seen.last_t)})")


def iso_utc(t: float) -> str:
    """``t`` (epoch seconds) as RFC 3339 UTC, ``-`` for an empty range."""
    if t in (float("inf"), float("-inf")):
        return "-"
    return datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


# --------------------------------------------------------------------------- unused grants, drift
def _used(globs: Iterable[str], values: Iterable[str]) -> dict[str, int]:
    """For each glob: how many of ``values`` (distinct) it matches."""
    vals = list(values)
    out = {}
    for g in globs:
        rx = re.compile(fnmatch.translate(g))
        out[g] = sum(1 for v in vals if rx.match(v))
    return out


def unused_grants(scope: Scope, seen: Observed | None, *, low_use: float = 0.25) -> list[dict]:
    """What ``scope`` allows that the behaviour in ``seen`` never used (``None``: nothing was seen),
    as ``{"clause", "grant", "detail"}``, clause by clause. Ceilings count as over-broad when the
    observed peak stayed below ``low_use`` of them.

    >>> from detector.manifest import ManifestBook, parse_manifest
    >>> m = parse_manifest('version = 1\\nagent = "a"\\n[tools]\\nallow = ["crm.*", "vault.*"]\\n')
    >>> [g["grant"] for g in unused_grants(ManifestBook([m]).scope_for("a"), None)]
    ['crm.*', 'vault.*']
    """
    seen = seen or Observed(scope.agent_id)
    out: list[dict] = []
    c = scope.clauses

    def never(clause: str, globs: Iterable[str], values: Iterable[str], what: str) -> None:
        for g, n in _used(globs, values).items():
            if n == 0:
                out.append({"clause": clause, "grant": g, "detail": f"no {what} matched it"})

    if "allow" in c.get("tools", {}):
        never("tools", c["tools"]["allow"], seen.tools, "tool used")
    if "allow" in c.get("resources", {}):
        never("resources", c["resources"]["allow"], seen.resources, "resource touched")
    if "allow" in c.get("destinations", {}):
        never("destinations", c["destinations"]["allow"], seen.destinations, "destination reached")
    classes = c.get("destinations", {}).get("classes", ())
    if classes:
        # a class is used only by destinations its globs did not already allow
        globs = [re.compile(fnmatch.translate(g)) for g in c["destinations"].get("allow", ())]
        needed = {seen.dest_class.get(d) for d in seen.destinations if not any(rx.match(d) for rx in globs)}
        for cls in classes:
            if cls not in needed:
                out.append({"clause": "destinations", "grant": f"class {cls}",
                            "detail": f"no {cls} destination outside its globs was reached"})
    who = c.get("principals", {})
    if "allow" in who:
        never("principals", who["allow"], [p for p in seen.principals if p != OPERATOR], "requester")
    if who.get("operator", True) and "principals" in c and seen.principals.get(OPERATOR, 0) == 0:
        out.append({"clause": "principals", "grant": "operator = true",
                    "detail": "it never acted for its operator without a requester"})
    sens = c.get("sensitivity", {})
    for key, sent in (("max_read", False), ("max_sent", True)):
        if key in sens:
            top = seen.max_sensitivity(sent)
            if top is None or _RANK[top] < _RANK[sens[key]]:
                out.append({"clause": f"sensitivity.{key}", "grant": sens[key],
                            "detail": f"the most sensitive data it {'sent out' if sent else 'touched'} was "
                                      f"{top or 'none'}"})
    for key, ceiling in c.get("ceilings", {}).items():
        if key not in CEILINGS:
            continue
        peak = seen.peaks.get(key, 0.0)
        if ceiling > 0 and peak < low_use * ceiling:
            out.append({"clause": f"ceilings.{key}", "grant": f"{ceiling:,}",
                        "detail": f"peak {peak:,.0f} ({100.0 * peak / ceiling:.0f} % of the ceiling)"})
    return out


def _domains(values: Iterable[str]) -> set[str]:
    out = set()
    for v in values:
        g = parent_glob(v)
        out.add(g if g is not None else v)
    return out


def drift(previous: Observed | None, current: Observed | None) -> dict[str, Any]:
    """What changed from one period to the next: new and dropped tools, resource families,
    destination groups (domain or host) and principals; volume sent out, before and after.

    >>> drift(None, None)["new"]["tools"]
    []
    """
    p = previous or Observed("")
    c = current or Observed("")
    fam = lambda o: {family_of(r) for r in o.resources}  # noqa: E731
    pairs = {
        "tools": (set(p.tools), set(c.tools)),
        "resource_families": (fam(p), fam(c)),
        "destination_groups": (_domains(p.destinations), _domains(c.destinations)),
        "principals": (set(p.principals), set(c.principals)),
    }
    ratio = (c.out_records / p.out_records) if p.out_records else None
    return {
        "new": {k: sorted(b - a) for k, (a, b) in pairs.items()},
        "dropped": {k: sorted(a - b) for k, (a, b) in pairs.items()},
        "actions": {"previous": p.n, "current": c.n},
        "records_out": {"previous": p.out_records, "current": c.out_records, "ratio": ratio},
        "bytes_out": {"previous": p.out_bytes, "current": c.out_bytes},
        "sensitivity_sent": {"previous": p.max_sensitivity(True), "current": c.max_sensitivity(True)},
    }
