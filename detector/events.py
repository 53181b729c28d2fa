"""The action event of the outside contract (section 1), and its decoder.

``decode_event`` turns bytes, text or a dict into an :class:`ActionEvent`, or
raises :class:`EventError` whose ``code`` is one of a small fixed set (usable as
a metric label) and whose text names the field and the problem.

>>> e = decode_event(b'{"event_id":"e1","ts":"2026-03-02T09:00:00+02:00","agent_id":"a",'
...                  b'"operator_id":"o","tool":"hr_db.query","action":"read",'
...                  b'"resource":"hr://personnel","sensitivity":"restricted","records":3}')
>>> (e.agent_id, e.records, e.t)
('a', 3, 1772434800.0)
>>> decode_event(b'{"event_id":"e1"}')
Traceback (most recent call last):
...
detector.events.EventError: ts: required field is missing

What is refused besides the contract's types and ranges, and why:

* nesting deeper than :data:`MAX_DEPTH` arrays or objects (code ``depth``): the
  JSON parser recurses per level, so without a bound a message such as
  ``{"a":`` repeated 1,000 times ends in Python's ``RecursionError`` instead of
  a rejection. Unknown extra fields are still tolerated up to that depth;
* a message over :data:`MAX_EVENT_BYTES` (code ``length``);
* identifiers (:data:`ID_FIELDS`) holding control or format characters
  (Unicode categories Cc, Cf, Cs: zero-width spaces, bidirectional overrides,
  NUL...; code ``character``): ``"a\u200bb"`` would otherwise be a new agent
  with a fresh baseline that looks like ``"ab"`` on every screen. For the same
  reason invisible (default-ignorable) code points are refused too (U+FE0F,
  U+3164 HANGUL FILLER, ...: :data:`DEFAULT_IGNORABLE`).
  Identifiers are normalised to NFC, so the same name typed with a combining
  accent or a precomposed one is one agent; ``agent_id`` is folded further with
  NFKC (full-width ``ｆｉｎ`` is ``fin``), and an ``agent_id`` whose TR39 skeleton
  (:func:`skeleton`) is an ASCII id other than itself (``ѕales`` with a Cyrillic
  dze reads as ``sales``) is refused. The check needs no list of known agents
  (they live on other partitions of other workers): any ASCII id is one a
  look-alike could impersonate.

>>> decode_event(b'{"a":' * 1000)
Traceback (most recent call last):
...
detector.events.EventError: nested deeper than 64 arrays or objects
>>> decode_event({"event_id": "e1", "ts": "2026-03-02T09:00:00Z", "agent_id": "a\u200bb", "operator_id": "o",
...               "tool": "t", "action": "read", "resource": "r", "sensitivity": "public"})
Traceback (most recent call last):
...
detector.events.EventError: agent_id: contains U+200B (ZERO WIDTH SPACE), a format character; identifiers may not contain control or format characters

Measured on a 2-core machine (bench/bench_replay.py, ~330-byte events):
msgspec typed decode + timestamp check ~1.5 us/event, pydantic v2
``model_validate_json`` ~5 us, ``json.loads`` + hand checks ~6 us. msgspec wins.
All of decode_event on the simulated fleet's ~430-byte lines: ~1.7 us/event with
the compiled shortcuts (detector/_decode.c), ~3.7 us without, 4.6 us before its
fast path (issue 20; the typed decode alone is ~1.2-1.5 us there).
"""

from __future__ import annotations

import re
import unicodedata
from typing import TYPE_CHECKING, Annotated, Any, Literal

import msgspec
import numpy as np

from detector.timestamps import compiled, rfc3339_instant

__all__ = ["ActionEvent", "EventError", "decode_event", "decode_lines", "decode_reference", "check_event_time",
           "ERROR_CODES", "ACTIONS", "SENSITIVITIES", "ID_FIELDS", "MAX_DEPTH", "MAX_EVENT_BYTES", "skeleton",
           "lookalike_of", "DEFAULT_IGNORABLE", "CONFUSABLES"]

