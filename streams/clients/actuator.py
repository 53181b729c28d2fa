"""The freeze actuator (``flowbreaker actuator``): enacts ``agent-control`` commands.

It consumes ``agent-control`` (contract section 4) in its own consumer group
and hands each command, in partition order, to its sinks: an HTTP webhook to
the agent orchestrator and/or a log line. Delivery is at-least-once: the offset
of a command is committed only after every sink has taken it, so a command is
never dropped and never skipped over.

When it works, when it fails:

- The webhook retries every failure (connection refused, timeout, any non-2xx
  status) with capped exponential backoff, forever: it blocks on that command
  rather than commit past it. Commands behind it wait; none is lost. Each POST
  carries ``Idempotency-Key: <incident_id>:<command>``, so a command delivered
  again after a crash or a rebalance can be recognised by the orchestrator.
- Commands are judged by the contract's rules (:class:`streams.clients.commands.CommandFold`,
  per partition, in offset order): a freeze is enacted even unsigned (freezing
  is the safe side; counted, and marked ``X-Flowbreaker-Verified: false``); a
  release is enacted only when its signature verifies (:mod:`streams.clients.signing`,
  public keys only: the actuator cannot sign), it is newer than every command
  verified for the agent (``seq``: a replayed old freeze or release is not
  enacted) and it names the incident of the freeze in force. Ignored commands are
  logged, counted in ``ignored`` and committed past. To know the freeze in force
  when it starts (or takes over a partition) mid-log, the actuator first reads
  that partition from its beginning up to the record in hand (``history``).
- A record that is not a contract command (not JSON, too deep, wrong types, too
  large, bad UTF-8, ...) cannot be enacted: it is logged, counted in ``invalid``
  (and ``rejected`` by reason) and committed past. No record can crash the loop.
- The orchestrator receives the command's known fields re-encoded as JSON
  (unknown extra fields, which no signature covers, are dropped).
- The key file is reloaded when it changes, and at once on SIGHUP (key
  rotation never restarts the actuator).
- A stop (SIGINT/SIGTERM) during retries ends the wait at once; the pending
  command stays uncommitted and is delivered again on the next start.
- One actuator process handles all partitions in one thread, so a command held
  by a failing webhook also holds the commands of other agents. Run one
  actuator per consumer group; a second one only takes over partitions.

>>> b = Backoff(initial=0.5, factor=2.0, maximum=4.0, jitter=0.0)
>>> [b.delay(n) for n in range(1, 6)]
[0.5, 1.0, 2.0, 4.0, 4.0]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import random
import signal
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Iterable, Mapping, TextIO

from detector.errors import UsageError
from streams.clients.commands import CommandFold, RecordError, RejectLog, command_dict, decode_command
from streams.clients.sink import Sink, Stopped
from streams.settings import Settings, add_kafka_arguments

__all__ = [
    "Actuator", "Backoff", "WebhookSink", "LogSink", "idempotency_key", "KafkaHistory",
    "configure_parser", "run", "DEFAULT_GROUP",
]

log = logging.getLogger("flowbreaker.actuator")

DEFAULT_GROUP = "flowbreaker-actuator"


def idempotency_key(command: Mapping, raw: bytes = b"") -> str:
    """``<incident_id>:<command>``, the same for every delivery of one command.

    >>> idempotency_key({"command": "freeze", "agent_id": "a", "incident_id": "inc-1"})
    'inc-1:freeze'

    A command without an incident id falls back to a digest of its bytes.
    """
    incident = command.get("incident_id")
    if isinstance(incident, str) and incident:
        return f"{incident}:{command['command']}"
    return f"sha256-{hashlib.sha256(raw).hexdigest()[:32]}:{command['command']}"


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff: ``initial * factor**(n-1)`` seconds before retry ``n``, at most
    ``maximum``, less up to ``jitter`` of it at random (so many actuators do not retry in step)."""

    initial: float = 0.5
    factor: float = 2.0
    maximum: float = 30.0
    jitter: float = 0.2
    rng: random.Random = field(default_factory=random.Random, compare=False, repr=False)

    def delay(self, attempt: int) -> float:
        base = min(self.maximum, self.initial * self.factor ** max(0, attempt - 1))
        if self.jitter:
            base *= 1.0 - self.jitter * self.rng.random()
        return base


