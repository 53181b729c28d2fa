"""decode_event's fast path (detector/events.py) against decode_reference, the step-by-step decoder.

Whatever the bytes, both must answer alike: the same event with the same ``t`` bit for bit, or an EventError with
the same code, field and text; with the compiled shortcuts (detector/_decode.c) and without them. Messages are
built like the fleet's (compact JSON, printable ASCII) and then changed byte by byte toward everything the fast
path leaves to the reference: escapes, DEL, non-ASCII, other brackets and deep nesting, bad timestamps, other
schema versions.
"""
from __future__ import annotations

import json
from contextlib import contextmanager

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from detector import events, timestamps
from detector.events import MAX_DEPTH, EventError, decode_event, decode_reference


@contextmanager
def python_only():
    """decode_event without the compiled shortcuts, as when detector._decode is not built."""
    saved = events._plain, timestamps._instant, events._decode_plain
    events._plain = timestamps._instant = events._decode_plain = None
    try:
        yield
    finally:
        events._plain, timestamps._instant, events._decode_plain = saved


def outcome(decode, raw):
    try:
        ev = decode(raw)
    except EventError as err:
        return "error", err.code, err.field, str(err)
    return "event", type(ev), ev.to_dict(), ev.t.hex(), sorted(ev.__dict__)


def assert_decodes_like_the_reference(raw) -> None:
    want = outcome(decode_reference, raw)
    assert outcome(decode_event, raw) == want, raw
    with python_only():
        assert outcome(decode_event, raw) == want, raw
    if timestamps.compiled is not None and type(raw) is bytes and timestamps.compiled.plain(raw):
        assert raw[:1] == b"{" and raw.count(b"{") == 1 and raw.count(b"[") <= 1 and raw.isascii()
        assert 92 not in raw and 127 not in raw


def line(**fields) -> bytes:
    ev = {"schema_version": 1, "event_id": "ev-tsk-e7750f3111aef269.0", "ts": "2026-03-02T05:31:28.351+05:30",
          "agent_id": "support-agent-002", "operator_id": "team-data-office", "task_id": "tsk-e7750f3111aef269",
          "instruction_hash": "sha256:3454e05af0d5ae40", "tool": "mail.read_inbound", "action": "read",
          "resource": "email:david.moreau818@hooli.example", "sensitivity": "confidential", "records": 1,
          "bytes": 10531, "destinations": []}
    ev.update(fields)
    return json.dumps({k: v for k, v in ev.items() if v is not ...}, separators=(",", ":")).encode()


_ascii = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=1, max_size=30)
_any_text = st.text(min_size=0, max_size=12)
_ts = st.sampled_from(["2026-03-02T05:31:28.351+05:30", "2026-03-02T09:00:00Z", "2026-03-02t09:00:00.5z",
                       "2026-03-02 23:59:59.999999-08:00", "2016-12-31T23:59:60Z", "2026-03-02T09:00:00",
                       "2026-02-30T09:00:00Z", "2026-03-02T09:00:00.1234567Z", "yesterday", ""])


@st.composite
def fleet_lines(draw) -> bytes:
    """A message as the fleet sends it, some fields drawn from wider sets (ids of any text, other times,
    missing or extra fields, other versions and counts)."""
    fields = {
        "event_id": draw(_ascii | _any_text), "agent_id": draw(_ascii | _any_text),
        "operator_id": draw(_ascii), "ts": draw(_ts),
        "task_id": draw(st.none() | _ascii | _any_text), "requested_by": draw(st.just(...) | _any_text),
        "action": draw(st.sampled_from(["read", "send", "exec", "fly"])),
        "schema_version": draw(st.sampled_from([1, 1, 1, 2, ...])),
        "records": draw(st.integers(-1, 2**63)),
        "destinations": draw(st.lists(_ascii, max_size=3)),
    }
    if draw(st.booleans()):
        fields["x_extra"] = draw(st.recursive(st.none() | st.integers() | _ascii,
                                              lambda kids: st.lists(kids, max_size=2)
                                              | st.dictionaries(_ascii, kids, max_size=2), max_leaves=6))
    for name in draw(st.lists(st.sampled_from(["event_id", "ts", "tool", "destinations"]), max_size=1)):
        fields[name] = ...
    raw = line(**fields)
    if draw(st.booleans()):  # non-ASCII written as it is rather than escaped
        raw = json.dumps(json.loads(raw), ensure_ascii=False, separators=(",", ":")).encode()
    return raw


