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
- A message that is not a contract command (not JSON, unknown ``command``, no
  ``agent_id``) cannot be enacted: it is logged, counted and committed past.
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
from typing import Iterable, Mapping, Protocol, TextIO

from streams.guard import parse_command
from streams.settings import Settings, SettingsError, add_kafka_arguments

__all__ = [
    "Actuator", "Backoff", "WebhookSink", "LogSink", "Sink", "Stopped", "idempotency_key",
    "configure_parser", "run", "DEFAULT_GROUP",
]

log = logging.getLogger("flowbreaker.actuator")

DEFAULT_GROUP = "flowbreaker-actuator"


class Stopped(Exception):
    """The actuator is stopping: the command in hand was not (fully) delivered."""


class Sink(Protocol):
    """Where a command is enacted. ``deliver`` returns once the command is taken;
    it retries as it sees fit and raises :class:`Stopped` if ``stop`` is set first."""

    name: str

    def deliver(self, command: dict, raw: bytes, stop: threading.Event) -> None: ...


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

    def deliver(self, command: dict, raw: bytes, stop: threading.Event) -> None:
        key = idempotency_key(command, raw)
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "flowbreaker-actuator",
            **self.headers,
            "Idempotency-Key": key,
            "X-Flowbreaker-Command": command["command"],
            "X-Flowbreaker-Agent": command["agent_id"],
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

    def deliver(self, command: dict, raw: bytes, stop: threading.Event) -> None:
        out = self.stream or sys.stdout
        if self.fmt == "json":
            line = json.dumps({"enacted": command, "at": _now()}, sort_keys=True)
        else:
            line = (f"{_now()} {command['command'].upper():7} agent={command['agent_id']} "
                    f"incident={command.get('incident_id')} by={command.get('issued_by')} "
                    f"reason={json.dumps(command.get('reason'))}")
        out.write(line + "\n")
        out.flush()


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


class Actuator:
    """Delivers the commands a consumer yields to every sink, then commits.

    ``consumer`` is a kafka-python ``KafkaConsumer`` subscribed to
    ``agent-control`` with auto-commit off (or anything with the same ``poll``
    and ``commit``). Counters: ``enacted`` (by command), ``invalid``.
    """

    def __init__(self, consumer, sinks: Iterable[Sink], *, stop: threading.Event | None = None,
                 poll_timeout_s: float = 0.5) -> None:
        self.consumer = consumer
        self.sinks = list(sinks)
        if not self.sinks:
            raise ValueError("the actuator needs at least one sink")
        self.stop = stop or threading.Event()
        self.poll_timeout_s = poll_timeout_s
        self.enacted: dict[str, int] = {"freeze": 0, "release": 0}
        self.invalid = 0

    def handle(self, record) -> None:
        """Enact one record through every sink and commit its offset.

        Raises :class:`Stopped` (nothing committed) if stopped before every sink took it.
        """
        raw = record.value if isinstance(record.value, bytes) else (record.value or "").encode()
        command = parse_command(raw)
        if command is None:
            self.invalid += 1
            log.error("not a contract command at %s[%d]@%d, skipped: %r", record.topic, record.partition,
                      record.offset, raw[:200])
        else:
            for sink in self.sinks:
                sink.deliver(command, raw, self.stop)
            self.enacted[command["command"]] += 1
        self._commit(record)

    def _commit(self, record) -> None:
        from kafka import TopicPartition
        from kafka.errors import CommitFailedError
        from kafka.structs import OffsetAndMetadata

        tp = TopicPartition(record.topic, record.partition)
        try:
            self.consumer.commit({tp: OffsetAndMetadata(record.offset + 1, "", -1)})
        except CommitFailedError as err:  # partition moved (rebalance): its new owner delivers it again
            log.warning("commit of %s[%d]@%d failed (%s); it will be delivered again", record.topic,
                        record.partition, record.offset, err)

    def poll_once(self) -> int:
        """Poll once and enact what came; returns how many records were handled."""
        batches = self.consumer.poll(timeout_ms=int(self.poll_timeout_s * 1000))
        n = 0
        for _tp, records in batches.items():
            for record in records:
                self.handle(record)
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

class _Usage(Exception):
    pass


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
    add_kafka_arguments(p)


def _headers(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        name, sep, value = item.partition(":")
        if not sep or not name.strip():
            raise _Usage(f"--webhook-header must look like 'Name: value', got {item!r}")
        out[name.strip()] = value.strip()
    return out


def build_sinks(args: argparse.Namespace) -> list[Sink]:
    """The sinks the flags ask for; raises ``_Usage`` on a bad flag."""
    sinks: list[Sink] = []
    headers = _headers(args.webhook_header)
    if args.backoff_initial <= 0 or args.backoff_max < args.backoff_initial or args.webhook_timeout <= 0:
        raise _Usage("--backoff-initial and --webhook-timeout must be > 0 and --backoff-max >= --backoff-initial")
    backoff = Backoff(initial=args.backoff_initial, maximum=args.backoff_max)
    for url in args.webhook:
        try:
            sinks.append(WebhookSink(url, headers=headers, timeout=args.webhook_timeout, backoff=backoff))
        except ValueError as err:
            raise _Usage(str(err)) from None
    if not args.no_log:
        sinks.append(LogSink(fmt=args.log_format))
    if not sinks:
        raise _Usage("no sink: give --webhook URL or drop --no-log")
    return sinks


def run(args: argparse.Namespace) -> int:
    try:
        settings = Settings.from_args(args)
        sinks = build_sinks(args)
    except (_Usage, SettingsError) as err:
        # one line and exit 2 (SystemExit works whether the CLI runs as a script or with ``python -m``)
        print(f"flowbreaker actuator: error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    from kafka import KafkaConsumer

    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("kafka").setLevel(logging.WARNING)
    stop = threading.Event()

    def on_signal(signum, _frame):
        log.info("signal %d: stopping", signum)
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    topic = settings.topic("control")
    group = args.group or settings.topic_prefix + DEFAULT_GROUP
    consumer = KafkaConsumer(
        topic, group_id=group, client_id="flowbreaker-actuator", enable_auto_commit=False,
        auto_offset_reset="earliest", max_poll_records=50, request_timeout_ms=30000,
        **settings.kafka_python_config(),
    )
    actuator = Actuator(consumer, sinks, stop=stop)
    log.info("actuator: %s -> %s (group %s)", topic, ", ".join(s.name for s in sinks), group)
    started = time.monotonic()
    try:
        actuator.run()
    finally:
        consumer.close(autocommit=False)
        for s, handler in previous.items():
            signal.signal(s, handler)
        log.info("actuator stopped after %.0f s: enacted %s, invalid %d", time.monotonic() - started,
                 actuator.enacted, actuator.invalid)
    return 0
