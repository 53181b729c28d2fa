"""The action event decoder (detector/events.py) against the outside contract, section 1.

Every rejection reason has its own test and its bounded ``code``; the valid-event
strategy below is written from the contract table, not from the decoder.
"""
from __future__ import annotations

import copy
import json
import unicodedata
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from detector.events import (DEFAULT_IGNORABLE, ERROR_CODES, MAX_DEPTH, MAX_EVENT_BYTES, ActionEvent, EventError,
                             check_event_time, decode_event, json_depth, lookalike_of)

REQUIRED = ("event_id", "ts", "agent_id", "operator_id", "tool", "action", "resource", "sensitivity")
OPTIONAL_STRINGS = ("requested_by", "task_id", "instruction_hash", "approval_id", "parent_event_id")
ACTIONS = ("read", "write", "delete", "send", "exec")
SENSITIVITIES = ("public", "internal", "confidential", "restricted")


def valid(**overrides) -> dict:
    ev = {
        "event_id": "ev-1", "ts": "2026-03-02T09:00:00Z", "agent_id": "hr-agent-1", "operator_id": "team-hr",
        "tool": "hr_db.query", "action": "read", "resource": "hr://personnel/records", "sensitivity": "restricted",
    }
    ev.update(overrides)
    return ev


def rejection(raw) -> EventError:
    with pytest.raises(EventError) as info:
        decode_event(raw)
    assert info.value.code in ERROR_CODES
    return info.value


def as_bytes(d: dict) -> bytes:
    return json.dumps(d).encode()


# --------------------------------------------------------------------------- whole-message errors

@pytest.mark.parametrize("raw", [b"{", b"not json", b"", b'{"event_id": }', "{'single': 'quotes'}"])
def test_a_message_that_is_not_json_is_rejected_as_not_json(raw):
    err = rejection(raw)
    assert err.code == "not_json"
    assert err.field == ""
    assert "JSON" in str(err)


@pytest.mark.parametrize("raw", [b"[1, 2]", b'"an event"', b"42", b"null", b"true"])
def test_json_that_is_not_an_object_is_rejected_as_not_object(raw):
    err = rejection(raw)
    assert err.code == "not_object"
    assert "object" in str(err)


@pytest.mark.parametrize("raw", [b"\xff\xfe", b'{"event_id": "\xff"}', "\ud800"])
def test_a_message_that_is_not_utf8_is_rejected_as_encoding(raw):
    err = rejection(raw)
    assert err.code == "encoding"
    assert "UTF-8" in str(err)


# --------------------------------------------------------------------------- field errors

@pytest.mark.parametrize("field", REQUIRED)
@pytest.mark.parametrize("form", ["dict", "bytes"])
def test_each_missing_required_field_is_named_with_code_missing(field, form):
    ev = valid()
    del ev[field]
    err = rejection(ev if form == "dict" else as_bytes(ev))
    assert (err.code, err.field) == ("missing", field)
    assert str(err) == f"{field}: required field is missing"


@pytest.mark.parametrize("field,value", [
    ("event_id", 5), ("agent_id", None), ("operator_id", ["o"]), ("tool", {"n": 1}), ("resource", 1.5),
    ("records", "3"), ("records", True), ("records", 1.5), ("bytes", None), ("destinations", "email:x@y"),
    ("destinations", [1]), ("schema_version", "1"), ("task_id", 7), ("approval_id", False), ("action", 3),
])
def test_a_wrong_typed_field_is_rejected_as_type_and_named(field, value):
    err = rejection(as_bytes(valid(**{field: value})))
    assert (err.code, err.field) == ("type", field)
    assert str(err).startswith(f"{field}: expected")


@pytest.mark.parametrize("field,value,allowed", [
    ("action", "fly", ACTIONS), ("action", "READ", ACTIONS), ("sensitivity", "secret", SENSITIVITIES),
    ("sensitivity", "", SENSITIVITIES),
])
def test_a_value_outside_an_enum_is_rejected_as_enum_listing_the_allowed_values(field, value, allowed):
    err = rejection(as_bytes(valid(**{field: value})))
    assert (err.code, err.field) == ("enum", field)
    for name in allowed:
        assert name in str(err)


