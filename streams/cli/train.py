"""``flowbreaker train``: fit a model from a history file or from a time range of a Kafka topic.

Wraps :func:`models.train.fit` (same flags, same model) with a second source::

    flowbreaker train --input HISTORY.jsonl [--policy P.toml] --out MODEL_DIR
    flowbreaker train --from-topic agent-actions --bootstrap HOST:PORT --since 2026-03-01 --until 2026-03-08 \\
                      [--feedback-topic agent-feedback] [--policy P.toml] --out MODEL_DIR

From a topic, the actions whose Kafka timestamps fall in ``[--since, --until)``
are read (:mod:`streams.topic_range`; bounded by ``--max-events``), with progress
on stderr. Actions the live system flagged do not teach the new baselines that
they are normal: events whose decision on ``--decisions-topic`` (default
``agent-decisions``) was an alert or a freeze are left out, unless an analyst
said otherwise on ``--feedback-topic``:

* ``{"event_id", "agent_id", "verdict": "false_positive", ...}``: the event is
  normal after all and is trained on (so a confirmed false positive stops
  alerting once the new model is promoted);
* ``{"event_id", "agent_id", "verdict": "confirmed", ...}``: the event was part of
  an incident and is left out even if it was never flagged.

The last verdict on an event wins. A decisions or feedback topic that does not
exist is skipped silently (``--keep-flagged`` skips the decisions too). The
card records the source: topic, range, messages read, what was left out and
re-included.
"""

from __future__ import annotations

import argparse
from datetime import datetime, timezone
import sys
import time

from streams.settings import Settings, SettingsError, add_kafka_arguments

__all__ = ["configure_parser", "run", "exclusions"]

_DECISION_LAG_MS = 3600 * 1000  # decisions of actions before --until may be written up to this much later
_VERDICTS = ("false_positive", "confirmed")


