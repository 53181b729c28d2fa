"""Alert episodes: an agent's alerted actions gathered into one thing a SOC can carry.

An episode opens with an agent's first alerted action (``action_taken`` ``alert`` or
``freeze``) and stays open while the agent keeps being alerted on; it closes when the
agent has had no alerted action for ``quiet_s`` of event time (30 minutes by default,
the policy's ``thresholds.episode_quiet_s``). Its record (schema ``flowbreaker-episode/1``)
is published on ``agent-alerts`` when it opens, when it changes (a higher severity, a new
reason, a freeze, a verdict) and when it closes: one record per change, not per action.
The episode is dated in event time only, so a replay closes it at the same instant
(``updated + quiet_s``) whenever it notices; nothing here reads the clock.

An episode also keeps what an analyst's verdict needs (:meth:`detector.engine.Engine.apply_verdict`):
the novelty items its actions met for the first time, the feature values of its first
actions (log1p units) and, per feature named as a reason, the largest value it reached.
All of it is bounded: :data:`MAX_EVENT_IDS` ids, :data:`MAX_ITEMS` items, :data:`MAX_ROWS` rows.
Closed episodes are kept (at most ``max_closed``, for at most ``keep_s`` after they closed) so a
verdict given later still finds them.

An agent's open episode travels with the agent's state (:meth:`EpisodeBook.open_state`,
:meth:`EpisodeBook.restore`; the engine writes it into the state the worker keeps in its
changelog), so a worker that restarts, or takes the agent's partition over, carries the
episode on and closes it once, instead of leaving it open for ever in the SOC's view.

>>> book = EpisodeBook(quiet_s=1800.0)
>>> recs = book.observe("a", 0.0, "e1", "high", ["novel_tool"], alerted=True)
>>> recs[0]["state"], recs[0]["actions"], recs[0]["reasons"]
('open', 1, [{'code': 'novel_tool', 'count': 1}])
>>> book.observe("a", 60.0, "e2", "medium", ["novel_tool"], alerted=True)   # nothing new to say
[]
>>> [r["state"] for r in book.close_quiet(1860.0)], book.open_of("a")
(['closed'], None)
"""

from __future__ import annotations

import hashlib
from array import array
from collections import OrderedDict
from typing import Iterable

from detector.features import N_FEATURES
from detector.timestamps import iso_ms

__all__ = ["Episode", "EpisodeBook", "SCHEMA", "MAX_EVENT_IDS", "MAX_ITEMS", "MAX_ROWS"]

SCHEMA = "flowbreaker-episode/1"
#: an episode's record names its first this many alerted actions
MAX_EVENT_IDS = 20
#: novelty items and feature rows an episode keeps for a verdict to teach
MAX_ITEMS = 64
MAX_ROWS = 4
#: reason codes a record lists (the most frequent)
MAX_REASONS = 8
#: reasons, incidents and caps an episode saved with its agent's state may hold (anything larger is not one)
_MAX_SAVED = 256
_RANK = {"ok": 0, "low": 1, "medium": 2, "high": 3, "critical": 4}
_SEVERITY = tuple(_RANK)


def episode_id_for(agent_id: str, event_id: str) -> str:
    """Stable across replays: the agent and the action that opened the episode.

    >>> episode_id_for("a", "e1") == episode_id_for("a", "e1"), episode_id_for("a", "e1")[:3]
    (True, 'ep-')
    """
    return "ep-" + hashlib.sha256(f"{agent_id}\x00{event_id}".encode()).hexdigest()[:20]


