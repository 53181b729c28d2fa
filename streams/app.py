"""The faust app: the stream shell around :class:`detector.engine.Engine`.

``create_app(settings, engine)`` builds a faust app with two agents and one table:

* ``agent-actions`` (raw bytes) is read in batches (``stream.take_events``). Each
  message is decoded with :func:`detector.events.decode_event`; an invalid one
  goes to ``agent-actions-dlq`` (``docs/interfaces.md``) and processing goes on.
  Valid events go through :meth:`Engine.process_batch` (decisions do not depend
  on how events are batched), and the processor publishes what the engine
  returns: decision records to ``agent-decisions`` (key ``agent_id``, encoded
  with the same encoder as ``flowbreaker replay``, so the bytes are identical),
  freeze commands to ``agent-control`` (key ``agent_id``) and incident records to
  ``agent-incidents`` (key ``incident_id``).
* ``agent-control`` (co-partitioned with the actions) is read for ``release``
  commands issued by humans (``issued_by`` other than ``flowbreaker``), applied
  with :meth:`Engine.release` and written to the table at once.
* the table ``agent-state`` (changelog topic ``<app id>-agent-state-changelog``)
  maps ``agent_id`` to an envelope around ``Engine.dump_agent``: the source
  partition and offset of the last event folded into the state, the state, and
  the agent's outbox (freeze and incident records decided but not yet confirmed
  published).

Delivery: at-least-once, effects idempotent
--------------------------------------------
Four rules keep a crash (kill -9 at any instruction) or a rebalance from losing
or doubling anything:

1. *An offset is acknowledged only once the event is durable.* The processor
   holds each message (``incref``) past ``take_events``' own ack and acks it
   only after (a) its decision, or its DLQ record, was acknowledged by the broker
   and (b) its agent's state including it was written to the changelog and
   acknowledged. faust commits only acknowledged offsets, so the committed
   offset never gets ahead of the durable state.
2. *The state knows which events it holds.* The envelope carries the offset of
   the last event the state includes. After a restart or a rebalance, Kafka
   redelivers from the committed offset; an event at or below the agent's
   stored offset was already scored and published and is skipped. Every other
   event is scored from exactly the state it was first scored from, so a
   redelivered event gets a byte-identical decision record: duplicates in
   ``agent-decisions`` are possible, different records for one event are not.
3. *A freeze is recorded before it is acted on.* On a batch where a breaker
   opens, the processor waits for the batch's decisions, then writes the states
   with the freeze (and its incident record) in the agent's outbox, waits for
   that write, and only then publishes the freeze. The breaker is open in the
   table, so no restarted worker trips again for that incident. A publication
   confirmed by the broker leaves the outbox with the next state write. An
   agent loaded with a non-empty outbox (the worker died between the write and
   the confirmation) has its records looked up on their topic partition (from
   the recorded time on) and republished only if missing: no freeze is lost,
   none is sent twice.
4. *Per partition, strictly in offset order, from the committed offset.* faust
   may hand a stream messages fetched before a partition's state was recovered,
   messages it already delivered, and, around rebalances, drop a message and
   deliver the next ones (it expects a later seek to bring the dropped one
   back). The processor starts each partition at its committed offset once its
   changelog is recovered, processes only the next expected offset, drops
   (never acks) anything else, and seeks the partition back to the first
   missing offset when it sees a gap, or when the partition's log end is past
   that offset and nothing arrived for 2 s (the dropped message was the last).

What is written when
--------------------
A changed agent's state is written at most once per flush, when it has
``flush_events`` (K) unwritten events or its oldest unwritten change is
``flush_interval`` (T) seconds old, and at once for every breaker opening and
every release: at most one write per agent per T seconds (or per K events). A
hot agent at 1,000 events/s with K=1000 writes once a second, not a thousand
times; an agent acting once a minute writes once a minute. While faust
rebalances or stops, every tick writes all changed agents so partitions are
handed over promptly. Outputs and state writes go straight to the aiokafka
producer in per-partition batches (faust's ``send_soon`` buffer throttles every
stream while it holds more than 100 messages).

Store: ``memory://``. The per-agent state is small (~2 KB) and the changelog
is compacted, so rebuilding a partition's table on assignment means reading one
message per agent (100,000 agents: ~200 MB, seconds); nothing local can go stale
or corrupt after kill -9, and there is no native dependency. The processor
writes the changelog itself, outside faust's event context (from its flusher),
which faust's RocksDB store would not support (it picks its column family from
the current event). The in-memory store holds only the agents that *rest*:
quiet for ``rest_after`` seconds, their state deflated there, their live state
dropped (``streams/residency.py``); an agent that acts is *resident*, its live
state in the engine and nothing in the store.

What a record becomes before the engine sees it (a dead letter, a re-route to
its agent's home partition, or an event to decide) is ``streams/intake.py``.

Scale-out: any number of workers in one consumer group share the partitions;
the table's changelog partitions follow their ``agent-actions`` partitions, so a
worker that takes over a partition first rebuilds its agents' states from the
changelog, then resumes from the committed offset.
"""

from __future__ import annotations

import asyncio
import base64
import gc
import logging
import time
from collections import defaultdict
from datetime import datetime
from typing import Any

import faust
import msgspec
from aiokafka.partitioner import murmur2

from detector.engine import Engine
from detector.events import EventError
from streams.drift_monitor import DriftMonitor
from streams.intake import REROUTED_HEADER, MiskeyLog, admit, home_partition, key_problem, reference_time
from streams.residency import Residency, pack_state, unpack_state
from streams.settings import Settings

__all__ = ["create_app", "Processor", "TABLE", "pack_state", "unpack_state", "dlq_record"]

log = logging.getLogger("flowbreaker.worker")

TABLE = "agent-state"
#: DLQ copies at most this much of an invalid message (base64 of a 1 MB message would not fit in one)
DLQ_RAW_MAX = 256 * 1024
#: how far before an outbox write the lookup of its publication starts (clock skew between hosts)
RECONCILE_MARGIN_MS = 60_000