class WebhookSink:
    """POSTs each command's JSON to ``url`` until a 2xx answer; never gives up.

    ``headers`` are added to every request (e.g. ``Authorization``). ``timeout``
    bounds one request. ``attempts`` and ``failures`` count requests.
    """

    name = "webhook"

    def __init__(self, url: str, *, headers: Mapping[str, str] | None = None, timeout: float = 10.0,
                 backoff: Backoff | None = None) -> None:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"webhook URL must be http:// or https://, got {url!r}")
        self.url = url
        self.headers = dict(headers or {})
        self.timeout = timeout
        self.backoff = backoff or Backoff()
        self.attempts = 0
        self.failures = 0

    def deliver(self, command: dict, raw: bytes, stop: threading.Event, *, verified: bool = True) -> None:
        key = idempotency_key(command, raw)
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "flowbreaker-actuator",
            **self.headers,
            "Idempotency-Key": key,
            "X-Flowbreaker-Command": command["command"],
            "X-Flowbreaker-Agent": command["agent_id"],
            # a freeze whose signature did not verify is enacted all the same (fail closed): say so
            "X-Flowbreaker-Verified": "true" if verified else "false",
        }
        attempt = 0
        while True:
            if stop.is_set():
                raise Stopped(f"stopped before {key} was delivered")
            attempt += 1
            self.attempts += 1
            error = self._post(raw, headers)
            if error is None:
                if attempt > 1:
                    log.info("webhook delivered %s after %d attempts", key, attempt)
                return
            self.failures += 1
            wait = self.backoff.delay(attempt)
            log.warning("webhook %s: %s (attempt %d for %s); retrying in %.2f s", self.url, error, attempt, key, wait)
            if stop.wait(wait):
                raise Stopped(f"stopped before {key} was delivered")

    def _post(self, body: bytes, headers: Mapping[str, str]) -> str | None:
        """None on a 2xx answer, else why not."""
        req = urllib.request.Request(self.url, data=body, headers=dict(headers), method="POST")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                resp.read()
                status = resp.status
        except urllib.error.HTTPError as err:
            err.close()
            return f"HTTP {err.code}"
        except (urllib.error.URLError, OSError, ValueError) as err:  # refused, reset, timeout, bad answer
            reason = getattr(err, "reason", err)
            return f"{type(err).__name__}: {reason}"
        if 200 <= status < 300:
            return None
        return f"HTTP {status}"


class LogSink:
    """Writes one line per command to ``stream`` (stdout by default): text or JSON lines."""

    name = "log"

    def __init__(self, stream: TextIO | None = None, *, fmt: str = "text") -> None:
        if fmt not in ("text", "json"):
            raise ValueError(f"log format must be text or json, got {fmt!r}")
        self.stream = stream
        self.fmt = fmt

    def deliver(self, command: dict, raw: bytes, stop: threading.Event, *, verified: bool = True) -> None:
        out = self.stream or sys.stdout
        if self.fmt == "json":
            line = json.dumps({"enacted": command, "at": _now(), "verified": verified}, sort_keys=True)
        else:
            line = (f"{_now()} {command['command'].upper():7} agent={command['agent_id']} "
                    f"incident={command.get('incident_id')} by={command.get('issued_by')} "
                    f"reason={json.dumps(command.get('reason'))}{'' if verified else ' UNVERIFIED'}")
        out.write(line + "\n")
        out.flush()


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


class _PartitionState:
    """The fold of one partition, and the next offset it expects."""

    __slots__ = ("fold", "next")

    def __init__(self, fold: CommandFold, next_offset: int) -> None:
        self.fold = fold
        self.next = next_offset


