"""From a tool call seen from outside (a span, an MCP ``tools/call``) to a contract action event.

An OpenTelemetry tool span or an MCP call says which tool an agent called, and
maybe its arguments and result; it does not say what the contract's action
event needs besides (docs/contract.md, section 1): the kind of effect
(``action``), what was acted on (``resource``), how sensitive it is, where data
went (``destinations``), how many records and bytes, who asked. Those come, for
each field, from the first of:

1. the **mapping file**'s first ``[[tool]]`` whose ``match`` glob matches the tool name;
2. the call's ``flowbreaker.<field>`` attribute (a span attribute an integrator sets,
   e.g. ``flowbreaker.sensitivity = "restricted"``);
3. the mapping file's ``[defaults]``;
4. the built-in defaults (:data:`BUILTIN_DEFAULTS`, below), so a call with no
   configuration at all still gives an event the workers accept.

The operator's file comes first: it can pin what an instrumented program says
(``hr_db.*`` is ``restricted`` whatever a span claims).

The mapping file (TOML; docs/contract.md, "The tool mapping file")::

    [defaults]
    operator_id = "team-support"
    sensitivity = "internal"

    [[tool]]
    match = ["send_email", "gmail.*"]          # globs on the tool name (fnmatch, case-sensitive)
    action = "send"                            # a fixed value ...
    resource = "mail://outbox"
    destinations = { from = "arguments.to", prefix = "email:" }   # ... or a path into the call
    records = { from = "arguments.attachments", measure = "length", default = 1 }

A value is either fixed (a string, an integer, a list of strings) or an inline
table ``{ from = PATH or [PATH, ...], prefix = "...", default = ..., measure =
"length" | "bytes" }``: the first path that is present gives the value; ``prefix``
is put before a string (before each string of a list); ``measure`` takes the
value's length (items of a list or object, characters of a string) or its size
in bytes (UTF-8 of a string, else of its JSON); ``default`` when no path is
present. A path starts with ``arguments``, ``result`` or ``attributes``:
``arguments.to``, ``result.rows.0.id`` (dots between keys, a number indexes a
list), ``attributes.enduser.id`` (after ``attributes.`` the rest is one
attribute name, since attribute names contain dots). Arguments and a result
given as JSON text (how ``gen_ai.tool.call.arguments`` usually arrives) are
parsed when a path needs them.

>>> m = load_mapping(None)
>>> ev = m.event_for(tool="crm.delete_contact", agent_id="a1", task_id="t1", event_id="e1",
...                  ts="2026-03-02T09:00:00Z", arguments={"id": 7}, result='{"ok": true}', attributes={})
>>> (ev["action"], ev["resource"], ev["sensitivity"], ev["operator_id"], ev["bytes"])
('delete', 'tool://crm.delete_contact', 'internal', 'unknown', 12)
>>> from detector.events import decode_event
>>> decode_event(ev).action
'delete'

Nothing here validates the event: the caller runs it through
``detector.events.decode_event`` (a mapped ``action = "erase"`` is refused there,
naming the field), then publishes it. :func:`load_mapping` refuses a mapping
file that cannot work (unknown key, a fixed value outside the contract, a path
with an unknown root) with a :class:`MappingError` naming the key.
"""

from __future__ import annotations

import fnmatch
import json
import re
import tomllib
from pathlib import Path
from typing import Any

from detector.errors import UsageError
from detector.events import ACTIONS, SENSITIVITIES

__all__ = ["ToolMapping", "MappingError", "load_mapping", "infer_action", "FIELDS", "BUILTIN_DEFAULTS",
           "ATTRIBUTE_PREFIX"]

#: the event fields a mapping (or a ``flowbreaker.*`` attribute) may give
FIELDS = ("action", "resource", "sensitivity", "destinations", "records", "bytes", "requested_by", "operator_id",
          "approval_id", "instruction_hash")
ATTRIBUTE_PREFIX = "flowbreaker."
_INT_FIELDS = ("records", "bytes")
_OPTIONAL = ("requested_by", "approval_id", "instruction_hash")  # left out of the event when there is no value

#: What a field is when neither the mapping file nor a ``flowbreaker.*`` attribute gives it
#: (the text of docs/contract.md's table says the same).
BUILTIN_DEFAULTS: dict[str, str] = {
    "action": "inferred from the words of the tool name (infer_action): delete, send, exec, write or read; exec when "
              "no word is known",
    "resource": "tool://TOOL_NAME",
    "sensitivity": "internal",
    "destinations": "none",
    "records": "0",
    "bytes": "the size of the call's result in bytes (UTF-8 of a text, else of its JSON); 0 without a result",
    "requested_by": "the attribute enduser.id, else user.id; none without either",
    "operator_id": "unknown",
    "approval_id": "none",
    "instruction_hash": "none",
}