@settings(max_examples=400, deadline=None)
@given(fleet_lines())
@example(line())
@example(line(agent_id="a\u200bb"))          # an escape: the reference's identifier checks
@example(line(agent_id="fin-DEL-ance").replace(b"-DEL-", b"\x7f"))  # a raw DEL: valid in JSON, not printable
@example(line(agent_id="\uff46\uff49\uff4e"))  # folded by NFKC
@example(line(schema_version=2, ts="yesterday"))
@example(line(destinations=["a", "b"], x=[[1], {"y": [2]}]))
def test_any_fleet_message_decodes_as_the_reference_decodes_it(raw):
    assert_decodes_like_the_reference(raw)


_byte_edits = st.lists(st.tuples(st.integers(0, 500), st.integers(0, 2),
                                 st.sampled_from([b"{", b"[", b"]", b"}", b'"', b"\\", b"\x7f", b"\xc3\xa9", b"\xff",
                                                  b"\x00", b"\t", b" ", b"1", b"Z", b":", b",", b"", b"\\u200b",
                                                  b'{"a":' * 70])),
                       min_size=1, max_size=4)


@settings(max_examples=400, deadline=None)
@given(fleet_lines(), _byte_edits)
def test_a_fleet_message_changed_byte_by_byte_decodes_as_the_reference_decodes_it(raw, edits):
    for at, cut, new in edits:
        at = min(at, len(raw))
        raw = raw[:at] + new + raw[at + cut:]
        assert_decodes_like_the_reference(raw)


@pytest.mark.parametrize("depth", [MAX_DEPTH - 1, MAX_DEPTH, MAX_DEPTH + 1, 1000, 20_000])
@pytest.mark.parametrize("kind", ["[", '{"a":'])
def test_nesting_in_an_unknown_field_around_the_bound_decodes_as_the_reference_decodes_it(depth, kind):
    close = "]" if kind == "[" else "}"
    raw = line()[:-1] + f',"x":{kind * depth}1{close * depth}}}'.encode()
    assert_decodes_like_the_reference(raw)
    if depth > MAX_DEPTH - 1:  # the event's own brace counts too
        assert outcome(decode_event, raw)[1] == "depth"


@pytest.mark.parametrize("raw", [line(), line(ts="2026-03-02T09:00:00.123Z", destinations=["email:x@y"]),
                                 line(x={"y": [1, 2]}, z=[[3]]),  # more than one bracket: counted
                                 line(agent_id="caf\u00e9-agent")])  # non-ASCII: normalised on the fast path
@pytest.mark.parametrize("compiled", [True, False])
def test_a_usual_message_is_decoded_without_the_reference(monkeypatch, raw, compiled):
    want = outcome(decode_reference, raw)

    def no_reference(raw):
        raise AssertionError("the reference was asked")

    monkeypatch.setattr(events, "decode_reference", no_reference)
    if not compiled:
        monkeypatch.setattr(events, "_plain", None)
        monkeypatch.setattr(timestamps, "_instant", None)
    assert outcome(decode_event, raw) == want


def test_the_compiled_search_says_yes_to_the_usual_message_only():
    if timestamps.compiled is None:
        return  # the pure-Python install
    plain = timestamps.compiled.plain
    assert plain(line()) and plain(line(destinations=["a", "b"]))
    for raw in (line(x=[1]), line(x={}), b" " + line(), line(agent_id="caf\u00e9"), line()[:-1] + b',"x":"\x7f"}',
                line(agent_id="a\\b"), json.dumps(json.loads(line(agent_id="caf\u00e9")), ensure_ascii=False).encode(),
                b""):
        assert not plain(raw), raw


_ascii_body = st.text(st.characters(min_codepoint=32, max_codepoint=126, blacklist_characters="{[\\"), max_size=80)


@settings(max_examples=500, deadline=None)
@given(_ascii_body, st.integers(0, 90), st.sampled_from([b"", b"\x80", b"\xff", b"\xc3\xa9", b"\x7f", b"\\", b"[", b"[[",
                                                        b"{"]))
