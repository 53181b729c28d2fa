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

from streams.cli.sources import (InvalidLines, add_range_arguments, add_source_arguments, parse_range, read_file,
                                 read_topic, refuse_topic_options, require_since, topic_errors)
from streams.settings import Settings, add_kafka_arguments

__all__ = ["configure_parser", "run", "exclusions"]

_DECISION_LAG_MS = 3600 * 1000  # decisions of actions before --until may be written up to this much later
_VERDICTS = ("false_positive", "confirmed")


def configure_parser(p: argparse.ArgumentParser) -> None:
    add_source_arguments(p)
    p.add_argument("--policy", metavar="P.toml", help="policy file (docs/contract.md, section 2)")
    p.add_argument("--out", required=True, metavar="MODEL_DIR", help="directory to write the model into")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--trees", type=int, default=100, help="isolation forest size (default 100)")
    p.add_argument("--quiet", action="store_true", help="no progress or per-line reports")
    g = p.add_argument_group("history from Kafka (with --from-topic)")
    add_range_arguments(g, max_events=5_000_000)
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


def _from_topic(args, invalid: InvalidLines) -> tuple[list, dict]:
    from detector.errors import UsageError

    require_since(args)
    if args.max_events < 1:
        raise UsageError("--max-events must be >= 1")
    since_ms, until_ms = parse_range(args.since, args.until)
    settings = Settings.from_args(args)  # a SettingsError is one line and exit 2, like a UsageError
    config = settings.kafka_python_config()

    progress = _progress_printer(f"train: reading {args.from_topic}", args.quiet)
    events = read_topic(settings, args.from_topic, since_ms=since_ms, until_ms=until_ms, max_events=args.max_events,
                        client_id="flowbreaker-train", on_error=invalid, progress=progress)
    messages = len(events) + invalid.count  # every message read is an event or an invalid line
    if progress is not None and sys.stderr.isatty():
        print(file=sys.stderr)

    from streams.clients.commands import RecordError, decode_record

    skipped = 0  # decision and feedback records that could not be used
    flagged: set[str] = set()
    decisions_topic = None
    # a side topic's failures are reported as reading the range failed, naming the actions topic
    with topic_errors(args.from_topic, settings.bootstrap):
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

    if args.trees < 1:
        raise UsageError("--trees must be >= 1")
    refuse_topic_options(args, "--since", "--feedback-topic", "--decisions-topic")
    policy = load_policy(args.policy)
    where = args.input or args.from_topic
    invalid = InvalidLines(where, quiet=args.quiet)
    if args.input is not None:
        events = read_file(args.input, on_error=invalid)
        source = None  # the card stays what models.train writes for a file
    else:
        events, source = _from_topic(args, invalid)
    # drill agents' events are rehearsals, never behaviour (detector/drill.py): no baseline or prior learns them
    from detector.drill import is_drill

    drills = sum(1 for ev in events if is_drill(ev.agent_id))
    if drills:
        events = [ev for ev in events if not is_drill(ev.agent_id)]
        if not args.quiet:
            print(f"train: {drills} drill events left out", file=sys.stderr)
    if not args.quiet:
        print(f"train: {len(events)} events to train on ({invalid.count} invalid skipped)", file=sys.stderr)
    if not events:
        raise UsageError(f"{where} has no valid events to train on" + (" in that range" if args.from_topic else ""))

    last = [0]

    def progress(done: int, total: int) -> None:
        if not args.quiet and sys.stderr.isatty() and done - last[0] >= 50_000:
            last[0] = done
            print(f"\rtrain: features {done}/{total} events", end="", file=sys.stderr)

    card, arrays = fit(events, policy, seed=args.seed, n_estimators=args.trees, progress=progress)
    card["counts"]["invalid_lines"] = invalid.count
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