class _NotPrimed(Exception):
    """The partition's earlier commands could not be read: the record in hand must wait."""


class KafkaHistory:
    """``history(topic, partition, end)``: the records of a partition from its beginning up to ``end``
    (exclusive), read with a consumer of its own (no group). Raises on a broker that does not answer
    within ``timeout_s``."""

    def __init__(self, config: Mapping, *, timeout_s: float = 30.0) -> None:
        self.config = dict(config)
        self.timeout_s = timeout_s
        self._consumer = None

    def __call__(self, topic: str, partition: int, end: int) -> list:
        from kafka import KafkaConsumer, TopicPartition

        if self._consumer is None:
            self._consumer = KafkaConsumer(client_id="flowbreaker-actuator-history", group_id=None,
                                           enable_auto_commit=False, request_timeout_ms=int(self.timeout_s * 1000),
                                           **self.config)
        c = self._consumer
        tp = TopicPartition(topic, partition)
        c.assign([tp])
        c.seek_to_beginning(tp)
        out = []
        deadline = time.monotonic() + self.timeout_s
        while c.position(tp, timeout_ms=int(self.timeout_s * 1000)) < end:
            if time.monotonic() > deadline:
                raise TimeoutError(f"could not read {topic}[{partition}] up to offset {end} in {self.timeout_s:.0f}s")
            for rec in c.poll(timeout_ms=200).get(tp, ()):
                if rec.offset < end:
                    out.append(rec)
        return out

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close(autocommit=False)
            self._consumer = None