# Words of a tool name (verbs, mostly: a noun such as "message" is read as often as sent), most harmful kind
# first: a name with a delete word and a read word (get_and_delete) is a delete.
_WORDS: tuple[tuple[str, frozenset[str]], ...] = (
    ("delete", frozenset("delete del remove rm drop destroy purge erase unlink trash wipe truncate revoke".split())),
    ("send", frozenset("send post upload share publish forward reply notify transfer pay tweet invite submit "
                       "export".split())),
    ("exec", frozenset("exec execute run shell eval bash python spawn deploy".split())),
    ("write", frozenset("write create update put set insert add edit save modify patch append move rename upsert "
                        "commit store mkdir copy cp mv assign schedule book".split())),
    ("read", frozenset("read get list query search fetch find lookup select show view describe download open load "
                       "browse ls cat retrieve scan count inspect check head tail grep".split())),
)
_SPLIT = re.compile(r"[^0-9a-zA-Z]+|(?<=[a-z0-9])(?=[A-Z])")


def infer_action(tool: str) -> str:
    """The kind of effect a tool name suggests, when nothing says it: the most harmful kind among its words.

    Words are split on anything but letters and digits and at camelCase humps. A
    guess, good enough for a first baseline; a mapping file or ``flowbreaker.action``
    says it for sure.

    >>> [infer_action(t) for t in ("hr_db.query", "slack.postMessage", "files/delete", "getAndDelete", "frobnicate")]
    ['read', 'send', 'delete', 'delete', 'exec']
    """
    words = {w.lower() for w in _SPLIT.split(tool) if w}
    for action, known in _WORDS:
        if words & known:
            return action
    return "exec"


class MappingError(UsageError):
    """A mapping file that cannot be used: one line naming the file and the key (exit 2 in the CLI)."""


class _Missing:
    __slots__ = ()


_MISSING = _Missing()
_ROOTS = ("arguments", "result", "attributes")
_MEASURES = ("length", "bytes")


class _Path:
    """A path into the call: ``arguments.a.0``, ``result.x``, ``attributes.some.attr``."""

    __slots__ = ("root", "keys", "text")

    def __init__(self, text: str, where: str) -> None:
        root, _, rest = text.partition(".")
        if root not in _ROOTS:
            raise MappingError(f"{where}: path {text!r} must start with one of {', '.join(_ROOTS)}")
        self.root = root
        self.text = text
        if root == "attributes":
            self.keys: tuple[str | int, ...] = (rest,) if rest else ()
        else:
            self.keys = tuple(int(k) if k.isdigit() else k for k in rest.split(".")) if rest else ()

    def get(self, call: "_Call") -> Any:
        value = call.root(self.root)
        for key in self.keys:
            if isinstance(value, dict):
                value = value.get(key if isinstance(key, str) else str(key), _MISSING)
            elif isinstance(value, list) and isinstance(key, int):
                value = value[key] if key < len(value) else _MISSING
            else:
                return _MISSING
            if value is _MISSING:
                return _MISSING
        return _MISSING if value is None else value


class _Spec:
    """How one field is found: a fixed value, or paths with a prefix, a measure and a default."""

    __slots__ = ("fixed", "paths", "prefix", "measure", "default")

    def __init__(self, field: str, raw: Any, where: str) -> None:
        self.fixed: Any = _MISSING
        self.paths: tuple[_Path, ...] = ()
        self.prefix = ""
        self.measure: str | None = None
        self.default: Any = _MISSING
        if isinstance(raw, dict):
            unknown = sorted(set(raw) - {"from", "prefix", "measure", "default"})
            if unknown:
                raise MappingError(f"{where}.{field}: unknown key {unknown[0]!r} (known: from, prefix, measure, default)")
            src = raw.get("from")
            if isinstance(src, str):
                src = [src]
            if not src or not isinstance(src, list) or not all(isinstance(p, str) for p in src):
                raise MappingError(f"{where}.{field}: 'from' must be a path or a list of paths")
            self.paths = tuple(_Path(p, f"{where}.{field}") for p in src)
            prefix = raw.get("prefix", "")
            if not isinstance(prefix, str):
                raise MappingError(f"{where}.{field}: 'prefix' must be a string")
            self.prefix = prefix
            measure = raw.get("measure")
            if measure is not None and measure not in _MEASURES:
                raise MappingError(f"{where}.{field}: 'measure' must be one of {', '.join(_MEASURES)}")
            self.measure = measure
            if "default" in raw:
                self.default = _check_fixed(field, raw["default"], f"{where}.{field}.default")
        else:
            self.fixed = _check_fixed(field, raw, f"{where}.{field}")

    def value(self, call: "_Call") -> Any:
        if self.fixed is not _MISSING:
            return self.fixed
        for path in self.paths:
            v = path.get(call)
            if v is not _MISSING:
                if self.measure is not None:
                    return _measure(v, self.measure)
                if self.prefix:
                    if isinstance(v, str):
                        return self.prefix + v
                    if isinstance(v, list):
                        return [self.prefix + x if isinstance(x, str) else x for x in v]
                return v
        return self.default


