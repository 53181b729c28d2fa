"""``flowbreaker verdicts dump --out FILE.jsonl``: the analysts' verdicts on ``agent-verdicts``, for
``flowbreaker replay --verdicts FILE.jsonl``.

It reads every partition of the topic to its end, keeps the records whose signature verifies with
the command keys (``--signing-keys FILE`` or ``FLOWBREAKER_SIGNING_KEYS``; a verifier's public file
is enough) and writes them one per line (``flowbreaker-verdict/1``, without the signature), in the
order of their time. A replay with that file applies the verdicts the workers applied, at the times
they were given, so it decides as the stream did.

Exit 0 with one line (how many written, how many left out by reason); 1 when the broker does not
answer within ``--timeout`` seconds; 2 without keys or for a bad argument.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from detector.errors import UsageError
from detector.verdicts import verdict_record
from streams.settings import Settings, SettingsError, add_kafka_arguments

__all__ = ["configure_parser", "run"]


def configure_parser(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="verdicts_command", metavar="COMMAND", required=True)
    dump = sub.add_parser("dump", help="write the verdicts on agent-verdicts to a JSONL file (replay --verdicts)")
    dump.add_argument("--out", required=True, metavar="FILE", help="the JSONL file to write")
    dump.add_argument("--timeout", type=float, default=30.0, metavar="SECONDS",
                      help="how long to wait for the broker (default 30)")
    add_kafka_arguments(dump)


def run(args: argparse.Namespace) -> int:
    if args.timeout <= 0:
        raise UsageError("--timeout must be > 0")
    try:
        settings = Settings.from_args(args)
        from streams.clients.signing import keyring_for

        keys = keyring_for(settings)
    except SettingsError as err:
        raise UsageError(str(err)) from None
    if keys is None:
        raise UsageError("verdicts are signed: the command keys are needed to check them (--signing-keys FILE or "
                         "FLOWBREAKER_SIGNING_KEYS; the public file is enough)")
    from streams.kafka_admin import KafkaUnavailable
    from streams.verdicts import read_topic

    try:
        found, left_out = read_topic(settings, keys, timeout=args.timeout)
    except (KafkaUnavailable, TimeoutError) as err:
        print(f"flowbreaker verdicts: {err}", file=sys.stderr)
        return 1
    except Exception as err:  # noqa: BLE001 - kafka-python's NoBrokersAvailable and friends: the broker
        if type(err).__module__.startswith("kafka"):
            print(f"flowbreaker verdicts: no answer from {settings.bootstrap} ({err})", file=sys.stderr)
            return 1
        raise
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", encoding="utf-8") as fh:
        for v in found:
            fh.write(json.dumps(verdict_record(v), separators=(",", ":")) + "\n")
    skipped = ", ".join(f"{n} {why}" for why, n in sorted(left_out.items()))
    print(f"{len(found)} verdicts written to {out}" + (f" ({skipped} left out)" if skipped else ""))
    return 0
