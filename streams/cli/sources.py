"""Where a command's events come from: a file or a time range of a topic.

``train``, ``replay``, ``evaluate``, ``models show``, ``manifest suggest`` and
``audit`` read action events either from a JSON Lines file (``--input``; ``-``
is standard input) or from the messages of a Kafka topic whose timestamps fall
in ``[--since, --until)`` (``--from-topic``, :mod:`streams.topic_range`). This
module is both readers, the reporter of invalid lines they share and the
arguments that choose a source, so that every command reads, counts, reports
and refuses the same way:

- :func:`read_file` (:func:`input_file` and :func:`read_events` to stream a
  large file) and :func:`read_topic`: the valid events, in file order or
  partition by partition; :func:`read_source`: whichever of the two the
  arguments name, in time order, drill agents left out.
- :class:`InvalidLines`: counts invalid events and names the first 20 on stderr
  (``WHERE:NO: invalid event skipped: REASON``); invalid events never stop a read.
- :func:`parse_range`: ``--since``/``--until`` to milliseconds.
- :func:`add_source_arguments`, :func:`add_range_arguments`: ``--input`` or
  ``--from-topic``, and ``--since``/``--until``/``--max-events`` (each command
  keeps its own ``--max-events`` default).

When it works: on any JSON Lines file or standard input, however many of its
lines are bad (a bad line is counted and skipped, never fatal; :func:`read_events`
streams a file larger than memory), and on a topic range of a broker that answers.
When it fails: everything a user can fix is a :class:`UsageError` (``main``
prints it as one line, ``flowbreaker COMMAND: REASON``, and exits 2): a file
that cannot be opened (``cannot read PATH: REASON``), a range that does not
parse or ends before it starts, a topic that does not exist, a range holding
more messages than ``--max-events`` (refused before anything is read). A broker
that does not answer or stops delivering is not the user's to fix: it is a
:class:`streams.kafka_admin.KafkaUnavailable` (one line, exit 1).

>>> import io
>>> invalid = InvalidLines("h.jsonl", quiet=True)  # on stderr otherwise: h.jsonl:1: invalid event skipped: ...
>>> list(read_events(io.BytesIO(b'{"bad": 1}\\n\\n{not json\\n'), on_error=invalid))
[]
>>> invalid.count, sorted(invalid.by_code)
(2, ['missing', 'not_json'])
"""

from __future__ import annotations

import argparse
import sys
import time
from contextlib import contextmanager
from typing import IO, Callable, Iterator

from detector.errors import UsageError
from detector.events import ActionEvent, EventError, decode_event
from streams.topic_range import parse_instant

__all__ = ["InvalidLines", "open_input", "input_file", "read_events", "read_file", "read_topic", "read_source",
           "topic_errors", "parse_range", "require_since", "refuse_topic_options", "add_source_arguments",
           "add_range_arguments", "add_max_events_argument"]

#: invalid lines named one by one before the rest are only counted (a bad file is not a screenful per line)
SHOW_INVALID = 20


class InvalidLines:
    """An ``on_error(no, err)`` for the readers: counts invalid events (``count``, and ``by_code``
    per :attr:`EventError.code`) and names the first ``show`` of them on stderr as
    ``WHERE:NO: WORDING: REASON``; none with ``quiet``, every one with ``show=None``.

    ``replay`` names every invalid line as ``invalid event`` (docs/contract.md, section 5);
    the commands that learn or report from events name the first 20 as ``invalid event skipped``.
    """

    def __init__(self, where: str, *, quiet: bool = False, show: int | None = SHOW_INVALID,
                 wording: str = "invalid event skipped") -> None:
        self.where, self.quiet, self.show, self.wording = where, quiet, show, wording
        self.count = 0
        self.by_code: dict[str, int] = {}

    def __call__(self, no: int, err: EventError) -> None:
        self.count += 1
        self.by_code[err.code] = self.by_code.get(err.code, 0) + 1
        if not self.quiet and (self.show is None or self.count <= self.show):
            print(f"{self.where}:{no}: {self.wording}: {err}", file=sys.stderr)