ACTIONS = ("read", "write", "delete", "send", "exec")
SENSITIVITIES = ("public", "internal", "confidential", "restricted")
ERROR_CODES = ("not_json", "not_object", "missing", "type", "enum", "range", "length", "timestamp", "encoding",
               "depth", "character")
#: arrays and objects inside one another; a contract event needs 2 (the event, its destinations)
MAX_DEPTH = 64
#: a message larger than this is refused whole (Kafka's default ``message.max.bytes`` is about 1 MB)
MAX_EVENT_BYTES = 1024 * 1024
#: the identifier fields: normalised to NFC, and refused with control or format characters
ID_FIELDS = ("event_id", "agent_id", "operator_id", "requested_by", "task_id", "instruction_hash", "approval_id",
             "parent_event_id")

_Id = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
_Op = Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
_Opt = Annotated[str, msgspec.Meta(max_length=1024)]
_Count = Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]


class ActionEvent(msgspec.Struct, frozen=True, dict=True):
    """One tool call of one agent, as published on ``agent-actions``.

    Unknown fields are ignored. ``t`` is the instant in epoch seconds, derived
    from ``ts`` (any offset; order is by instant).
    """

    event_id: _Id
    ts: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    agent_id: _Id
    operator_id: _Op
    tool: _Op
    action: Literal["read", "write", "delete", "send", "exec"]
    resource: Annotated[str, msgspec.Meta(min_length=1, max_length=1024)]
    sensitivity: Literal["public", "internal", "confidential", "restricted"]
    schema_version: int = 1
    requested_by: _Opt | None = None
    task_id: _Opt | None = None
    instruction_hash: _Opt | None = None
    records: _Count = 0
    bytes: _Count = 0
    destinations: Annotated[list[str], msgspec.Meta(max_length=10_000)] = []
    approval_id: _Opt | None = None
    parent_event_id: _Opt | None = None
    if TYPE_CHECKING:  # not a field: the decoder sets it in the instance's __dict__, so no input key collides
        t: float

    def replace(self, **changes: Any) -> "ActionEvent":
        """A copy with some fields changed (``ts`` may not change; ``t`` is carried over)."""
        if "ts" in changes:
            raise ValueError("replace() keeps ts; decode a new event to change the time")
        ev = msgspec.structs.replace(self, **changes)
        ev.__dict__["t"] = self.__dict__["t"]
        return ev

    def to_dict(self) -> dict[str, Any]:
        """The event as a contract dict (without the derived ``t``)."""
        return msgspec.structs.asdict(self)


class EventError(ValueError):
    """An event that does not validate. ``code`` is a bounded label, ``field`` the
    offending field ('' when the whole message is at fault)."""

    def __init__(self, code: str, field: str, message: str) -> None:
        self.code = code
        self.field = field
        super().__init__(f"{field}: {message}" if field else message)


_decoder = msgspec.json.Decoder(ActionEvent)
_AT = re.compile(r" - at `\$\.?([^`\[]*)")
_FIELDS = {f: None for f in ActionEvent.__struct_fields__}


def _translate(err: msgspec.ValidationError) -> EventError:
    msg = str(err)
    m = _AT.search(msg)
    field = m.group(1) if m else ""
    text = msg[: m.start()] if m else msg
    if text.startswith("Object missing required field"):
        field = text.split("`")[1]
        return EventError("missing", field, "required field is missing")
    if text.startswith("Invalid enum value") or "Expected `str` matching" in text:
        allowed = ", ".join(ACTIONS if field == "action" else SENSITIVITIES)
        return EventError("enum", field, f"{text.removeprefix('Invalid enum value ')} is not one of {allowed}")
    if "length" in text:
        return EventError("length", field, text.replace("Expected", "must be"))
    if ">=" in text or "<=" in text:
        return EventError("range", field, text.replace("Expected `int`", "must be"))
    if text.startswith("Expected `object`"):
        return EventError("not_object", field, "event must be a JSON object" if not field else text)
    return EventError("type", field, text[0].lower() + text[1:])


def _is_utf8(raw: bytes | bytearray | memoryview) -> bool:
    try:
        bytes(raw).decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