class Episode:
    """One episode (see the module docstring)."""

    __slots__ = ("episode_id", "agent_id", "opened", "updated", "closed", "severity", "actions", "reasons",
                 "event_ids", "incidents", "verdict", "items", "rows", "caps")

    def __init__(self, episode_id: str, agent_id: str, t: float) -> None:
        self.episode_id = episode_id
        self.agent_id = agent_id
        self.opened = t
        self.updated = t
        self.closed: float | None = None
        self.severity = 0
        self.actions = 0
        self.reasons: dict[str, int] = {}
        self.event_ids: list[str] = []
        self.incidents: list[str] = []
        self.verdict: dict | None = None
        #: what a verdict teaches: novelty items (detector.features.item_key), feature rows (log1p), and the
        #: largest value of each feature named as a reason (feature index -> value)
        self.items: list[int] = []
        self.rows: list[array] = []
        self.caps: dict[int, float] = {}

    def to_tuple(self) -> tuple:
        """Plain values (for the agent's serialised state)."""
        return (self.episode_id, self.opened, self.updated, self.severity, self.actions,
                [[c, n] for c, n in self.reasons.items()], list(self.event_ids), list(self.incidents), self.verdict,
                list(self.items), [r.tobytes() for r in self.rows], [[f, v] for f, v in self.caps.items()])

    @classmethod
    def from_tuple(cls, agent_id: str, t: tuple) -> "Episode":
        """The open episode :meth:`to_tuple` wrote; ValueError when it is not one."""
        try:
            eid, opened, updated, severity, actions, reasons, event_ids, incidents, verdict, items, rows, caps = t
            if max(len(reasons), len(incidents), len(caps)) > _MAX_SAVED or len(event_ids) > MAX_EVENT_IDS \
                    or len(items) > MAX_ITEMS or len(rows) > MAX_ROWS:
                raise ValueError("too many entries")
            ep = cls(str(eid), agent_id, float(opened))
            ep.updated = float(updated)
            ep.severity = int(severity)
            ep.actions = int(actions)
            ep.reasons = {str(c): int(n) for c, n in reasons}
            ep.event_ids = [str(e) for e in event_ids]
            ep.incidents = [str(i) for i in incidents]
            ep.verdict = dict(verdict) if verdict is not None else None
            ep.items = [int(k) for k in items]
            ep.rows = [array("d", r) for r in rows]
            ep.caps = {int(f): float(v) for f, v in caps}
        except (TypeError, ValueError, OverflowError) as err:
            raise ValueError(f"not an open alert episode: {err}") from None
        if not 0 <= ep.severity < len(_SEVERITY):
            raise ValueError("not an open alert episode: severity out of range")
        if any(len(r) != N_FEATURES for r in ep.rows) or any(not 0 <= f < N_FEATURES for f in ep.caps):
            raise ValueError("not an open alert episode: feature rows or caps of another shape")
        return ep

    def record(self) -> dict:
        """The episode's record (schema :data:`SCHEMA`), JSON-ready."""
        top = sorted(self.reasons.items(), key=lambda kv: (-kv[1], kv[0]))[:MAX_REASONS]
        rec = {"schema": SCHEMA, "episode_id": self.episode_id, "agent_id": self.agent_id,
               "state": "open" if self.closed is None else "closed", "opened": iso_ms(self.opened),
               "updated": iso_ms(self.updated)}
        if self.closed is not None:
            rec["closed"] = iso_ms(self.closed)
        rec.update({"severity": _SEVERITY[self.severity], "actions": self.actions,
                    "reasons": [{"code": c, "count": n} for c, n in top], "event_ids": list(self.event_ids),
                    "incidents": list(self.incidents)})
        if self.verdict is not None:
            rec["verdict"] = dict(self.verdict)
        return rec


