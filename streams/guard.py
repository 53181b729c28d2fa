"""FreezeGuard: the client an agent runtime embeds to obey freeze commands.

It follows ``agent-control`` (contract section 4) from the beginning, on every
partition, and folds the commands into the set of frozen agents: ``freeze``
adds the agent, ``release`` removes it, and for each agent the command with the
highest offset wins. Commands are keyed by ``agent_id``, so all commands of one
agent sit in one partition, in order; offsets already applied are ignored, so a
re-read or a redelivery changes nothing.

``may_proceed(agent_id)`` is what the runtime asks before every task and every
tool call: a flag test and a set lookup, well under a microsecond, with no lock
and no I/O. The Kafka follower runs in a background thread; nothing on the
caller's path waits for Kafka.

When it works, when it fails:

- Until the follower has read the log up to the end offsets it saw at start,
  ``may_proceed`` answers ``False`` for every agent: an agent frozen yesterday
  must not slip through while the log is still being read. ``wait_ready``
  blocks until then.
- If Kafka becomes unreachable the guard keeps the last known set (fail open)
  unless ``max_staleness_s`` is given: then, once the follower has not been
  confirmed up to date for that long, every agent is held (fail closed) until
  it is again.
- Malformed commands are counted in ``invalid`` and skipped; they never stop
  the follower.
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
>>> g.apply({"command": "release", "agent_id": "a1", "incident_id": "inc-1"}, partition=0, offset=1)
True
>>> g.may_proceed("a1")
True
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any, Callable, Mapping

__all__ = ["FreezeGuard", "CONTROL_TOPIC", "parse_command"]

log = logging.getLogger("flowbreaker.guard")

CONTROL_TOPIC = "agent-control"
COMMANDS = ("freeze", "release")

#: on_change(command, frozen) is called after a command changed an agent's state
OnChange = Callable[[dict, bool], None]


def parse_command(value: bytes | str | Mapping | None) -> dict | None:
    """A contract freeze/release command as a dict, or ``None`` if it is not one.

    >>> parse_command(b'{"command": "freeze", "agent_id": "a"}')["agent_id"]
    'a'
    >>> parse_command(b'not json') is None, parse_command({"command": "pause", "agent_id": "a"}) is None
    (True, True)
    """
    if value is None:
        return None
    if isinstance(value, Mapping):
        cmd = dict(value)
    else:
        try:
            cmd = json.loads(value)
        except (ValueError, UnicodeDecodeError):
            return None
    if not isinstance(cmd, dict):
        return None
    if cmd.get("command") not in COMMANDS:
        return None
    agent = cmd.get("agent_id")
    if not isinstance(agent, str) or not agent:
        return None
    return cmd


class FreezeGuard:
    """The set of frozen agents, folded from ``agent-control``.

    ``bootstrap`` is the Kafka bootstrap address; without it the guard is fed
    only through :meth:`apply` and is ready at once. ``start()`` launches the
    follower thread; ``stop()`` ends it. Usable as a context manager (start,
    wait until ready, stop).
    """

    def __init__(
        self,
        bootstrap: str | None = None,
        *,
        topic: str = CONTROL_TOPIC,
        client_id: str = "flowbreaker-guard",
        on_change: OnChange | None = None,
        max_staleness_s: float | None = None,
        poll_timeout_s: float = 0.2,
        check_every_s: float = 1.0,
        consumer_config: Mapping[str, Any] | None = None,
    ) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.client_id = client_id
        self.max_staleness_s = max_staleness_s
        self.poll_timeout_s = poll_timeout_s
        self.check_every_s = check_every_s
        self._consumer_config = dict(consumer_config or {})
        self._on_change: list[OnChange] = [on_change] if on_change else []
        # agent_id -> the freeze command in force. Written by one thread at a time
        # (the follower, or apply() under the lock), read lock-free.
        self._frozen: dict[str, dict] = {}
        # agent_id -> (partition, offset) of the last command applied
        self._pos: dict[str, tuple[int, int]] = {}
        self._lock = threading.Lock()
        # ``_open`` is False until caught up, and while stale (fail closed)
        self._open = bootstrap is None
        self._ready = threading.Event()
        if bootstrap is None:
            self._ready.set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self.applied = 0
        self.invalid = 0
        self.last_current: float | None = None  # monotonic time the follower was last confirmed up to date

    # ------------------------------------------------------------------ the fast path

    def may_proceed(self, agent_id: str) -> bool:
        """May ``agent_id`` take its next task or make its next tool call?"""
        return self._open and agent_id not in self._frozen

    def is_frozen(self, agent_id: str) -> bool:
        """Is ``agent_id`` frozen by a command (regardless of readiness or staleness)?"""
        return agent_id in self._frozen

    def frozen(self) -> dict[str, dict]:
        """A snapshot: frozen agent -> the freeze command in force."""
        return dict(self._frozen)

    @property
    def error(self) -> BaseException | None:
        """Why the follower thread stopped, if it did (it then follows nothing: restart the guard)."""
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

    def apply(self, command: bytes | str | Mapping, *, partition: int | None = None,
              offset: int | None = None) -> bool:
        """Apply one command; return True if the agent's frozen state changed.

        With ``partition`` and ``offset`` (as read from Kafka), a command at or
        below the last applied offset of that agent in that partition is
        ignored. Without them, commands apply in call order. A malformed command
        is counted in ``invalid`` and ignored.
        """
        cmd = parse_command(command)
        if cmd is None:
            self.invalid += 1
            log.warning("ignoring a malformed command on %s (partition %s offset %s)", self.topic, partition, offset)
            return False
        agent = cmd["agent_id"]
        with self._lock:
            if partition is not None and offset is not None:
                last = self._pos.get(agent)
                if last is not None and last[0] == partition and offset <= last[1]:
                    return False
                self._pos[agent] = (partition, offset)
            self.applied += 1
            was = agent in self._frozen
            if cmd["command"] == "freeze":
                self._frozen[agent] = cmd
                now = True
            else:
                self._frozen.pop(agent, None)
                now = False
        if was != now:
            for callback in self._on_change:
                try:
                    callback(cmd, now)
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

        Raises the follower's error if it died before getting there.
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
        try:
            self._follow()
        except BaseException as err:  # noqa: BLE001 - recorded for wait_ready, then the thread ends
            self._error = err
            self._open = False if self.max_staleness_s is not None else self._open
            log.exception("FreezeGuard follower stopped")

    def _follow(self) -> None:
        from kafka import KafkaConsumer, TopicPartition

        config = dict(
            bootstrap_servers=self.bootstrap, client_id=self.client_id, group_id=None,
            enable_auto_commit=False, auto_offset_reset="earliest",
            request_timeout_ms=15000, metadata_max_age_ms=30000,
        )
        config.update(self._consumer_config)
        consumer = KafkaConsumer(**config)
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
            consumer.seek_to_beginning(*tps)
            target = self._end_offsets(consumer, tps)
            while target is None and not self._stop.is_set():
                self._stop.wait(0.5)
                target = self._end_offsets(consumer, tps)
            next_check = time.monotonic() + self.check_every_s
            while not self._stop.is_set():
                batches = consumer.poll(timeout_ms=int(self.poll_timeout_s * 1000))
                for tp, records in batches.items():
                    for rec in records:
                        self.apply(rec.value, partition=tp.partition, offset=rec.offset)
                now = time.monotonic()
                if not self._ready.is_set():
                    if self._caught_up(consumer, target):
                        self.last_current = now
                        self._open = True
                        self._ready.set()
                        log.info("caught up on %s: %d frozen agents", self.topic, len(self._frozen))
                    continue
                if now >= next_check:
                    next_check = now + self.check_every_s
                    ends = self._end_offsets(consumer, tps)
                    if ends is not None and self._caught_up(consumer, ends):
                        self.last_current = now
                    self._check_staleness(now)
        finally:
            consumer.close(autocommit=False)

    def _end_offsets(self, consumer, tps) -> dict | None:
        try:
            return consumer.end_offsets(tps, timeout_ms=5000)
        except Exception as err:  # broker unreachable for now: the staleness check decides
            log.warning("cannot read end offsets of %s: %r", self.topic, err)
            return None

    def _caught_up(self, consumer, ends: dict) -> bool:
        try:
            return all(consumer.position(tp, timeout_ms=5000) >= end for tp, end in ends.items())
        except Exception as err:  # position unknown for now (broker unreachable)
            log.warning("cannot read positions on %s: %r", self.topic, err)
            return False

    def _check_staleness(self, now: float) -> None:
        if self.max_staleness_s is None:
            return
        fresh = self.last_current is not None and now - self.last_current <= self.max_staleness_s
        if fresh != self._open:
            self._open = fresh
            if fresh:
                log.warning("%s is current again: agents may proceed", self.topic)
            else:
                log.error("%s not confirmed current for %.1f s: holding every agent", self.topic,
                          self.max_staleness_s)