# ---------------------------------------------------------------------- nesting depth
# Bytes that matter for nesting: brackets, braces and the quote (brackets inside strings do not nest).
_SPECIAL = np.zeros(256, dtype=bool)
_SPECIAL[[ord("["), ord("]"), ord("{"), ord("}"), ord('"')]] = True
_STEP = np.zeros(256, dtype=np.int32)
_STEP[[ord("["), ord("{")]] = 1
_STEP[[ord("]"), ord("}")]] = -1


def json_depth(raw: bytes | bytearray | memoryview) -> int:
    """The deepest nesting of arrays and objects in a JSON text, outside string literals.

    Vectorised (numpy over the bracket, brace and quote bytes), so a megabyte of
    brackets costs milliseconds, not a Python loop per byte. On text that is not
    valid JSON the answer holds up to the first syntax error, which is as far as
    any parser goes, so it bounds the parser's recursion.

    >>> json_depth(b'{"a": [1, {"b": "[[[not nesting]]]"}], "c": "\\\\"{"}')
    3
    """
    a = np.frombuffer(raw, dtype=np.uint8)
    pos = np.flatnonzero(_SPECIAL[a])
    if pos.size == 0:
        return 0
    s = a[pos]
    quote = s == 34
    if quote.any():
        backslash = np.flatnonzero(a == 92)
        if backslash.size:  # a quote preceded by an odd run of backslashes is escaped, not a delimiter
            qi = np.flatnonzero(quote)
            q = pos[qi]
            run_start = np.empty(backslash.size, dtype=bool)
            run_start[0] = True
            np.not_equal(np.diff(backslash), 1, out=run_start[1:])
            starts = backslash[run_start]
            run_of = np.cumsum(run_start) - 1
            j = np.searchsorted(backslash, q) - 1   # the last backslash before each quote
            jj = np.maximum(j, 0)
            adjacent = (j >= 0) & (backslash[jj] == q - 1)
            escaped = adjacent & ((q - starts[run_of[jj]]) % 2 == 1)
            quote[qi[escaped]] = False
        in_string = (np.cumsum(quote, dtype=np.int32) & 1).astype(bool)
        step = _STEP[s]
        step[in_string] = 0
    else:
        step = _STEP[s]
    return int(np.cumsum(step).max(initial=0))


def _check_shape(raw: bytes | bytearray | memoryview | str) -> None:
    """Size and nesting, before the parser sees the text (see the module docstring)."""
    data = raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else raw
    size = len(data) if not isinstance(data, memoryview) else data.nbytes
    if size > MAX_EVENT_BYTES:
        raise EventError("length", "", f"message is {size} bytes; at most {MAX_EVENT_BYTES} are accepted")
    if isinstance(data, memoryview):
        data = data.tobytes()
    # fast path: a text with few opening brackets cannot nest deeply (counted in C, ~100 ns per event)
    if data.count(b"[") + data.count(b"{") > MAX_DEPTH and json_depth(data) > MAX_DEPTH:
        raise EventError("depth", "", f"nested deeper than {MAX_DEPTH} arrays or objects")


# ---------------------------------------------------------------------- identifiers
_FORBIDDEN = {"Cc": "a control character", "Cf": "a format character", "Cs": "a lone surrogate"}

#: Unicode's Default_Ignorable_Code_Point property (DerivedCoreProperties.txt, Unicode 15.1), as ranges: code
#: points a renderer shows as nothing. Those that are not Cc/Cf (variation selectors such as U+FE0F, Hangul
#: fillers such as U+3164, the combining grapheme joiner, ...) would make an agent id that looks like another.
DEFAULT_IGNORABLE = ((0x00AD, 0x00AD), (0x034F, 0x034F), (0x061C, 0x061C), (0x115F, 0x1160), (0x17B4, 0x17B5),
                     (0x180B, 0x180F), (0x200B, 0x200F), (0x202A, 0x202E), (0x2060, 0x206F), (0x3164, 0x3164),
                     (0xFE00, 0xFE0F), (0xFEFF, 0xFEFF), (0xFFA0, 0xFFA0), (0xFFF0, 0xFFF8),
                     (0x1BCA0, 0x1BCA3), (0x1D173, 0x1D17A), (0xE0000, 0xE0FFF))

