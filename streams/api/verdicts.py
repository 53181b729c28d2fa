"""The API's alert episodes and analysts' verdicts: ``GET /v1/episodes``, ``POST /v1/episodes/{id}/verdict``
and the ``verdict`` of a release (``POST /v1/agents/{id}/release``).

The episodes come from ``agent-alerts``, which every worker follows (:class:`EpisodeFeed`, like the
control feed follows ``agent-control``: a plain consumer without a group, every partition, in the
worker's event loop), so any worker lists them without asking the others. The feed keeps the latest
record of each episode (:class:`EpisodeIndex`): every open one, and the ``max_closed`` most recently
closed. It reads from ``lookback_s`` (7 days) before the worker started: an episode closes after 30
minutes without alerts, so one that opened earlier and is still open has a record since.

A verdict (``benign`` or ``confirmed``) is signed with the command keys and published on
``agent-verdicts`` (:mod:`streams.verdicts`); every worker reads it and the one that holds the agent
applies it (:mod:`streams.worker.verdict_follow`). The answer says it was published; it is applied
within a moment on the owner (its effect shows in the agent's next decisions and in the episode's
record, which then carries the verdict). Each call is audited (``what``: ``verdict``), refusals too.

>>> idx = EpisodeIndex()
>>> _ = idx.apply({"episode_id": "ep-1", "agent_id": "a", "state": "open", "opened": "2026-03-02T09:00:00.000Z",
...                "updated": "2026-03-02T09:00:00.000Z", "actions": 1})
>>> idx.apply({"episode_id": "ep-1", "agent_id": "a", "state": "closed", "opened": "2026-03-02T09:00:00.000Z",
...            "updated": "2026-03-02T09:10:00.000Z", "closed": "2026-03-02T09:40:00.000Z", "actions": 3})
True
>>> idx.open_count, [e["actions"] for e in idx.listing("closed")]
(0, [3])
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import OrderedDict
from typing import Any

from aiokafka.partitioner import murmur2

from streams import verdicts as verdict_records
from streams.api import openapi
from streams.api.audit_trail import record
from streams.clients.commands import RejectLog

__all__ = ["EpisodeIndex", "EpisodeFeed", "VerdictApi", "LOOKBACK_S"]

log = logging.getLogger("flowbreaker.api")

#: how far back a starting worker reads agent-alerts
LOOKBACK_S = 7 * 24 * 3600.0
#: an episode record is small (bounded event ids and reasons); anything larger is not one
MAX_EPISODE_BYTES = 256 * 1024
_encode = json.JSONEncoder(separators=(",", ":")).encode


def _order(rec: dict) -> tuple:
    """Where a record stands in its episode's life: closing comes last, a verdict stays once given, then the
    latest change and the most actions. An episode's records only move forward in it."""
    actions = rec.get("actions")
    return (rec["state"] == "closed", "verdict" in rec, str(rec.get("updated") or ""),
            actions if isinstance(actions, int) else 0)


class EpisodeIndex:
    """The latest record of each alert episode: every open one (up to ``max_open``), the ``max_closed``
    most recently closed ones. :meth:`apply` never raises: a record that is not an episode is counted."""

    def __init__(self, *, max_open: int = 200_000, max_closed: int = 50_000) -> None:
        self.max_open = max_open
        self.max_closed = max_closed
        self.open: OrderedDict[str, dict] = OrderedDict()
        self.closed: OrderedDict[str, dict] = OrderedDict()
        self.invalid = 0

    @property
    def open_count(self) -> int:
        return len(self.open)

    def apply(self, rec: Any) -> bool:
        """Fold one record (a dict); False (and counted) when it is not an episode record."""
        if not isinstance(rec, dict) or not isinstance(rec.get("episode_id"), str) \
                or not isinstance(rec.get("agent_id"), str) or rec.get("state") not in ("open", "closed"):
            self.invalid += 1
            return False
        eid = rec["episode_id"]
        held = self.open.get(eid) or self.closed.get(eid)
        if held is not None and _order(rec) < _order(held):
            return True  # an earlier record, redelivered or replayed: the later one stands
        self.open.pop(eid, None)
        self.closed.pop(eid, None)
        if rec["state"] == "open":
            self.open[eid] = rec
            while len(self.open) > self.max_open:
                self.open.popitem(last=False)
        else:
            self.closed[eid] = rec
            while len(self.closed) > self.max_closed:
                self.closed.popitem(last=False)
        return True

    def get(self, episode_id: str) -> dict | None:
        return self.open.get(episode_id) or self.closed.get(episode_id)

    def listing(self, state: str | None = None, *, agent_id: str | None = None, limit: int = 100) -> list[dict]:
        """Episodes in ``state`` (both when None), of ``agent_id`` if given, the latest change first."""
        pools = [self.open, self.closed] if state is None else [self.open if state == "open" else self.closed]
        items = [e for pool in pools for e in pool.values() if agent_id is None or e["agent_id"] == agent_id]
        items.sort(key=lambda e: (str(e.get("updated") or ""), e["episode_id"]), reverse=True)
        return items[:limit]