def test_the_compiled_search_is_its_definition(body, at, insert):
    """plain(raw) says yes exactly when raw starts with its only "{", has at most one "[", is ASCII and has no
    backslash or DEL; a byte with its high bit set anywhere (the search reads eight bytes at a time) says no."""
    if timestamps.compiled is None:
        return  # the pure-Python install
    b = body.encode()
    raw = b"{" + b[:at] + insert + b[at:]
    want = (raw[:1] == b"{" and raw.count(b"{") == 1 and raw.count(b"[") <= 1 and raw.isascii()
            and 92 not in raw and 127 not in raw)
    assert timestamps.compiled.plain(raw) is want


@pytest.mark.parametrize("raw", [bytearray(line()), memoryview(line()), line().decode(), json.loads(line())])
def test_other_forms_than_bytes_take_the_reference_and_decode_alike(raw):
    assert outcome(decode_event, raw) == outcome(decode_reference, line())


def lines_outcome(lines):
    """decode_lines' answer: the events (as outcome gives them), or the error of the first invalid line."""
    try:
        evs = events.decode_lines(lines)
    except EventError as err:
        return "error", err.code, err.field, str(err)
    return "events", [outcome(lambda _: ev, None) for ev in evs]


def loop_outcome(lines):
    """What a Python loop of decode_event over the lines answers."""
    try:
        evs = [decode_event(x) for x in lines]
    except EventError as err:
        return "error", err.code, err.field, str(err)
    return "events", [outcome(lambda _: ev, None) for ev in evs]


@settings(max_examples=300, deadline=None)
@given(st.lists(fleet_lines() | st.sampled_from([b"", b"\n", b"  \n", b"{", b"[]", line() + b"\n"]), max_size=12))
def test_decode_lines_answers_as_a_loop_of_decode_event(lines):
    # the usual lines in one compiled call (decode_many), the others by decode_event: the same events, or the same
    # error for the first invalid line
    want = loop_outcome(lines)
    assert lines_outcome(lines) == want
    saved = events.decode_many
    events.decode_many = None
    try:
        assert lines_outcome(lines) == want
    finally:
        events.decode_many = saved


@pytest.mark.skipif(events.decode_many is None, reason="the compiled decoder is not built")
def test_decode_many_stops_at_the_first_line_it_leaves_to_decode_event():
    usual, unusual = line(), line(agent_id="a\u200bb")
    out: list = []
    assert events.decode_many([usual, usual, unusual, usual], 0, 4, out) == 2 and len(out) == 2
    assert events.decode_many([usual, usual, unusual, usual], 3, 4, out) == 4 and len(out) == 3
    assert events.decode_many([usual] * 5, 1, 3, out) == 3 and len(out) == 5  # up to end only
    assert [outcome(lambda _: ev, None) for ev in out] == [outcome(decode_event, usual)] * 5
    with pytest.raises(TypeError):
        events.decode_many((usual,), 0, 1, out)


@pytest.mark.skipif(events._decode_plain is None, reason="the compiled decoder is not built")
def test_the_texts_an_agent_repeats_are_one_str_and_the_rest_its_own():
    # who acts, for whom, with what tool, for which colleague, under which instructions: the str an earlier event
    # had (found by identity in the engine's dicts, its hash kept); the event's id, time, resource and task: new
    a = decode_event(line(agent_id="agent-shared-a", tool="mail.send", requested_by="dana"))
    b = decode_event(line(agent_id="agent-shared-a", tool="mail.send", requested_by="dana", event_id="ev-2"))
    for name in ("agent_id", "operator_id", "tool", "requested_by", "instruction_hash"):
        assert getattr(a, name) is getattr(b, name), name
    for name in ("event_id", "ts", "resource", "task_id"):
        assert getattr(a, name) is not getattr(b, name), name
    c = decode_event(line(agent_id="agent-shared-c", tool="mail.send"))
    assert c.agent_id == "agent-shared-c" and type(c.agent_id) is str and c.tool is a.tool
    assert outcome(lambda _: c, None) == outcome(decode_reference, line(agent_id="agent-shared-c", tool="mail.send"))