# --------------------------------------------------------------------------- a file
def open_input(path: str) -> IO[bytes]:
    """``path`` opened for reading bytes (``-``: standard input); :class:`UsageError` when it cannot be."""
    if path == "-":
        return sys.stdin.buffer
    try:
        return open(path, "rb")
    except OSError as err:
        raise UsageError(f"cannot read {path}: {err.strerror}") from None


@contextmanager
def input_file(path: str) -> Iterator[IO[bytes]]:
    """:func:`open_input` as a context: closes the file after, never standard input."""
    fh = open_input(path)
    try:
        yield fh
    finally:
        if fh is not sys.stdin.buffer:
            fh.close()


def read_events(fh: IO[bytes], *, on_error: Callable[[int, EventError], None] | None = None
                ) -> Iterator[ActionEvent]:
    """Valid events of a JSONL stream, in order; ``on_error(line_no, err)`` for the rest (blank lines
    are neither). Lazy, so a file larger than memory can be scored batch by batch."""
    for no, line in enumerate(fh, 1):
        if not line.strip():
            continue
        try:
            yield decode_event(line)
        except EventError as err:
            if on_error is not None:
                on_error(no, err)


def read_file(path: str, *, on_error: Callable[[int, EventError], None] | None = None) -> list[ActionEvent]:
    """Valid events of the JSONL file ``path`` (``-``: standard input), in file order."""
    with input_file(path) as fh:
        return list(read_events(fh, on_error=on_error))


# --------------------------------------------------------------------------- a topic range
@contextmanager
def topic_errors(topic: str, bootstrap: str, *, name_broker: bool = True) -> Iterator[None]:
    """Failures of reading ``topic`` (:func:`streams.topic_range.read_range`): a missing topic or a range
    over ``--max-events`` as :class:`UsageError` (exit 2); a broker that does not answer as
    :class:`streams.kafka_admin.KafkaUnavailable` (exit 1). ``models show``
    has always said ``reading TOPIC failed`` without the broker (``name_broker=False``)."""
    from kafka.errors import KafkaError

    from streams.kafka_admin import KafkaUnavailable
    from streams.topic_range import RangeTooLarge, TopicMissing

    try:
        yield
    except TopicMissing:
        raise UsageError(f"topic {topic} does not exist at {bootstrap}") from None
    except RangeTooLarge as err:
        raise UsageError(f"{err}; narrow --since/--until or raise --max-events") from None
    except (KafkaError, TimeoutError) as err:  # the broker, not the user: exit 1 (contract section 5)
        raise KafkaUnavailable(f"reading {topic}{' from ' + bootstrap if name_broker else ''} failed: {err}") from None


def read_topic(settings, topic: str, *, since_ms: int, until_ms: int | None, max_events: int, client_id: str,
               on_error: Callable[[int, EventError], None] | None = None,
               progress: Callable[[int, int], None] | None = None, name_broker: bool = True) -> list[ActionEvent]:
    """Valid events of ``topic``'s messages timestamped in ``[since_ms, until_ms)``, partition by
    partition (an agent's events in order, agents interleaved by partition); ``on_error(no, err)``
    for the rest, ``no`` counting every message read. ``settings``: :class:`streams.settings.Settings`.
    Fails as :func:`topic_errors` says, before any event when the range is too large."""
    from streams.topic_range import read_range

    events = []
    with topic_errors(topic, settings.bootstrap, name_broker=name_broker):
        for no, value in enumerate(read_range(settings.kafka_python_config(), topic, since_ms=since_ms,
                                              until_ms=until_ms, max_messages=max_events, progress=progress,
                                              client_id=client_id), 1):
            try:
                events.append(decode_event(value if value is not None else b""))  # a tombstone is invalid
            except EventError as err:
                if on_error is not None:
                    on_error(no, err)
    return events