#: A compact subset of Unicode TR39's confusables (confusables.txt, MA table): letters of other scripts (and a
#: few Latin extensions and dashes) that render like an ASCII character and that NFKC does not fold. Enough for
#: :func:`lookalike_of`'s question, "does this id read as an ASCII id it is not?"; not the full table, which
#: maps thousands of characters (the confusable-homoglyphs package ships it; the detector stays stdlib-only).
CONFUSABLES = {
    # Cyrillic
    "\u0430": "a", "\u0441": "c", "\u0501": "d", "\u0435": "e", "\u04bb": "h", "\u0456": "i", "\u0458": "j",
    "\u04cf": "l", "\u043e": "o", "\u0440": "p", "\u051b": "q", "\u0455": "s", "\u051d": "w", "\u0445": "x",
    "\u0443": "y", "\u04af": "y",
    "\u0410": "A", "\u0412": "B", "\u0421": "C", "\u0415": "E", "\u041d": "H", "\u0406": "I", "\u0408": "J",
    "\u041a": "K", "\u041c": "M", "\u041e": "O", "\u0420": "P", "\u0405": "S", "\u0422": "T", "\u0425": "X",
    "\u0423": "Y", "\u04ae": "Y", "\u051a": "Q", "\u051c": "W", "\u04c0": "I",
    # Greek
    "\u03b1": "a", "\u03bf": "o", "\u03c1": "p", "\u03bd": "v", "\u03b9": "i", "\u03c5": "u", "\u03b3": "y",
    "\u0391": "A", "\u0392": "B", "\u0395": "E", "\u0396": "Z", "\u0397": "H", "\u0399": "I", "\u039a": "K",
    "\u039c": "M", "\u039d": "N", "\u039f": "O", "\u03a1": "P", "\u03a4": "T", "\u03a5": "Y", "\u03a7": "X",
    # Armenian
    "\u0585": "o", "\u057d": "u", "\u0570": "h", "\u0578": "n", "\u0581": "g", "\u0566": "q",
    # Latin extensions, dashes and dots NFKC leaves alone
    "\u0131": "i", "\u0251": "a", "\u0261": "g", "\u2010": "-", "\u2011": "-", "\u2012": "-", "\u2013": "-",
    "\u2014": "-", "\u2015": "-", "\u2212": "-", "\u2043": "-", "\u00b7": ".", "\u2024": ".",
}
_SKELETON = str.maketrans(CONFUSABLES)


def _ignorable(cp: int) -> bool:
    return any(lo <= cp <= hi for lo, hi in DEFAULT_IGNORABLE)


def skeleton(value: str) -> str:
    """The TR39 skeleton of ``value`` over :data:`CONFUSABLES`: NFKC, then every listed look-alike replaced by
    the character it looks like (two ids with the same skeleton look the same).

    >>> skeleton("fin-agent-\u0455ales"), skeleton("\uff46\uff49\uff4e")
    ('fin-agent-sales', 'fin')
    """
    return unicodedata.normalize("NFKC", value).translate(_SKELETON)


def lookalike_of(value: str) -> str | None:
    """The ASCII id that ``value`` (a folded, non-ASCII id) reads as, or ``None`` when it reads as no ASCII id.

    >>> lookalike_of("hr-\u0430gent"), lookalike_of("\u0430\u0433\u0435\u043d\u0442-7")
    ('hr-agent', None)
    """
    skel = skeleton(value)
    return skel if skel != value and skel.isascii() else None