class EpisodeBook:
    """The open episode of each agent, and the recently closed ones. Bounded: at most ``max_open``
    open episodes (beyond it the longest-quiet one is closed early) and ``max_closed`` closed ones."""

    def __init__(self, *, quiet_s: float = 1800.0, max_open: int = 20_000, max_closed: int = 5_000,
                 keep_s: float = 7 * 86400.0) -> None:
        self.quiet_s = quiet_s
        self.max_open = max_open
        self.max_closed = max_closed
        self.keep_s = keep_s
        self.open: dict[str, Episode] = {}
        self.closed: OrderedDict[str, Episode] = OrderedDict()
        #: incident id -> the episode its freeze belongs to (open or kept closed)
        self.by_incident: dict[str, Episode] = {}

    # ------------------------------------------------------------------ reading
    def open_of(self, agent_id: str) -> str | None:
        ep = self.open.get(agent_id)
        return ep.episode_id if ep is not None else None

    def find(self, agent_id: str, target: str) -> Episode | None:
        """The episode ``target`` names (an episode id or the id of an incident whose freeze is in one)
        for ``agent_id``, open or kept closed; ``None`` when unknown."""
        ep = self.by_incident.get(target)
        if ep is None:
            ep = self.closed.get(target)
        if ep is None:
            cur = self.open.get(agent_id)
            ep = cur if cur is not None and cur.episode_id == target else None
        return ep if ep is not None and ep.agent_id == agent_id else None

    def open_state(self, agent_id: str) -> tuple | None:
        """The agent's open episode as plain values (:meth:`Episode.to_tuple`), or ``None``."""
        ep = self.open.get(agent_id)
        return ep.to_tuple() if ep is not None else None

    # ------------------------------------------------------------------ changing
    def restore(self, agent_id: str, state: tuple) -> bool:
        """Take the agent's open episode from its saved state (a restart, a partition taken over), unless this
        book already holds an open episode of the agent or knows that one (closed while the agent rested).
        ``True`` when restored. Raises ValueError for a state that is not an episode.

        >>> book = EpisodeBook()
        >>> _ = book.observe("a", 0.0, "e1", "high", ["novel_tool"], alerted=True, incident_id="inc-1")
        >>> saved = book.open_state("a")
        >>> other = EpisodeBook()
        >>> other.restore("a", saved), other.restore("a", saved), other.find("a", "inc-1") is not None
        (True, False, True)
        >>> other.close_quiet(1800.0) == book.close_quiet(1800.0)
        True
        """
        ep = Episode.from_tuple(agent_id, state)
        if agent_id in self.open or ep.episode_id in self.closed:
            return False
        self.open[agent_id] = ep
        for inc in ep.incidents:
            self.by_incident[inc] = ep
        return True

    def drop(self, agent_id: str) -> None:
        """Forget the agent's open episode (its partition went to another worker, which carries it on)."""
        ep = self.open.pop(agent_id, None)
        if ep is not None:
            for inc in ep.incidents:
                if self.by_incident.get(inc) is ep:
                    del self.by_incident[inc]

    def _close(self, ep: Episode, at: float) -> dict:
        ep.closed = at
        del self.open[ep.agent_id]
        self.closed[ep.episode_id] = ep
        while len(self.closed) > self.max_closed:
            _, old = self.closed.popitem(last=False)
            for inc in old.incidents:
                self.by_incident.pop(inc, None)
        return ep.record()

    def _expire(self, now: float) -> None:
        while self.closed:
            old = next(iter(self.closed.values()))
            if old.closed is None or now - old.closed < self.keep_s:
                break
            self.closed.popitem(last=False)
            for inc in old.incidents:
                self.by_incident.pop(inc, None)

    def observe(self, agent_id: str, t: float, event_id: str, severity: str, reasons: Iterable[str], *,
                alerted: bool, incident_id: str | None = None, items: Iterable[int] = (),
                row: list[float] | None = None, caps: Iterable[tuple[int, float]] = ()) -> list[dict]:
        """One decided action of ``agent_id`` at event time ``t``: the records to publish (a quiet episode
        closed, an episode opened or changed), oldest first. Only ``alerted`` actions join an episode."""
        out: list[dict] = []
        ep = self.open.get(agent_id)
        if ep is not None and t - ep.updated >= self.quiet_s:
            out.append(self._close(ep, ep.updated + self.quiet_s))
            ep = None
        if not alerted:
            return out
        changed = False
        if ep is None:
            if len(self.open) >= self.max_open:  # the longest-quiet episode makes room
                oldest = min(self.open.values(), key=lambda e: (e.updated, e.episode_id))
                out.append(self._close(oldest, min(t, oldest.updated + self.quiet_s)))
            ep = self.open[agent_id] = Episode(episode_id_for(agent_id, event_id), agent_id, t)
            self._expire(t)
            changed = True
        if t > ep.updated:
            ep.updated = t
        ep.actions += 1
        rank = _RANK.get(severity, 0)
        if rank > ep.severity:
            ep.severity = rank
            changed = True
        for code in reasons:
            n = ep.reasons.get(code)
            if n is None:
                changed = True
                ep.reasons[code] = 1
            else:
                ep.reasons[code] = n + 1
        if len(ep.event_ids) < MAX_EVENT_IDS:
            ep.event_ids.append(event_id)
        if incident_id is not None and incident_id not in ep.incidents:
            ep.incidents.append(incident_id)
            self.by_incident[incident_id] = ep
            changed = True
        for k in items:
            if len(ep.items) >= MAX_ITEMS:
                break
            if k not in ep.items:
                ep.items.append(k)
        if row is not None and len(ep.rows) < MAX_ROWS:
            ep.rows.append(array("d", row))
        for f, v in caps:
            if v > ep.caps.get(f, 0.0):
                ep.caps[f] = v
        if changed:
            out.append(ep.record())
        return out

    def close_quiet(self, now: float) -> list[dict]:
        """Close every open episode whose agent had no alerted action for ``quiet_s`` by ``now`` (event
        time); each is dated ``updated + quiet_s``. Records in a stable order (by close time, then id)."""
        due = [ep for ep in self.open.values() if now - ep.updated >= self.quiet_s]
        due.sort(key=lambda e: (e.updated, e.episode_id))
        out = [self._close(ep, ep.updated + self.quiet_s) for ep in due]
        if due:
            self._expire(now)
        return out
