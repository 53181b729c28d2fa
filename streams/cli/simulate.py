"""``flowbreaker simulate``: write a synthetic fleet's events, with injected incidents and
benign look-alikes, and their labels (the simulator itself is :mod:`models.simulate`).

Every file it writes gets its parent directory created. A bad argument, or a file it
cannot write, is a :class:`~detector.errors.UsageError` (exit 2, one line) and leaves
no file behind. The same seed and arguments write byte-identical files.
"""
from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from detector.errors import UsageError
from models.simulate import INCIDENT_KINDS, simulate, split_history

__all__ = ["configure_parser", "run"]


def configure_parser(p: argparse.ArgumentParser) -> None:
    """Arguments of ``flowbreaker simulate``."""
    p.add_argument("--out", required=True, type=Path,
                   help="events JSONL (the incident window only when --history-out is given)")
    p.add_argument("--labels", type=Path, default=None,
                   help="labels JSON (default: <out stem>.labels.json next to --out)")
    p.add_argument("--history-out", type=Path, default=None,
                   help="write the clean days here (training history) and the rest to --out")
    p.add_argument("--agents", type=int, default=40, help="number of agents (default 40)")
    p.add_argument("--days", type=int, default=7, help="simulated days (default 7)")
    p.add_argument("--clean-days", type=int, default=None,
                   help="incident-free days at the start (default 70%% of --days)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--start", default="2026-03-02T00:00:00Z",
                   help="start instant, RFC 3339 or a date (UTC midnight); default 2026-03-02T00:00:00Z")
    p.add_argument("--incidents", default="all",
                   help=f"comma list of incident kinds, 'all' or 'none'; kinds: {', '.join(INCIDENT_KINDS)}")
    p.add_argument("--no-lookalikes", action="store_true", help="inject no benign look-alikes")


def _parse_start(text: str) -> datetime:
    dt = datetime.fromisoformat(text)
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt


def _write_jsonl(fh, events: Sequence[dict]) -> None:
    dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
    fh.writelines(dumps(ev) + "\n" for ev in events)


def run(args: argparse.Namespace) -> int:
    """Run ``flowbreaker simulate``: 0 on success; :class:`UsageError` (exit 2) on a bad argument
    or a file it cannot write, leaving no file behind."""
    spec = (args.incidents or "").strip()
    if spec == "all":
        kinds: list[str] = list(INCIDENT_KINDS)
    elif spec in ("none", ""):
        kinds = []
    else:
        kinds = [k.strip() for k in spec.split(",") if k.strip()]
        bad = [k for k in kinds if k not in INCIDENT_KINDS]
        if bad:
            raise UsageError(f"unknown incident kind {bad[0]!r}; known: {', '.join(INCIDENT_KINDS)}")
    if args.days <= 0:
        raise UsageError(f"--days must be > 0, got {args.days}")
    if args.agents <= 0:
        raise UsageError(f"--agents must be > 0, got {args.agents}")
    clean = args.clean_days
    if clean is not None and not 0 <= clean <= args.days:
        raise UsageError(f"--clean-days must be in [0, {args.days}], got {clean}")
    if clean is not None and clean == args.days and kinds:
        raise UsageError(f"--clean-days {clean} leaves no day for incidents (use --incidents none)")
    try:
        start = _parse_start(args.start)
    except ValueError:
        raise UsageError(f"--start: not an RFC 3339 timestamp or date: {args.start!r}")
    out: Path = args.out
    labels_path: Path = args.labels or out.with_name(f"{out.stem}.labels.json")
    paths = [out, labels_path] + ([args.history_out] if args.history_out else [])
    handles = {}
    try:
        for path in paths:
            path.parent.mkdir(parents=True, exist_ok=True)  # `--out /tmp/fb/events.jsonl` on a fresh machine
            handles[path] = open(path, "w", encoding="utf-8")
    except OSError as e:
        for path, h in handles.items():
            h.close()
            path.unlink(missing_ok=True)
        raise UsageError(f"cannot write {e.filename}: {e.strerror}") from None
    try:
        try:
            events, labels = simulate(n_agents=args.agents, days=args.days, seed=args.seed, start=start,
                                      incidents=kinds, incident_days_from=clean, lookalikes=not args.no_lookalikes)
        except ValueError as e:
            for path, h in handles.items():
                h.close()
                path.unlink(missing_ok=True)
            raise UsageError(str(e)) from None
        if args.history_out:
            history, rest = split_history(events, labels)
            _write_jsonl(handles[args.history_out], history)
        else:
            history, rest = [], events
        _write_jsonl(handles[out], rest)
        json.dump(labels, handles[labels_path], indent=1)
        handles[labels_path].write("\n")
    finally:
        for h in handles.values():
            h.close()
    where = (f"{len(history)} history -> {args.history_out}, {len(rest)} -> {out}" if args.history_out
             else f"{len(rest)} -> {out}")
    print(f"simulate: {len(labels['agents'])} agents, {args.days} days, seed {args.seed}: {len(events)} events "
          f"({where}); {len(labels['incidents'])} incidents, {len(labels['lookalikes'])} look-alikes; "
          f"labels -> {labels_path}", file=sys.stderr)
    return 0