def _id_problem(name: str, value: str) -> tuple[str, str] | None:
    """``None`` when ``value`` is a plain identifier, else (code, reason); slow path for non-ASCII."""
    for ch in value:
        cat = unicodedata.category(ch)
        if cat in _FORBIDDEN:
            label = unicodedata.name(ch, "") or repr(ch)[1:-1]
            return "character", (f"contains U+{ord(ch):04X} ({label}), {_FORBIDDEN[cat]}; identifiers may not "
                                  "contain control or format characters")
        if _ignorable(ord(ch)):
            label = unicodedata.name(ch, "") or repr(ch)[1:-1]
            return "character", (f"contains U+{ord(ch):04X} ({label}), an invisible (default-ignorable) character; "
                                  "identifiers may not contain invisible characters")
    return None


def _normalise_ids(ev: ActionEvent) -> ActionEvent:
    """NFC identifiers (``agent_id``: NFKC), refused with control, format or invisible characters, and an
    ``agent_id`` that reads as an ASCII id it is not (see the module docstring)."""
    changes = None
    for name in ID_FIELDS:
        value = getattr(ev, name)
        # printable ASCII (the usual case) is already NFKC and has no control, format or invisible character
        if value is None or value.isascii() and value.isprintable():
            continue
        problem = _id_problem(name, value)
        if problem is not None:
            raise EventError(problem[0], name, problem[1])
        form = "NFKC" if name == "agent_id" else "NFC"
        folded = unicodedata.normalize(form, value)
        if folded != value:
            limit = 128 if name in ("event_id", "agent_id") else 256 if name == "operator_id" else 1024
            if len(folded) > limit:
                raise EventError("length", name, f"must be of length <= {limit} once normalised to {form}")
            problem = _id_problem(name, folded)
            if problem is not None:
                raise EventError(problem[0], name, problem[1])
            changes = changes or {}
            changes[name] = folded
        if name == "agent_id" and not folded.isascii():
            looks = lookalike_of(folded)
            if looks is not None:
                raise EventError("character", name, f"{folded!r} looks like the agent id {looks!r} but is not it "
                                                    "(letters of another script); an agent id that looks like "
                                                    "another is refused")
    if changes:
        ev = msgspec.structs.replace(ev, **changes)
    return ev


# ---------------------------------------------------------------------- decoding
#: detector/_decode.c's plain(raw): ASCII, no backslash or DEL, one brace (the first byte), at most one bracket
_plain = compiled.plain if compiled is not None else None
#: detector/_decode.c's decode_plain(raw): the usual message's whole path below in one call (the event, or None)
_decode_plain = None
#: detector/_decode.c's decode_many(lines, i, end, out): decode_plain over a run of lines in one call
decode_many = None
if compiled is not None and hasattr(compiled, "decode_plain"):
    compiled.decode_setup(_decoder.decode, MAX_EVENT_BYTES)
    _decode_plain = compiled.decode_plain
    decode_many = getattr(compiled, "decode_many", None)


def decode_event(raw: bytes | bytearray | memoryview | str | dict) -> ActionEvent:
    """Decode and validate one event; raise :class:`EventError` when it is invalid.

    Never raises anything else, whatever the input bytes (property-tested in
    ``tests/unit/test_events.py``). The answer is :func:`decode_reference`'s: the
    same event with the same ``t``, bit for bit, or the same error
    (tests/unit/test_decode_fast.py). The usual message (bytes of a valid event in
    printable ASCII) skips the reference's checks that cannot fail on it, with a few
    C searches (``92 in raw`` is a memchr):

    * the depth bound: nesting is at most the count of opening brackets (a lone
      brace and bracket are found by searches, more are counted). The parser runs
      before it, which is safe: on deeper text it raises ``RecursionError``, and
      the reference then refuses the message;
    * the identifiers' normalisation: ASCII bytes without a backslash (no escape)
      or DEL decode to strings of printable ASCII, as the parser refuses raw
      control characters inside strings.

    Anything else, and any failure, is left to the reference, which says why.
    The compiled module takes the usual message's whole path in one call (``_decode_plain``).
    """
    if _decode_plain is not None:
        ev = _decode_plain(raw)
        if ev is not None:
            return ev
    if type(raw) is bytes and len(raw) <= MAX_EVENT_BYTES:
        try:
            ev = _decoder.decode(raw)
            t = rfc3339_instant(ev.ts)
        except (msgspec.MsgspecError, ValueError, RecursionError):
            return decode_reference(raw)
        if ev.schema_version != 1:
            return decode_reference(raw)
        if _plain is None or not _plain(raw):  # the searches below in one compiled call, when it says yes
            if not (raw.rfind(b"{") == 0 and raw.find(b"[") == raw.rfind(b"[")
                    or raw.count(b"{") + raw.count(b"[") <= MAX_DEPTH):
                return decode_reference(raw)
            if not raw.isascii() or 92 in raw or 127 in raw:  # backslash, DEL
                ev = _normalise_ids(ev)
        ev.__dict__["t"] = t
        return ev
    return decode_reference(raw)


