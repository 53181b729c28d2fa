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

import re
from datetime import datetime, timedelta, timezone
from typing import Any

__all__ = ["instant", "instant_or_none", "iso_utc", "clock_utc", "rfc3339_instant", "RFC3339"]

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


def rfc3339_instant(text: str) -> float:
    """Seconds since the epoch of an RFC 3339 date-time with an offset, as the contract reads ``ts``.

    Beyond :meth:`datetime.fromisoformat`: a leap second (second ``60``, only in the last minute of a UTC
    day, RFC 3339 section 5.7) counts as the first second of the next day, as POSIX time has no leap
    seconds; a fraction of any length is read to the nanosecond (digits past the ninth are cut).
    Raises ``ValueError`` whose text says what is wrong: ``not an RFC 3339 timestamp``, ``has no UTC offset``
    or ``not a valid date and time``.

    >>> rfc3339_instant("2016-12-31T23:59:60Z") == rfc3339_instant("2017-01-01T00:00:00Z")
    True
    >>> rfc3339_instant("2026-03-02T09:00:00.1234567891+00:00") - 1772442000.0 < 0.1235
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
        utc = when.astimezone(timezone.utc)
        if (utc.hour, utc.minute) != (23, 59):
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


def clock_utc(value: float | str) -> str:
    """``HH:MM:SS`` in UTC of an instant or of an RFC 3339 text (any offset), for terminal lines;
    ``?`` when the text is not a timestamp."""
    t = instant_or_none(value) if isinstance(value, str) else value
    if t is None:
        return "?"
    return datetime.fromtimestamp(t, timezone.utc).strftime("%H:%M:%S")