@pytest.mark.parametrize("field", ["records", "bytes"])
def test_a_negative_count_is_rejected_as_range(field):
    err = rejection(valid(**{field: -1}))
    assert (err.code, err.field) == ("range", field)
    assert ">= 0" in str(err)


def test_another_schema_version_is_rejected_as_range():
    err = rejection(valid(schema_version=2))
    assert (err.code, err.field) == ("range", "schema_version")
    assert "2" in str(err)


@pytest.mark.parametrize("field,limit", [
    ("event_id", 128), ("agent_id", 128), ("operator_id", 256), ("tool", 256), ("resource", 1024),
])
def test_an_over_size_string_is_rejected_as_length_and_the_limit_itself_is_accepted(field, limit):
    assert len(getattr(decode_event(valid(**{field: "x" * limit})), field)) == limit
    err = rejection(as_bytes(valid(**{field: "x" * (limit + 1)})))
    assert (err.code, err.field) == ("length", field)
    assert str(limit) in str(err)


@pytest.mark.parametrize("field", ["event_id", "agent_id", "operator_id", "tool", "resource"])
def test_an_empty_required_string_is_rejected_as_length(field):
    err = rejection(valid(**{field: ""}))
    assert (err.code, err.field) == ("length", field)


def test_more_than_ten_thousand_destinations_are_rejected_as_length():
    assert len(decode_event(valid(destinations=["slack:#x"] * 10_000)).destinations) == 10_000
    err = rejection(as_bytes(valid(destinations=["slack:#x"] * 10_001)))
    assert (err.code, err.field) == ("length", "destinations")


@pytest.mark.parametrize("ts", ["2026-03-02T09:00:00", "2026-03-02T09:00:00.250", "2026-03-02 09:00:00"])
def test_a_timestamp_without_offset_is_rejected_saying_so(ts):
    err = rejection(valid(ts=ts))
    assert (err.code, err.field) == ("timestamp", "ts")
    assert "offset" in str(err)


@pytest.mark.parametrize("ts", ["yesterday", "2026-03-02", "02/03/2026 09:00 +01:00", "2026-03-02T9:00:00Z",
                                "1772442000", "2026-03-02T09:00:00+0100"])
def test_a_timestamp_that_is_not_rfc3339_is_rejected(ts):
    err = rejection(valid(ts=ts))
    assert (err.code, err.field) == ("timestamp", "ts")
    assert "RFC 3339" in str(err)


@pytest.mark.parametrize("ts", ["2026-02-30T09:00:00Z", "2026-13-01T09:00:00Z", "2026-03-02T25:00:00Z",
                                "2026-03-02T09:00:00+99:00", "0000-01-01T00:00:00Z"])
def test_a_timestamp_with_an_impossible_date_or_time_is_rejected(ts):
    err = rejection(valid(ts=ts))
    assert (err.code, err.field) == ("timestamp", "ts")
    assert "valid date" in str(err)


def test_every_error_code_is_one_of_the_bounded_metric_labels():
    assert set(ERROR_CODES) == {"not_json", "not_object", "missing", "type", "enum", "range", "length",
                                "timestamp", "encoding", "depth", "character"}
    from streams.worker.metrics import DLQ_CODES

    assert set(ERROR_CODES) <= set(DLQ_CODES)  # every code has its own series in flowbreaker_dlq_events_total


# --------------------------------------------------------------------------- what a valid event gives

def test_optional_fields_take_the_contract_defaults():
    ev = decode_event(valid())
    assert (ev.schema_version, ev.records, ev.bytes, ev.destinations) == (1, 0, 0, [])
    for name in OPTIONAL_STRINGS:
        assert getattr(ev, name) is None