class EpisodeFeed:
    """Follows ``agent-alerts`` into an :class:`EpisodeIndex` (see the module docstring). ``caught_up`` is set
    once it read up to the end offsets seen at its start; until then the listing answers 503."""

    def __init__(self, settings: Any, topic: str, partitions: int, *, index: EpisodeIndex | None = None,
                 on_change=None, lookback_s: float = LOOKBACK_S, keys: Any = None) -> None:
        self.settings = settings
        #: the command key ring: with it, only records a worker signed are taken (a producer on agent-alerts
        #: could otherwise add episodes to the SOC's view, or close a real one by its id)
        self.keys = keys
        self.topic = topic
        self.partitions = partitions
        self.index = index or EpisodeIndex()
        self.on_change = on_change
        self.lookback_s = lookback_s
        self.caught_up = asyncio.Event()
        self.restarts = 0
        self._next: dict[int, int] = {}
        self._started = time.time()
        self._reject_log = RejectLog(log, what="skipped an episode record")

    def apply(self, value: bytes | None, partition: int, offset: int) -> None:
        try:
            if value is None or len(value) > MAX_EPISODE_BYTES:
                raise ValueError("no value" if value is None else "too large")
            rec = json.loads(value)
        except (ValueError, UnicodeDecodeError, RecursionError) as err:
            self.index.invalid += 1
            self._reject_log(self.topic, partition, offset, f"not an episode record ({err})")
            return
        if self.keys is not None and isinstance(rec, dict):
            verdict = self.keys.verify(rec)
            if verdict != "ok":
                self.index.invalid += 1
                self._reject_log(self.topic, partition, offset, f"episode record not signed by a worker ({verdict})")
                return
        if not self.index.apply(rec):
            self._reject_log(self.topic, partition, offset, "not an episode record")

    async def run(self) -> None:
        from streams.aio_seek import keep_following

        await keep_following(self._follow, what="episode feed", on_restart=self._restarted, logger=log)

    def _restarted(self) -> None:
        self.restarts += 1

    async def _follow(self) -> None:
        from aiokafka import AIOKafkaConsumer

        from streams.aio_seek import resume_or_since

        consumer = AIOKafkaConsumer(client_id=f"{self.settings.app_id}-episodes", group_id=None,
                                    enable_auto_commit=False, auto_offset_reset="earliest",
                                    **self.settings.aiokafka_config())
        await consumer.start()
        try:
            tps = await resume_or_since(consumer, self.topic, self.partitions, self._next,
                                        int((self._started - self.lookback_s) * 1000))
            target = await consumer.end_offsets(tps)
            while True:
                got = await consumer.getmany(timeout_ms=200, max_records=2000)
                for tp, msgs in got.items():
                    for m in msgs:
                        self._next[tp.partition] = m.offset + 1
                        self.apply(m.value, tp.partition, m.offset)
                if got and self.on_change is not None:
                    self.on_change(self.index)
                if not self.caught_up.is_set():
                    positions = [await consumer.position(tp) for tp in target]
                    if all(pos >= end for pos, end in zip(positions, target.values())):
                        self.caught_up.set()
                        if self.on_change is not None:
                            self.on_change(self.index)
        finally:
            await consumer.stop()


