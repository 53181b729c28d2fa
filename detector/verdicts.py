"""Analyst verdicts: what a human concluded about an incident or an alert episode.

A verdict names one agent and one *target*: an incident id (a freeze, usually given with the
release) or an alert episode id (:mod:`detector.episodes`). ``benign`` says the actions it covers
were legitimate work: :meth:`detector.engine.Engine.apply_verdict` teaches them (profile and
novelty sketches) and keeps the same reasons on that agent from alerting again for what they
covered. ``confirmed`` says they were harmful: it teaches nothing. Verdicts travel as JSON records
(schema ``flowbreaker-verdict/1``) on the ``agent-verdicts`` topic, keyed by agent id and signed
like a command; ``flowbreaker replay --verdicts FILE.jsonl`` reads the same records. Nothing here
reads the clock: ``at`` comes with the verdict.

>>> v = parse_verdict({"schema": "flowbreaker-verdict/1", "verdict_id": "vd-1", "agent_id": "a",
...     "target": "inc-7", "verdict": "benign", "at": "2026-03-02T09:00:00Z", "by": "alice",
...     "reason": "quarterly export", "signature": "hmac-sha256:k1:00"})
>>> v.verdict, v.at, v.target
('benign', 1772442000.0, 'inc-7')
>>> verdict_record(v)["at"], parse_verdict(verdict_record(v)) == v
('2026-03-02T09:00:00.000Z', True)

When it fails: :func:`parse_verdict` raises :class:`VerdictError` (a ``ValueError``) whose message
is one line naming the field at fault.

>>> parse_verdict({"verdict_id": "vd-2", "agent_id": "a", "target": "inc-7", "verdict": "maybe", "at": 0})
Traceback (most recent call last):
...
detector.verdicts.VerdictError: verdict: must be one of benign, confirmed, got 'maybe'
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Any

from detector.timestamps import instant, iso_utc

__all__ = ["Verdict", "VerdictError", "parse_verdict", "verdict_record", "verdict_id_for", "SCHEMA", "VERDICTS"]

SCHEMA = "flowbreaker-verdict/1"
VERDICTS = ("benign", "confirmed")
#: the longest id, name or reason a verdict carries (anything longer is refused, not cut)
_MAX_ID = 200
_MAX_TEXT = 2000


class VerdictError(ValueError):
    """A verdict record that does not validate; the message is one line naming the field."""


@dataclass(frozen=True)
class Verdict:
    """One analyst's verdict. ``at`` is epoch seconds (when it was given: in replay, the event time
    it takes effect at)."""

    verdict_id: str
    agent_id: str
    #: an incident id or an alert episode id of ``agent_id``
    target: str
    verdict: str
    at: float
    by: str = ""
    reason: str = ""

    @property
    def benign(self) -> bool:
        return self.verdict == "benign"


def _text(obj: dict, key: str, *, required: bool, limit: int) -> str:
    value = obj.get(key)
    if value is None:
        if required:
            raise VerdictError(f"{key}: is required")
        return ""
    if not isinstance(value, str):
        raise VerdictError(f"{key}: must be a string, got {type(value).__name__}")
    if required and not value.strip():
        raise VerdictError(f"{key}: must not be empty")
    if len(value) > limit:
        raise VerdictError(f"{key}: longer than {limit} characters")
    return value


def parse_verdict(obj: Any) -> Verdict:
    """A :class:`Verdict` from a record (a dict read from JSON). Unknown fields (a ``signature``, say)
    are ignored; ``schema``, when present, must be :data:`SCHEMA`; ``at`` is an RFC 3339 text with an
    offset or epoch seconds."""
    if not isinstance(obj, dict):
        raise VerdictError(f"record: must be an object, got {type(obj).__name__}")
    schema = obj.get("schema", SCHEMA)
    if schema != SCHEMA:
        raise VerdictError(f"schema: must be {SCHEMA!r}, got {schema!r}")
    verdict = obj.get("verdict")
    if verdict not in VERDICTS:
        raise VerdictError(f"verdict: must be one of {', '.join(VERDICTS)}, got {verdict!r}")
    at = obj.get("at")
    if isinstance(at, bool) or at is None:
        raise VerdictError("at: is required (RFC 3339 text or epoch seconds)")
    if isinstance(at, (int, float)):
        t = float(at)
        if not math.isfinite(t):
            raise VerdictError("at: must be a finite number")
    elif isinstance(at, str):
        try:
            t = instant(at)
        except ValueError as err:
            raise VerdictError(f"at: {err}") from None
    else:
        raise VerdictError(f"at: must be RFC 3339 text or epoch seconds, got {type(at).__name__}")
    return Verdict(verdict_id=_text(obj, "verdict_id", required=True, limit=_MAX_ID),
                   agent_id=_text(obj, "agent_id", required=True, limit=_MAX_ID),
                   target=_text(obj, "target", required=True, limit=_MAX_ID),
                   verdict=verdict, at=t,
                   by=_text(obj, "by", required=False, limit=_MAX_ID),
                   reason=_text(obj, "reason", required=False, limit=_MAX_TEXT))


def verdict_record(v: Verdict) -> dict:
    """The JSON-ready record of ``v`` (schema :data:`SCHEMA`, ``at`` as UTC text to the millisecond)."""
    return {"schema": SCHEMA, "verdict_id": v.verdict_id, "agent_id": v.agent_id, "target": v.target,
            "verdict": v.verdict, "at": iso_utc(v.at), "by": v.by, "reason": v.reason}


def verdict_id_for(agent_id: str, target: str, verdict: str, at: float, by: str) -> str:
    """A stable id for a verdict (the same agent, target, verdict, time and person give the same id),
    for producers that do not bring their own: ``vd-`` and 16 hex digits.

    >>> verdict_id_for("a", "inc-1", "benign", 0.0, "analyst") == verdict_id_for("a", "inc-1", "benign", 0.0, "analyst")
    True
    """
    h = hashlib.sha256(f"{agent_id}|{target}|{verdict}|{at!r}|{by}".encode()).hexdigest()[:16]
    return f"vd-{h}"