def test_unknown_extra_fields_are_tolerated_and_ignored():
    plain = decode_event(valid())
    extra = decode_event(valid(x_trace={"span": [1, 2]}, model="gpt", t="not a float", records_estimate=-5))
    assert extra == plain
    assert "x_trace" not in extra.to_dict()


def test_an_unknown_field_named_like_the_internal_epoch_is_tolerated_too():
    assert decode_event(valid(**{"~flowbreaker_epoch": "x"})) == decode_event(valid())


@pytest.mark.parametrize("ts", ["2026-03-02T09:00:00Z", "2026-03-02T09:00:00+00:00", "2026-03-02T10:30:00+01:30",
                                "2026-03-01T23:00:00-10:00", "2026-03-02t09:00:00z", "2026-03-02T14:45:00.000+05:45"])
def test_any_offset_of_the_same_instant_gives_the_same_t(ts):
    assert decode_event(valid(ts=ts)).t == 1772442000.0


def test_the_timestamp_text_is_kept_as_sent():
    assert decode_event(valid(ts="2026-03-02T10:30:00+01:30")).ts == "2026-03-02T10:30:00+01:30"


def test_fractional_seconds_count_in_t():
    assert decode_event(valid(ts="2026-03-02T09:00:00.250Z")).t == pytest.approx(1772442000.25, abs=1e-6)


def test_the_input_dict_is_not_mutated():
    raw = valid(destinations=["email:a@b.example"], records=3, extra={"k": [1]})
    before = copy.deepcopy(raw)
    decode_event(raw)
    assert raw == before


def test_bytes_str_and_dict_forms_decode_to_the_same_event():
    d = valid(records=4, destinations=["slack:#x"], task_id="T1")
    assert decode_event(d) == decode_event(as_bytes(d)) == decode_event(json.dumps(d)) \
        == decode_event(bytearray(as_bytes(d))) == decode_event(memoryview(as_bytes(d)))


def test_an_event_is_immutable():
    ev = decode_event(valid())
    with pytest.raises(AttributeError):
        ev.records = 5  # type: ignore[misc]


# --------------------------------------------------------------------------- properties

@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_raise_anything_but_event_error(raw):
    try:
        decode_event(raw)
    except EventError as err:
        assert err.code in ERROR_CODES


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(REQUIRED + ("records", "bytes", "destinations", "schema_version") +
                                       OPTIONAL_STRINGS),
                       st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
                       | st.lists(st.text(max_size=5), max_size=3),
                       max_size=14))
def test_arbitrary_json_objects_never_raise_anything_but_event_error(obj):
    for raw in (obj, json.dumps(obj).encode()):
        try:
            decode_event(raw)
        except EventError as err:
            assert err.code in ERROR_CODES


_text_chars = st.characters(blacklist_categories=("Cs",))
_id_chars = st.characters(blacklist_categories=("Cs", "Cc", "Cf")).filter(
    lambda c: not any(lo <= ord(c) <= hi for lo, hi in DEFAULT_IGNORABLE))


def _text(lo: int, hi: int) -> st.SearchStrategy[str]:
    return st.text(_text_chars, min_size=lo, max_size=hi)


def _id(lo: int, hi: int) -> st.SearchStrategy[str]:
    """Identifiers as the decoder keeps them: no control or format characters, already NFC."""
    return st.text(_id_chars, min_size=lo, max_size=hi).map(lambda t: unicodedata.normalize("NFC", t)) \
        .filter(lambda t: lo <= len(t) <= hi)


def _agent_id() -> st.SearchStrategy[str]:
    """Agent ids as the decoder keeps them: NFKC, nothing invisible, never a look-alike of an ASCII id."""
    return st.text(_id_chars, min_size=1, max_size=128).map(lambda t: unicodedata.normalize("NFKC", t)) \
        .filter(lambda t: 1 <= len(t) <= 128 and all(map(_ok, t)) and (t.isascii() or lookalike_of(t) is None))


def _ok(c: str) -> bool:
    return unicodedata.category(c) not in ("Cs", "Cc", "Cf") and not any(lo <= ord(c) <= hi
                                                                       for lo, hi in DEFAULT_IGNORABLE)


