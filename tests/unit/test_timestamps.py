"""detector/timestamps.py: rfc3339_instant's fast paths against rfc3339_reference, its reference.

Two fast paths: the compiled reading of a plain text (detector/_decode.c's ``instant``, when built), and in
Python, table look-ups for a text of a (day, zone) met before. Every other text goes to the reference.
Whatever the text, each must answer as the reference does: the same float bit for bit, or a ``ValueError``
with the same message. Each text is read twice in Python, so the second reading meets a day the first one
learnt.
"""
from __future__ import annotations

from contextlib import contextmanager
from datetime import datetime

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from detector import native, timestamps
from detector.timestamps import rfc3339_instant, rfc3339_reference


@contextmanager
def python_only():
    """rfc3339_instant without the compiled reading, as when detector._decode is not built."""
    saved = timestamps._instant
    timestamps._instant = None
    try:
        yield
    finally:
        timestamps._instant = saved


def outcome(read, text: str) -> tuple[str, str]:
    try:
        return "ok", read(text).hex()
    except ValueError as err:
        return "error", str(err)


def assert_reads_like_the_reference(text: str) -> None:
    want = outcome(rfc3339_reference, text)
    assert outcome(rfc3339_instant, text) == want, text
    with python_only():
        assert outcome(rfc3339_instant, text) == want, text
        assert outcome(rfc3339_instant, text) == want, text  # now with its day and zone learnt
    if timestamps.compiled is not None:
        t = timestamps.compiled.instant(text)
        assert t is None or ("ok", t.hex()) == want, text


def test_the_install_builds_the_compiled_reading_beside_the_kernel():
    # scripts/install.sh (pip install -e .) compiles detector/_decode.c with detector/_native.c; both are off
    # with FLOWBREAKER_PURE_PYTHON=1, and both are missing only where nothing compiles
    assert (timestamps.compiled is None) == (native.kernels is None)


@settings(max_examples=300, deadline=None)
@given(st.datetimes(min_value=datetime(1686, 1, 1), max_value=datetime(2254, 12, 31)),
       st.sampled_from(["Z", "z", "+00:00", "-00:00", "+05:30", "-08:00", "+23:59", "-23:59"]),
       st.integers(0, 999_999), st.integers(0, 6), st.sampled_from("Tt "))
@example(datetime(2000, 2, 29, 12), "Z", 0, 0, "T")  # a leap day of a century divisible by 400
def test_a_plain_text_is_read_by_the_compiled_module_as_the_reference_reads_it(local, zone, micros, digits, sep):
    if timestamps.compiled is None:
        return  # the pure-Python install: the other tests cover rfc3339_instant
    frac = ("." + f"{micros:06d}"[:digits]) if digits else ""
    text = local.strftime("%Y-%m-%d") + sep + local.strftime("%H:%M:%S") + frac + zone
    t = timestamps.compiled.instant(text)
    assert t is not None and t.hex() == rfc3339_reference(text).hex(), text


_digits = st.integers(0, 9).map(str)
_valid_zone = st.sampled_from(["Z", "z", "+00:00", "-00:00", "+01:00", "-08:00", "+05:30", "+05:45", "-03:30",
                               "+14:00", "+23:59", "-23:59"])
_zone = _valid_zone | st.sampled_from(["+24:00", "+12:60", "+1:00", "+01", "Z+01:00", "UTC"])


@st.composite
def timestamp_texts(draw) -> str:
    """RFC 3339 shaped texts, valid or nearly so: any day from year 1 to 9999 (some that do not exist), hours to
    24, minutes and seconds to 60 or 61, 0 to 12 fraction digits, every separator and zone form."""
    year = draw(st.integers(1, 9999) | st.sampled_from([1, 1700, 1900, 1969, 1970, 2000, 2016, 2026, 2100, 9999]))
    month = draw(st.integers(1, 12) | st.sampled_from([0, 13]))
    day = draw(st.integers(1, 31) | st.just(0))
    hour = draw(st.integers(0, 23) | st.just(24))
    minute = draw(st.integers(0, 59) | st.just(60))
    second = draw(st.integers(0, 59) | st.sampled_from([60, 61]))
    frac = draw(st.none() | st.text(_digits.map(lambda d: d), min_size=0, max_size=12))
    sep = draw(st.sampled_from("Tt "))
    text = f"{year:04d}-{month:02d}-{day:02d}{sep}{hour:02d}:{minute:02d}:{second:02d}"
    if frac is not None:
        text += "." + frac
    return text + draw(_zone)