_encode = msgspec.json.Encoder().encode  # the same encoder as streams/replay.py: byte-identical records
_decode_json = msgspec.json.decode


def dlq_record(raw: bytes | None, err: EventError, topic: str, partition: int, offset: int) -> bytes:
    """The dead-letter message for an invalid event (format in docs/interfaces.md).

    >>> rec = msgspec.json.decode(dlq_record(b"\\xff", EventError("encoding", "", "message is not valid UTF-8"),
    ...                                       "agent-actions", 2, 7))
    >>> rec["code"], rec["raw"], rec["raw_encoding"], rec["source"]
    ('encoding', '/w==', 'base64', {'topic': 'agent-actions', 'partition': 2, 'offset': 7})
    """
    data = raw or b""
    size = len(data)
    truncated = size > DLQ_RAW_MAX
    if truncated:
        data = data[:DLQ_RAW_MAX]
    try:
        text, encoding = data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        if truncated and _is_utf8_prefix(data):  # valid text whose last character the cut split
            text, encoding = data.decode("utf-8", errors="ignore"), "utf-8"
        else:
            text, encoding = base64.b64encode(data).decode("ascii"), "base64"
    rec: dict[str, Any] = {"reason": str(err), "code": err.code, "field": err.field, "raw": text,
                           "raw_encoding": encoding,
                           "source": {"topic": topic, "partition": partition, "offset": offset}}
    if truncated:
        rec["raw_truncated"] = True
        rec["raw_size"] = size
    return _encode(rec)


def _is_utf8_prefix(data: bytes) -> bool:
    """True if ``data`` is valid UTF-8 except for a character cut at its end."""
    for cut in range(0, 4):
        try:
            data[: len(data) - cut].decode("utf-8")
            return True
        except UnicodeDecodeError:
            continue
    return False


