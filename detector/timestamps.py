"""Reading and writing instants: RFC 3339 text <-> seconds since the epoch, in one place.

Events carry ``ts`` in any offset (docs/contract.md, section 1); everything flowbreaker
writes itself (decisions' derived records, incidents' ``opened_at``, approvals, the audit
trail, model cards) is UTC with a ``Z``. Nothing here reads the clock: the instant comes in.

>>> instant("2026-03-02T10:00:00+01:00") == instant("2026-03-02T09:00:00Z") == 1772442000.0
True
>>> iso_utc(1772442000.25)
'2026-03-02T09:00:00.250Z'
>>> iso_utc(1772442000.25, timespec="seconds"), clock_utc("2026-03-02T10:00:07.5+01:00")
('2026-03-02T09:00:00Z', '09:00:07')

When it fails: :func:`instant` raises ``ValueError`` (one line, quoting the text) on text
that is not a date and time, and on a time without an offset unless ``assume_utc``;
:func:`instant_or_none` answers ``None`` instead, for records read from topics where one
bad field must not stop the reader.

>>> instant("2026-03-02T09:00:00")
Traceback (most recent call last):
...
ValueError: '2026-03-02T09:00:00' has no UTC offset
>>> instant("2026-03-02", assume_utc=True) == instant("2026-03-02T00:00:00Z")
True
>>> instant_or_none("yesterday"), instant_or_none(None), instant_or_none("2026-03-02T09:00:00")
(None, None, None)
"""

from __future__ import annotations

import os
import re
from datetime import datetime, timedelta, timezone
from typing import Any

from detector.native import PURE_PYTHON_ENV

__all__ = ["instant", "instant_or_none", "iso_utc", "clock_utc", "rfc3339_instant", "rfc3339_reference",
           "RFC3339"]

#: RFC 3339 ``date-time`` (section 5.6): any number of fraction digits, ``Z``/``z`` or ``±HH:MM``, ``T``, ``t``
#: or a space between date and time (section 5.6's note)
RFC3339 = re.compile(r"(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?([Zz]|[+-]\d{2}:\d{2})\Z")


_ZONES: dict[str, timezone] = {"Z": timezone.utc, "z": timezone.utc}


def _zone(off: str) -> timezone:
    """``+HH:MM`` as a zone (ValueError past 23:59), remembered: a fleet uses a handful of offsets."""
    hh, mm = int(off[1:3]), int(off[4:6])
    if hh > 23 or mm > 59:
        raise ValueError(off)
    minutes = (hh * 60 + mm) * (-1 if off[0] == "-" else 1)
    tz = timezone(timedelta(minutes=minutes))
    if len(_ZONES) < 4096:
        _ZONES[off] = tz
    return tz


#: The fast path's tables (see :func:`rfc3339_instant`): microseconds of the pieces of a text that are valid
#: on any day. No second 60: a leap second is the reference's. ~300 kB in all, once per process.
_CLOCK = {f"{h:02d}:{m:02d}": (h * 60 + m) * 60_000_000 for h in range(24) for m in range(60)}
_SECONDS = {f":{s:02d}": s * 1_000_000 for s in range(60)}
_FRACTIONS = {"": 0, **{f".{f:0{n}d}": f * 10 ** (6 - n) for n in (1, 2, 3) for f in range(10 ** n)}}
_UTC = ("Z", "z")
#: epoch microseconds of 00:00:00 of a day in a zone, keyed by the text's first 11 characters (date and
#: separator) and its zone (``Z``, ``z`` or ``±HH:MM``); learnt from texts the reference accepted
_DAYS: dict[str, int] = {}
_DAYS_MAX = 4096


def _load_compiled():
    """detector._decode (detector/_decode.c), or ``None``: not built, or ``FLOWBREAKER_PURE_PYTHON=1`` (read
    once, at import, as for detector.native's kernels)."""
    if os.environ.get(PURE_PYTHON_ENV, "") in ("1", "true", "yes"):
        return None
    try:
        from detector import _decode
    except ImportError:  # the pure-Python paths give the same answers, slower
        return None
    return _decode


#: the compiled shortcuts of reading ``ts`` and of decode_event's searches, or ``None``
compiled = _load_compiled()
_instant = compiled.instant if compiled is not None else None


