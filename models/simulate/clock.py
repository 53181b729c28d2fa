"""Simulated time: epoch milliseconds, RFC 3339 text in an operator's zone, weekdays,
month ends and an agent's working hours.

The simulator computes in integer epoch milliseconds (UTC) so that its output is exact
and the same on every machine; a zone is an offset in minutes (the operator's), never
a time-zone database. Day numbers are days since 1970-01-01 of a local date.

>>> to_ms(DEFAULT_START), format_ts(to_ms(DEFAULT_START) + 90 * 60_000, 60)
(1772409600000, '2026-03-02T02:30:00.000+01:00')
>>> day = to_ms(datetime(2026, 3, 31, tzinfo=UTC)) // DAY_MS
>>> weekday(day), is_month_end_day(day), is_month_end_day(day - 1), is_month_end_day(day - 2)
(1, True, True, False)
"""
from __future__ import annotations

import functools
import random
from datetime import UTC, date, datetime, timedelta

from models.simulate.profile import AgentProfile

__all__ = ["DAY_MS", "HOUR_MS", "EPOCH", "DEFAULT_START", "to_ms", "from_ms", "format_ts", "month_of",
           "weekday", "is_month_end_day", "working_instant"]

DAY_MS = 86_400_000
HOUR_MS = 3_600_000
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
#: where ``flowbreaker simulate`` starts unless told otherwise (a Monday)
DEFAULT_START = datetime(2026, 3, 2, tzinfo=UTC)


def to_ms(dt: datetime) -> int:
    """Epoch milliseconds of an aware datetime; ``ValueError`` for a naive one."""
    if dt.tzinfo is None:
        raise ValueError(f"naive datetime {dt.isoformat()}: give a timezone")
    delta = dt - EPOCH
    return delta.days * DAY_MS + delta.seconds * 1000 + delta.microseconds // 1000


def from_ms(ms: int) -> datetime:
    """The UTC datetime of an epoch-millisecond instant."""
    return EPOCH + timedelta(milliseconds=ms)


def format_ts(ms: int, offset_minutes: int = 0, zulu: bool = True) -> str:
    """RFC 3339 text with milliseconds for an epoch-millisecond instant, in a zone.

    >>> format_ts(1772443800123, 120)
    '2026-03-02T11:30:00.123+02:00'
    >>> format_ts(1772443800123, 0), format_ts(1772443800123, 0, zulu=False)
    ('2026-03-02T09:30:00.123Z', '2026-03-02T09:30:00.123+00:00')
    """
    local = EPOCH + timedelta(milliseconds=ms + offset_minutes * 60_000)
    if offset_minutes == 0 and zulu:
        suffix = "Z"
    else:
        sign = "+" if offset_minutes >= 0 else "-"
        h, m = divmod(abs(offset_minutes), 60)
        suffix = f"{sign}{h:02d}:{m:02d}"
    return f"{local:%Y-%m-%dT%H:%M:%S}.{ms % 1000:03d}{suffix}"


def weekday(day: int) -> int:
    """Day of the week (Monday = 0) of a day number (days since 1970-01-01)."""
    return (day + 3) % 7  # 1970-01-01 was a Thursday; Monday = 0


@functools.lru_cache(maxsize=4096)
def is_month_end_day(day: int) -> bool:
    """True on the last two business days of the local date's month."""
    d = date(1970, 1, 1) + timedelta(days=day)
    nxt = date(d.year + (d.month == 12), d.month % 12 + 1, 1)
    last = nxt - timedelta(days=1)
    business: list[date] = []
    while len(business) < 2:
        if last.weekday() < 5:
            business.append(last)
        last -= timedelta(days=1)
    return d in business


def month_of(ms: int) -> str:
    """``YYYY-MM`` of an instant, in UTC (resource names such as ``erp://payroll/2026-03``)."""
    return f"{from_ms(ms):%Y-%m}"


def working_instant(agent: AgentProfile, lo: int, hi: int, rng: random.Random,
                    hours: tuple[int, int] = (9, 16)) -> int:
    """An instant in [lo, hi) during the agent's local working hours, weekdays preferred."""
    off = agent.tz_offset_minutes * 60_000
    days = list(range((lo + off) // DAY_MS, (hi + off) // DAY_MS + 1))
    weekend = 0.6 if agent.always_on else 0.1
    weights = [1.0 if weekday(d) < 5 else weekend for d in days]
    for _ in range(64):
        d = rng.choices(days, weights=weights)[0]
        t = d * DAY_MS + rng.randint(hours[0] * HOUR_MS, hours[1] * HOUR_MS) - off
        if lo <= t < hi:
            return t
    return lo + rng.randrange(max(1, hi - lo))