# ---------------------------------------------------------------------- the processor
class Processor:
    """The per-worker loop around the engine; see the module docstring for the rules it keeps."""

    def __init__(self, app: faust.App, engine: Engine, settings: Settings, *, partition_counts: dict[str, int],
                 metrics: Any = None) -> None:
        self.app = app
        self.engine = engine
        self.settings = settings
        self.metrics = metrics
        #: a model handed over by the model follower, swapped in before the next batch
        self.pending_model = None
        #: live feature drift against the model's training data (streams/drift_monitor.py)
        self.drift = DriftMonitor(engine.model) if metrics is not None and engine.model is not None else None
        self._drift_at = 0.0
        self.topics = settings.topics()
        self.counts = partition_counts               # topic name -> partitions
        self.n_actions = partition_counts[self.topics["actions"]]
        self.table: Any = None
        # resident agents (streams/residency.py): live state in the engine; idle ones rest in the table
        self.residency = Residency(engine, None, partitions=self.n_actions, rest_after=settings.rest_after)
        self.outbox: dict[str, list] = {}            # unconfirmed freeze / incident publications
        self.frozen: dict[str, str] = {}             # agents with an open breaker -> incident id
        # write-behind bookkeeping
        self.dirty: dict[str, list] = {}             # agent -> [monotonic time of first unwritten change, n events]
        self.held: dict[str, list] = defaultdict(list)  # agent -> events to ack once its state is written
        self.held_free: list = []                    # events to ack once outputs are durable (DLQ, skipped)
        self.last_out: dict[tuple[str, int], asyncio.Future] = {}
        self.send_error: BaseException | None = None
        self.position: dict[int, int] = {}           # actions partition -> last processed offset
        self.expect: dict[int, int] = {}             # owned, recovered partition -> next offset to process
        self.sought: dict[int, tuple[int, float]] = {}  # partition -> (offset, monotonic time) of our last seek
        self.progress: dict[int, float] = {}         # partition -> monotonic time it last moved (or started)
        self.assigned: list[int] = []
        self.generation = 0
        self.ready = False
        self.stats = dict(events=0, decisions=0, dlq=0, skipped=0, duplicates=0, freezes=0, releases=0,
                          state_writes=0, flushes=0, reconciled=0, republished=0, not_ready=0, redelivered=0,
                          gaps=0, miskeyed=0, rerouted=0)
        self.miskey_log = MiskeyLog()
        self._lock: asyncio.Lock | None = None
        self._idle: asyncio.Event | None = None
        self._topk_at = 0.0
        self._tasks: set[asyncio.Future] = set()

    # ------------------------------------------------------------------ helpers
    def _partition_for(self, logical: str, key: bytes, source_partition: int | None) -> int:
        """Same partition number as the source when the topic has as many partitions (co-partitioned,
        the same as the default key partitioner gives for keys partitioned by it); murmur2 otherwise."""
        n = self.counts[self.topics[logical]]
        if source_partition is not None and n == self.n_actions:
            return source_partition
        return (murmur2(key) & 0x7FFFFFFF) % n

    def _on_sent(self, fut: asyncio.Future) -> None:
        if fut.cancelled():
            self.send_error = self.send_error or asyncio.CancelledError()
        elif fut.exception() is not None:
            self.send_error = self.send_error or fut.exception()
            log.error("publishing failed: %r", fut.exception())

    def _sync(self) -> tuple[asyncio.Lock, asyncio.Event]:
        if self._lock is None:
            self._lock = asyncio.Lock()
            self._idle = asyncio.Event()
            self._idle.set()
        return self._lock, self._idle  # type: ignore[return-value]

    async def _send_batches(self, out: dict[tuple[str, int], list[tuple[bytes, bytes]]],
                            track: bool = True) -> list[asyncio.Future]:
        """Publish records grouped by (topic, partition) as producer batches (the fast path); return the
        future of each partition's last batch (a partition's batches complete in order)."""
        producer = self.app.producer._ensure_producer()  # the aiokafka producer: its batch API
        lasts = []
        for (topic, partition), records in out.items():
            batch = producer.create_batch()
            for key, value, *headers in records:  # (key, value) or (key, value, headers)
                hdrs = headers[0] if headers else []
                if batch.append(key=key, value=value, timestamp=None, headers=hdrs) is None:
                    fut = await producer.send_batch(batch, topic, partition=partition)
                    fut.add_done_callback(self._on_sent)
                    batch = producer.create_batch()
                    if batch.append(key=key, value=value, timestamp=None, headers=hdrs) is None:
                        raise ValueError(f"a record of {len(value)} bytes does not fit in a producer batch")
            fut = await producer.send_batch(batch, topic, partition=partition)
            fut.add_done_callback(self._on_sent)
            lasts.append(fut)
            if track:
                self.last_out[(topic, partition)] = fut
        return lasts

    async def _publish_one(self, logical: str, partition: int, key: str, value: bytes) -> asyncio.Future:
        fut = await self.app.producer.send(self.topics[logical], key.encode(), value, partition, None, None)
        fut.add_done_callback(self._on_sent)
        return fut

    # ------------------------------------------------------------------ loading and forgetting
    @property
    def part(self) -> dict[str, int]:
        """Resident agent -> its home partition."""
        return self.residency.home

    @property
    def applied(self) -> dict[str, int]:
        """Resident agent -> offset of the last event its state includes."""
        return self.residency.cursor

    def attach_table(self, table) -> None:
        """The ``agent-state`` table: its in-memory store holds the resting agents."""
        self.table = table
        self.residency.store = table.data

    def _load(self, agent: str, partition: int | None = None) -> None:
        """Make an agent resident, from the table. Its events and its state's changelog record live on
        its home partition (streams/intake.py), whatever partition the record that named it came from."""
        outbox = self.residency.load(agent)
        if outbox:
            self.outbox[agent] = [list(e) for e in outbox]
            self._spawn(self._reconcile(agent, [list(e) for e in outbox]))
        st = self.engine.agents.get(agent)
        if st is not None and st.breaker.state == "open":
            self.frozen[agent] = st.breaker.incident_id or ""
            if self.metrics is not None:
                self.metrics.set_frozen(self.frozen)

    def forget_partitions(self, partitions: set[int]) -> None:
        """Drop in-memory agents of partitions this worker no longer owns (their state is in the table)."""
        gone = [a for a, p in self.part.items() if p in partitions]
        for agent in gone:
            if agent in self.dirty:  # not written: its events stay unacked and are redelivered elsewhere
                log.warning("agent %s revoked with unwritten changes; its events will be redelivered", agent)
                self.dirty.pop(agent, None)
                self.held.pop(agent, None)
            self.engine.agents.pop(agent, None)
            self.residency.forget(agent)
            for d in (self.outbox, self.frozen):
                d.pop(agent, None)
        self.residency.drop_partitions(partitions)  # resting agents of those partitions
        for agent in [a for a in self.frozen if home_partition(a, self.n_actions) in partitions]:
            del self.frozen[agent]  # resting frozen agents
        for p in partitions:
            self.position.pop(p, None)
            self.expect.pop(p, None)
            self.sought.pop(p, None)
            self.progress.pop(p, None)
        if gone and self.metrics is not None:
            self.metrics.set_frozen(self.frozen)

    def _spawn(self, coro) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ------------------------------------------------------------------ the hot path
    async def on_batch(self, events: list) -> None:
        """Decode, score and publish one batch of ``agent-actions`` events."""
        pending = self.pending_model
        if pending is not None:  # a promoted model: switch between batches (streams/model_follow.py)
            self.pending_model = None
            self.engine.swap_model(pending)
            if self.metrics is not None:
                self.drift = DriftMonitor(pending)
            if self.metrics is not None:
                card = getattr(pending, "card", {}) or {}
                self.metrics.set_model(pending.version, card.get("trained_at")
                                       or (card.get("training_window") or {}).get("until"))
            log.warning("model switched to %s", pending.version)
        lock, idle = self._sync()
        if self.send_error is not None:
            raise RuntimeError(f"publishing failed earlier: {self.send_error!r}")
        idle.clear()
        freezes: list = []
        try:
            freezes = await self._score_and_send(events)
        finally:
            idle.set()
        if freezes:
            await self._freeze(freezes)

    async def _score_and_send(self, events: list) -> list:
        topic_actions = self.topics["actions"]
        metrics = self.metrics
        valid, metas = [], []
        out: dict[tuple[str, int], list[tuple[bytes, bytes]]] = defaultdict(list)
        free = []
        expect = self.expect
        unacked = getattr(self.app.consumer, "_unacked_messages", set())
        mono0 = time.monotonic()
        wall = time.time()
        max_skew = self.settings.max_clock_skew
        gaps: dict[int, int] = {}
        dropped = 0
        for e in events:
            msg = e.message
            msg.incref()  # ours: acked once durable (rule 1), never by take_events
            p, off = msg.partition, msg.offset
            nxt = expect.get(p)
            if nxt is None or off != nxt:
                # rule 4: strictly in offset order per partition, from the committed offset on. A message
                # faust delivers before the partition's state is recovered, again after we had it, or after
                # one it dropped (it drops messages that arrive while it rebalances) is not processed and
                # never acked; a gap makes us seek back to the first missing offset.
                if nxt is None:
                    self.stats["not_ready"] += 1
                elif off < nxt:
                    self.stats["redelivered"] += 1
                else:
                    gaps.setdefault(p, nxt)
                # not acked, and not waited for either: faust's rebalance and stop wait for every message
                # a stream has seen to be acked (it is processed, and acked, when it comes again)
                unacked.discard(msg)
                dropped += 1
                continue
            expect[p] = off + 1
            self.position[p] = off
            self.progress[p] = mono0
            try:  # streams/intake.py: a dead letter, a re-route, or an event to decide
                ev = admit(msg.value, reference=reference_time(msg.timestamp, msg.timestamp_type, wall),
                           max_skew=max_skew)
            except EventError as err:
                dp = self._partition_for("dlq", msg.key or b"", msg.partition)
                out[(self.topics["dlq"], dp)].append(
                    (msg.key, dlq_record(msg.value, err, topic_actions, msg.partition, msg.offset)))
                free.append(e)
                self.stats["dlq"] += 1
                if metrics is not None:
                    metrics.dlq(err.code)
                continue
            agent = ev.agent_id
            home = self.part.get(agent)
            if home is None:
                home = home_partition(agent, self.n_actions)
            problem = key_problem(msg.key, agent)
            if home != p:  # never decided off its agent's home partition: copied there, decided there
                out[(topic_actions, home)].append(
                    (agent.encode("utf-8"), msg.value, [(REROUTED_HEADER, f"{topic_actions}/{p}/{off}".encode())]))
                free.append(e)
                self._miskeyed(problem or "wrong_partition", agent, p, off, home, True)
                continue
            if problem is not None:
                self._miskeyed(problem, agent, p, off, home, False)
            if ev.approval_id is not None and self.approval_check is not None:
                ev = self.approval_check(ev)  # an approval_id that does not cover the action signs nothing off
            if agent not in self.part:
                self._load(agent)
            if msg.offset <= self.applied[agent] and msg.partition == self.part[agent]:
                free.append(e)  # rule 2: already in the state, already decided
                self.stats["skipped"] += 1
                continue
            valid.append(ev)
            metas.append(e)
        decisions = self.engine.process_batch(valid) if valid else []
        if self.drift is not None and decisions:
            self.drift.add([d.x for d in decisions if d.x is not None])
        now = time.time()
        mono = time.monotonic()
        topic_decisions = self.topics["decisions"]
        same = self.counts[topic_decisions] == self.n_actions
        freezes = []
        touched: list[tuple[str, Any]] = []
        for d, e in zip(decisions, metas):
            ev = d.event
            agent = ev.agent_id
            msg = e.message
            self.applied[agent] = msg.offset
            touched.append((agent, e))
            if d.duplicate:
                self.stats["duplicates"] += 1
                if metrics is not None:
                    metrics.duplicate()
                continue
            key = agent.encode()
            p = msg.partition if same else self._partition_for("decisions", key, msg.partition)
            out[(topic_decisions, p)].append((key, _encode(d.record)))
            if metrics is not None:
                metrics.observe(ev, d, now - ev.t)
            if d.transition is not None:
                old, new = d.transition
                if new == "open":
                    self.frozen[agent] = (d.freeze or {}).get("incident_id") or self.frozen.get(agent, "")
                elif old == "open":
                    self.frozen.pop(agent, None)
            if d.freeze is not None:
                freezes.append((d, msg.partition))
        if gaps:
            await self._seek_back(gaps)
        self.stats["events"] += len(events) - dropped
        self.stats["decisions"] += len(decisions) - sum(1 for d in decisions if d.duplicate)
        if out:
            await self._send_batches(out)
        # bookkeeping only once every output of the batch is queued: a flush that snapshots these agents
        # must find all their decisions among the futures it waits for
        seen = self.residency.seen
        for agent, e in touched:
            seen[agent] = mono
            self.held[agent].append(e)
            dirty = self.dirty.get(agent)
            if dirty is None:
                self.dirty[agent] = [mono, 1]
            else:
                dirty[1] += 1
        self.held_free.extend(free)
        return freezes

    def _miskeyed(self, reason: str, agent: str, partition: int, offset: int, home: int, rerouted: bool) -> None:
        self.stats["miskeyed"] += 1
        if rerouted:
            self.stats["rerouted"] += 1
        if self.metrics is not None:
            self.metrics.miskeyed(reason, rerouted)
        self.miskey_log.note(reason, agent, self.topics["actions"], partition, offset, home, rerouted)

    async def _seek_back(self, gaps: dict[int, int]) -> None:
        from faust.types import TP

        now = time.monotonic()
        for p, offset in gaps.items():
            last = self.sought.get(p)
            if last is not None and last[0] == offset and now - last[1] < 2.0:
                continue  # already on its way back; later messages of the old position still drain
            self.stats["gaps"] += 1
            log.warning("partition %d: message at offset %d missing from the stream; seeking back to it", p, offset)
            self.sought[p] = (offset, now)
            await self.app.consumer.seek(TP(self.topics["actions"], p), offset)

    async def watch_partitions(self, stall: float = 2.0) -> None:
        """Rule 4 when the dropped message is the last one there is: a partition whose log end is past the
        next offset we expect, without progress for ``stall`` seconds, is sought back to that offset."""
        from faust.types import TP

        consumer = self.app.consumer
        now = time.monotonic()
        stalled = {}
        try:
            owned = set(consumer.assignment())
            for p, nxt in list(self.expect.items()):
                tp = TP(self.topics["actions"], p)
                if tp not in owned or now - self.progress.get(p, now) < stall:
                    continue
                hw = consumer.highwater(tp)
                if hw is not None and hw > nxt:
                    stalled[p] = nxt
        except (AssertionError, KeyError, RuntimeError) as exc:  # mid-rebalance: next time
            log.debug("partition watch skipped: %r", exc)
            return
        if stalled:
            for p in stalled:
                self.progress[p] = now
            await self._seek_back(stalled)

    async def start_partitions(self, partitions: list[int]) -> None:
        """Partitions recovered and about to be resumed: process each from its committed offset on."""
        offsets = await asyncio.get_running_loop().run_in_executor(None, self._start_offsets, partitions)
        self.expect = offsets
        self.residency.schedule_compaction()  # faust refilled the table from the changelog: deflate idle agents
        self.sought.clear()
        now = time.monotonic()
        self.progress = {p: now for p in offsets}

    def _start_offsets(self, partitions: list[int]) -> dict[int, int]:
        """Committed offset of each partition for this group (log start when none), from the broker."""
        from kafka import TopicPartition
        from kafka.admin import KafkaAdminClient
        from kafka.protocol.consumer.offsets import OffsetSpec

        if not partitions:
            return {}
        topic = self.topics["actions"]
        tps = [TopicPartition(topic, p) for p in partitions]
        admin = KafkaAdminClient(client_id=f"{self.settings.app_id}-offsets", request_timeout_ms=15000,
                                 bootstrap_timeout_ms=15000, **self.settings.kafka_python_config())
        try:
            committed = admin.list_group_offsets({self.settings.app_id: tps}).get(self.settings.app_id, {})
            out = {tp.partition: committed[tp].offset for tp in tps
                   if tp in committed and committed[tp].offset is not None and committed[tp].offset >= 0}
            missing = [tp for tp in tps if tp.partition not in out]
            if missing:
                earliest = admin.list_partition_offsets({tp: OffsetSpec.EARLIEST for tp in missing})
                out.update({tp.partition: earliest[tp].offset for tp in missing})
            return out
        finally:
            admin.close()

    async def _freeze(self, freezes: list) -> None:
        """Rule 3: outbox and open breaker durable in the table, then publish."""
        now_ms = int(time.time() * 1000)
        pending = []
        for d, partition in freezes:
            agent = d.freeze["agent_id"]  # a manual freeze (streams/api.py) has no event
            incident_id = d.freeze["incident_id"]
            freeze = _encode(self.sign(d.freeze))  # signed (streams/signing.py): guards verify it
            incident = _encode(d.incident)
            entries = [
                ["incident", "incidents", self._partition_for("incidents", incident_id.encode(), None),
                 incident_id, incident, incident_id, now_ms],
                ["freeze", "control", self._partition_for("control", agent.encode(), partition),
                 agent, freeze, incident_id, now_ms],
            ]
            if "audit" in self.topics and self.topics["audit"] in self.counts:  # every freeze is audited
                from streams.api.audit_trail import freeze_entry

                entries.append(["audit-freeze", "audit", self._partition_for("audit", agent.encode(), None), agent,
                                freeze_entry(d.freeze, d.incident, now_ms, self.worker_url), incident_id, now_ms])
            self.outbox.setdefault(agent, []).extend(entries)
            pending.append((agent, entries))
            if agent not in self.dirty:
                self.dirty[agent] = [time.monotonic(), 0]
        await self.flush(force=True)
        for agent, entries in pending:
            for entry in entries:
                await self._publish_entry(agent, entry)
            self.stats["freezes"] += 1

    # ------------------------------------------------------------------ manual acts (streams/api.py)
    worker_url: str | None = None
    #: the command signing keys (streams/signing.py) and the control-side counters, set by streams/api.py
    keys = None
    control_metrics = None

    def sign(self, command: dict) -> dict:
        """``command`` with its signature (unchanged when this worker has no signing key: no API mounted)."""
        return self.keys.sign(command) if self.keys is not None and self.keys.can_sign else command
    #: ``ev -> ev`` for events carrying an ``approval_id`` (streams/api.py: drops ids that do not cover them)
    approval_check = None

    def agent_state(self, agent: str, partition: int):
        """The agent's engine state on the worker that owns it, loaded from the table if needed; None if unknown."""
        if agent not in self.engine.agents and agent not in self.part and self.table is not None \
                and self.table.data.get(agent) is not None:
            self._load(agent)
        return self.engine.agents.get(agent)

    async def apply_manual_freeze(self, d, partition: int, worker: str | None = None) -> None:
        """A freeze by a human (``Engine.freeze_manual``): the automatic freeze's path (rule 3)."""
        agent = d.freeze["agent_id"]
        self.worker_url = worker or self.worker_url
        self.frozen[agent] = d.freeze["incident_id"]
        if self.metrics is not None:
            self.metrics.set_frozen(self.frozen)
        await self._freeze([(d, partition)])

    async def apply_manual_release(self, agent: str, command: dict, audit: bytes) -> None:
        """A release by a human, already applied to the engine: state, release command and audit record in the
        table first (rule 3), then published."""
        now_ms = int(time.time() * 1000)
        incident_id = command.get("incident_id") or ""
        entries = [["release", "control", self._partition_for("control", agent.encode(), self.part.get(agent)),
                    agent, _encode(self.sign(command)), incident_id, now_ms]]
        if "audit" in self.topics and self.topics["audit"] in self.counts:
            entries.append(["audit-release", "audit", self._partition_for("audit", agent.encode(), None), agent,
                            audit, incident_id, now_ms])
        self.stats["releases"] += 1
        self.frozen.pop(agent, None)
        if self.metrics is not None:
            self.metrics.release(agent)
        self.outbox.setdefault(agent, []).extend(entries)
        if agent not in self.dirty:
            self.dirty[agent] = [time.monotonic(), 0]
        await self.flush(force=True)
        for entry in entries:
            await self._publish_entry(agent, entry)

    def published(self, agent: str, incident_id: str) -> bool:
        """No publication of this incident is waiting in the agent's outbox."""
        return not any(e[5] == incident_id for e in self.outbox.get(agent, ()))

    def outbox_incident(self, agent: str, incident_id: str) -> dict | None:
        """Severity and author of an incident not yet confirmed published (for the two-person rule)."""
        for e in self.outbox.get(agent, ()):
            if e[0] == "incident" and e[5] == incident_id:
                rec = _decode_json(e[4])
                return {"severity": rec.get("severity"), "frozen_by": rec.get("frozen_by") or "flowbreaker"}
        return None

    async def _publish_entry(self, agent: str, entry: list) -> None:
        kind, logical, partition, key, value, incident_id, _ = entry
        fut = await self._publish_one(logical, partition, key, value)
        fut.add_done_callback(lambda f, a=agent, i=incident_id, k=kind:
                              None if f.cancelled() or f.exception() else self._confirm(a, i, k))

    def _confirm(self, agent: str, incident_id: str, kind: str) -> None:
        """A publication of the outbox is on its topic: drop it from the outbox with the next write."""
        box = self.outbox.get(agent)
        if not box:
            return
        left = [e for e in box if not (e[0] == kind and e[5] == incident_id)]
        if len(left) == len(box):
            return
        if left:
            self.outbox[agent] = left
        else:
            del self.outbox[agent]
        if agent not in self.dirty and agent in self.part:
            self.dirty[agent] = [time.monotonic(), 0]

    async def _reconcile(self, agent: str, entries: list) -> None:
        """After a crash between an outbox write and its confirmation: publish what is not on its topic."""
        from aiokafka import AIOKafkaConsumer, TopicPartition

        consumer = AIOKafkaConsumer(client_id=f"{self.settings.app_id}-reconcile", group_id=None,
                                    enable_auto_commit=False, **self.settings.aiokafka_config())
        await consumer.start()
        try:
            for entry in entries:
                kind, logical, partition, key, value, incident_id, recorded_ms = entry
                tp = TopicPartition(self.topics[logical], partition)
                consumer.assign([tp])
                found = False
                start = (await consumer.offsets_for_times({tp: max(0, recorded_ms - RECONCILE_MARGIN_MS)}))[tp]
                end = (await consumer.end_offsets([tp]))[tp]
                if start is not None:
                    consumer.seek(tp, start.offset)
                    while not found and await consumer.position(tp) < end:
                        got = await consumer.getmany(tp, timeout_ms=1000, max_records=1000)
                        found = any(m.value == value for m in got.get(tp, ()))
                self.stats["reconciled"] += 1
                if found:
                    self._confirm(agent, incident_id, kind)
                else:
                    log.warning("republishing %s of incident %s (not found on %s)", kind, incident_id, tp)
                    self.stats["republished"] += 1
                    if agent in self.part:
                        await self._publish_entry(agent, entry)
        except Exception as exc:  # the outbox stays: the next owner of the agent tries again
            log.error("reconciling the outbox of %s failed: %r", agent, exc)
        finally:
            await consumer.stop()

    # ------------------------------------------------------------------ control commands
    async def on_control(self, event) -> None:
        """A record on ``agent-control``: apply a human release that is signed (streams/signing.py) and names
        the agent's open incident; note our own signed freezes as published. Anything else (a record that is
        not a command, an unsigned or forged release, a release of another incident) is counted and skipped:
        no record can stop this agent."""
        from streams.clients.commands import RecordError, decode_command

        msg = event.message
        try:
            cmd = decode_command(msg.value)
        except RecordError as err:
            self.stats["control_rejected"] = self.stats.get("control_rejected", 0) + 1
            if self.control_metrics is not None:
                self.control_metrics.reject("control", err.reason)
            _control_log(msg.topic, msg.partition, msg.offset, err)
            return
        verdict = self.keys.verify(msgspec.structs.asdict(cmd)) if self.keys is not None else "unsigned"
        agent = cmd.agent_id
        if cmd.command == "freeze":
            if verdict == "ok" and cmd.issued_by == "flowbreaker" and cmd.incident_id:
                self._confirm(agent, cmd.incident_id, "freeze")
            if verdict != "ok":  # not ours: the owner's breaker knows nothing of it (guards hold the agent)
                self._count_control("freeze_ignored", verdict)
            return
        if verdict != "ok":
            self._count_control("release_unverified", verdict)
            _control_log(msg.topic, msg.partition, msg.offset,
                         f"release of {agent!r} (incident {cmd.incident_id!r}, by {cmd.issued_by!r}) ignored: "
                         f"signature {verdict}")
            return
        if agent not in self.part:
            if self.table is None or self.table.data.get(agent) is None \
                    or home_partition(agent, self.n_actions) not in self.expect:  # not this worker's agent
                log.info("release of %s ignored: no state for this agent on this worker", agent)
                return
            self._load(agent)
        st = self.engine.agents.get(agent)
        if st is None:
            return
        b = st.breaker
        if not cmd.incident_id or cmd.incident_id != b.incident_id or b.state != "open":
            own = cmd.incident_id == b.incident_id and b.state != "open"  # ours (the API released it) or a copy
            self._count_control("repeat" if own else "release_stale", verdict)
            if not own:
                _control_log(msg.topic, msg.partition, msg.offset,
                             f"release of {agent!r} for incident {cmd.incident_id!r} ignored: the breaker is "
                             f"{b.state} with incident {b.incident_id!r}")
            return
        by = cmd.issued_by or "unknown"
        at = _parse_time(cmd.issued_at) or (msg.timestamp or time.time())
        if self.engine.release(agent, at=at, by=by, reason=cmd.reason or "") is None:
            return
        self._count_control("released", verdict)
        self.stats["releases"] += 1
        self.frozen.pop(agent, None)
        if self.metrics is not None:
            self.metrics.release(agent)
        if agent not in self.dirty:
            self.dirty[agent] = [time.monotonic(), 0]
        await self.flush(force=True)  # written before the command's offset is committed
        log.info("released %s (by %s)", agent, by)

    def _count_control(self, outcome: str, verdict: str) -> None:
        if outcome in ("release_unverified", "release_stale"):
            self.stats["releases_ignored"] = self.stats.get("releases_ignored", 0) + 1
        if self.control_metrics is not None:
            self.control_metrics.command("worker", outcome, verdict)

    # ------------------------------------------------------------------ write-behind
    async def flush(self, force: bool = False) -> int:
        """Write due agents (all changed ones with ``force``) and ack what became durable."""
        lock, idle = self._sync()
        async with lock:
            while not idle.is_set():  # never snapshot a batch half-published
                await idle.wait()
            mono = time.monotonic()
            T, K = self.settings.flush_interval, self.settings.flush_events
            due = [a for a, (t0, n) in self.dirty.items() if force or n >= K or mono - t0 >= T]
            to_ack, self.held_free = self.held_free, []
            if not due and not to_ack:
                return 0
            now_ms = int(time.time() * 1000)
            writes = []
            for agent in due:
                del self.dirty[agent]
                to_ack.extend(self.held.pop(agent, ()))
                state = self.engine.dump_agent(agent)
                if state is None or agent not in self.part:
                    continue
                p = self.part[agent]
                writes.append((agent, p, pack_state(p, self.applied[agent], state, self.outbox.get(agent, ()),
                                                    now_ms)))
            # rule 1: the decisions of everything in these states are on the broker first ...
            outs = list(self.last_out.values())
            if outs:
                await asyncio.gather(*outs, return_exceptions=True)
            if self.send_error is not None:
                raise RuntimeError(f"publishing failed: {self.send_error!r}")
            # ... then the states ...
            # (straight to the producer, in batches: faust's send_soon buffer throttles every stream
            # while it holds more than 100 messages, and a flush writes hundreds)
            changelog = self.table.changelog_topic
            topic = changelog.get_topic_name()
            out: dict[tuple[str, int], list[tuple[bytes, bytes]]] = defaultdict(list)
            for agent, p, value in writes:  # (resident agents keep no copy in the table's store)
                key, _ = changelog.prepare_key(agent, self.table.key_serializer)
                out[(topic, p)].append((key, value))
            if out:
                futs = await self._send_batches(out, track=False)
                await asyncio.gather(*futs, return_exceptions=True)
                if self.send_error is not None:
                    raise RuntimeError(f"writing agent state failed: {self.send_error!r}")
            # ... then the offsets may be committed (a few hundred at a time: faust's ack costs ~10 us, and
            # a flush can free thousands of events; the stream keeps going in between)
            for i, e in enumerate(to_ack, 1):
                e.ack()
                if not i % 256:
                    await asyncio.sleep(0)
            self.stats["state_writes"] += len(writes)
            self.stats["flushes"] += 1
            return len(writes)

    async def rest_idle(self) -> int:
        """Agents durable and quiet for ``rest_after`` leave memory for the table's store (streams/residency.py)."""
        lock, idle = self._sync()
        async with lock:
            while not idle.is_set():  # never in the middle of a batch
                await idle.wait()
            return self.residency.rest_idle(lambda a: a in self.dirty or a in self.outbox or a in self.held)

    def flush_wanted(self) -> bool:
        """True while faust hands partitions over (rebalance or stop): write everything, promptly."""
        return bool(self.app.should_stop or getattr(self.app, "rebalancing", False))

    async def run_flusher(self) -> None:
        tick = max(0.02, min(0.25, self.settings.flush_interval / 4))
        last_lag = 0.0
        while True:
            urgent = self.flush_wanted()
            await asyncio.sleep(0.02 if urgent else tick)
            await self.flush(force=urgent)
            self.residency.compact_some()
            mono = time.monotonic()
            if mono - last_lag >= 1.0:
                last_lag = mono
                if not urgent:
                    await self.rest_idle()
                if self.metrics is not None and mono - self._topk_at >= 15.0:
                    self._topk_at = mono  # bounds the per-agent ranking even when nothing scrapes /metrics
                    self.metrics.refresh_topk()
                if not urgent:
                    await self.watch_partitions()
                if self.metrics is not None:
                    self._update_lag()
                    if self.drift is not None and mono - self._drift_at >= 10.0:
                        self._drift_at = mono
                        psi = self.drift.psi()
                        if psi is not None:
                            self.metrics.set_drift(psi)

    def _update_lag(self) -> None:
        """Consumer lag per owned partition (a gauge: never worth stopping the worker for)."""
        from faust.types import TP

        consumer = self.app.consumer
        try:
            owned = {tp for tp in consumer.assignment() if tp.topic == self.topics["actions"]}
            for p in self.assigned:
                tp = TP(self.topics["actions"], p)
                pos = self.position.get(p)
                if tp not in owned or pos is None:
                    continue
                hw = consumer.highwater(tp)
                if hw is not None:
                    self.metrics.set_lag(p, max(0, hw - pos - 1))
        except (AssertionError, KeyError, RuntimeError) as exc:  # mid-rebalance: try again next second
            log.debug("lag not updated: %r", exc)

    # ------------------------------------------------------------------ status
    def status(self) -> dict:
        return {"ready": self.ready, "generation": self.generation, "partitions": self.assigned,
                "agents_loaded": len(self.part), "agents_resting": self.residency.resting(),
                "agents_frozen": len(self.frozen),
                "dirty_agents": len(self.dirty), "model_version": self.engine.model_version, **self.stats,
                **self.residency.stats}


