"""``flowbreaker replay``: the file shell around the engine.

Reads action events (JSONL) in file order, scores them through exactly the code
the stream processors run (``Engine.process_batch``), writes one decision record
per valid event. Invalid lines are reported on stderr with their line number and
reason and never stop the replay; a repeated ``event_id`` is scored once.
"""

from __future__ import annotations

import argparse
import sys
from io import BytesIO
from pathlib import Path
from typing import IO

import msgspec

from detector.events import ActionEvent, EventError, decode_event, decode_many
from models.store import load_engine
from streams.cli.sources import InvalidLines, input_file, open_input, read_events

# read_events and open_input (streams.cli.sources) stay importable from here: bench/ and tests read
# event files through replay, as they take load_engine from it
__all__ = ["configure_parser", "run", "read_events", "open_input", "load_engine"]

#: events decided together: few enough that their events and decisions stay in the CPU's cache until
#: written (1,024 at a time was ~20 % slower per event, bench/bench_replay.py); decisions do not depend on it
_CHUNK = 128
#: the episodes file gets the episodes closed in between (quiet, or by a verdict) every _BATCH events
_BATCH = 1024
_encode = msgspec.json.Encoder().encode
#: records, each followed by a newline, in one call: the bytes of ``_encode(r) + b"\n"`` for each
_encode_lines = msgspec.json.Encoder().encode_lines
#: bytes asked of the input at a time (at most one read of the file: a pipe gives what it has)
_READ = 1 << 16


class _Events:
    """:func:`read_events` for replay, ``take(n)`` events at a time: the input read a block at a time and
    cut into lines in C (``BytesIO.readlines``: the same lines, newline kept, as iterating the file), about
    0.4 us an event less than a generator over the file's lines. Invalid lines go to ``on_error(line_no,
    err)`` as there; blank lines are neither."""

    def __init__(self, fh: IO[bytes], on_error, *, block: int = _READ) -> None:
        self._read = getattr(fh, "read1", None) or fh.read
        self._block = block
        self._on_error = on_error
        self._lines: list[bytes] = []
        self._next = 0                    # index of the next line of _lines
        self._before = 0                  # lines of the input before _lines
        self._partial: list[bytes] = []   # the start of a line not ended yet
        self._eof = False

    def take(self, size: int) -> list[ActionEvent]:
        """Up to ``size`` valid events, the next in the input (fewer only at its end)."""
        out: list[ActionEvent] = []
        decode, on_error, many = decode_event, self._on_error, decode_many
        while len(out) < size:
            if self._next >= len(self._lines) and not self._fill():
                break
            lines, i, end = self._lines, self._next, len(self._lines)
            while i < end and len(out) < size:
                if many is not None:  # the usual lines in one compiled call (decode_event's for each), up to the next
                    i = many(lines, i, min(end, i + size - len(out)), out)  # other line: blank, invalid, unusual
                    if i >= end or len(out) >= size:
                        break
                line = lines[i]
                i += 1
                if line.isspace():  # a blank line (ASCII whitespace only, as bytes.strip() strips)
                    continue
                try:
                    out.append(decode(line))
                except EventError as err:
                    on_error(self._before + i, err)
            self._next = i
        return out

    def _fill(self) -> bool:
        """The next lines of the input into ``_lines``; False at its end."""
        self._before += len(self._lines)
        self._lines, self._next = [], 0
        while not self._eof:
            block = self._read(self._block)
            if not block:
                self._eof = True
                if self._partial:  # a last line without a newline
                    self._lines = [b"".join(self._partial)]
                    self._partial = []
                    return True
                return False
            cut = block.rfind(b"\n") + 1
            if not cut:
                self._partial.append(block)
                continue
            head = block[:cut]
            if self._partial:
                head = b"".join((*self._partial, head))
                self._partial = []
            if cut < len(block):
                self._partial.append(block[cut:])
            self._lines = BytesIO(head).readlines()
            return True
        return False


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
    p.add_argument("--analyst", metavar="LABELS.json",
                   help="evaluation mode: a simulated analyst gives every freeze a verdict --analyst-delay after it "
                        "(releasing it; 'confirmed' when its triggering event is an incident event of LABELS, else "
                        "'benign') and every alert episode one --analyst-delay after it closes, through the path an "
                        "analyst's verdict takes")
    p.add_argument("--analyst-delay", metavar="DURATION", default=None,
                   help="how long after a freeze or an episode's close the simulated analyst answers (default 1h)")
    p.add_argument("--verdicts", metavar="VERDICTS.jsonl",
                   help="recorded verdicts (flowbreaker-verdict/1 records, as on agent-verdicts), applied in event "
                        "time; one on the agent's open incident releases it first, as `release --verdict` does")
    p.add_argument("--verdicts-out", metavar="VERDICTS.jsonl",
                   help="also write the verdicts applied (the simulated analyst's, or --verdicts'), as records "
                        "--verdicts reads")
    p.add_argument("--episodes", metavar="EPISODES.jsonl",
                   help="also write the alert episode records (flowbreaker-episode/1, as on agent-alerts)")
    p.add_argument("--quiet", action="store_true", help="do not report invalid lines one by one")


