"""The offline scoring loop shared by ``flowbreaker replay`` and ``flowbreaker evaluate``.

:class:`Playback` feeds events in order through one :class:`detector.engine.Engine`,
optionally with the pre-action verdict (:class:`detector.gate.Gate`, the record's
``gate`` field) and a simulated analyst (``release_after``): every freeze is released
``release_after`` seconds of event time after it, through ``Engine.release`` (the
agent goes on probation, ``half_open``, exactly as after a human release). Offline
nothing else ever releases a freeze, so without it one early false freeze hides all
that agent does afterwards; with it a false freeze costs what it costs in operation
(the agent waits for an analyst) and no more.

The release happens lazily, just before the frozen agent's next event at or after
the release instant, dated at the release instant; other agents' decisions do not
depend on it, so this equals releasing at that instant.

>>> parse_duration("1h"), parse_duration("30m"), parse_duration("90s"), parse_duration("600")
(3600.0, 1800.0, 90.0, 600.0)
>>> parse_duration("soon")
Traceback (most recent call last):
...
ValueError: --release-after: 'soon' is not a duration (like 1h, 30m, 90s or plain seconds)
"""

from __future__ import annotations

import math
import re
from typing import Iterable, Iterator

from detector.engine import Decision, Engine
from detector.events import ActionEvent

__all__ = ["Playback", "parse_duration", "RELEASED_BY"]

RELEASED_BY = "simulated-analyst"
_UNIT = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([smhd]?)\s*$", re.I)
_BATCH = 1024


def parse_duration(text: str | float | int, what: str = "--release-after") -> float:
    """``"1h"``, ``"30m"``, ``"90s"``, ``"2d"`` or plain seconds -> seconds (> 0).
    Raises :class:`ValueError` with a one-line reason naming ``what``."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        value = float(text)
    else:
        m = _DURATION.match(str(text))
        if m is None:
            raise ValueError(f"{what}: {text!r} is not a duration (like 1h, 30m, 90s or plain seconds)")
        value = float(m.group(1)) * _UNIT[m.group(2).lower()]
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"{what}: {text!r} must be a positive duration")
    return value


class Playback:
    """Score events in order; see the module docstring.

    ``gate``: a :class:`detector.gate.Gate` over the same engine, or ``None``;
    ``release_after``: seconds, or ``None`` (never release). ``releases`` collects
    the release commands issued. State carries over between calls of :meth:`run`,
    so a file may be fed in chunks.

    >>> from detector.events import decode_event
    >>> eng = Engine()
    >>> pb = Playback(eng, release_after=60.0)
    >>> ev = decode_event({"event_id": "e1", "ts": "2026-03-02T09:00:00Z", "agent_id": "a", "operator_id": "o",
    ...                    "tool": "t", "action": "read", "resource": "r://x", "sensitivity": "internal"})
    >>> [d.record["action_taken"] for d in pb.run([ev])], pb.releases
    (['none'], [])
    """

    def __init__(self, engine: Engine, *, gate=None, release_after: float | None = None,
                 by: str = RELEASED_BY) -> None:
        if release_after is not None:
            release_after = parse_duration(release_after)
        self.engine = engine
        self.gate = gate
        self.release_after = release_after
        self.by = by
        self.releases: list[dict] = []
        self._frozen_at: dict[str, float] = {}

    def run(self, events: Iterable[ActionEvent]) -> Iterator[Decision]:
        """Decisions for ``events``, in order (duplicates included, flagged ``duplicate``)."""
        if self.gate is None and self.release_after is None:
            batch: list[ActionEvent] = []
            for ev in events:
                batch.append(ev)
                if len(batch) >= _BATCH:
                    yield from self.engine.process_batch(batch)
                    batch = []
            if batch:
                yield from self.engine.process_batch(batch)
            return
        for ev in events:
            yield self.step(ev)

    def step(self, ev: ActionEvent) -> Decision:
        """One event: release if due, the gate's verdict just before the action, then the decision."""
        if self.release_after is not None:
            t0 = self._frozen_at.get(ev.agent_id)
            if t0 is not None and ev.t - t0 >= self.release_after:
                del self._frozen_at[ev.agent_id]
                cmd = self.engine.release(ev.agent_id, at=t0 + self.release_after, by=self.by,
                                          reason=f"evaluation: simulated analyst release after {self.release_after:g} s")
                if cmd is not None:
                    self.releases.append(cmd)
        verdict = self.gate.verdict(ev) if self.gate is not None else None
        d = self.engine.process(ev)
        if verdict is not None and not d.duplicate:
            d.record["gate"] = verdict
        if d.freeze is not None and self.release_after is not None:
            self._frozen_at[ev.agent_id] = ev.t
        return d