def _memory_report(top: int = 25) -> dict:
    """Python heap by source file (with ``FLOWBREAKER_TRACEMALLOC=1``: slow, for measuring only) and the RSS."""
    import tracemalloc

    rss = {}
    try:
        with open("/proc/self/status") as fh:
            rss = {k: int(v.split()[0]) * 1024 for k, v in (line.split(":", 1) for line in fh)
                   if k in ("VmRSS", "VmHWM")}
    except OSError:
        pass
    if not tracemalloc.is_tracing():
        return {"rss": rss}
    gc.collect()
    snap = tracemalloc.take_snapshot()
    by_file = [(str(st.traceback[0].filename), st.size) for st in snap.statistics("filename")[:top]]
    current, peak = tracemalloc.get_traced_memory()
    return {"rss": rss, "traced": current, "traced_peak": peak, "by_file": by_file}


def _page_denied(processor: "Processor", request):
    cp = getattr(processor, "control_plane", None)
    return cp.page_denied(request) if cp is not None else None


def _control_log(topic, partition, offset, err) -> None:
    """Skipped control records, logged with where they are (rate-limited: streams/commands.py)."""
    global _CONTROL_LOG
    if _CONTROL_LOG is None:
        from streams.clients.commands import RejectLog

        _CONTROL_LOG = RejectLog(log)
    _CONTROL_LOG(topic, partition, offset, err)


