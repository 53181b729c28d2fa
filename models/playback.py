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

Verdicts (issue 18) take the path an analyst's take, ``Engine.apply_verdict``, at
their position in event time: a verdict dated ``at`` is applied just before the first
event at or after ``at`` (verdicts due at the same instant in the order they were
scheduled or recorded). ``verdicts`` are recorded ones (``flowbreaker replay --verdicts``);
a recorded verdict on the agent's open incident releases it first, as ``flowbreaker
release --verdict`` does. ``analyst`` plays an analyst (:class:`Analyst`): every freeze is
released ``delay`` after it with the verdict ``confirmed`` when its triggering event
is one of the labelled incident events and ``benign`` otherwise, and every alert
episode gets its verdict ``delay`` after it closes (``confirmed`` when one of its
alerted actions is an incident event). Episodes close in event time
(``Engine.close_quiet``, looked at once a minute of event time and at the end), so the
decisions are the same however the events are batched.

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

import heapq
from dataclasses import dataclass

from detector.engine import Decision, Engine
from detector.events import ActionEvent
from detector.verdicts import Verdict, VerdictError, parse_verdict, verdict_id_for, verdict_record

__all__ = ["Playback", "Analyst", "parse_duration", "read_verdicts", "RELEASED_BY"]

RELEASED_BY = "simulated-analyst"
_UNIT = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([smhd]?)\s*$", re.I)
_BATCH = 1024
#: how often (event time) a playback closes quiet episodes
_CLOSE_EVERY_S = 60.0


@dataclass(frozen=True)
class Analyst:
    """A simulated analyst: ``incident_events`` are the labelled incident event ids (a freeze or an episode
    that touches one is ``confirmed``), ``delay`` the seconds of event time before each verdict."""

    incident_events: frozenset
    delay: float = 3600.0
    by: str = RELEASED_BY


def read_verdicts(path: str) -> list[Verdict]:
    """Verdict records (``flowbreaker-verdict/1``, one JSON object a line, as on ``agent-verdicts``) from a
    file. Raises ``ValueError`` naming the line of the first bad record.
    """
    import json

    out = []
    try:
        with open(path, "rb") as fh:
            for n, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    out.append(parse_verdict(json.loads(line)))
                except (ValueError, VerdictError) as err:
                    raise ValueError(f"{path}:{n}: not a verdict record: {err}") from None
    except OSError as err:
        raise ValueError(f"cannot read {path}: {err.strerror}") from None
    return out


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
                 by: str = RELEASED_BY, analyst: Analyst | None = None,
                 verdicts: list[Verdict] | None = None) -> None:
        if release_after is not None:
            release_after = parse_duration(release_after)
        if analyst is not None and release_after is not None:
            raise ValueError("--release-after: the analyst releases every freeze itself (--analyst-delay)")
        self.engine = engine
        self.gate = gate
        self.release_after = release_after
        self.by = by
        self.analyst = analyst
        self.releases: list[dict] = []
        #: verdict records applied, in order, and the episode records no decision carries (closed by
        #: ``close_quiet``, changed by a verdict, closed at the end): drain it as it grows
        self.verdicts: list[dict] = []
        self.episodes: list[dict] = []
        self._frozen_at: dict[str, float] = {}
        self._due: list[tuple[float, int, Verdict]] = []
        self._seq = 0
        self._next_close: float | None = None
        self._bad_episodes: set[str] = set()
        for v in sorted(verdicts or (), key=lambda v: v.at):
            self._schedule(v)

    def _schedule(self, v: Verdict) -> None:
        self._seq += 1
        heapq.heappush(self._due, (v.at, self._seq, v))

    def _apply_due(self, t: float) -> None:
        """Close quiet episodes and apply the verdicts due by event time ``t``, in time order."""
        eng = self.engine
        inf = float("inf")
        while True:
            next_v = self._due[0][0] if self._due else inf
            next_c = self._next_close if self._next_close is not None and self._next_close <= t else inf
            if next_v > t and next_c == inf:
                break
            if next_c <= next_v:  # episodes that went quiet first: their verdicts are scheduled from them
                self._closed(eng.close_quiet(next_c))
                self._next_close = max(next_c + _CLOSE_EVERY_S, min(t, self._due[0][0] if self._due else t))
                continue
            at, _, v = heapq.heappop(self._due)
            self._closed(eng.close_quiet(at))  # what went quiet by then is closed before the verdict lands
            st = eng.agents.get(v.agent_id)
            if st is not None and st.breaker.state == "open" and st.breaker.incident_id == v.target:
                cmd = eng.release(v.agent_id, at=at, by=v.by or self.by,
                                  reason=f"verdict {v.verdict}: {v.reason}" if v.reason else f"verdict {v.verdict}")
                if cmd is not None:
                    self.releases.append(cmd)
            changed = eng.apply_verdict(v)
            self.verdicts.append(verdict_record(v))
            self.episodes.extend(changed)

    def _closed(self, records: list[dict], *, keep: bool = True) -> None:
        if keep:
            self.episodes.extend(records)
        a = self.analyst
        if a is None:
            return
        from detector.timestamps import instant

        for rec in records:
            if rec["state"] != "closed" or "verdict" in rec:
                continue
            at = instant(rec["closed"]) + a.delay
            verdict = "confirmed" if rec["episode_id"] in self._bad_episodes else "benign"
            self._schedule(Verdict(verdict_id_for(rec["agent_id"], rec["episode_id"], verdict, at, a.by),
                                   rec["agent_id"], rec["episode_id"], verdict, at, a.by,
                                   "evaluation: simulated analyst"))

    def finish(self) -> list[dict]:
        """The end of the input: close every open episode (their verdicts would come after the end)."""
        recs = self.engine.close_quiet(float("inf"))
        self.episodes.extend(recs)
        return recs

    def run(self, events: Iterable[ActionEvent]) -> Iterator[Decision]:
        """Decisions for ``events``, in order (duplicates included, flagged ``duplicate``)."""
        if self.gate is None and self.release_after is None and self.analyst is None and not self._due:
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
        """One event: verdicts and releases due, the gate's verdict just before the action, then the decision."""
        if self._next_close is None:
            self._next_close = ev.t + _CLOSE_EVERY_S
        if self._due or ev.t >= self._next_close:
            self._apply_due(ev.t)
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
        if d.duplicate:
            return d
        if d.episodes:
            self._closed(d.episodes, keep=False)
        a = self.analyst
        if a is not None:
            if ev.event_id in a.incident_events and d.record["action_taken"] in ("alert", "freeze"):
                ep = self.engine.episodes.open_of(ev.agent_id)
                if ep is not None:
                    self._bad_episodes.add(ep)
            if d.freeze is not None:
                at = ev.t + a.delay
                verdict = "confirmed" if ev.event_id in a.incident_events else "benign"
                inc = d.freeze["incident_id"]
                self._schedule(Verdict(verdict_id_for(ev.agent_id, inc, verdict, at, a.by), ev.agent_id, inc,
                                       verdict, at, a.by, "evaluation: simulated analyst"))
        return d
