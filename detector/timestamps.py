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

from datetime import datetime, timezone
from typing import Any

__all__ = ["instant", "instant_or_none", "iso_utc", "clock_utc"]


def instant(text: str, *, assume_utc: bool = False) -> float:
    """Seconds since the epoch of an RFC 3339 / ISO 8601 date and time (``Z`` or ``±HH:MM``).
    A date or a time without an offset is read as UTC only when ``assume_utc``."""
    try:
        when = datetime.fromisoformat(text.strip())
    except (ValueError, AttributeError):
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