def rfc3339_instant(text: str) -> float:
    """Seconds since the epoch of an RFC 3339 date-time with an offset, as the contract reads ``ts``:
    exactly :func:`rfc3339_reference`'s answer (the float bit for bit, or its ``ValueError``), faster.

    The compiled module reads a plain text when it is built (detector/_decode.c: the same count of
    microseconds, computed in C). Else, in Python: a fleet sends a few days in a few zones, so the epoch
    of each (day, zone) met is remembered, and a text of a known day and zone whose time is ``HH:MM:SS``
    (second 00-59) with up to 3 fraction digits is read by table look-ups (4 to 6 digits:
    :func:`_read_known_day`). Either way the instant is an exact count of microseconds divided by 10**6,
    which is how the reference's ``datetime.timestamp()`` computes it (an integer true division,
    correctly rounded), so the float is the same. Anything else (a day or zone not met yet, a leap
    second, a longer fraction, an error) is the reference's; tests/unit/test_timestamps.py holds them
    together.

    >>> rfc3339_instant("2016-12-31T23:59:60Z") == rfc3339_instant("2017-01-01T00:00:00Z")
    True
    >>> rfc3339_instant("2026-03-02T09:00:00.1234567891+00:00") - 1772442000.0 < 0.1235
    True
    """
    if _instant is not None:  # the compiled reading of a plain text (detector/_decode.c), else None
        t = _instant(text)
        if t is not None:
            return t
    # A key is a date and separator (11 characters) and a zone found at the end of an accepted text. With
    # the clock and the second read at 11-18, the zone starts at 19 or later: the fraction text[19:end]
    # neither overlaps it nor is cut short.
    try:
        if text[-1:] in _UTC:
            micros = _DAYS[text[:11] + text[-1]] + _FRACTIONS[text[19:-1]]
        else:
            micros = _DAYS[text[:11] + text[-6:]] + _FRACTIONS[text[19:-6]]
        micros += _CLOCK[text[11:16]] + _SECONDS[text[16:19]]
    except KeyError:
        return _read_known_day(text)
    return micros / 1_000_000


def _read_known_day(text: str) -> float:
    """:func:`rfc3339_instant` past its first look-ups: a fraction of 4 to 6 digits on a known day, else the
    reference (and the text's day and zone remembered)."""
    end = -1 if text[-1:] in _UTC else -6
    key = text[:11] + text[end:]
    day = _DAYS.get(key)
    frac = text[19:end]
    rest = frac[4:]  # the digits past the third
    if day is not None and frac[:1] == "." and 1 <= len(rest) <= 3 and rest.isascii() and rest.isdigit():
        try:
            micros = day + _CLOCK[text[11:16]] + _SECONDS[text[16:19]] + _FRACTIONS[frac[:4]]
        except KeyError:
            pass
        else:
            return (micros + int(rest) * 10 ** (3 - len(rest))) / 1_000_000
    t = rfc3339_reference(text)
    if key not in _DAYS:
        try:  # the reference's own reading of midnight, a whole second, so its float is exact
            midnight = rfc3339_reference(text[:11] + "00:00:00" + text[end:])
        except ValueError:
            return t
        if len(_DAYS) >= _DAYS_MAX:  # time moves on: the days of long ago are not needed again
            _DAYS.clear()
        _DAYS[key] = int(midnight) * 1_000_000
    return t


