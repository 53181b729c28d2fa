"""The faust app: the stream shell around :class:`detector.engine.Engine`.

``create_app(settings, engine)`` builds a worker: a faust app (consumer group,
web server, the ``agent-state`` table and its changelog recovery, the control
agent) and a :class:`Processor` that reads ``agent-actions`` itself and decides:

* ``agent-actions`` is read in batches below faust's per-message stream path,
  from the consumer faust holds (``streams/worker/reader.py``). Each record becomes a
  dead letter on ``agent-actions-dlq`` with its reason, a copy re-routed to its
  agent's home partition, or an event to decide (``streams/worker/intake.py``). Events
  go through :meth:`Engine.process_batch` (decisions do not depend on how events
  are batched) and the processor publishes what the engine returns: decision
  records to ``agent-decisions`` (key ``agent_id``, encoded once, with the same
  encoder as ``flowbreaker replay``, so the bytes are identical), freeze
  commands to ``agent-control`` (key ``agent_id``, signed) and incident records
  to ``agent-incidents`` (key ``incident_id``), as producer batches
  (``streams/worker/publisher.py``).
* ``agent-control`` (co-partitioned with the actions) is read by a faust agent
  for signed ``release`` commands naming an agent's open incident, applied with
  :meth:`Engine.release` and written at once.
* the table ``agent-state`` (changelog ``<app id>-agent-state-changelog``) maps
  ``agent_id`` to an envelope around ``Engine.dump_agent``: the home partition
  and offset of the last event in the state, the state, and the agent's outbox
  (``streams/worker/residency.py``, ``streams/worker/outbox.py``).

The processor is made of parts, each in its module: :class:`streams.worker.ordering.Positions`
(which offsets to process, seeks), :class:`streams.worker.residency.Residency` (agents
live in memory or resting in the table; their cursors),
:class:`streams.worker.outbox.Outbox` (records decided, not yet confirmed),
:class:`streams.worker.publisher.Publisher` (outputs) and :class:`streams.worker.flushing.Flusher`
(state writes and offset commits). What is left here is the batch step that
calls the engine, the control commands and the manual acts of the API.

Delivery: at-least-once, effects idempotent
--------------------------------------------
Four rules keep a crash (kill -9 at any instruction) or a rebalance from losing
or doubling anything:

1. *An offset is committed only once the events before it are durable*: their
   decisions (or dead letters, or re-routed copies) acknowledged by the broker
   and their agents' states, including them, written to the changelog and
   acknowledged (``streams/worker/flushing.py``). The worker commits ``agent-actions``
   itself; faust never acknowledges its records.
2. *The state knows which events it holds.* The envelope carries the offset of
   the last event the state includes. After a restart or a rebalance, Kafka
   redelivers from the committed offset; an event at or below the agent's
   stored offset was already scored and published and is skipped. Every other
   event is scored from exactly the state it was first scored from, so a
   redelivered event gets a byte-identical decision record: duplicates in
   ``agent-decisions`` are possible, different records for one event are not.
3. *A freeze is recorded before it is acted on.* On a batch where a breaker
   opens, the processor waits for the batch's decisions, then writes the states
   with the freeze (and its incident and audit records) in the agent's outbox,
   waits for that write, and only then publishes the freeze
   (``streams/worker/outbox.py``). That wait is a task of its own: the next
   batches are decided meanwhile (a freeze does not hold up the stream). The
   breaker is open in the table, so no restarted worker trips again for that
   incident.
4. *Per partition, strictly in offset order, from the committed offset*
   (``streams/worker/ordering.py``): a partition is read once its agents' states are
   recovered, from its committed offset; records already processed are
   skipped, a missing one is sought back.

A worker that loses partitions in a rebalance, or stops, first finishes its
batch, writes every changed agent and commits (:meth:`Processor.hand_over`), so
the next owner starts where it stopped; a worker killed outright is replaced
from the last commit (rule 2 makes that safe).

What is written when
--------------------
A changed agent's state is written at most once per flush, when it has
``flush_events`` (K) unwritten events or its oldest unwritten change is
``flush_interval`` (T) seconds old, and at once for every breaker opening and
every release: at most one write per agent per T seconds (or per K events). A
hot agent at 1,000 events/s with K=1000 writes once a second, not a thousand
times; an agent acting once a minute writes once a minute.

Store: ``memory://``. The per-agent state is small (~2 KB) and the changelog
is compacted, so rebuilding a partition's table on assignment means reading one
message per agent (100,000 agents: ~200 MB, seconds); nothing local can go stale
or corrupt after kill -9, and there is no native dependency. The processor
writes the changelog itself, outside faust's event context (from its flusher),
which faust's RocksDB store would not support (it picks its column family from
the current event). The in-memory store holds only the agents that *rest*:
quiet for ``rest_after`` seconds, their state deflated there, their live state
dropped (``streams/worker/residency.py``); an agent that acts is *resident*, its live
state in the engine and nothing in the store.

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
from datetime import datetime
from typing import Any

import faust
import msgspec

from detector.engine import Engine
from detector.events import EventError
from streams.worker.drift_monitor import DriftMonitor
from streams.worker.flushing import Flusher
from streams.worker.intake import LOG_APPEND_TIME, REROUTED_HEADER, MiskeyLog, admit, home_partition, key_problem
from streams.worker.null_metrics import NullMetrics
from streams.worker.ordering import Positions
from streams.worker.outbox import Outbox, OutboxEntry, reconcile
from streams.worker.publisher import Publisher
from streams.worker.reader import ActionReader, ReaderStopped
from streams.worker.residency import Residency, pack_state, unpack_state
from streams.settings import Settings

__all__ = ["create_app", "Processor", "TABLE", "pack_state", "unpack_state", "dlq_record"]

log = logging.getLogger("flowbreaker.worker")

TABLE = "agent-state"
#: DLQ copies at most this much of an invalid message (base64 of a 1 MB message would not fit in one)
DLQ_RAW_MAX = 256 * 1024
#: longest wait of a fetch of agent-actions when nothing is there (a record wakes it at once)
FETCH_WAIT_MS = 100
#: how long a rebalance or a stop may take to write every changed agent and commit
HAND_OVER_TIMEOUT = 20.0
#: a partition with records waiting that has not moved for this long is named in the log (seconds)
STALL_AFTER = 30.0
#: most records in a batch while a freeze is being written and published (its steps wait for each batch)
FREEZE_BATCH = 32
#: how often the worker asks the engine to close the episodes of quiet agents (seconds)
CLOSE_QUIET_EVERY = 5.0

_encode = msgspec.json.Encoder().encode  # the same encoder as streams/cli/replay.py: byte-identical records


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
    """One worker's processing of ``agent-actions`` and ``agent-control`` (see the module docstring).

    Collaborators come in through the constructor: the faust ``app`` (its table
    and stop flag), the ``engine``, ``settings``, ``metrics`` (a
    :class:`streams.worker.null_metrics.NullMetrics` when there are none), the
    ``reader`` of ``agent-actions`` and the ``publisher`` of outputs. ``keys``
    (command signing) and ``control_metrics`` are the control plane's
    (``streams/api/server.py`` sets them when it mounts).
    """

    #: the command signing keys (streams/clients/signing.py) and the control-side counters (streams/api/server.py)
    keys = None
    control_metrics = None
    control_plane = None
    #: this worker's API URL (named in audit records of freezes)
    worker_url: str | None = None

    def __init__(self, app: faust.App, engine: Engine, settings: Settings, *, partition_counts: dict[str, int],
                 reader: ActionReader, publisher: Publisher, metrics: Any = None, keys: Any = None) -> None:
        self.app = app
        self.engine = engine
        # trace blocks are deflated as replay deflates them (when the store's blocks not deflated pass 16 MB, or
        # when their agent rests): most blocks of a busy agent leave its ring before, never deflated. Deflating
        # each block as it filled cost the worker ~5 % of its time (1.3-1.5 us an event) that replay does not
        # spend; resting a busy agent costs up to ~0.7 ms instead of ~45 us, and Residency.rest_idle holds a
        # call to REST_BUDGET (20 ms) whatever the agents
        self.settings = settings
        self.metrics = metrics if metrics is not None else NullMetrics()
        self.reader = reader
        self.publisher = publisher
        if keys is not None:
            self.keys = keys
        #: a model handed over by the model follower, swapped in before the next batch
        self.pending_model = None
        #: live feature drift against the model's training data (streams/worker/drift_monitor.py)
        self.drift = DriftMonitor(engine.model) if metrics is not None and engine.model is not None else None
        self.topics = settings.topics()
        self.counts = partition_counts               # topic name -> partitions
        self.n_actions = partition_counts[self.topics["actions"]]
        self.table: Any = None
        self.positions = Positions()
        self.residency = Residency(engine, None, partitions=self.n_actions, rest_after=settings.rest_after)
        self.outbox = Outbox()
        self.flusher = Flusher(interval=settings.flush_interval, events=settings.flush_events,
                               snapshot=self._envelope, home=lambda agent: self.residency.home.get(agent),
                               positions=self.positions,
                               publisher=publisher, changelog=self._changelog_topic, changelog_key=self._changelog_key,
                               commit=reader.commit)
        self.frozen: dict[str, str] = {}             # agents with an open breaker -> incident id
        self.assigned: list[int] = []
        self.generation = 0
        self.ready = False
        self.stats = dict(events=0, decisions=0, dlq=0, skipped=0, duplicates=0, freezes=0, releases=0,
                          reconciled=0, republished=0, miskeyed=0, rerouted=0, batches=0, verdicts_applied=0,
                          episode_records=0)
        #: event-time watermark: the latest event time this worker decided (closes quiet episodes)
        self.watermark = float("-inf")
        #: streams/worker/verdict_follow.py (create_app sets it)
        self.verdict_follow = None
        self.miskey_log = MiskeyLog()
        self._stopping = False
        self._times = {"topk": 0.0, "drift": 0.0, "lag": 0.0, "stall": 0.0, "quiet": 0.0}
        self._tasks: set[asyncio.Future] = set()
        #: freezes of decided batches being written and published (rule 3), and the first that failed
        self._freezing: set[asyncio.Future] = set()
        self._freeze_error: BaseException | None = None
        #: the decisions of the last batch, kept until the reader has asked for the next fetch
        self._spent: list | None = None

    # ------------------------------------------------------------------ views (status, streams/api)
    @property
    def part(self) -> dict[str, int]:
        """Resident agent -> its home partition."""
        return self.residency.home

    @property
    def applied(self) -> dict[str, int]:
        """Resident agent -> offset of the last event its state includes."""
        return self.residency.cursor

    @property
    def expect(self) -> dict[int, int]:
        """Started partition -> next offset to process."""
        return self.positions.expect

    @property
    def dirty(self) -> dict[str, list]:
        return self.flusher.dirty

    def attach_table(self, table) -> None:
        """The ``agent-state`` table: its in-memory store holds the resting agents."""
        self.table = table
        self.residency.store = table.data

    def _changelog_topic(self) -> str:
        return self.table.changelog_topic.get_topic_name()

    def unrecovered(self, partitions, recovering) -> list[int]:
        """Which of ``partitions`` (of agent-actions) have no changelog partition among ``recovering`` (faust's
        recovery's ``active_tps``: what its last recovery restored the table from). Empty after every
        rebalance seen so far; a partition listed would be read with its resting agents missing from the table
        (each decided as a new agent), so the worker says so."""
        topic = self._changelog_topic()
        restored = {tp.partition for tp in recovering if tp.topic == topic}
        return sorted(p for p in partitions if p not in restored)

    def _changelog_key(self, agent: str) -> bytes:
        key, _ = self.table.changelog_topic.prepare_key(agent, self.table.key_serializer)
        return key

    def _envelope(self, agent: str) -> bytes | None:
        """The table value of a resident agent now (None when it is not resident)."""
        state = self.engine.dump_agent(agent)
        home = self.residency.home.get(agent)
        if state is None or home is None:
            return None
        return pack_state(home, self.residency.cursor[agent], state, self.outbox.get(agent), int(time.time() * 1000))

    def command_seq(self, agent: str, kind: str) -> int:
        """The agent's sequence number for a new ``freeze`` or ``release`` (contract section 4, signed with the
        command): from its breaker's trip count, which lives in the agent's state and so survives restarts and
        rebalances (the freeze of trip n is 2n-1, its release 2n); never at or below the highest this worker's
        control index has verified for the agent (a key holder's release, a state that was lost). The same
        trip gives the same number, so a freeze decided again after a crash is the same command."""
        st = self.engine.agents.get(agent)
        trips = st.breaker.trips if st is not None else 0
        seq = 2 * trips - 1 if kind == "freeze" else 2 * trips
        feed = getattr(self.control_plane, "feed", None)
        if feed is not None:
            seq = max(seq, feed.fold.highest(agent) + 1)
        return max(1, seq)

    def sign(self, command: dict) -> dict:
        """``command`` with its sequence number and signature (unsigned when this worker has no signing key: no
        API mounted)."""
        if command.get("seq") is None:
            command = dict(command, seq=self.command_seq(command["agent_id"], command["command"]))
        return self.keys.sign(command) if self.keys is not None and self.keys.can_sign else command

    def _spawn(self, coro) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ------------------------------------------------------------------ agents in and out of memory
    def _load(self, agent: str) -> None:
        """Make an agent resident, from the table (its home partition is computed from its id)."""
        entries = self.residency.load(agent)
        if entries:
            self.outbox.drop(agent)
            self.outbox.add(agent, [OutboxEntry.of(e) for e in entries])
            self._spawn(self._reconcile(agent, self.outbox.get(agent)))
        st = self.engine.agents.get(agent)
        if st is not None and st.breaker.state == "open":
            self.frozen[agent] = st.breaker.incident_id or ""
            self.metrics.set_frozen(self.frozen)

    def agent_state(self, agent: str, partition: int | None = None):
        """The agent's engine state on the worker that owns it, loaded from the table if needed; None if unknown."""
        if agent not in self.engine.agents and agent not in self.residency and self.residency.has_state(agent):
            self._load(agent)
        return self.engine.agents.get(agent)

    def forget_partitions(self, partitions: set[int]) -> None:
        """Drop what this worker holds of partitions it no longer owns (their states are in the changelog)."""
        gone = [a for a, p in self.residency.home.items() if p in partitions]
        for agent in gone:
            if agent in self.flusher.dirty:  # not written: its events are redelivered to the next owner
                log.warning("agent %s revoked with unwritten changes; its events will be redelivered", agent)
            self.engine.agents.pop(agent, None)
            self.residency.forget(agent)
            self.outbox.drop(agent)
            self.frozen.pop(agent, None)
        self.flusher.forget(gone, partitions)
        self.residency.drop_partitions(partitions)  # resting agents of those partitions
        for agent in [a for a in self.frozen if home_partition(a, self.n_actions) in partitions]:
            del self.frozen[agent]  # resting frozen agents
        for agent in [a for a in self.engine.episodes.open if home_partition(a, self.n_actions) in partitions]:
            self.engine.episodes.drop(agent)  # the next owner carries the open episode on, from the state
        self.positions.forget(partitions)
        self.metrics.set_frozen(self.frozen)

    async def start_partitions(self, partitions: list[int]) -> None:
        """Partitions recovered and about to be resumed: process each from its committed offset on."""
        offsets = await self.reader.committed(partitions) if partitions else {}
        self.positions.start(offsets, time.monotonic())
        self.flusher.committed = dict(offsets)
        self.residency.schedule_compaction()  # faust refilled the table from the changelog: deflate idle agents
        self.recover_frozen(set(partitions))
        self.recover_episodes(set(partitions))

    def recover_episodes(self, partitions: set[int]) -> int:
        """Take the open alert episodes of the agents resting in the table (recovered from the changelog) of
        ``partitions`` into the engine, so each is closed once, by this worker, when its agent has been quiet
        long enough (a resting agent would otherwise leave its episode open in the SOC's view for ever).
        Returns how many were taken."""
        taken = 0
        for agent, ep in self.residency.open_episodes(partitions).items():
            try:
                taken += self.engine.episodes.restore(agent, ep)
            except ValueError as err:
                log.warning("agent %r: its saved alert episode is unreadable (%s)", agent, err)
        if taken:
            log.info("%d open alert episodes found in the recovered table", taken)
        return taken

    def recover_frozen(self, partitions: set[int]) -> int:
        """Add the frozen agents resting in the table (recovered from the changelog) of ``partitions`` to
        ``frozen`` and the metrics; return how many were added. A frozen agent does not act, so without this a
        restarted worker would show none of them until each was released or woken (``/status`` and
        ``flowbreaker_agents_frozen`` read 0 while ``/v1/breakers`` lists them)."""
        found = self.residency.open_breakers(partitions)
        added = sum(1 for a in found if a not in self.frozen)
        if found:
            opened = {a: b.opened_t for a, b in found.items()}
            for agent in self.frozen:
                st = self.engine.agents.get(agent)
                opened.setdefault(agent, st.breaker.opened_t if st is not None else 0.0)
            merged = {**self.frozen, **{a: b.incident_id or "" for a, b in found.items()}}
            self.frozen = dict(sorted(merged.items(), key=lambda kv: opened[kv[0]]))  # longest frozen first
            self.metrics.set_frozen(self.frozen)
        if added:
            log.info("%d frozen agents found in the recovered table", added)
        return added

    async def hand_over(self, partitions: set[int]) -> None:
        """Partitions are being taken away (a rebalance): stop reading them, finish the batch in progress,
        write every changed agent and commit, then forget them. Bounded by HAND_OVER_TIMEOUT; what is not
        committed by then is redelivered to the next owner (rule 2)."""
        self.ready = False
        self.positions.handing_over |= partitions & set(self.positions.expect)
        try:
            await self.settle_freezes(HAND_OVER_TIMEOUT / 2)
            await asyncio.wait_for(self.flusher.flush(force=True), HAND_OVER_TIMEOUT)
        except Exception as exc:  # noqa: BLE001 - the rebalance goes on; the next owner redelivers
            log.warning("handing partitions %s over without a final write: %r", sorted(partitions), exc)
        self.forget_partitions(partitions)

    async def shut_down(self) -> None:
        """The worker stops: end reading, write every changed agent, commit (before faust stops the consumer)."""
        self._stopping = True
        await self.hand_over(set(self.positions.expect))

    # ------------------------------------------------------------------ reading and the batch step
    async def run_reader(self) -> None:
        """Fetch and process batches of ``agent-actions`` until the worker stops.

        The last batch's records and decisions are freed while the next fetch is on its way to the consumer's
        thread (``ActionReader.fetch_soon``), not where the batch step ends (~6 % of a busy worker's step).
        The next fetch is not started before a batch is decided: with it on the consumer's thread meanwhile,
        the two threads took turns with the interpreter lock every switch interval, and on this shared host a
        worker decided fewer events per core (pre-filled 150k events, events/s per worker core, two runs
        each: 20.5k and 23.7k against 23.8k and 29.5k without) and fell behind at 5,000 events/s."""
        positions, reader = self.positions, self.reader
        records = None
        while not self._stopping:
            if positions.seek_to:
                targets = dict(positions.seek_to)
                for p in await reader.seek(targets):  # one not sought stays pending: its records are not admitted
                    positions.sought(p, targets[p])
            parts = positions.readable() if self.ready else []
            if not parts:
                records = self._spent = None
                await asyncio.sleep(0.05)
                continue
            # while a freeze waits for its write, short batches: its steps run between them, sooner
            landed = reader.fetch_soon(parts, FREEZE_BATCH if self._freezing else None)
            records = self._spent = None  # freed while the fetch is on its way
            try:
                records = await landed
            except ReaderStopped:
                if self._stopping or self.app.should_stop:
                    return
                await asyncio.sleep(0.2)
                continue
            if records and not self._stopping:
                await self.on_records(records)

    async def on_records(self, records: dict[int, list]) -> None:
        """Decide one batch of fetched records (``{partition: [ConsumerRecord, ...]}``) and publish the results."""
        self._swap_model()
        self.publisher.check()  # never build on an output that did not reach the broker
        if self._freeze_error is not None:
            raise self._freeze_error
        async with self.flusher.batch():
            freezes, touched = self._step(records)
            await self.publisher.send(hold=True)  # never waits for the broker (streams/worker/publisher.py)
            # bookkeeping once every output of the batch is enqueued: a flush that writes these agents finds all
            # their decisions among the outputs it waits for
            now = time.monotonic()
            self.flusher.mark_events(touched, now)
            self.residency.seen.update(dict.fromkeys([agent for agent, _ in touched], now))
        if freezes:
            # rule 3 off the reading path: the outbox and the open breaker are in memory now (any later write
            # includes them); a task waits for their write and then publishes, while the next batches are decided
            self._track_freeze(self._publish_freezes(self._record_freezes(freezes)))

    def _track_freeze(self, coro) -> None:
        task = asyncio.ensure_future(coro)
        self._freezing.add(task)
        task.add_done_callback(self._freeze_done)

    def _freeze_done(self, task: asyncio.Future) -> None:
        self._freezing.discard(task)
        if not task.cancelled() and task.exception() is not None and self._freeze_error is None:
            self._freeze_error = task.exception()  # raised by the next batch: the worker stops (rule 1)

    async def settle_freezes(self, timeout: float) -> None:
        """Wait (up to ``timeout`` s) for the freezes being written and published (a hand-over, a stop)."""
        if self._freezing:
            await asyncio.wait(list(self._freezing), timeout=timeout)

    def _swap_model(self) -> None:
        pending = self.pending_model
        if pending is None:
            return
        self.pending_model = None  # a promoted model: switch between batches (streams/worker/model_follow.py)
        self.engine.swap_model(pending)
        if self.drift is not None:
            self.drift = DriftMonitor(pending)
        card = getattr(pending, "card", {}) or {}
        trained = card.get("trained_at") or (card.get("training_window") or {}).get("until")
        self.metrics.set_model(pending.version, trained)
        log.warning("model switched to %s", pending.version)

    def _step(self, records: dict[int, list]) -> tuple[list, list]:
        """Intake, the engine, outputs added to the publisher: ``(freezes, [(agent, offset), ...])``."""
        topics = self.topics
        t_actions, t_dlq, t_decisions = topics["actions"], topics["dlq"], topics["decisions"]
        pub, stats, metrics = self.publisher, self.stats, self.metrics
        residency = self.residency
        home_of, cursor = residency.home, residency.cursor
        n_actions = self.n_actions
        max_skew = self.settings.max_clock_skew
        wall = time.time()
        mono = time.monotonic()
        valid: list = []
        where: list = []  # (partition, offset, agent_id in UTF-8) of each valid event
        processed = skipped = 0
        for p, recs in records.items():
            run = self.positions.admit(p, recs, mono)
            processed += len(run)
            for rec in run:
                # streams/worker/intake.py: a dead letter, a re-route, or an event to decide
                ts = rec.timestamp
                if ts is None:
                    reference = wall
                elif rec.timestamp_type == LOG_APPEND_TIME:
                    reference = ts / 1000.0
                else:
                    reference = min(ts / 1000.0, wall)
                try:
                    ev = admit(rec.value, reference=reference, max_skew=max_skew)
                except EventError as err:
                    key = rec.key or b""
                    pub.add(t_dlq, pub.partition_for(t_dlq, key, p), rec.key,
                            dlq_record(rec.value, err, t_actions, p, rec.offset))
                    stats["dlq"] += 1
                    metrics.dlq(err.code)
                    continue
                agent = ev.agent_id
                home = resident = home_of.get(agent)
                if home is None:
                    home = home_partition(agent, n_actions)
                key = agent.encode("utf-8")
                problem = key_problem(rec.key, key)
                if home != p:  # never decided off its agent's home partition: copied there, decided there
                    pub.add(t_actions, home, key, rec.value,
                            [(REROUTED_HEADER, f"{t_actions}/{p}/{rec.offset}".encode())])
                    self._miskeyed(problem or "wrong_partition", agent, p, rec.offset, home, True)
                    continue
                if problem is not None:
                    self._miskeyed(problem, agent, p, rec.offset, home, False)
                if resident is None:
                    self._load(agent)
                if rec.offset <= cursor[agent]:  # rule 2: already in the state, already decided
                    skipped += 1
                    continue
                valid.append(ev)
                where.append((p, rec.offset, key))
        stats["events"] += processed
        stats["skipped"] += skipped
        stats["batches"] += 1
        if not valid:
            return [], []
        decisions = self.engine.process_batch(valid)
        same = self.counts[t_decisions] == n_actions
        freezes: list = []
        touched: list = []
        duplicates = 0
        frozen = self.frozen
        latest = self.watermark
        outs: dict[int, list] = {}  # partition of agent-decisions -> its records in the publisher
        for d, (p, offset, key) in zip(decisions, where):
            ev = d.event
            agent = ev.agent_id
            cursor[agent] = offset
            touched.append((agent, offset))
            if ev.t > latest:
                latest = ev.t
            if d.duplicate:
                duplicates += 1
                if d.episodes:
                    self._add_episodes(d.episodes, p)
                continue
            if same:  # Publisher.add without a call per record
                out = outs.get(p)
                if out is None:
                    out = outs[p] = pub.queue(t_decisions, p)
                out.append((key, _encode(d.record), None))
            else:
                pub.add(t_decisions, pub.partition_for(t_decisions, key, p), key, _encode(d.record))
            if d.transition is not None:
                old, new = d.transition
                if new == "open":
                    frozen[agent] = (d.freeze or {}).get("incident_id") or frozen.get(agent, "")
                elif old == "open":
                    frozen.pop(agent, None)
            if d.freeze is not None:
                freezes.append((d, p))
            if d.episodes:
                self._add_episodes(d.episodes, p)
        self.watermark = latest
        stats["duplicates"] += duplicates
        stats["decisions"] += len(decisions) - duplicates
        metrics.observe_batch(decisions, wall)
        if self.drift is not None:
            self.drift.add([d.x for d in decisions if d.x is not None])
        self._spent = decisions  # freed by run_reader once it has asked for the next fetch
        return freezes, touched

    def _miskeyed(self, reason: str, agent: str, partition: int, offset: int, home: int, rerouted: bool) -> None:
        self.stats["miskeyed"] += 1
        if rerouted:
            self.stats["rerouted"] += 1
        self.metrics.miskeyed(reason, rerouted)
        self.miskey_log.note(reason, agent, self.topics["actions"], partition, offset, home, rerouted)

    # ------------------------------------------------------------------ alert episodes and verdicts (issue 18)
    def _add_episodes(self, records: list, partition: int | None) -> None:
        """Episode records the engine returned, added to the publisher for ``agent-alerts`` (key ``agent_id``)."""
        topic = self.topics["alerts"]
        pub = self.publisher
        signs = self.keys is not None and self.keys.can_sign
        for rec in records:
            key = rec["agent_id"].encode("utf-8")
            # signed as commands are: the API's episode index takes only records a worker signed
            pub.add(topic, pub.partition_for(topic, key, partition), key,
                    _encode(self.keys.sign(rec) if signs else rec))
            self.metrics.episode(rec)
        self.stats["episode_records"] += len(records)

    async def apply_verdict(self, verdict) -> str:
        """An analyst's verdict read from ``agent-verdicts``, its signature verified
        (``streams/worker/verdict_follow.py``): ``applied`` with :meth:`Engine.apply_verdict` when this worker
        owns the agent, else ``not_held`` (the owner applies it) or ``unknown_agent``. The episode records
        it changes go to ``agent-alerts``; the agent's state is written before this returns."""
        agent = verdict.agent_id
        partition = home_partition(agent, self.n_actions)
        if not self.ready or partition not in self.positions.expect or partition in self.positions.handing_over:
            return "not_held"
        if agent not in self.residency:
            if not self.residency.has_state(agent):
                return "unknown_agent"
            self._load(agent)
        if agent not in self.engine.agents:
            return "unknown_agent"
        records = self.engine.apply_verdict(verdict)
        self._add_episodes(records, partition)
        await self.publisher.send()
        self.stats["verdicts_applied"] += 1
        self.metrics.verdict(verdict.verdict)
        self.flusher.mark(agent, None, time.monotonic())
        await self.flusher.flush(only=[agent])
        log.info("verdict %s (%s on %s of %s, by %s) applied", verdict.verdict_id, verdict.verdict,
                 verdict.target, agent, verdict.by or "unknown")
        return "applied"

    async def close_quiet(self) -> int:
        """Close the episodes of agents quiet for 30 min of event time (:meth:`Engine.close_quiet` at this
        worker's event-time watermark: the latest event it decided). The engine keeps the episodes, resting
        agents' too. A fleet with no events at all does not move the watermark: its episodes close with the
        next event. Returns the records published."""
        if self.watermark == float("-inf"):
            return 0
        records = self.engine.close_quiet(self.watermark)
        if records:
            self._add_episodes(records, None)
            await self.publisher.send()
        return len(records)

    # ------------------------------------------------------------------ freezes and releases (rule 3)
    async def _freeze(self, freezes: list) -> None:
        """Outbox and open breaker durable in the table, then publish."""
        await self._publish_freezes(self._record_freezes(freezes))

    def _record_freezes(self, freezes: list) -> list:
        """Each freeze's incident, command and audit record in its agent's outbox, the agent marked for a write:
        ``[(agent, entries), ...]``. Synchronous: no batch runs between the decision and this."""
        now_ms = int(time.time() * 1000)
        topics, pub = self.topics, self.publisher
        pending = []
        for d, partition in freezes:
            agent = d.freeze["agent_id"]  # a manual freeze (streams/api) has no event
            incident_id = d.freeze["incident_id"]
            entries = [
                OutboxEntry("incident", "incidents", pub.partition_for(topics["incidents"], incident_id.encode(), None),
                            incident_id, _encode(d.incident), incident_id, now_ms),
                OutboxEntry("freeze", "control", pub.partition_for(topics["control"], agent.encode(), partition),
                            agent, _encode(self.sign(d.freeze)), incident_id, now_ms),  # signed: guards verify it
            ]
            if topics.get("audit") in self.counts:  # every freeze is audited
                from streams.api.audit_trail import freeze_entry

                entries.append(OutboxEntry("audit-freeze", "audit",
                                           pub.partition_for(topics["audit"], agent.encode(), None), agent,
                                           freeze_entry(d.freeze, d.incident, now_ms, self.worker_url), incident_id,
                                           now_ms))
            self.outbox.add(agent, entries)
            self.flusher.mark(agent, None, time.monotonic())
            pending.append((agent, entries))
        return pending

    async def _publish_freezes(self, pending: list) -> None:
        """The states with their outboxes written and acknowledged, then the outboxes published."""
        await self.flusher.flush(only=[agent for agent, _ in pending])
        for agent, entries in pending:
            for entry in entries:
                await self._publish_entry(agent, entry)
            self.stats["freezes"] += 1

    async def apply_manual_freeze(self, d, partition: int, worker: str | None = None) -> None:
        """A freeze by a human (``Engine.freeze_manual``): the automatic freeze's path (rule 3)."""
        agent = d.freeze["agent_id"]
        self.worker_url = worker or self.worker_url
        self.frozen[agent] = d.freeze["incident_id"]
        self.metrics.set_frozen(self.frozen)
        await self._freeze([(d, partition)])

    async def apply_manual_release(self, agent: str, command: dict, audit: bytes) -> None:
        """A release by a human, already applied to the engine: state, release command and audit record in the
        table first (rule 3), then published."""
        now_ms = int(time.time() * 1000)
        topics, pub = self.topics, self.publisher
        incident_id = command.get("incident_id") or ""
        entries = [OutboxEntry("release", "control",
                               pub.partition_for(topics["control"], agent.encode(), self.residency.home.get(agent)),
                               agent, _encode(self.sign(command)), incident_id, now_ms)]
        if topics.get("audit") in self.counts:
            entries.append(OutboxEntry("audit-release", "audit",
                                       pub.partition_for(topics["audit"], agent.encode(), None), agent, audit,
                                       incident_id, now_ms))
        self.stats["releases"] += 1
        self.frozen.pop(agent, None)
        self.metrics.release(agent)
        self.outbox.add(agent, entries)
        self.flusher.mark(agent, None, time.monotonic())
        await self.flusher.flush(only=[agent])
        for entry in entries:
            await self._publish_entry(agent, entry)

    def published(self, agent: str, incident_id: str) -> bool:
        """No publication of this incident is waiting in the agent's outbox."""
        return self.outbox.published(agent, incident_id)

    def outbox_incident(self, agent: str, incident_id: str) -> dict | None:
        """Severity and author of an incident not yet confirmed published (for the two-person rule)."""
        return self.outbox.incident(agent, incident_id)

    async def _publish_entry(self, agent: str, entry: OutboxEntry) -> None:
        fut = await self.publisher.send_one(self.topics[entry.logical], entry.partition, entry.key.encode(),
                                            entry.value)
        fut.add_done_callback(lambda f, a=agent, i=entry.incident_id, k=entry.kind:
                              None if f.cancelled() or f.exception() else self._confirm(a, i, k))

    def _confirm(self, agent: str, incident_id: str, kind: str) -> None:
        """A publication of the outbox is on its topic: drop it from the outbox with the next write."""
        if self.outbox.confirm(agent, incident_id, kind) and agent in self.residency:
            self.flusher.mark(agent, None, time.monotonic())

    async def _reconcile(self, agent: str, entries: list[OutboxEntry]) -> None:
        """After a crash between an outbox write and its confirmation: publish what is not on its topic."""
        def found(entry: OutboxEntry) -> None:
            self.stats["reconciled"] += 1
            self._confirm(agent, entry.incident_id, entry.kind)

        async def missing(entry: OutboxEntry) -> None:
            self.stats["reconciled"] += 1
            self.stats["republished"] += 1
            # %r: the entry comes from the changelog, which anyone with produce rights could have written
            log.warning("republishing the %r of incident %r of %r: recorded before the last owner stopped, "
                        "not found on %r", entry.kind, entry.incident_id, agent, entry.logical)
            if agent in self.residency:
                await self._publish_entry(agent, entry)

        try:
            await reconcile(self.settings, self.topics, list(entries), found, missing)
        except Exception as exc:  # the outbox stays: the next owner of the agent tries again
            log.error("reconciling the outbox of %s failed: %r", agent, exc)

    # ------------------------------------------------------------------ control commands
    async def on_control(self, event) -> None:
        """A record on ``agent-control``: apply a human release that is signed (streams/clients/signing.py) and
        names the agent's open incident; note our own signed freezes as published. Anything else (a record that
        is not a command, an unsigned or forged release, a release of another incident) is counted and skipped:
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
        if verdict == "ok" and cmd.seq is None:  # signed before commands were ordered: not one we can place
            verdict = "unsequenced"
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
        if agent not in self.residency:
            if not self.residency.has_state(agent) \
                    or home_partition(agent, self.n_actions) not in self.positions.expect:  # not this worker's agent
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
        self.metrics.release(agent)
        self.flusher.mark(agent, None, time.monotonic())
        await self.flusher.flush(only=[agent])  # written before the command's offset is committed
        log.info("released %s (by %s)", agent, by)

    def _count_control(self, outcome: str, verdict: str) -> None:
        if outcome in ("release_unverified", "release_stale"):
            self.stats["releases_ignored"] = self.stats.get("releases_ignored", 0) + 1
        if self.control_metrics is not None:
            self.control_metrics.command("worker", outcome, verdict)

    # ------------------------------------------------------------------ in the background
    async def rest_idle(self) -> int:
        """Agents durable and quiet for ``rest_after`` leave memory for the table's store (streams/worker/residency.py)."""
        async with self.flusher.quiet():
            dirty, outbox = self.flusher.dirty, self.outbox
            return self.residency.rest_idle(lambda a: a in dirty or a in outbox)

    async def run_flusher(self) -> None:
        """Write due agents and commit every tick; once a second: rest idle agents, metrics, lag, drift."""
        tick = max(0.02, min(0.25, self.settings.flush_interval / 4))
        while True:
            # a flush that left due agents for lack of room in its slice: the next slice soon, batches between
            await asyncio.sleep(0.01 if self.flusher.behind else tick)
            await self.flusher.flush()
            self.residency.compact_some()
            mono = time.monotonic()
            if mono - self._times["lag"] < 1.0:
                continue
            self._times["lag"] = mono
            if self.ready:
                if mono - self._times["quiet"] >= CLOSE_QUIET_EVERY:
                    self._times["quiet"] = mono
                    await self.close_quiet()
                await self.rest_idle()
            self._update_lag()
            if mono - self._times["topk"] >= 15.0:
                self._times["topk"] = mono  # bounds the per-agent ranking even when nothing scrapes /metrics
                self.metrics.refresh_topk()
            if self.drift is not None and mono - self._times["drift"] >= 10.0:
                self._times["drift"] = mono
                psi = self.drift.psi()
                if psi is not None:
                    self.metrics.set_drift(psi)

    def _update_lag(self) -> None:
        """Consumer lag per started partition (a gauge); a partition with records waiting that has not moved for
        STALL_AFTER seconds is named in the log (at most once per STALL_AFTER), with what holds it."""
        highwater = {}
        for p, nxt in list(self.positions.expect.items()):
            hw = highwater[p] = self.reader.highwater(p)
            if hw is not None:
                self.metrics.set_lag(p, max(0, hw - nxt))
        mono = time.monotonic()
        if mono - self._times["stall"] < STALL_AFTER:
            return
        stalled = self.positions.stalled(highwater, mono, STALL_AFTER)
        if stalled:
            self._times["stall"] = mono
            log.warning("agent-actions partitions not moving (ready %s, generation %d): %s", self.ready,
                        self.generation, "; ".join(f"{p}: {why}" for p, why in sorted(stalled.items())))

    # ------------------------------------------------------------------ status
    def status(self) -> dict:
        return {"ready": self.ready, "generation": self.generation, "partitions": self.assigned,
                "agents_loaded": len(self.residency), "agents_resting": self.residency.resting(),
                "agents_frozen": len(self.frozen), "dirty_agents": len(self.flusher.dirty),
                "model_version": self.engine.model_version, "episodes_open": len(self.engine.episodes.open),
                **self.stats, **self.positions.stats, **self.flusher.stats, **self.residency.stats,
                **(self.verdict_follow.status() if self.verdict_follow is not None else {})}


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
    """Skipped control records, logged with where they are (rate-limited: streams/clients/commands.py)."""
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
class WorkerApp(faust.App):
    """faust's app, which lets the processor write and commit before the consumer stops."""

    processor: Processor | None = None

    async def on_stop(self) -> None:
        if self.processor is not None:
            await self.processor.shut_down()
        await super().on_stop()


def create_app(settings: Settings, engine: Engine, *, partition_counts: dict[str, int], metrics: Any = None,
               announce=None) -> tuple[faust.App, Processor]:
    """The faust app of one worker, and its processor.

    ``partition_counts`` maps every flowbreaker topic name to its partition count
    (``streams.kafka_admin.ensure_topics``); the table and faust's internal topics
    get the count of ``agent-actions``. ``announce(line)`` is called with a
    readiness line after every rebalance (default: print to stdout).
    """
    topics = settings.topics()
    n = partition_counts[topics["actions"]]
    datadir = settings.worker_datadir
    datadir.mkdir(parents=True, exist_ok=True)
    app = WorkerApp(
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
    reader = ActionReader(app, topics["actions"], max_records=settings.batch_max, wait_ms=FETCH_WAIT_MS)
    publisher = Publisher(lambda: app.producer._ensure_producer(), partition_counts, n)
    processor = Processor(app, engine, settings, partition_counts=partition_counts, metrics=metrics, reader=reader,
                          publisher=publisher)
    app.processor = processor
    say = announce or (lambda line: print(line, flush=True))

    actions = app.topic(topics["actions"], key_type=bytes, value_type=bytes, key_serializer="raw",
                        value_serializer="raw", partitions=n, internal=False)
    control = app.topic(topics["control"], key_type=bytes, value_type=bytes, key_serializer="raw",
                        value_serializer="raw", partitions=partition_counts[topics["control"]], internal=False)
    table = app.Table(TABLE, key_type=str, value_type=bytes, partitions=n, default=None)
    processor.attach_table(table)
    # before the consumer exists for faust: its fetcher never takes agent-actions records, not even in the first
    # moments of an assignment, when faust briefly treats every assigned partition as active
    reader.install()

    @app.agent(actions, name="flowbreaker-actions")
    async def actions_subscription(stream):
        """Keeps agent-actions subscribed (assignment, the table's co-partitioned recovery). Its records are
        read by streams/worker/reader.py, so faust hands this agent none; one that comes anyway is left unacked
        (the worker commits this topic itself) and logged."""
        unacked = app.consumer._unacked_messages
        async for event in stream.noack().events():
            unacked.discard(event.message)
            log.error("faust delivered %s[%d]@%d to the subscription agent; the worker's reader processes it",
                      event.message.topic, event.message.partition, event.message.offset)

    @app.agent(control, name="flowbreaker-control")
    async def process_control(stream):
        async for event in stream.events():
            await processor.on_control(event)

    @app.task
    async def read_actions():
        try:
            await processor.run_reader()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # No record gets here (intake dead-letters every bad one); a failed publication or a bug does: stop
            # the worker, so the next owner resumes from the committed offset and nothing is lost.
            log.exception("reading agent-actions failed; stopping the worker: %r", exc)
            await app.crash(exc)

    from streams.worker.verdict_follow import VerdictFollower

    processor.verdict_follow = follow = VerdictFollower(
        settings, topics["verdicts"], partition_counts[topics["verdicts"]], keys=lambda: processor.keys,
        apply=processor.apply_verdict, home=lambda agent: home_partition(agent, n),
        on_reject=processor.metrics.verdict_rejected)

    @app.task
    async def follow_verdicts():
        await follow.run()  # every worker reads every verdict; each applies those of its agents

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
        await processor.hand_over({tp.partition for tp in revoked if tp.topic == topics["actions"]})

    @app.on_rebalance_complete.connect
    async def on_ready(sender, **kwargs) -> None:
        assignment = app.consumer.assignment()
        mine = sorted(tp.partition for tp in assignment if tp.topic == topics["actions"])
        missing = processor.unrecovered(mine, app.tables.recovery.active_tps)
        if missing:
            log.warning("rebalance complete, but the agent-state changelog of partitions %s was not among those "
                        "recovered (generation %s); their resting agents are not in the table", missing,
                        app.consumer_generation_id)
        gone = set(processor.positions.expect) - set(mine)
        if gone:
            processor.forget_partitions(gone)
        await processor.start_partitions(mine)
        processor.assigned = mine
        processor.generation += 1
        processor.ready = True
        # verdicts read while these partitions had no owner here (all of those read so far at the first one)
        await follow.reapply(mine, first=processor.generation == 1)
        if processor.generation == 1:
            # Everything loaded so far (faust, aiokafka, numpy, the model) lives as long as the process: keep
            # it out of the collector's full passes, which otherwise stall the stream for ~80 ms each.
            gc.collect()
            gc.freeze()
        processor.metrics.set_assignment(mine)
        say(f"flowbreaker worker ready: {len(mine)} partitions of {topics['actions']} "
            f"[{','.join(map(str, mine))}] (rebalance {processor.generation}, web :{settings.web_port})")

    @app.page("/metrics")
    async def metrics_page(web, request):
        denied = _page_denied(processor, request)  # --metrics-auth: a token is needed (streams/api)
        if denied is not None:
            return denied
        if metrics is None:
            return web.text("# no metrics module in this build\n")
        from streams.worker.metrics import CONTENT_TYPE

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