_CONTROL_LOG = None


def _parse_time(value: Any) -> float | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        when = datetime.fromisoformat(value[:-1] + "+00:00" if value[-1] in "zZ" else value)
    except ValueError:
        return None
    if when.tzinfo is None:
        return None
    return when.timestamp()


# ---------------------------------------------------------------------- the app
def create_app(settings: Settings, engine: Engine, *, partition_counts: dict[str, int], metrics: Any = None,
               announce=None) -> tuple[faust.App, Processor]:
    """The faust app of one worker, and its processor.

    ``partition_counts`` maps every flowbreaker topic name to its partition count
    (``streams.admin.ensure_topics``); the table and faust's internal topics get
    the count of ``agent-actions``. ``announce(line)`` is called with a readiness
    line after every rebalance (default: print to stdout).
    """
    topics = settings.topics()
    n = partition_counts[topics["actions"]]
    datadir = settings.worker_datadir
    datadir.mkdir(parents=True, exist_ok=True)
    app = faust.App(
        settings.app_id,
        broker=[f"kafka://{b}" for b in settings.bootstrap_servers],
        broker_credentials=settings.faust_credentials(),
        store="memory://",
        datadir=str(datadir),
        processing_guarantee="at_least_once",
        table_standby_replicas=0,
        topic_replication_factor=settings.replication_factor,
        topic_partitions=n,
        consumer_auto_offset_reset="earliest",
        broker_session_timeout=settings.session_timeout,
        broker_heartbeat_interval=min(3.0, settings.session_timeout / 4),
        web_enabled=True,
        web_port=settings.web_port,
        web_bind=settings.web_bind,
        web_host=settings.web_bind,
        canonical_url=getattr(settings, "advertised_url", None) or None,  # peers forward API requests here
        web_tables_enabled=False,  # faust's /table/... would serve agent state without authentication
        web_router_enabled=False,
        autodiscover=False,
        key_serializer="raw",
        value_serializer="raw",
        stream_wait_empty=True,
        producer_acks=-1,
        producer_max_request_size=4 * 1024 * 1024,
        producer_max_batch_size=512 * 1024,  # per partition and request: a flush's states fit in one batch
    )
    processor = Processor(app, engine, settings, partition_counts=partition_counts, metrics=metrics)
    say = announce or (lambda line: print(line, flush=True))

    actions = app.topic(topics["actions"], key_type=bytes, value_type=bytes, key_serializer="raw",
                        value_serializer="raw", partitions=n, internal=False)
    control = app.topic(topics["control"], key_type=bytes, value_type=bytes, key_serializer="raw",
                        value_serializer="raw", partitions=partition_counts[topics["control"]], internal=False)
    table = app.Table(TABLE, key_type=str, value_type=bytes,
                      partitions=n, default=None)
    processor.attach_table(table)

    batch_max, within = settings.batch_max, settings.batch_within

    @app.agent(actions, name="flowbreaker-actions")
    async def process_actions(stream):
        try:
            async for events in stream.take_events(batch_max, within=within):
                await processor.on_batch(events)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # No record gets here (intake dead-letters every bad one); a failed publication or a bug does. faust
            # would restart the agent past the events of the failed batch: stop the worker instead, so the
            # next owner resumes from the committed offset and nothing is lost.
            log.exception("the actions agent failed; stopping the worker: %r", exc)
            await app.crash(exc)
            raise

    @app.agent(control, name="flowbreaker-control")
    async def process_control(stream):
        async for event in stream.events():
            await processor.on_control(event)

    @app.task
    async def flusher():
        try:
            await processor.run_flusher()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a failed write: stop rather than commit past it
            log.exception("state flush failed: %r", exc)
            await app.crash(exc)

    @app.on_partitions_revoked.connect
    async def on_revoked(sender, revoked, **kwargs) -> None:
        processor.ready = False
        processor.forget_partitions({tp.partition for tp in revoked if tp.topic == topics["actions"]})

    @app.on_rebalance_complete.connect
    async def on_ready(sender, **kwargs) -> None:
        assignment = app.consumer.assignment()
        mine = sorted(tp.partition for tp in assignment if tp.topic == topics["actions"])
        gone = set(processor.part.values()) - set(mine)
        if gone:
            processor.forget_partitions(gone)
        await processor.start_partitions(mine)
        processor.assigned = mine
        processor.generation += 1
        processor.ready = True
        if processor.generation == 1:
            # Everything loaded so far (faust, aiokafka, numpy, the model) lives as long as the process: keep
            # it out of the collector's full passes, which otherwise stall the stream for ~80 ms each.
            gc.collect()
            gc.freeze()
        if metrics is not None:
            metrics.set_assignment(mine)
        say(f"flowbreaker worker ready: {len(mine)} partitions of {topics['actions']} "
            f"[{','.join(map(str, mine))}] (rebalance {processor.generation}, web :{settings.web_port})")

    @app.page("/metrics")
    async def metrics_page(web, request):
        denied = _page_denied(processor, request)  # --metrics-auth: a token is needed (streams/api.py)
        if denied is not None:
            return denied
        if metrics is None:
            return web.text("# no metrics module in this build\n")
        from streams.metrics import CONTENT_TYPE

        return web.bytes(metrics.render(), headers={"Content-Type": CONTENT_TYPE})

    @app.page("/status")
    async def status_page(web, request):
        denied = _page_denied(processor, request)
        if denied is not None:
            return denied
        if request.query.get("memory"):  # bench/bench_memory.py: what the heap holds, by source file
            return web.json({**processor.status(), "memory": _memory_report()})
        return web.json(processor.status())

    from streams.api.server import mount_api

    mount_api(app, processor, settings, metrics=metrics)
    processor.worker_url = str(app.conf.canonical_url).rstrip("/")
    return app, processor