class Actuator:
    """Delivers the commands a consumer yields to every sink, then commits.

    ``consumer`` is a kafka-python ``KafkaConsumer`` subscribed to
    ``agent-control`` with auto-commit off (or anything with the same ``poll``,
    ``commit`` and ``seek``). ``keys`` (a :class:`streams.clients.signing.KeyRing`)
    verifies the commands; ``history`` reads a partition's earlier records
    (:class:`KafkaHistory`; ``None``: the consumer starts at the log's beginning,
    as in tests). Counters: ``enacted`` (by command), ``invalid`` and
    ``rejected`` (records that are not commands), ``ignored`` (commands not
    enacted, by outcome), ``unverified_freezes``.
    """

    def __init__(self, consumer, sinks: Iterable[Sink], *, keys, history=None, stop: threading.Event | None = None,
                 poll_timeout_s: float = 0.5, retry_s: float = 2.0) -> None:
        if keys is None:
            raise ValueError("the actuator needs the command signing keys to verify releases")
        self.consumer = consumer
        self.sinks = list(sinks)
        if not self.sinks:
            raise ValueError("the actuator needs at least one sink")
        self.keys = keys
        self.history = history
        self.stop = stop or threading.Event()
        self.poll_timeout_s = poll_timeout_s
        self.retry_s = retry_s
        self.enacted: dict[str, int] = {"freeze": 0, "release": 0}
        self.invalid = 0
        self.rejected: dict[str, int] = {}
        self.ignored: dict[str, int] = {}
        self.unverified_freezes = 0
        self._parts: dict[tuple[str, int], _PartitionState] = {}
        self._reject_log = RejectLog(log)
        self._ignore_log = RejectLog(log, what="ignored a command")

    # ------------------------------------------------------------------ one record
    def _state(self, record) -> _PartitionState:
        """The partition's fold just before ``record`` (read from the log when not already in step)."""
        key = (record.topic, record.partition)
        st = self._parts.get(key)
        if st is not None and st.next == record.offset:
            return st
        fold = CommandFold(self.keys, unverified_freezes=True)
        if self.history is not None and record.offset > 0:
            try:
                earlier = self.history(record.topic, record.partition, record.offset)
            except Exception as err:  # noqa: BLE001 - broker slow or gone: the record waits, nothing is skipped
                raise _NotPrimed(f"cannot read {record.topic}[{record.partition}] before offset {record.offset}: "
                                 f"{err!r}") from None
            for rec in earlier:
                try:
                    fold.apply(decode_command(rec.value))
                except RecordError:
                    pass  # counted when it was first handled
        st = _PartitionState(fold, record.offset)
        self._parts[key] = st
        return st

    def handle(self, record) -> None:
        """Enact one record through every sink (if the rules say so) and commit its offset.

        Raises :class:`Stopped` (nothing committed) if stopped before every sink took it,
        and ``_NotPrimed`` (nothing committed) if the partition's earlier commands could not be read.
        """
        st = self._state(record)
        try:
            cmd = decode_command(record.value)
        except RecordError as err:
            self.invalid += 1
            self.rejected[err.reason] = self.rejected.get(err.reason, 0) + 1
            self._reject_log(record.topic, record.partition, record.offset, err)
            st.next = record.offset + 1
            self._commit(record)
            return
        outcome = st.fold.apply(cmd)
        verified = st.fold.last_verdict == "ok"
        if outcome in ("frozen", "frozen_unverified", "refrozen", "released"):
            command = command_dict(cmd)
            raw = json.dumps(command, separators=(",", ":")).encode()
            for sink in self.sinks:
                sink.deliver(command, raw, self.stop, verified=verified)
            self.enacted[cmd.command] += 1
            if cmd.command == "freeze" and not verified:
                self.unverified_freezes += 1
        else:
            self.ignored[outcome] = self.ignored.get(outcome, 0) + 1
            if outcome != "repeat":
                self._ignore_log(record.topic, record.partition, record.offset,
                                 f"{cmd.command} of {cmd.agent_id!r} (incident {cmd.incident_id!r}, by "
                                 f"{cmd.issued_by!r}) not enacted: {outcome} (signature: {st.fold.last_verdict})")
        st.next = record.offset + 1
        self._commit(record)

    def _commit(self, record) -> None:
        from kafka import TopicPartition
        from kafka.errors import CommitFailedError, RebalanceInProgressError
        from kafka.structs import OffsetAndMetadata

        tp = TopicPartition(record.topic, record.partition)
        try:
            self.consumer.commit({tp: OffsetAndMetadata(record.offset + 1, "", -1)})
        except (CommitFailedError, RebalanceInProgressError) as err:  # a rebalance: the owner delivers it again
            log.warning("commit of %s[%d]@%d failed (%s); it will be delivered again", record.topic,
                        record.partition, record.offset, err)

    def poll_once(self) -> int:
        """Poll once and enact what came; returns how many records were handled."""
        from kafka import TopicPartition

        batches = self.consumer.poll(timeout_ms=int(self.poll_timeout_s * 1000))
        n = 0
        for tp, records in batches.items():
            for record in records:
                try:
                    self.handle(record)
                except _NotPrimed as why:
                    # come back to this record (the rest of the partition's batch waits behind it)
                    log.warning("%s; retrying in %.0f s", why, self.retry_s)
                    self.consumer.seek(TopicPartition(record.topic, record.partition), record.offset)
                    self.stop.wait(self.retry_s)
                    break
                n += 1
        return n

    def run(self) -> None:
        """Poll and enact until ``stop`` is set."""
        try:
            while not self.stop.is_set():
                self.poll_once()
        except Stopped as why:
            log.info("%s", why)


# ---------------------------------------------------------------------- command line