def rfc3339_reference(text: str) -> float:
    """Seconds since the epoch of an RFC 3339 date-time with an offset, as the contract reads ``ts`` (the
    reference that :func:`rfc3339_instant` answers like).

    Beyond :meth:`datetime.fromisoformat`: a leap second (second ``60``, only in the last minute of a UTC
    day, RFC 3339 section 5.7) counts as the first second of the next day, as POSIX time has no leap
    seconds; a fraction of any length is read to the nanosecond (digits past the ninth are cut).
    Raises ``ValueError`` whose text says what is wrong: ``not an RFC 3339 timestamp``, ``has no UTC offset``
    or ``not a valid date and time``.

    >>> rfc3339_reference("2016-12-31T23:59:60Z") == rfc3339_reference("2017-01-01T00:00:00Z")
    True
    >>> rfc3339_reference("2026-03-02T09:00:00.1234567891+00:00") - 1772442000.0 < 0.1235
    True
    """
    m = RFC3339.match(text)
    if m is None:
        if RFC3339.match(text + "Z") is not None:
            raise ValueError(f"timestamp {text!r} has no UTC offset")
        raise ValueError(f"{text!r} is not an RFC 3339 timestamp")
    y, mo, d, hh, mm, ss, frac, off = m.groups()
    if ss != "60" and (frac is None or len(frac) <= 6):  # the usual case, in C
        try:
            return datetime.fromisoformat(text if off not in "Zz" else text[:-1] + "+00:00").timestamp()
        except ValueError:
            raise ValueError(f"{text!r} is not a valid date and time") from None
    second = int(ss)
    leap = second == 60
    try:
        tz = _ZONES.get(off) or _zone(off)
        when = datetime(int(y), int(mo), int(d), int(hh), int(mm), 59 if leap else second, tzinfo=tz)
    except ValueError:
        raise ValueError(f"{text!r} is not a valid date and time") from None
    if leap:
        try:
            utc = when.astimezone(timezone.utc)
        except OverflowError:  # a UTC day before year 1 or after 9999: not a last minute of a UTC day either
            utc = None
        if utc is None or (utc.hour, utc.minute) != (23, 59):
            raise ValueError(f"{text!r} is not a valid date and time (a leap second is 23:59:60 UTC)")
    t = when.timestamp() + (1 if leap else 0)
    if frac:
        t += int(frac[:9].ljust(9, "0")) / 1e9
    return t


def instant(text: str, *, assume_utc: bool = False) -> float:
    """Seconds since the epoch of an RFC 3339 / ISO 8601 date and time (``Z`` or ``±HH:MM``).
    A date or a time without an offset is read as UTC only when ``assume_utc``."""
    try:
        when = datetime.fromisoformat(text.strip())
    except (ValueError, AttributeError):
        if isinstance(text, str) and RFC3339.match(text.strip()):  # a leap second, a fraction past 6 digits
            return rfc3339_instant(text.strip())
        raise ValueError(f"{text!r} is not an RFC 3339 timestamp") from None
    if when.tzinfo is None:
        if not assume_utc:
            raise ValueError(f"{text!r} has no UTC offset")
        when = when.replace(tzinfo=timezone.utc)
    return when.timestamp()


def instant_or_none(value: Any, *, assume_utc: bool = False) -> float | None:
    """:func:`instant`, or ``None`` for anything that is not a usable timestamp string."""
    if not isinstance(value, str) or not value:
        return None
    try:
        return instant(value, assume_utc=assume_utc)
    except ValueError:
        return None


def iso_utc(t: float | datetime, *, timespec: str = "milliseconds") -> str:
    """``2026-03-02T09:00:00.000Z`` for an epoch-seconds instant (or an aware datetime)."""
    when = t.astimezone(timezone.utc) if isinstance(t, datetime) else datetime.fromtimestamp(t, timezone.utc)
    return when.isoformat(timespec=timespec).replace("+00:00", "Z")


def _py_iso_ms(t: float | datetime) -> str:
    """``iso_utc(t)``: an instant as episodes write it (milliseconds, ``Z``). The reference of
    ``detector._score.iso_ms`` (:data:`iso_ms`)."""
    when = t.astimezone(timezone.utc) if isinstance(t, datetime) else datetime.fromtimestamp(t, timezone.utc)
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _iso_kernel():
    """``detector._score.iso_ms`` set up with its reference, or None (no kernel: detector/native.py)."""
    from detector.native import kernels
    if kernels is None:
        return None
    try:
        from detector import _score
    except ImportError:  # detector/scoring.py says it once
        return None
    if not hasattr(_score, "iso_ms"):
        return None
    _score.iso_setup(_py_iso_ms)
    return _score.iso_ms


#: :func:`_py_iso_ms` compiled (``detector/_score.c``, for a float instant in the years 1 to 9999: the same text;
#: anything else, the reference's), or the reference itself
iso_ms = _iso_kernel() or _py_iso_ms


def clock_utc(value: float | str) -> str:
    """``HH:MM:SS`` in UTC of an instant or of an RFC 3339 text (any offset), for terminal lines;
    ``?`` when the text is not a timestamp."""
    t = instant_or_none(value) if isinstance(value, str) else value
    if t is None:
        return "?"
    return datetime.fromtimestamp(t, timezone.utc).strftime("%H:%M:%S")