@settings(max_examples=600, deadline=None)
@given(timestamp_texts())
@example("2016-12-31T23:59:60Z")             # a leap second: the reference's, on a day the fast path knows
@example("2016-12-31T15:59:60.5-08:00")
@example("2026-03-02T09:00:00.1234567891234Z")
@example("0001-01-01T00:00:00+01:00")        # the first day, the last day, at the ends of the zones
@example("9999-12-31T23:59:59.999999-23:59")
@example("2026-03-02 09:00:00.5z")
@example("0001-01-01T00:00:60+01:00")        # a second 60 whose UTC day is in year 0: refused, not an overflow
@example("2255-06-05T23:47:34.740992Z")      # 2**53 microseconds after the epoch, then one more, and before it
@example("2255-06-05T23:47:34.740993Z")
@example("1684-07-28T00:12:25.259007Z")
@example("1900-02-29T00:00:00Z")             # not a leap year (a century), 2000 is (every 400 years)
@example("2000-02-29T00:00:00Z")
@example("2100-02-29T12:00:00+01:00")
@example("2026-03-02T09:00:00,5Z")           # ISO 8601's comma, not RFC 3339's
@example("2026-03-02T09:00:00:123+01:00")
@example("2026-03-02X09:00:00Z")
@example("2026-03-02_09:00:00+01:00")
def test_any_rfc3339_shaped_text_reads_as_the_reference_reads_it(text):
    assert_reads_like_the_reference(text)


_NOISE = list("0123456789:-+.,TtZz _/Xx") + ["\u0661", "\uff10", "\u00b2", "\U0001d7ce", "", "00", "\n", "\x00", "é"]
_noise = st.sampled_from(_NOISE)


@pytest.mark.parametrize("text", ["2026-03-02T05:31:28.351+05:30", "2000-02-29t23:59:59Z",
                                  "2026-03-02 09:00:00.5-08:00", "2016-12-31T23:59:59.999999z"])
def test_every_character_of_a_text_replaced_or_dropped_reads_as_the_reference_reads_it(text):
    assert_reads_like_the_reference(text)
    for at in range(len(text)):
        for new in _NOISE:
            assert_reads_like_the_reference(text[:at] + new + text[at + 1:])


@settings(max_examples=600, deadline=None)
@given(timestamp_texts(), st.lists(st.tuples(st.integers(0, 40), st.integers(0, 2), _noise), min_size=1, max_size=3))
def test_a_text_of_a_known_day_with_a_character_changed_reads_as_the_reference_reads_it(text, edits):
    # the original first, so that its day and zone are known when the changed text comes
    assert_reads_like_the_reference(text)
    for at, cut, new in edits:
        at = min(at, len(text))
        text = text[:at] + new + text[at + cut:]
        assert_reads_like_the_reference(text)


@settings(max_examples=300, deadline=None)
@given(st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31)), _valid_zone,
       st.integers(0, 999_999), st.integers(0, 6))
def test_every_fraction_length_of_a_known_day_is_read_bit_for_bit(local, zone, micros, digits):
    day = local.strftime("%Y-%m-%dT").rjust(11, "0")
    with python_only():
        rfc3339_instant(day + "00:00:00" + zone)  # the day is met first, so the texts below take the fast path
    frac = ("." + f"{micros:06d}"[:digits]) if digits else ""
    assert_reads_like_the_reference(day + local.strftime("%H:%M:%S") + frac + zone)


@pytest.mark.parametrize("text", ["2026-03-02T09:00:00Z", "2026-03-02t23:59:59.999z", "2026-03-02 00:00:00.5+05:30",
                                  "2026-03-02T12:34:56.123456-08:00", "2026-03-02T12:34:56.1234-00:00"])
def test_a_known_day_is_read_without_the_reference(monkeypatch, text):
    want = rfc3339_reference(text)
    monkeypatch.setattr(timestamps, "_instant", None)
    rfc3339_instant(text)  # learns the day

    def no_reference(text: str) -> float:
        raise AssertionError(f"the reference was asked for {text!r}")

    monkeypatch.setattr(timestamps, "rfc3339_reference", no_reference)
    assert rfc3339_instant(text).hex() == want.hex()


def test_the_remembered_days_are_bounded(monkeypatch):
    monkeypatch.setattr(timestamps, "_instant", None)
    monkeypatch.setattr(timestamps, "_DAYS", {})
    monkeypatch.setattr(timestamps, "_DAYS_MAX", 8)
    for d in range(1, 29):
        text = f"2026-02-{d:02d}T10:00:00.250+01:00"
        assert rfc3339_instant(text) == rfc3339_reference(text)
        assert 1 <= len(timestamps._DAYS) <= 8
    assert "2026-02-28T+01:00" in timestamps._DAYS


@pytest.mark.parametrize("text", ["2026-02-30T09:00:00Z", "2026-03-02T24:00:00Z", "2026-03-02T09:60:00Z",
                                  "2026-03-02T09:00:61Z", "2026-03-02T09:00:00", "2026-03-02T09:00:00.Z",
                                  "2026-03-02T09:00:00+24:00", "2026-03-02T09:00:60Z", "2026-03-02T09:00:0\u0661Z",
                                  "2026-03-02T09:00Z", "", "Z", "+01:00", "2026-03-02T+01:00"])
def test_refusals_say_what_the_reference_says_after_the_day_is_known(text):
    with python_only():
        rfc3339_instant("2026-03-02T09:00:00Z")
        rfc3339_instant("2026-03-02T09:00:00+01:00")
    assert_reads_like_the_reference(text)
    with pytest.raises(ValueError):
        rfc3339_instant(text)