@st.composite
def rfc3339(draw) -> tuple[str, float]:
    """An RFC 3339 timestamp with an offset, and its instant in epoch seconds (computed here)."""
    local = draw(st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30)))
    local = local.replace(microsecond=0)
    offset = draw(st.integers(-(23 * 60 + 59), 23 * 60 + 59))
    micros = draw(st.integers(0, 999_999))
    digits = draw(st.integers(0, 6))
    frac = ""
    if digits:
        frac = "." + f"{micros:06d}"[:digits]
        micros = int(f"{micros:06d}"[:digits].ljust(6, "0"))
    else:
        micros = 0
    if offset == 0 and draw(st.booleans()):
        off = draw(st.sampled_from(["Z", "z"]))
    else:
        sign = "+" if offset >= 0 else "-"
        off = f"{sign}{abs(offset) // 60:02d}:{abs(offset) % 60:02d}"
    text = local.strftime("%Y-%m-%dT%H:%M:%S").rjust(19, "0") + frac + off
    utc = local - timedelta(minutes=offset)
    instant = (utc - datetime(1970, 1, 1)) / timedelta(seconds=1) + micros / 1e6
    return text, instant


@st.composite
def contract_events(draw) -> tuple[dict, float]:
    """A valid action event built from the contract table (section 1), with its instant."""
    ts, instant = draw(rfc3339())
    ev = {
        "event_id": draw(_id(1, 128)), "ts": ts, "agent_id": draw(_agent_id()),
        "operator_id": draw(_id(1, 256)), "tool": draw(_text(1, 256)), "action": draw(st.sampled_from(ACTIONS)),
        "resource": draw(_text(1, 1024)), "sensitivity": draw(st.sampled_from(SENSITIVITIES)),
    }
    if draw(st.booleans()):
        ev["schema_version"] = 1
    for name in OPTIONAL_STRINGS:
        if draw(st.booleans()):
            ev[name] = draw(_id(0, 64))
    for name in ("records", "bytes"):
        if draw(st.booleans()):
            ev[name] = draw(st.integers(0, 2**53))
    if draw(st.booleans()):
        scheme = st.from_regex(r"[a-z][a-z0-9+.-]{0,7}", fullmatch=True)
        ev["destinations"] = draw(st.lists(st.builds(lambda s, a: f"{s}:{a}", scheme, _text(1, 40)), max_size=12))
    extras = draw(st.dictionaries(st.from_regex(r"x_[a-z]{1,8}", fullmatch=True),
                                  st.integers() | _text(0, 8) | st.none(), max_size=2))
    ev.update(extras)
    return ev, instant


def _with_defaults(ev: dict) -> dict:
    out = {"schema_version": 1, "records": 0, "bytes": 0, "destinations": []}
    out.update({n: None for n in OPTIONAL_STRINGS})
    out.update({k: v for k, v in ev.items() if not k.startswith("x_")})
    return out


@settings(max_examples=300, deadline=None)
@given(contract_events())
def test_any_contract_valid_event_decodes_and_round_trips_through_to_dict(case):
    raw, instant = case
    ev = decode_event(raw)
    assert ev.to_dict() == _with_defaults(raw)
    assert ev.t == pytest.approx(instant, abs=1e-3)
    assert decode_event(ev.to_dict()) == ev
    assert decode_event(json.dumps(raw, ensure_ascii=False).encode()) == ev
    assert decode_event(json.dumps(ev.to_dict())) == ev


@settings(max_examples=200, deadline=None)
@given(st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2200, 1, 1)),
       st.integers(-(23 * 60 + 59), 23 * 60 + 59), st.integers(-(23 * 60 + 59), 23 * 60 + 59))
def test_the_same_instant_at_any_two_offsets_gives_the_same_t(utc, off_a, off_b):
    def at(offset: int) -> str:
        return utc.replace(tzinfo=timezone.utc).astimezone(timezone(timedelta(minutes=offset))).isoformat()

    assert decode_event(valid(ts=at(off_a))).t == decode_event(valid(ts=at(off_b))).t


