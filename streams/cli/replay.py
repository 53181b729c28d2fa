"""``flowbreaker replay``: the file shell around the engine.

Reads action events (JSONL) in file order, scores them through exactly the code
the stream processors run (``Engine.process_batch``), writes one decision record
per valid event. Invalid lines are reported on stderr with their line number and
reason and never stop the replay; a repeated ``event_id`` is scored once.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import IO

import msgspec

from detector.events import ActionEvent
from models.store import load_engine
from streams.cli.sources import InvalidLines, input_file, open_input, read_events

# read_events and open_input (streams.cli.sources) stay importable from here: bench/ and tests read
# event files through replay, as they take load_engine from it
__all__ = ["configure_parser", "run", "read_events", "open_input", "load_engine"]

_BATCH = 1024
_encode = msgspec.json.Encoder().encode


def configure_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", metavar="MODEL_DIR", help="trained model directory (default: online baselines only)")
    p.add_argument("--policy", metavar="P.toml", help="policy file (docs/contract.md, section 2)")
    p.add_argument("--input", required=True, metavar="EVENTS.jsonl", help="action events, one JSON object per line ('-' = stdin)")
    p.add_argument("--out", required=True, metavar="DECISIONS.jsonl", help="where to write decision records ('-' = stdout)")
    p.add_argument("--incidents", metavar="INCIDENTS.jsonl", help="also write incident records (forensic traces)")
    p.add_argument("--gate", action="store_true", help="add the pre-action verdict to actions with destinations and deletes")
    p.add_argument("--manifests", metavar="PATH",
                   help="intended-use manifests (a TOML file or a directory): enforced by --gate's verdict, and "
                        "out-of-scope actions count in the scores as in the workers")
    p.add_argument("--approvals", metavar="APPROVALS.jsonl",
                   help="approval records (a dump of the agent-approvals topic): approval ids are checked as the "
                        "worker checks them (default: ids are taken at their word)")
    p.add_argument("--release-after", metavar="DURATION",
                   help="evaluation mode: a simulated analyst releases every freeze this long (event time) after it, "
                        "e.g. 1h, 30m, 90s or plain seconds (default: never)")
    p.add_argument("--quiet", action="store_true", help="do not report invalid lines one by one")


def open_output(path: str) -> IO[bytes]:
    from detector.errors import UsageError

    if path == "-":
        return sys.stdout.buffer
    try:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        return open(path, "wb")
    except OSError as err:
        raise UsageError(f"cannot write {path}: {err.strerror}") from None


def load_approvals(path: str | None):
    """An :class:`detector.approvals.ApprovalBook` from a JSONL dump of the approvals topic, or ``None``.
    Lines that are not approval records are skipped (counted on stderr)."""
    if path is None:
        return None
    from detector.approvals import ApprovalBook
    from detector.errors import UsageError

    book, bad = ApprovalBook(), 0
    try:
        with open(path, "rb") as fh:
            for line in fh:
                if not line.strip():
                    continue
                try:
                    rec = msgspec.json.decode(line)
                except (msgspec.DecodeError, RecursionError):
                    rec = None
                if not isinstance(rec, dict) or not isinstance(rec.get("approval_id"), str):
                    bad += 1
                    continue
                book.apply(rec)
    except OSError as err:
        raise UsageError(f"cannot read {path}: {err.strerror}") from None
    if bad:
        print(f"flowbreaker replay: note: {path}: {bad} lines are not approval records (skipped)", file=sys.stderr)
    return book


def run(args: argparse.Namespace) -> int:
    engine = load_engine(args.model, args.policy, approvals=load_approvals(getattr(args, "approvals", None)))
    gate = None
    if args.gate:
        from detector.gate import Gate

        gate = Gate(engine)
    if getattr(args, "manifests", None):
        from streams.manifests import load_book

        engine.manifests = load_book(args.manifests)  # a bad manifest: FILE:LINE, exit 2
        if gate is not None:
            from detector.manifest import ManifestGate

            gate = ManifestGate(gate)
    from models.playback import Playback, parse_duration
    from detector.errors import UsageError

    try:
        release_after = parse_duration(args.release_after) if getattr(args, "release_after", None) else None
    except ValueError as err:
        raise UsageError(str(err)) from None
    playback = Playback(engine, gate=gate, release_after=release_after)
    duplicates = decided = alerts = freezes = 0
    # replay names every invalid line, as the contract says (docs/contract.md, section 5)
    invalid = InvalidLines(args.input, quiet=args.quiet, show=None, wording="invalid event")

    with input_file(args.input) as fin:
        fout = open_output(args.out)
        finc = open_output(args.incidents) if args.incidents else None
        try:
            batch: list[ActionEvent] = []
            events = read_events(fin, on_error=invalid)
            while True:
                batch.clear()
                for ev in events:
                    batch.append(ev)
                    if len(batch) >= _BATCH:
                        break
                if not batch:
                    break
                # the gate's verdict sees the state just before each action; releases are due in event time
                decisions = list(playback.run(batch))
                lines = []
                for d in decisions:
                    if d.duplicate:
                        duplicates += 1
                        continue
                    decided += 1
                    rec = d.record
                    if rec["action_taken"] == "alert":
                        alerts += 1
                    lines.append(_encode(rec))
                    if d.freeze is not None:
                        freezes += 1
                        if finc is not None:
                            finc.write(_encode(d.incident) + b"\n")
                if lines:
                    fout.write(b"\n".join(lines) + b"\n")
        finally:
            for fh in (fout, finc):
                if fh is not None and fh is not sys.stdout.buffer:
                    fh.close()
                elif fh is not None:
                    fh.flush()
    detail = ", ".join(f"{k}={v}" for k, v in sorted(invalid.by_code.items()))
    print(f"replay: {decided} decisions ({alerts} alerts, {freezes} freezes), {invalid.count} invalid lines"
          f"{' (' + detail + ')' if detail else ''}, {duplicates} duplicates skipped"
          f"{f', {len(playback.releases)} simulated releases' if release_after else ''}; model {engine.model_version}",
          file=sys.stderr)
    return 0