def configure_parser(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--input", metavar="HISTORY.jsonl", help="past action events, one JSON object per line")
    src.add_argument("--from-topic", dest="from_topic", metavar="TOPIC",
                     help="read past action events from this Kafka topic (with --since, --until)")
    p.add_argument("--policy", metavar="P.toml", help="policy file (docs/contract.md, section 2)")
    p.add_argument("--out", required=True, metavar="MODEL_DIR", help="directory to write the model into")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--trees", type=int, default=100, help="isolation forest size (default 100)")
    p.add_argument("--quiet", action="store_true", help="no progress or per-line reports")
    g = p.add_argument_group("history from Kafka (with --from-topic)")
    g.add_argument("--since", metavar="ISO", help="start of the range, inclusive (RFC 3339 or date; UTC if no offset)")
    g.add_argument("--until", metavar="ISO", default="now", help="end of the range, exclusive (default now)")
    g.add_argument("--max-events", dest="max_events", type=int, default=5_000_000, metavar="N",
                   help="refuse a range holding more messages than this (default 5,000,000)")
    g.add_argument("--decisions-topic", dest="decisions_topic", metavar="TOPIC",
                   help="decisions of the live system; alerted or frozen events are left out "
                        "(default agent-decisions, with the topic prefix; skipped when missing)")
    g.add_argument("--keep-flagged", dest="keep_flagged", action="store_true",
                   help="train on alerted and frozen events too")
    g.add_argument("--feedback-topic", dest="feedback_topic", metavar="TOPIC",
                   help="analyst verdicts (e.g. agent-feedback): false_positive re-includes an event, confirmed "
                        "leaves it out; skipped when the topic does not exist")
    add_kafka_arguments(p)


def exclusions(flagged: set[str], verdicts: dict[str, str]) -> tuple[set[str], set[str]]:
    """``(left out, re-included)`` from flagged event ids and the last verdict per event id.

    >>> sorted(exclusions({"a", "b"}, {"b": "false_positive", "c": "confirmed"})[0])
    ['a', 'c']
    >>> exclusions({"a", "b"}, {"b": "false_positive"})[1]
    {'b'}
    """
    fp = {e for e, v in verdicts.items() if v == "false_positive"}
    confirmed = {e for e, v in verdicts.items() if v == "confirmed"}
    return (flagged - fp) | confirmed, flagged & fp


def _progress_printer(label: str, quiet: bool):
    if quiet:
        return None
    tty = sys.stderr.isatty()
    state = {"step": -1}

    def show(done: int, total: int) -> None:
        pct = 100.0 * done / total if total else 100.0
        if tty:
            print(f"\r{label}: {done}/{total} messages ({pct:.0f}%)", end="", file=sys.stderr, flush=True)
        elif int(pct // 10) > state["step"]:
            state["step"] = int(pct // 10)
            print(f"{label}: {done}/{total} messages ({pct:.0f}%)", file=sys.stderr, flush=True)

    return show


def _side_topic(config: dict, topic: str, since_ms: int, until_ms: int | None, max_messages: int):
    """Messages of an optional topic (None when it does not exist)."""
    from streams.topic_range import TopicMissing, read_range

    try:
        return list(read_range(config, topic, since_ms=since_ms, until_ms=until_ms, max_messages=max_messages,
                               client_id="flowbreaker-train"))
    except TopicMissing:
        return None


def _from_topic(args, on_error) -> tuple[list, dict]:
    from kafka.errors import KafkaError

    from detector.events import EventError, decode_event
    from detector.errors import UsageError
    from streams.topic_range import RangeTooLarge, TopicMissing, parse_instant, read_range

    if not args.since:
        raise UsageError("--from-topic needs --since (and optionally --until)")
    if args.max_events < 1:
        raise UsageError("--max-events must be >= 1")
    now_ms = int(time.time() * 1000)
    try:
        since_ms = parse_instant(args.since, now_ms=now_ms)
        until_ms = parse_instant(args.until, now_ms=now_ms)
    except ValueError as err:
        raise UsageError(f"--since/--until: {err}") from None
    if since_ms >= until_ms:
        raise UsageError(f"--since {args.since} is not before --until {args.until}")
    try:
        settings = Settings.from_args(args)
    except SettingsError as err:
        raise UsageError(str(err)) from None
    config = settings.kafka_python_config()

    events, messages = [], 0
    try:
        progress = _progress_printer(f"train: reading {args.from_topic}", args.quiet)
        for no, value in enumerate(read_range(config, args.from_topic, since_ms=since_ms, until_ms=until_ms,
                                              max_messages=args.max_events, progress=progress,
                                              client_id="flowbreaker-train"), 1):
            messages += 1
            try:
                events.append(decode_event(value if value is not None else b""))
            except EventError as err:
                on_error(no, err)
        if progress is not None and sys.stderr.isatty():
            print(file=sys.stderr)

        from streams.clients.commands import RecordError, decode_record

        skipped = 0  # decision and feedback records that could not be used
        flagged: set[str] = set()
        decisions_topic = None
        if not args.keep_flagged:
            decisions_topic = args.decisions_topic or settings.topic("decisions")
            ids = {ev.event_id for ev in events}
            recs = _side_topic(config, decisions_topic, since_ms, until_ms + _DECISION_LAG_MS, 4 * args.max_events)
            if recs is None:
                decisions_topic = None
            for value in recs or ():
                try:
                    d = decode_record(value, dict)  # any bad record (deep, not UTF-8, ...) is skipped
                except RecordError:
                    skipped += 1
                    continue
                if isinstance(d, dict) and d.get("action_taken") in ("alert", "freeze") and d.get("event_id") in ids:
                    flagged.add(d["event_id"])

        verdicts: dict[str, str] = {}
        feedback_topic = args.feedback_topic
        if feedback_topic:
            recs = _side_topic(config, feedback_topic, 0, None, args.max_events)
            if recs is None:
                feedback_topic = None
            for value in recs or ():
                try:
                    f = decode_record(value, dict)
                except RecordError:
                    skipped += 1
                    continue
                if isinstance(f.get("event_id"), str) and f.get("verdict") in _VERDICTS:
                    verdicts[f["event_id"]] = f["verdict"]
                else:
                    skipped += 1
    except TopicMissing:
        raise UsageError(f"topic {args.from_topic} does not exist at {settings.bootstrap}") from None
    except RangeTooLarge as err:
        raise UsageError(f"{err}; narrow --since/--until or raise --max-events") from None
    except (KafkaError, TimeoutError) as err:
        raise UsageError(f"reading {args.from_topic} from {settings.bootstrap} failed: {err}") from None

    left_out, reincluded = exclusions(flagged, verdicts)
    kept = [ev for ev in events if ev.event_id not in left_out]
    iso = lambda ms: time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms / 1000)) + f".{ms % 1000:03d}Z"  # noqa: E731
    source = {
        "kind": "kafka", "topic": args.from_topic, "since": iso(since_ms), "until": iso(until_ms),
        "messages": messages, "decisions_topic": decisions_topic, "feedback_topic": feedback_topic,
        "flagged_left_out": len(flagged - reincluded), "confirmed_left_out": len(left_out - flagged),
        "false_positives_reincluded": len(reincluded),
    }
    if skipped:
        print(f"train: {skipped} decision or feedback records could not be read and were skipped", file=sys.stderr)
    if not args.quiet:
        print(f"train: {messages} messages from {args.from_topic} [{source['since']}, {source['until']}); "
              f"{len(left_out & {ev.event_id for ev in events})} flagged or confirmed events left out, "
              f"{len(reincluded)} false positives re-included", file=sys.stderr)
    return kept, source


def run(args: argparse.Namespace) -> int:
    from detector.policy import load_policy
    from models.store import save_model
    from models.train import fit
    from detector.errors import UsageError
    from streams.cli.replay import open_input, read_events

    if args.trees < 1:
        raise UsageError("--trees must be >= 1")
    if args.input is not None:
        extra = [f for f, v in (("--since", args.since), ("--feedback-topic", args.feedback_topic),
                                ("--decisions-topic", args.decisions_topic)) if v]
        if extra:
            raise UsageError(f"{extra[0]} goes with --from-topic, not --input")
    policy = load_policy(args.policy)
    invalid = 0
    where = args.input or args.from_topic

    def on_error(no, err):
        nonlocal invalid
        invalid += 1
        if not args.quiet and invalid <= 20:
            print(f"{where}:{no}: invalid event skipped: {err}", file=sys.stderr)

    if args.input is not None:
        fh = open_input(args.input)
        try:
            events = list(read_events(fh, on_error=on_error))
        finally:
            if fh is not sys.stdin.buffer:
                fh.close()
        source = None  # the card stays what models.train writes for a file
    else:
        events, source = _from_topic(args, on_error)
    # drill agents' events are rehearsals, never behaviour (detector/drill.py): no baseline or prior learns them
    from detector.drill import is_drill

    drills = sum(1 for ev in events if is_drill(ev.agent_id))
    if drills:
        events = [ev for ev in events if not is_drill(ev.agent_id)]
        if not args.quiet:
            print(f"train: {drills} drill events left out", file=sys.stderr)
    if not args.quiet:
        print(f"train: {len(events)} events to train on ({invalid} invalid skipped)", file=sys.stderr)
    if not events:
        raise UsageError(f"{where} has no valid events to train on" + (" in that range" if args.from_topic else ""))

    last = [0]

    def progress(done: int, total: int) -> None:
        if not args.quiet and sys.stderr.isatty() and done - last[0] >= 50_000:
            last[0] = done
            print(f"\rtrain: features {done}/{total} events", end="", file=sys.stderr)

    card, arrays = fit(events, policy, seed=args.seed, n_estimators=args.trees, progress=progress)
    card["counts"]["invalid_lines"] = invalid
    # when it was trained (the shell reads the clock; the version stays a pure function of the data)
    card["trained_at"] = datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")
    if source is not None:
        card["source"] = source
    try:
        out = save_model(args.out, card, arrays)
    except OSError as err:
        raise UsageError(f"cannot write model to {args.out}: {err.strerror}") from None
    if not args.quiet:
        print(f"\ntrain: model {card['version']} written to {out} ({card['counts']['agents']} agents, "
              f"{card['counts']['calibration_rows']} calibration rows)", file=sys.stderr)
    return 0
