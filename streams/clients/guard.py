"""FreezeGuard: the client an agent runtime embeds to obey freeze commands.

It follows ``agent-control`` (contract section 4) from the beginning, on every
partition, and folds the commands into the set of frozen agents with the
contract's rules (:class:`streams.clients.commands.CommandFold`): a ``freeze`` holds the
agent; a ``release`` lets it go on only when its signature verifies
(:mod:`streams.clients.signing`, with public keys only: a guard cannot sign), it
is newer than every command verified for the agent (its ``seq``: a replayed old
command changes nothing) and it names the incident of the freeze in force.
Records are deduplicated by (partition, offset), so a re-read or a redelivery
changes nothing. The key file is reloaded when it changes (or on
:meth:`FreezeGuard.reload_keys`, e.g. from the runtime's SIGHUP handler).

``may_proceed(agent_id)`` is what the runtime asks before every task and every
tool call: a flag, a clock read and a set lookup, well under a microsecond, with
no lock and no I/O. The Kafka follower runs in a background thread; nothing on
the caller's path waits for Kafka.

When it works, when it fails (it fails closed):

- Until the follower has read the log up to the end offsets it saw at start,
  ``may_proceed`` answers ``False`` for every agent: an agent frozen yesterday
  must not slip through while the log is still being read. ``wait_ready``
  blocks until then.
- Every ``check_every_s`` the follower confirms it has read up to the log's
  end. If that was not confirmed for ``max_staleness_s`` (default 5 s: broker
  down, follower stuck or lagging), every agent is held until it is again. The
  check is made by ``may_proceed`` itself, so a hung follower thread cannot keep
  the guard open.
- A follower that fails (any exception) holds every agent at once, is
  restarted after ``restart_delay_s`` from where it stopped, and lets agents go
  on only once it has caught up again. One that stays stale for
  ``stuck_after_s`` (3 x ``max_staleness_s``, at least 10 s) is restarted the
  same way. ``restarts`` counts this; ``last_error`` says why.
- A record that is not a valid command (not JSON, too deep, wrong types, too
  large, bad UTF-8, ...) is counted in ``rejected`` by reason, logged with its
  partition and offset (a few lines a minute at most), and skipped.
- A freeze is honoured even unsigned or with a bad signature (freezing is the
  safe side), and counted in ``outcomes["frozen_unverified"]``. A release that
  does not verify, or names another incident, is ignored and counted.
- Following Kafka needs the signing keys (``keys``, or the
  ``FLOWBREAKER_SIGNING_KEYS*`` settings); without keys and without Kafka the
  guard is a trusted in-process fold (tests, replays): :meth:`apply` then takes
  every command as authentic.
- The partitions of the topic are read once at start; partitions added to
  ``agent-control`` later are not followed until a restart.

Without Kafka (tests, replays) feed it with :meth:`FreezeGuard.apply`:

>>> g = FreezeGuard()
>>> g.apply({"command": "freeze", "agent_id": "a1", "incident_id": "inc-1"}, partition=0, offset=0)
True
>>> g.may_proceed("a1"), g.may_proceed("a2")
(False, True)
>>> g.apply({"command": "freeze", "agent_id": "a1", "incident_id": "inc-1"}, partition=0, offset=0)  # redelivery
False
>>> g.apply({"command": "release", "agent_id": "a1", "incident_id": "inc-9"}, partition=0, offset=1)  # not its incident
False
>>> g.apply({"command": "release", "agent_id": "a1", "incident_id": "inc-1"}, partition=0, offset=2)
True
>>> g.may_proceed("a1")
True
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from typing import Any, Callable, Mapping

from streams.clients.commands import CommandFold, RecordError, RejectLog, command_dict, decode_command

__all__ = ["FreezeGuard", "CONTROL_TOPIC", "parse_command", "DEFAULT_MAX_STALENESS_S"]

log = logging.getLogger("flowbreaker.guard")

CONTROL_TOPIC = "agent-control"
#: how long the follower may go without confirming it has read the whole log before every agent is held
DEFAULT_MAX_STALENESS_S = 5.0

#: on_change(command, frozen) is called after a command changed an agent's state
OnChange = Callable[[dict, bool], None]


def parse_command(value: bytes | str | Mapping | None) -> dict | None:
    """A contract freeze/release command as a dict, or ``None`` if it is not one (never raises).

    >>> parse_command(b'{"command": "freeze", "agent_id": "a"}')["agent_id"]
    'a'
    >>> parse_command(b'not json') is None, parse_command({"command": "pause", "agent_id": "a"}) is None
    (True, True)
    >>> parse_command(b'{"a":' * 1000) is None
    True
    """
    try:
        return command_dict(decode_command(value))
    except RecordError:
        return None


class FreezeGuard:
    """The set of frozen agents, folded from ``agent-control``.

    ``bootstrap`` is the Kafka bootstrap address; without it the guard is fed
    only through :meth:`apply` and is ready at once. ``keys`` is a
    :class:`streams.clients.signing.KeyRing` (default with ``bootstrap``: from the
    settings' environment). ``start()`` launches the follower thread; ``stop()``
    ends it. Usable as a context manager (start, wait until ready, stop).
    """

    def __init__(
        self,
        bootstrap: str | None = None,
        *,
        keys: Any = None,
        topic: str = CONTROL_TOPIC,
        client_id: str = "flowbreaker-guard",
        on_change: OnChange | None = None,
        max_staleness_s: float | None = None,
        poll_timeout_s: float = 0.2,
        check_every_s: float = 1.0,
        restart_delay_s: float = 1.0,
        consumer_config: Mapping[str, Any] | None = None,
    ) -> None:
        if bootstrap is not None and keys is None:
            from streams.clients.signing import load_keyring

            keys = load_keyring()
            if keys is None:
                raise ValueError("FreezeGuard needs the command signing keys (public ones) to verify releases: pass "
                                 "keys= or set FLOWBREAKER_SIGNING_KEYS (the public key file: flowbreaker keys "
                                 "public FILE)")
        self.bootstrap = bootstrap
        self.keys = keys
        self.topic = topic
        self.client_id = client_id
        self.max_staleness_s = DEFAULT_MAX_STALENESS_S if max_staleness_s is None else float(max_staleness_s)
        self.poll_timeout_s = poll_timeout_s
        self.check_every_s = check_every_s
        self.restart_delay_s = restart_delay_s
        #: stale this long, the follower is restarted (a stuck or paused consumer): a fresh one catches up
        self.stuck_after_s = max(3 * self.max_staleness_s, 10.0)
        self._consumer_config = dict(consumer_config or {})
        self._on_change: list[OnChange] = [on_change] if on_change else []
        self._fold = CommandFold(keys, unverified_freezes=True)
        # agent_id -> the freeze command in force (a plain dict). Written by one thread at a time
        # (the follower, or apply() under the lock), read lock-free.
        self._frozen: dict[str, dict] = {}
        # partition -> next offset to apply (records below it were applied already)
        self._next: dict[int, int] = {}
        self._since: dict[str, int | None] = {}  # frozen agent -> timestamp (ms) of the freeze record in force
        self._lock = threading.Lock()
        # ``_synced``: the current follower session has read the log to its end at least once
        self._synced = bootstrap is None
        self._current_at = time.monotonic()  # monotonic time the follower was last confirmed up to date
        self._ready = threading.Event()
        if bootstrap is None:
            self._ready.set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._consumer: Any = None
        self._error: BaseException | None = None
        self.last_error: BaseException | None = None
        self.restarts = 0
        self.applied = 0
        self.invalid = 0
        self.rejected: Counter = Counter()
        self._reject_log = RejectLog(log)
        self._ignore_log = RejectLog(log, what="ignored a command")

    # ------------------------------------------------------------------ the fast path

    def may_proceed(self, agent_id: str) -> bool:
        """May ``agent_id`` take its next task or make its next tool call?"""
        if agent_id in self._frozen or not self._synced:
            return False
        return self.bootstrap is None or time.monotonic() - self._current_at <= self.max_staleness_s

    @property
    def current(self) -> bool:
        """True while the guard knows it has read the whole log (not starting, not stale, not restarting)."""
        return self._synced and (self.bootstrap is None
                                 or time.monotonic() - self._current_at <= self.max_staleness_s)

    def is_frozen(self, agent_id: str) -> bool:
        """Is ``agent_id`` frozen by a command (regardless of readiness or staleness)?"""
        return agent_id in self._frozen

    def frozen(self) -> dict[str, dict]:
        """A snapshot: frozen agent -> the freeze command in force."""
        return dict(self._frozen)

    def open_incident(self, agent_id: str) -> str | None:
        """The incident of the freeze in force for ``agent_id`` (None when not frozen)."""
        return (self._frozen.get(agent_id) or {}).get("incident_id")

    def freeze_record_ms(self, agent_id: str) -> int | None:
        """When the record of the freeze in force was written (Kafka timestamp, ms), if known."""
        return self._since.get(agent_id)

    def highest_seq(self, agent_id: str) -> int:
        """The highest command sequence number verified for ``agent_id`` (0: none): a key holder's release
        takes the next one (``flowbreaker release``)."""
        return self._fold.highest(agent_id)

    def reload_keys(self) -> bool:
        """Read the key file again now (a runtime's SIGHUP handler calls this); True when the keys changed.
        The guard also reloads it on its own when the file changes."""
        reload = getattr(self.keys, "reload", None)
        return bool(reload()) if reload is not None else False

    def freeze_verified(self, agent_id: str) -> bool:
        """Is the freeze in force for ``agent_id`` signed by a known key?"""
        held = self._fold.frozen.get(agent_id)
        return bool(held and held[1])

    @property
    def outcomes(self) -> Counter:
        """What was done with the commands read (:data:`streams.clients.commands.OUTCOMES`)."""
        return self._fold.outcomes

    @property
    def verdicts(self) -> Counter:
        """Signature verdicts of the commands read (:data:`streams.clients.signing.VERDICTS`)."""
        return self._fold.verdicts

    def status(self) -> dict:
        """Counters and state, for a runtime's status page or log."""
        return {"ready": self.ready, "current": self.current, "frozen": len(self._frozen),
                "age_s": round(time.monotonic() - self._current_at, 3), "restarts": self.restarts,
                "last_error": repr(self.last_error) if self.last_error else None, "applied": self.applied,
                "rejected": dict(self.rejected), "outcomes": dict(self.outcomes), "verdicts": dict(self.verdicts)}

    @property
    def error(self) -> BaseException | None:
        """Why the follower thread ended for good, if it did (failures it restarts from are in ``last_error``)."""
        return self._error

    @property
    def ready(self) -> bool:
        """True once the log has been read up to the end offsets seen at start."""
        return self._ready.is_set()

    # ------------------------------------------------------------------ folding

    def add_listener(self, on_change: OnChange) -> None:
        """Call ``on_change(command, frozen)`` after each command that changes an agent's state
        (from the follower thread: keep it short)."""
        self._on_change.append(on_change)

    def apply(self, command: Any, *, partition: int | None = None, offset: int | None = None,
              timestamp: int | None = None) -> bool:
        """Apply one command (a record's value, a mapping or a :class:`~streams.clients.commands.Command`); return
        True if the agent's frozen state changed.

        With ``partition`` and ``offset`` (as read from Kafka), a record below the
        next offset expected in that partition is a redelivery and is ignored.
        Without them, commands apply in call order. A record that is not a valid
        command is counted in ``rejected`` and ignored. Never raises. ``timestamp``
        (the record's, ms) is kept for the freeze in force (:meth:`freeze_record_ms`).
        """
        if partition is not None and offset is not None:
            nxt = self._next.get(partition)
            if nxt is not None and offset < nxt:
                return False
            self._next[partition] = offset + 1
        try:
            cmd = decode_command(command)
        except RecordError as err:
            self.invalid += 1
            self.rejected[err.reason] += 1
            self._reject_log(self.topic, partition, offset, err)
            return False
        agent = cmd.agent_id
        with self._lock:
            self.applied += 1
            was = agent in self._frozen
            outcome = self._fold.apply(cmd)
            held = self._fold.frozen.get(agent)
            if held is None:
                self._frozen.pop(agent, None)
                self._since.pop(agent, None)
            else:
                self._frozen[agent] = command_dict(held[0])
                if outcome in ("frozen", "frozen_unverified", "refrozen"):
                    self._since[agent] = timestamp
            now = agent in self._frozen
        if outcome in ("release_unverified", "release_stale", "freeze_ignored", "frozen_unverified", "replayed",
                       "too_old"):
            self._ignore_log(self.topic, partition, offset,
                             f"{cmd.command} of {agent!r} (incident {cmd.incident_id!r}, by {cmd.issued_by!r}): "
                             f"{outcome} (signature: {self._fold.last_verdict})")
        if was != now:
            payload = command_dict(cmd)
            for callback in self._on_change:
                try:
                    callback(payload, now)
                except Exception:  # a listener's bug must not stop the guard from following freezes
                    log.exception("FreezeGuard listener failed")
            return True
        return False

    # ------------------------------------------------------------------ the follower

    def start(self) -> "FreezeGuard":
        """Start following ``agent-control`` in a daemon thread (needs ``bootstrap``)."""
        if self.bootstrap is None:
            raise ValueError("FreezeGuard without bootstrap: feed it with apply()")
        if self._thread is not None:
            return self
        self._thread = threading.Thread(target=self._run, name=f"freeze-guard:{self.topic}", daemon=True)
        self._thread.start()
        return self

    def wait_ready(self, timeout: float | None = None) -> bool:
        """Block until the log has been read to its end (True), or ``timeout`` seconds (False).

        Raises the follower's error if it ended for good before getting there.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._ready.is_set():
            if self._error is not None:
                raise RuntimeError(f"FreezeGuard follower failed: {self._error!r}") from self._error
            left = 0.1 if deadline is None else min(0.1, deadline - time.monotonic())
            if left <= 0:
                return False
            self._ready.wait(left)
        return True

    def wait_current(self, timeout: float) -> bool:
        """Block until the guard is current (ready and not stale) or ``timeout`` seconds pass."""
        deadline = time.monotonic() + timeout
        while not self.current:
            if time.monotonic() >= deadline or self._error is not None:
                return False
            time.sleep(0.05)
        return True

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the follower and close its consumer."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def __enter__(self) -> "FreezeGuard":
        if self.bootstrap is not None:
            self.start()
            if not self.wait_ready(60.0):
                self.stop()
                raise TimeoutError(f"FreezeGuard did not catch up on {self.topic} within 60 s")
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._follow()
            except Exception as err:  # noqa: BLE001 - any failure: hold everyone, restart from where we were
                self._synced = False
                self.last_error = err
                self.restarts += 1
                log.error("FreezeGuard follower failed (%r): holding every agent; restarting in %.1f s", err,
                          self.restart_delay_s)
                self._stop.wait(self.restart_delay_s)
            except BaseException as err:  # SystemExit, KeyboardInterrupt in this thread: give up, closed
                self._synced = False
                self._error = err
                log.exception("FreezeGuard follower stopped")
                return

    def _follow(self) -> None:
        from kafka import KafkaConsumer, TopicPartition

        config = dict(
            bootstrap_servers=self.bootstrap, client_id=self.client_id, group_id=None,
            enable_auto_commit=False, auto_offset_reset="earliest",
            request_timeout_ms=15000, metadata_max_age_ms=30000,
        )
        config.update(self._consumer_config)
        consumer = KafkaConsumer(**config)
        self._consumer = consumer
        try:
            partitions = None
            while partitions is None and not self._stop.is_set():
                partitions = consumer.partitions_for_topic(self.topic)
                if partitions is None:
                    log.info("waiting for topic %s to exist", self.topic)
                    self._stop.wait(0.5)
            if self._stop.is_set():
                return
            tps = [TopicPartition(self.topic, p) for p in sorted(partitions)]
            consumer.assign(tps)
            for tp in tps:  # from where an earlier session stopped (the fold is kept), else the beginning
                if tp.partition in self._next:
                    consumer.seek(tp, self._next[tp.partition])
                else:
                    consumer.seek_to_beginning(tp)
            target = self._end_offsets(consumer, tps)
            while target is None and not self._stop.is_set():
                self._stop.wait(0.5)
                target = self._end_offsets(consumer, tps)
            next_check = time.monotonic() + self.check_every_s
            stale = False
            while not self._stop.is_set():
                batches = consumer.poll(timeout_ms=int(self.poll_timeout_s * 1000))
                for tp, records in batches.items():
                    for rec in records:
                        self.apply(rec.value, partition=tp.partition, offset=rec.offset, timestamp=rec.timestamp)
                now = time.monotonic()
                if not self._synced:
                    if self._caught_up(consumer, target):
                        self._current_at = now
                        self._synced = True
                        self._ready.set()
                        log.info("caught up on %s: %d frozen agents", self.topic, len(self._frozen))
                    continue
                if now >= next_check:
                    next_check = now + self.check_every_s
                    ends = self._end_offsets(consumer, tps)
                    if ends is not None and self._caught_up(consumer, ends):
                        if stale:
                            log.warning("%s is current again: agents may proceed", self.topic)
                            stale = False
                        self._current_at = now
                    elif now - self._current_at > self.max_staleness_s:
                        if not stale:
                            log.error("%s not confirmed current for %.1f s: holding every agent", self.topic,
                                      now - self._current_at)
                            stale = True
                        if now - self._current_at > self.stuck_after_s:  # a consumer that no longer moves
                            raise RuntimeError(f"{self.topic} not current for {now - self._current_at:.0f} s")
        finally:
            self._consumer = None
            try:
                consumer.close(autocommit=False)
            except Exception:  # noqa: BLE001 - closing a broken consumer: nothing more to do
                pass

    def _end_offsets(self, consumer, tps) -> dict | None:
        try:
            return consumer.end_offsets(tps, timeout_ms=5000)
        except Exception as err:  # broker unreachable for now: staleness decides
            log.warning("cannot read end offsets of %s: %r", self.topic, err)
            return None

    def _caught_up(self, consumer, ends: dict) -> bool:
        try:
            return all(consumer.position(tp, timeout_ms=5000) >= end for tp, end in ends.items())
        except Exception as err:  # position unknown for now (broker unreachable)
            log.warning("cannot read positions on %s: %r", self.topic, err)
            return False