def parse_range(since: str, until: str) -> tuple[int, int]:
    """``(since_ms, until_ms)`` of ``--since``/``--until`` (RFC 3339, a date or ``now``, one clock
    reading for both); :class:`UsageError` when either does not parse or the range is empty.

    >>> parse_range("2026-03-02", "2026-03-02T01:00:00+01:00")
    Traceback (most recent call last):
    ...
    detector.errors.UsageError: --since 2026-03-02 is not before --until 2026-03-02T01:00:00+01:00
    """
    now_ms = int(time.time() * 1000)
    try:
        since_ms, until_ms = parse_instant(since, now_ms=now_ms), parse_instant(until, now_ms=now_ms)
    except ValueError as err:
        raise UsageError(f"--since/--until: {err}") from None
    if since_ms >= until_ms:
        raise UsageError(f"--since {since} is not before --until {until}")
    return since_ms, until_ms


# --------------------------------------------------------------------------- either, as the arguments say
def read_source(args: argparse.Namespace, *, since_ms: int | None = None, until_ms: int | None = None,
                client_id: str) -> list[ActionEvent]:
    """Valid events of ``args.input`` or of ``args.from_topic`` in ``[since_ms, until_ms)``, in time
    order, drill agents (:mod:`detector.drill`) left out: what ``manifest suggest`` and ``audit``
    learn from. Invalid events are reported with :class:`InvalidLines` (none with ``--quiet``)."""
    from detector.drill import is_drill
    from streams.settings import Settings

    invalid = InvalidLines(args.input or args.from_topic, quiet=getattr(args, "quiet", False))
    if args.input is not None:
        events = read_file(args.input, on_error=invalid)
        if since_ms is not None or until_ms is not None:
            lo = -1e300 if since_ms is None else since_ms / 1000
            hi = 1e300 if until_ms is None else until_ms / 1000
            events = [e for e in events if lo <= e.t < hi]
    else:
        # a bad setting is a SettingsError: main prints it as one line and exits 2, as for a UsageError
        events = read_topic(Settings.from_args(args), args.from_topic, since_ms=since_ms or 0, until_ms=until_ms,
                            max_events=args.max_events, client_id=client_id, on_error=invalid)
        events.sort(key=lambda e: e.t)  # partitions come one after another; usage windows need time order
    return [e for e in events if not is_drill(e.agent_id)]


def require_since(args: argparse.Namespace) -> None:
    """A topic is read for a range: ``--from-topic`` without ``--since`` is a :class:`UsageError`."""
    if args.from_topic is not None and not args.since:
        raise UsageError("--from-topic needs --since (and optionally --until)")


def refuse_topic_options(args: argparse.Namespace, *options: str) -> None:
    """:class:`UsageError` naming the first of ``options`` (e.g. ``--since``) given with ``--input``,
    where it would be silently ignored."""
    if args.input is None:
        return
    for option in options:
        if getattr(args, option.lstrip("-").replace("-", "_")):
            raise UsageError(f"{option} goes with --from-topic, not --input")


# --------------------------------------------------------------------------- the arguments
def add_source_arguments(p, *, required: bool = True, metavar: str = "HISTORY.jsonl",
                         input_help: str = "past action events, one JSON object per line",
                         topic_help: str = "read past action events from this Kafka topic (with --since, --until)"
                         ) -> None:
    """``--input FILE`` or ``--from-topic TOPIC`` (one of them; both may be absent unless ``required``)."""
    src = p.add_mutually_exclusive_group(required=required)
    src.add_argument("--input", metavar=metavar, help=input_help)
    src.add_argument("--from-topic", dest="from_topic", metavar="TOPIC", help=topic_help)


def add_range_arguments(p, *, max_events: int) -> None:
    """``--since``, ``--until`` (default ``now``) and ``--max-events`` (default ``max_events``, the
    command's own) on ``p``, a parser or an argument group."""
    p.add_argument("--since", metavar="ISO",
                   help="with --from-topic: start of the range, inclusive (RFC 3339 or date; UTC if no offset)")
    p.add_argument("--until", metavar="ISO", default="now",
                   help="with --from-topic: end of the range, exclusive (default now)")
    add_max_events_argument(p, max_events=max_events)


def add_max_events_argument(p, *, max_events: int) -> None:
    """``--max-events N``: a topic range holding more messages is refused before it is read."""
    p.add_argument("--max-events", dest="max_events", type=int, default=max_events, metavar="N",
                   help=f"refuse a topic range holding more messages than this (default {max_events:,})")