def configure_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--group", default=None,
                   help=f"consumer group (default: the topic prefix + {DEFAULT_GROUP})")
    p.add_argument("--webhook", action="append", default=[], metavar="URL",
                   help="POST every command's JSON to this orchestrator URL (repeatable)")
    p.add_argument("--webhook-header", action="append", default=[], metavar="'NAME: VALUE'",
                   help="extra header on every webhook request, e.g. 'Authorization: Bearer ...'")
    p.add_argument("--webhook-timeout", type=float, default=10.0, help="seconds per request (default %(default)s)")
    p.add_argument("--backoff-initial", type=float, default=0.5, help="first retry delay, s (default %(default)s)")
    p.add_argument("--backoff-max", type=float, default=30.0, help="longest retry delay, s (default %(default)s)")
    p.add_argument("--log-format", choices=("text", "json"), default="text",
                   help="format of the log sink's lines on stdout (default %(default)s)")
    p.add_argument("--no-log", action="store_true", help="no log sink (needs --webhook)")
    p.add_argument("--no-ack", action="store_true",
                   help="do not acknowledge enacted commands on agent-control-acks (flowbreaker drill times them)")
    add_kafka_arguments(p)


def _headers(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        name, sep, value = item.partition(":")
        if not sep or not name.strip():
            raise UsageError(f"--webhook-header must look like 'Name: value', got {item!r}")
        out[name.strip()] = value.strip()
    return out


def build_sinks(args: argparse.Namespace) -> list[Sink]:
    """The sinks the flags ask for; raises ``UsageError`` on a bad flag."""
    sinks: list[Sink] = []
    headers = _headers(args.webhook_header)
    if args.backoff_initial <= 0 or args.backoff_max < args.backoff_initial or args.webhook_timeout <= 0:
        raise UsageError("--backoff-initial and --webhook-timeout must be > 0 and --backoff-max >= --backoff-initial")
    backoff = Backoff(initial=args.backoff_initial, maximum=args.backoff_max)
    for url in args.webhook:
        try:
            sinks.append(WebhookSink(url, headers=headers, timeout=args.webhook_timeout, backoff=backoff))
        except ValueError as err:
            raise UsageError(str(err)) from None
    if not args.no_log:
        sinks.append(LogSink(fmt=args.log_format))
    if not sinks:
        raise UsageError("no sink: give --webhook URL or drop --no-log")
    return sinks


def run(args: argparse.Namespace) -> int:
    settings = Settings.from_args(args)  # SettingsError, like UsageError: one line, exit 2
    sinks = build_sinks(args)
    if not args.no_ack:  # the last sink: acknowledged once every other one took the command (streams/clients/acks.py)
        from streams.clients.acks import AckSink

        sinks.append(AckSink(settings))
    from streams.clients.signing import keyring_for

    keys = keyring_for(settings)
    if keys is None:
        raise UsageError("no command signing keys to verify with: --signing-keys FILE or FLOWBREAKER_SIGNING_KEYS "
                         "(the public key file: flowbreaker keys public FILE)")
    from streams.kafka_admin import group_consumer

    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("kafka").setLevel(logging.WARNING)
    stop = threading.Event()

    def on_signal(signum, _frame):
        log.info("signal %d: stopping", signum)
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}

    def on_hup(_signum, _frame):
        log.warning("SIGHUP: reloading the signing keys: %s", "changed" if keys.reload() else "unchanged")

    if hasattr(signal, "SIGHUP"):
        previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, on_hup)
    topic = settings.topic("control")
    group = args.group or settings.topic_prefix + DEFAULT_GROUP
    consumer = group_consumer(settings, topic, group=group, client_id="flowbreaker-actuator", enable_auto_commit=False,
                              auto_offset_reset="earliest", max_poll_records=50, request_timeout_ms=30000)
    history = KafkaHistory(settings.kafka_python_config())
    actuator = Actuator(consumer, sinks, keys=keys, history=history, stop=stop)
    log.info("actuator: %s -> %s (group %s)", topic, ", ".join(s.name for s in sinks), group)
    started = time.monotonic()
    try:
        actuator.run()
    finally:
        consumer.close(autocommit=False)
        history.close()
        for s, handler in previous.items():
            signal.signal(s, handler)
        log.info("actuator stopped after %.0f s: enacted %s (%d unverified freezes), invalid %s, not enacted %s",
                 time.monotonic() - started, actuator.enacted, actuator.unverified_freezes, actuator.rejected,
                 actuator.ignored)
    return 0