class VerdictApi:
    """The episode and verdict routes of a :class:`streams.api.server.ControlPlane` (``cp``)."""

    def __init__(self, cp: Any) -> None:
        self.cp = cp
        topics = cp.settings.topics()
        counts = cp.processor.counts
        self.verdicts_topic = topics["verdicts"]
        self.verdicts_partitions = counts[topics["verdicts"]]
        metrics = getattr(cp.processor, "metrics", None)
        self.feed = EpisodeFeed(cp.settings, topics["alerts"], counts[topics["alerts"]], keys=cp.keys,
                                on_change=(lambda idx: metrics.set_episodes_open(idx.open_count))
                                if metrics is not None else None)

    def routes(self) -> list:
        from streams.api.server import Route

        return [
            Route("GET", "/v1/episodes", "episodes", "read", self.h_episodes),
            Route("POST", "/v1/episodes/{episode_id}/verdict", "verdict", "feedback", self.h_verdict,
                  act="verdict", body_limit=openapi.MAX_BODY, parse=self.p_verdict),
        ]

    def mount(self) -> None:
        feed = self.feed

        @self.cp.app.task
        async def episode_feed() -> None:
            await feed.run()

    # ------------------------------------------------------------------ publishing
    async def publish(self, principal: Any, *, agent_id: str, target: str, verdict: str, reason: str,
                      at: float) -> dict:
        """Sign ``verdict`` and publish it on ``agent-verdicts`` (key ``agent_id``); the signed record."""
        v = verdict_records.new_verdict(agent_id=agent_id, target=target, verdict=verdict, by=principal.name,
                                        reason=reason, at=at)
        rec = verdict_records.sign(self.cp.keys, v)
        key = agent_id.encode()
        fut = await self.cp.app.producer.send(self.verdicts_topic, key, _encode(rec).encode(),
                                              (murmur2(key) & 0x7FFFFFFF) % self.verdicts_partitions, None, None)
        await fut
        return rec

    async def on_release(self, ctx: Any, agent: str, incident_id: str, at: float) -> dict | None:
        """A release that carries a verdict: publish it on the incident (after the release is published)."""
        kind = ctx.body.get("verdict")
        if kind is None:
            return None
        return await self.publish(ctx.principal, agent_id=agent, target=incident_id, verdict=kind,
                                  reason=ctx.body["reason"], at=at)

    # ------------------------------------------------------------------ routes
    def p_verdict(self, ctx: Any) -> None:
        from streams.api.server import ControlPlane, _choice, _only, _reason

        body = ControlPlane._json_body(ctx)
        _only(body, ("verdict", "reason"))
        ctx.reason = _reason(body)
        ctx.body = {"verdict": _choice(body.get("verdict"), "verdict", verdict_records.KINDS),
                    "reason": ctx.reason}

    async def h_episodes(self, ctx: Any):
        from streams.api.server import ApiError, _ident, _int_query, _json

        q = ctx.request.query
        state = q.get("state")
        if state is not None and state not in ("open", "closed"):
            raise ApiError(400, "invalid_query", "state: open or closed")
        agent = q.get("agent_id")
        if agent is not None:
            _ident(agent, "agent_id")
        limit = _int_query(ctx.request, "limit", 100, 1, openapi.MAX_LIMIT)
        self._require_feed()
        items = self.feed.index.listing(state, agent_id=agent, limit=limit)
        return _json({"state": state, "count": len(items), "open": self.feed.index.open_count,
                      "episodes": items})

    async def h_verdict(self, ctx: Any):
        from streams.api.server import ApiError, _json

        eid = ctx.params["episode_id"]
        ctx.target["episode_id"] = eid
        self._require_feed()
        episode = self.feed.index.get(eid)
        if episode is None:
            raise ApiError(404, "unknown_episode", "no such alert episode (or older than this worker's index keeps)")
        agent = episode["agent_id"]
        ctx.target["agent_id"] = agent
        p = ctx.principal
        now = time.time()
        rec = await self.publish(p, agent_id=agent, target=eid, verdict=ctx.body["verdict"],
                                 reason=ctx.body["reason"], at=now)
        await self.cp._audit(record(who=p.name, role=p.role, what="verdict", why=ctx.body["reason"], result="ok",
                                    status=200, at_ms=int(now * 1000), agent_id=agent,
                                    detail=f"{ctx.body['verdict']} on episode {eid} ({rec['verdict_id']})",
                                    worker=self.cp.url))
        return _json({"episode_id": eid, "agent_id": agent, "verdict": rec["verdict"],
                      "verdict_id": rec["verdict_id"], "by": rec["by"], "at": rec["at"], "published": True})

    def _require_feed(self) -> None:
        from streams.api.server import ApiError

        if not self.feed.caught_up.is_set():
            raise ApiError(503, "starting", "this worker is still reading agent-alerts; retry", retry_after=1)