def analyst_for(labels_path: str | None, delay: str | None):
    """The simulated analyst of ``--analyst LABELS.json [--analyst-delay D]``, or ``None``; UsageError (exit 2)
    on an unreadable labels file or a bad delay, or a delay without labels."""
    from detector.errors import UsageError
    from models.playback import Analyst, parse_duration

    if labels_path is None:
        if delay is not None:
            raise UsageError("--analyst-delay needs --analyst LABELS.json")
        return None
    from models.evaluate import LabelsError, load_labels

    try:
        seconds = parse_duration(delay if delay is not None else "1h", "--analyst-delay")
        labels = load_labels(labels_path)
    except (ValueError, LabelsError) as err:
        raise UsageError(str(err)) from None
    return Analyst(frozenset(e for inc in labels["incidents"] for e in inc["event_ids"]), seconds)


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
    from streams.gc_tuning import tune

    tune()  # the worker's collector thresholds: the same engine at the same cost
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
    from models.playback import Playback, parse_duration, read_verdicts
    from detector.errors import UsageError

    try:
        release_after = parse_duration(args.release_after) if getattr(args, "release_after", None) else None
    except ValueError as err:
        raise UsageError(str(err)) from None
    analyst = analyst_for(getattr(args, "analyst", None), getattr(args, "analyst_delay", None))
    if analyst is not None and release_after is not None:
        raise UsageError("--analyst releases every freeze itself after --analyst-delay: drop --release-after")
    verdicts = None
    if getattr(args, "verdicts", None):
        try:
            verdicts = read_verdicts(args.verdicts)
        except ValueError as err:
            raise UsageError(str(err)) from None
    playback = Playback(engine, gate=gate, release_after=release_after, analyst=analyst, verdicts=verdicts)
    episodes = 0
    duplicates = decided = alerts = freezes = 0
    # replay names every invalid line, as the contract says (docs/contract.md, section 5)
    invalid = InvalidLines(args.input, quiet=args.quiet, show=None, wording="invalid event")

    with input_file(args.input) as fin:
        fout = open_output(args.out)
        finc = open_output(args.incidents) if args.incidents else None
        fep = open_output(args.episodes) if getattr(args, "episodes", None) else None
        try:
            events = _Events(fin, invalid)
            ended = False
            while not ended:
                ep_lines: list[bytes] = []  # this _BATCH's decisions' episode records, then the closed ones
                n = 0
                while n < _BATCH:
                    batch = events.take(min(_CHUNK, _BATCH - n))
                    if not batch:
                        ended = True
                        break
                    n += len(batch)
                    # the gate's verdict sees the state just before each action; releases are due in event time
                    recs = []
                    for d in playback.run(batch):
                        if d.duplicate:
                            duplicates += 1
                            continue
                        rec = d.record
                        recs.append(rec)
                        if rec["action_taken"] == "alert":
                            alerts += 1
                        if d.episodes:
                            if fep is not None:
                                ep_lines.append(_encode_lines(d.episodes))
                            episodes += sum(e["state"] == "open" and e["actions"] == 1 for e in d.episodes)
                        if d.freeze is not None:
                            freezes += 1
                            if finc is not None:
                                finc.write(_encode(d.incident) + b"\n")
                    decided += len(recs)
                    if recs:
                        fout.write(_encode_lines(recs))
                if fep is not None:
                    fep.write(b"".join(ep_lines) + _encode_lines(playback.episodes))
                playback.episodes.clear()
            playback.finish()
            if fep is not None and playback.episodes:
                fep.write(_encode_lines(playback.episodes))
            if getattr(args, "verdicts_out", None):
                fv = open_output(args.verdicts_out)
                try:
                    fv.write(_encode_lines(playback.verdicts))
                finally:
                    if fv is not sys.stdout.buffer:
                        fv.close()
        finally:
            for fh in (fout, finc, fep):
                if fh is not None and fh is not sys.stdout.buffer:
                    fh.close()
                elif fh is not None:
                    fh.flush()
    detail = ", ".join(f"{k}={v}" for k, v in sorted(invalid.by_code.items()))
    print(f"replay: {decided} decisions ({alerts} alerts, {freezes} freezes), {invalid.count} invalid lines"
          f"{' (' + detail + ')' if detail else ''}, {duplicates} duplicates skipped"
          f"{f', {len(playback.releases)} simulated releases' if release_after else ''}, {episodes} alert episodes"
          f"{f', {len(playback.verdicts)} verdicts applied' if analyst or verdicts else ''}; model {engine.model_version}",
          file=sys.stderr)
    return 0