def test_action_event_has_exactly_the_contract_fields_plus_the_derived_instant():
    contract = set(REQUIRED) | set(OPTIONAL_STRINGS) | {"schema_version", "records", "bytes", "destinations"}
    assert set(ActionEvent.__struct_fields__) == contract
    assert isinstance(decode_event(_minimal_event_bytes()).t, float)


def _minimal_event_bytes() -> bytes:
    return json.dumps({"event_id": "e", "ts": "2026-03-02T09:00:00Z", "agent_id": "a", "operator_id": "o",
                       "tool": "t", "action": "read", "resource": "r", "sensitivity": "public"}).encode()



# --------------------------------------------------------------------------- hostile input (issue 10, items 2, 7, 12)

@pytest.mark.parametrize("raw", [
    b'{"a":' * 1000,                                   # the example, unterminated
    b'{"a":' * 100_000,
    b"[" * 100_000,
    b'{"event_id":' + b"[" * 5000 + b"]" * 5000 + b"}",
    json.dumps({**valid(), "x": json.loads("[" * 200 + "]" * 200)}).encode(),   # valid JSON, deep extra field
])
def test_deep_nesting_is_the_decoders_own_rejection_never_a_recursion_error(raw):
    err = rejection(raw)
    assert (err.code, err.field) == ("depth", "")
    assert f"deeper than {MAX_DEPTH}" in str(err)


def test_a_deeply_nested_dict_is_ignored_as_an_extra_field_or_rejected_in_a_known_one():
    deep: list = []
    inner = deep
    for _ in range(5000):
        inner.append([])
        inner = inner[0]
    assert decode_event({**valid(), "x": deep}) == decode_event(valid())   # unknown fields are not walked
    assert rejection({**valid(), "destinations": deep}).code == "type"


def test_nesting_up_to_the_limit_in_an_unknown_field_is_tolerated():
    deep = json.loads("[" * (MAX_DEPTH - 1) + "]" * (MAX_DEPTH - 1))
    assert decode_event(json.dumps({**valid(), "x": deep}).encode()) == decode_event(valid())


def test_brackets_inside_strings_do_not_count_as_nesting():
    raw = valid(resource="s3://bucket/" + "[{" * 500, task_id="\\\"[[[" * 40)
    assert decode_event(as_bytes(raw)).resource.endswith("[{")


def _depth_by_hand(raw: bytes) -> int:
    depth = deepest = 0
    in_string = escaped = False
    for c in raw:
        if in_string:
            if escaped:
                escaped = False
            elif c == 0x5C:
                escaped = True
            elif c == 0x22:
                in_string = False
        elif c == 0x22:
            in_string = True
        elif c in b"[{":
            depth += 1
            deepest = max(deepest, depth)
        elif c in b"]}":
            depth -= 1
    return deepest


@settings(max_examples=500, deadline=None)
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(st.sampled_from('[]{}"\\ab'), max_size=6),
                    lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=3), kids, max_size=3),
                    max_leaves=40))
def test_json_depth_agrees_with_a_character_by_character_count(obj):
    raw = json.dumps(obj).encode()
    assert json_depth(raw) == _depth_by_hand(raw)


def test_a_message_over_the_size_limit_is_rejected_whole():
    raw = as_bytes(valid(x_pad="x" * MAX_EVENT_BYTES))
    err = rejection(raw)
    assert (err.code, err.field) == ("length", "")
    assert str(MAX_EVENT_BYTES) in str(err)


_json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=8)
_nested_json = st.recursive(_json_scalars, lambda kids: st.lists(kids, max_size=3)
                            | st.dictionaries(st.text(max_size=4), kids, max_size=3), max_leaves=30)


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from([b"{", b"[", b'{"a":', b"]", b"}", b'"', b"\\", b",", b"1", b"\xff", b"\x00"]),
                max_size=400).map(b"".join),
       st.integers(0, 3000))