def _check_fixed(field: str, value: Any, where: str) -> Any:
    if field == "action" and value not in ACTIONS:
        raise MappingError(f"{where}: {value!r} is not one of {', '.join(ACTIONS)}")
    if field == "sensitivity" and value not in SENSITIVITIES:
        raise MappingError(f"{where}: {value!r} is not one of {', '.join(SENSITIVITIES)}")
    if field in _INT_FIELDS and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
        raise MappingError(f"{where}: must be an integer >= 0")
    if field == "destinations" and (not isinstance(value, list) or not all(isinstance(d, str) for d in value)):
        raise MappingError(f"{where}: must be a list of strings")
    if field not in _INT_FIELDS and field != "destinations" and (not isinstance(value, str) or not value):
        raise MappingError(f"{where}: must be a non-empty string")
    return value


def _measure(value: Any, how: str) -> int:
    if how == "length":
        return len(value) if isinstance(value, (list, dict, str)) else 1
    if isinstance(value, str):
        return len(value.encode("utf-8", "surrogatepass"))
    if isinstance(value, (bytes, bytearray)):
        return len(value)
    return len(json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str)
               .encode("utf-8", "surrogatepass"))


def _coerce(field: str, value: Any) -> Any:
    """Shape a found value like the contract's field, where that is unambiguous (the event parser
    refuses the rest, naming the field)."""
    if field in _INT_FIELDS:
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str) and value.isdigit() and len(value) <= 19:
            return int(value)
        return value
    if field == "destinations":
        if isinstance(value, str):
            return [value]
        if isinstance(value, tuple):
            return list(value)
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    return value


class _Call:
    """One call's arguments, result and attributes; JSON text is parsed once, when a path needs it."""

    __slots__ = ("arguments", "result", "attributes", "_parsed")

    def __init__(self, arguments: Any, result: Any, attributes: dict) -> None:
        self.arguments = arguments
        self.result = result
        self.attributes = attributes
        self._parsed: dict[str, Any] = {}

    def root(self, name: str) -> Any:
        if name == "attributes":
            return self.attributes
        if name in self._parsed:
            return self._parsed[name]
        value = self.arguments if name == "arguments" else self.result
        if isinstance(value, (str, bytes, bytearray)):
            try:
                value = json.loads(value)
            except (ValueError, RecursionError):
                pass  # plain text: only the whole value (a path with no keys) reaches it
        self._parsed[name] = value
        return value


class _Rule:
    __slots__ = ("patterns", "specs")

    def __init__(self, patterns: tuple[str, ...], specs: dict[str, _Spec]) -> None:
        self.patterns = patterns
        self.specs = specs


_CACHE_MAX = 4096
_STR_COERCED = ("records", "bytes", "destinations")  # fields whose value is not a string as it is
_ATTR_KEYS = {f: ATTRIBUTE_PREFIX + f for f in FIELDS}
# built-in values that need the call (the rest are constants per tool)
_RESULT_SIZE = _Missing()
_END_USER = _Missing()