def decode_lines(lines: list[bytes]) -> list[ActionEvent]:
    """``[decode_event(x) for x in lines]``: the usual messages in one compiled call (:data:`decode_many`) instead of
    a Python call each (a replay's loop spent ~5 % of its time calling decode_event), anything else by
    :func:`decode_event`, which raises :class:`EventError` for the first invalid line as that loop would."""
    out: list[ActionEvent] = []
    i, n = 0, len(lines)
    while i < n:
        if decode_many is not None and type(lines) is list:
            i = decode_many(lines, i, n, out)
            if i >= n:
                break
        out.append(decode_event(lines[i]))
        i += 1
    return out


def decode_reference(raw: bytes | bytearray | memoryview | str | dict) -> ActionEvent:
    """:func:`decode_event` step by step: every check, in the order that decides which error is raised."""
    try:
        if isinstance(raw, dict):
            ev = msgspec.convert(raw, ActionEvent)
        else:
            _check_shape(raw)
            ev = _decoder.decode(raw)
    except msgspec.ValidationError as err:
        raise _translate(err) from None
    except msgspec.DecodeError as err:
        text = str(err)
        if not isinstance(raw, str) and not _is_utf8(raw):
            raise EventError("encoding", "", "message is not valid UTF-8") from None
        raise EventError("not_json", "", f"not valid JSON ({text.removeprefix('JSON is malformed: ')})") from None
    except UnicodeError:
        raise EventError("encoding", "", "message is not valid UTF-8") from None
    except RecursionError:  # a dict nested beyond the interpreter's limit (bytes were bounded above)
        raise EventError("depth", "", f"nested deeper than {MAX_DEPTH} arrays or objects") from None
    if ev.schema_version != 1:
        raise EventError("range", "schema_version", f"unsupported schema_version {ev.schema_version} (this reader knows 1)")
    ts = ev.ts
    try:
        t = rfc3339_instant(ts)  # detector/timestamps.py: leap seconds, fractions of any length
    except ValueError as err:
        raise EventError("timestamp", "ts", str(err)) from None
    ev = _normalise_ids(ev)
    ev.__dict__["t"] = t
    return ev


def check_event_time(ev: ActionEvent, reference: float, max_ahead: float) -> None:
    """Refuse an event dated more than ``max_ahead`` seconds after ``reference`` (code ``timestamp``).

    ``reference`` is a time the producer cannot choose: the stream shell passes
    the broker's append time of the record. An agent's clock may run a little
    ahead (``max_ahead`` allows for it); an event from the far future would
    otherwise move the agent's windows and its breaker's probation ahead to that
    date. Events from the past are not refused here: a backlog is normal.

    >>> ev = decode_event({"event_id": "e1", "ts": "2099-01-01T00:00:00Z", "agent_id": "a", "operator_id": "o",
    ...                    "tool": "t", "action": "read", "resource": "r", "sensitivity": "public"})
    >>> check_event_time(ev, reference=1772442000.0, max_ahead=300.0)
    Traceback (most recent call last):
    ...
    detector.events.EventError: ts: '2099-01-01T00:00:00Z' is 2298466800 s ahead of the broker's time for this record (at most 300 s allowed)
    """
    ahead = ev.t - reference
    if ahead > max_ahead:
        raise EventError("timestamp", "ts", f"{ev.ts!r} is {ahead:.0f} s ahead of the broker's time for this record "
                                            f"(at most {max_ahead:.0f} s allowed)")
