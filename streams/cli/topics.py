"""``flowbreaker topics``: create whatever is missing of flowbreaker's Kafka topics and print each
topic's partition count (:func:`streams.kafka_admin.ensure_topics`, which says what each topic is for).

Exit 0 when every topic exists, 1 when no broker answered within ``--timeout`` seconds, 2 for bad
settings. A topic that exists with another partition count is left as it is and noted.
"""

from __future__ import annotations

import argparse
import sys

from detector.errors import UsageError
from streams.kafka_admin import KafkaUnavailable, ensure_topics
from streams.settings import Settings, SettingsError, add_kafka_arguments

__all__ = ["configure_parser", "run"]


def configure_parser(p: argparse.ArgumentParser) -> None:
    add_kafka_arguments(p)
    p.add_argument("--timeout", type=float, default=30.0, metavar="SECONDS",
                   help="how long to wait for the broker (default 30)")


def run(args: argparse.Namespace) -> int:
    try:
        settings = Settings.from_args(args)
    except SettingsError as err:
        raise UsageError(str(err)) from None
    try:
        counts = ensure_topics(settings, timeout_s=args.timeout)
    except KafkaUnavailable as err:
        print(f"flowbreaker topics: {err}", file=sys.stderr)
        return 1
    for name, n in counts.items():
        note = "" if n == settings.partitions else f"  (exists with {n}, not {settings.partitions})"
        print(f"{name}\t{n} partitions{note}")
    return 0