def test_bracket_soup_of_any_depth_never_raises_anything_but_event_error(soup, repeat):
    for raw in (soup, b"[" * repeat + soup, b'{"a":' * repeat + soup, as_bytes(valid())[:-1] + b',"x":' + soup):
        try:
            decode_event(raw)
        except EventError as err:
            assert err.code in ERROR_CODES


@settings(max_examples=300, deadline=None)
@given(_nested_json)
def test_any_json_in_an_unknown_field_decodes_or_is_a_bounded_rejection(extra):
    raw = as_bytes(valid(x_extra=extra))
    try:
        assert decode_event(raw) == decode_event(valid())
    except EventError as err:
        assert err.code == "depth"


@pytest.mark.parametrize("field", ["agent_id", "event_id", "operator_id", "task_id", "requested_by",
                                   "instruction_hash", "approval_id", "parent_event_id"])
@pytest.mark.parametrize("char, kind", [("\u200b", "format"), ("\u202e", "format"), ("\u2066", "format"),
                                        ("\ufeff", "format"), ("\u200d", "format"), ("\x00", "control"),
                                        ("\x1b", "control"), ("\n", "control"), ("\x85", "control")])
def test_an_identifier_with_a_control_or_format_character_is_refused_with_its_name(field, char, kind):
    err = rejection(as_bytes(valid(**{field: f"hr{char}agent"})))
    assert (err.code, err.field) == ("character", field)
    assert f"U+{ord(char):04X}" in str(err) and f"a {kind} character" in str(err)


def test_identifiers_are_normalised_to_nfc_so_one_name_is_one_agent():
    composed, decomposed = "caf\u00e9-bot", "cafe\u0301-bot"
    a = decode_event(as_bytes(valid(agent_id=composed, event_id="e-\u00e9")))
    b = decode_event(json.dumps(valid(agent_id=decomposed, event_id="e-e\u0301"), ensure_ascii=False).encode())
    assert a.agent_id == b.agent_id == composed and a.event_id == b.event_id == "e-\u00e9"
    assert b.t == a.t


def test_other_text_fields_are_kept_as_sent():
    ev = decode_event(as_bytes(valid(resource="doc://cafe\u0301", tool="t\u200bool")))
    assert (ev.resource, ev.tool) == ("doc://cafe\u0301", "t\u200bool")


def test_printable_non_ascii_identifiers_are_accepted():
    ev = decode_event(as_bytes(valid(agent_id="агент-7 ☃", operator_id="équipe RH")))
    assert (ev.agent_id, ev.operator_id) == ("агент-7 ☃", "équipe RH")


def test_an_event_dated_beyond_the_allowed_skew_ahead_of_the_reference_is_refused():
    ev = decode_event(valid(ts="2026-03-02T09:10:00Z"))
    reference = datetime(2026, 3, 2, 9, 0, tzinfo=timezone.utc).timestamp()
    check_event_time(ev, reference, max_ahead=600.0)              # 10 min ahead, 10 allowed: fine
    with pytest.raises(EventError) as info:
        check_event_time(ev, reference, max_ahead=300.0)
    assert (info.value.code, info.value.field) == ("timestamp", "ts")
    assert "600 s ahead" in str(info.value) and "300 s" in str(info.value)


def test_an_event_from_the_past_is_not_refused_by_the_time_bound():
    ev = decode_event(valid(ts="2001-01-01T00:00:00Z"))
    check_event_time(ev, datetime(2026, 3, 2, tzinfo=timezone.utc).timestamp(), max_ahead=0.0)


# ---------------------------------------------------------------------- look-alike agent ids (issue 21, item 4)
@pytest.mark.parametrize("lookalike", ["ｆｉｎ-ａｇｅｎｔ-002", "fin-agent-００２", "ﬁn-agent-002"])
def test_a_full_width_or_compatibility_agent_id_folds_to_the_agent_it_looks_like(lookalike):
    ev = decode_event(as_bytes(valid(agent_id=lookalike)))
    assert ev.agent_id == "fin-agent-002"