class ToolMapping:
    """A loaded mapping (see the module docstring); :func:`load_mapping` makes one. Immutable after loading."""

    def __init__(self, rules: list[_Rule] | None = None, defaults: dict[str, _Spec] | None = None,
                 source: str | None = None) -> None:
        self.rules = rules or []
        self.defaults = defaults or {}
        self.source = source
        self._plans: dict[str, tuple] = {}

    def _plan_for(self, tool: str) -> tuple:
        """Per field: (field, the tool rule's spec, the attribute's name, the [defaults] spec, the built-in),
        worked out once per tool name (the hot path of flowbreaker otlp)."""
        plan = self._plans.get(tool)
        if plan is None:
            specs: dict[str, _Spec] = {}
            for rule in self.rules:
                if any(fnmatch.fnmatchcase(tool, p) for p in rule.patterns):
                    specs = rule.specs
                    break
            builtin = {"action": infer_action(tool), "resource": "tool://" + tool, "sensitivity": "internal",
                       "operator_id": "unknown", "bytes": _RESULT_SIZE, "requested_by": _END_USER}
            plan = tuple((f, specs.get(f), _ATTR_KEYS[f], self.defaults.get(f), builtin.get(f, _MISSING))
                         for f in FIELDS)
            if len(self._plans) >= _CACHE_MAX:  # tool names come from outside: keep the cache bounded
                self._plans.clear()
            self._plans[tool] = plan
        return plan

    def event_for(self, *, tool: str, agent_id: str, task_id: str | None, event_id: str, ts: str,
                  arguments: Any | None, result: Any | None, attributes: dict,
                  parent_event_id: str | None = None) -> dict:
        """The contract action event (a dict, not validated yet) for one tool call.

        ``arguments`` and ``result`` may be objects or JSON text (parsed only when
        a path needs it); ``attributes`` the call's attributes (for a span: the
        resource's and the span's, the span's winning). Never raises on what the
        call holds: a value of the wrong type is passed on for the event parser
        to refuse with the field's name.
        """
        call = None
        ev: dict[str, Any] = {"schema_version": 1, "event_id": event_id, "ts": ts, "agent_id": agent_id,
                              "tool": tool}
        get = attributes.get
        for field, rule, attr_key, default, builtin in self._plan_for(tool):
            value: Any = _MISSING
            if rule is not None:
                call = call or _Call(arguments, result, attributes)
                value = rule.value(call)
            if value is _MISSING:
                value = get(attr_key, _MISSING)
                if value is _MISSING:
                    if default is not None:
                        call = call or _Call(arguments, result, attributes)
                        value = default.value(call)
                    if value is _MISSING:
                        value = builtin
                        if value is _RESULT_SIZE:
                            value = 0 if result is None else _measure(result, "bytes")
                        elif value is _END_USER:
                            value = get("enduser.id")
                            if value is None:
                                value = get("user.id")
            if value is _MISSING or value is None:
                continue
            ev[field] = value if type(value) is str and field not in _STR_COERCED else _coerce(field, value)
        if task_id:
            ev["task_id"] = task_id
        if parent_event_id:
            ev["parent_event_id"] = parent_event_id
        return ev


def _specs(table: Any, where: str) -> dict[str, _Spec]:
    if not isinstance(table, dict):
        raise MappingError(f"{where}: must be a table")
    out = {}
    for key, raw in table.items():
        if key not in FIELDS:
            raise MappingError(f"{where}: unknown key {key!r} (known: match, {', '.join(FIELDS)})")
        out[key] = _Spec(key, raw, where)
    return out


def mapping_from_dict(data: dict, source: str | None = None) -> ToolMapping:
    """A mapping from a parsed TOML document (see :func:`load_mapping`).

    >>> m = mapping_from_dict({"tool": [{"match": "send_*", "action": "send",
    ...                                  "destinations": {"from": "arguments.to", "prefix": "email:"}}]})
    >>> m.event_for(tool="send_mail", agent_id="a", task_id=None, event_id="e", ts="2026-03-02T09:00:00Z",
    ...             arguments='{"to": ["x@corp.example"]}', result=None, attributes={})["destinations"]
    ['email:x@corp.example']
    >>> mapping_from_dict({"tool": [{"match": "x", "sensitivity": "secret"}]})
    Traceback (most recent call last):
    ...
    streams.tool_mapping.MappingError: tool[0].sensitivity: 'secret' is not one of public, internal, confidential, restricted
    """
    prefix = f"{source}: " if source else ""
    unknown = sorted(set(data) - {"defaults", "tool"})
    if unknown:
        raise MappingError(f"{prefix}unknown key {unknown[0]!r} (known: defaults, tool)")
    try:
        defaults = _specs(data.get("defaults", {}), "defaults")
        tools = data.get("tool", [])
        if not isinstance(tools, list):
            raise MappingError("tool: must be an array of tables ([[tool]])")
        rules = []
        for i, table in enumerate(tools):
            where = f"tool[{i}]"
            if not isinstance(table, dict):
                raise MappingError(f"{where}: must be a table")
            table = dict(table)
            match = table.pop("match", None)
            if isinstance(match, str):
                match = [match]
            if not match or not isinstance(match, list) or not all(isinstance(p, str) and p for p in match):
                raise MappingError(f"{where}.match: required, a glob or a list of globs on the tool name")
            rules.append(_Rule(tuple(match), _specs(table, where)))
    except MappingError as err:
        if prefix:
            raise MappingError(prefix + str(err)) from None
        raise
    return ToolMapping(rules, defaults, source)


def load_mapping(path: str | Path | None) -> ToolMapping:
    """Load a mapping file (TOML); ``None`` gives the built-in defaults. Raises :class:`MappingError`."""
    if path is None:
        return ToolMapping()
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except OSError as err:
        raise MappingError(f"cannot read mapping file {path}: {err.strerror}") from None
    except tomllib.TOMLDecodeError as err:
        raise MappingError(f"mapping file {path} is not valid TOML: {err}") from None
    return mapping_from_dict(data, str(path))