@pytest.mark.parametrize("field", ["agent_id", "event_id", "operator_id", "task_id", "requested_by",
                                   "instruction_hash", "approval_id", "parent_event_id"])
@pytest.mark.parametrize("char", ["\ufe0f", "\u3164", "\u115f", "\u1160", "\uffa0", "\u034f", "\u180b",
                                  "\U000e0100", "\u17b4"])
def test_an_identifier_with_a_default_ignorable_code_point_is_refused(field, char):
    # invisible though not control or format characters: variation selectors, Hangul fillers, ...
    err = rejection(as_bytes(valid(**{field: f"hr-agent{char}"})))
    assert (err.code, err.field) == ("character", field)
    assert f"U+{ord(char):04X}" in str(err) and "invisible" in str(err)


@pytest.mark.parametrize("lookalike, looks_like", [
    ("fin-agent-\u0455ales", "fin-agent-sales"),      # Cyrillic dze
    ("\u0455ales-bot", "sales-bot"),
    ("hr-\u0430gent-1", "hr-agent-1"),               # Cyrillic a
    ("hr-agent-\u03bf1", "hr-agent-o1"),             # Greek omicron
    ("\u0455\u0435\u0455", "ses"),                   # whole-script Cyrillic that reads as Latin
])
def test_an_agent_id_that_looks_like_a_latin_one_is_refused_naming_what_it_looks_like(lookalike, looks_like):
    err = rejection(as_bytes(valid(agent_id=lookalike)))
    assert (err.code, err.field) == ("character", "agent_id")
    assert repr(looks_like) in str(err)


def test_a_non_latin_agent_id_that_reads_as_nothing_latin_is_still_accepted():
    for name in ("агент-7", "エージェント", "équipe-bot", "agent-ü"):
        assert decode_event(as_bytes(valid(agent_id=name))).agent_id == name


# ---------------------------------------------------------------------- RFC 3339 corners (issue 21, item 8)
@pytest.mark.parametrize("ts, same_as", [
    ("2016-12-31T23:59:60Z", "2017-01-01T00:00:00Z"),                 # a leap second: POSIX time has none
    ("2016-12-31T23:59:60.5Z", "2017-01-01T00:00:00.5Z"),
    ("2016-12-31T15:59:60-08:00", "2017-01-01T00:00:00Z"),           # RFC 3339's own example, shifted
    ("2026-03-02T09:00:00.1234567891234Z", "2026-03-02T09:00:00.123456789Z"),  # past 9 digits: cut
    ("2026-03-02T09:00:00.000000000000000000001+01:00", "2026-03-02T08:00:00Z"),
])
def test_leap_seconds_and_long_fractions_are_valid_rfc3339(ts, same_as):
    ev = decode_event(valid(ts=ts))
    assert ev.ts == ts and ev.t == pytest.approx(decode_event(valid(ts=same_as)).t, abs=1e-6)


@pytest.mark.parametrize("ts", ["2026-03-02T09:00:60Z", "2026-03-02T09:00:61Z", "2016-12-31T23:58:60Z"])
def test_a_second_sixty_outside_the_last_minute_of_a_utc_day_is_refused(ts):
    err = rejection(valid(ts=ts))
    assert (err.code, err.field) == ("timestamp", "ts")


@pytest.mark.parametrize("ts", ["0001-01-01T00:00:60+01:00", "0001-01-01T00:00:60+00:01", "9999-12-31T23:59:60-01:00"])
@pytest.mark.parametrize("form", ["dict", "bytes"])
def test_a_second_sixty_whose_utc_day_is_outside_the_calendar_is_refused_not_an_overflow(ts, form):
    # the UTC day of these is in year 0 or 10000, where datetime overflows (it used to escape as OverflowError)
    err = rejection(valid(ts=ts) if form == "dict" else as_bytes(valid(ts=ts)))
    assert (err.code, err.field) == ("timestamp", "ts")
    assert str(err) == f"ts: {ts!r} is not a valid date and time (a leap second is 23:59:60 UTC)"
