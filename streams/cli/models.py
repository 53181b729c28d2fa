"""``flowbreaker models``: the model registry on the command line.

::

    flowbreaker models [--registry DIR] list
    flowbreaker models [--registry DIR] add MODEL_DIR
    flowbreaker models [--registry DIR] show [VERSION] [--json]
                       [--input EVENTS.jsonl | --from-topic TOPIC --since ISO [--until ISO]] [--policy P.toml]
    flowbreaker models [--registry DIR] promote VERSION [--by NAME] [--bootstrap HOST:PORT ...]
    flowbreaker models [--registry DIR] rollback [--by NAME] [--bootstrap HOST:PORT ...]

The registry directory is ``--registry``, else ``$FLOWBREAKER_REGISTRY``, else
``./var/registry`` (layout in :mod:`models.registry`). ``promote`` and
``rollback`` verify the model (checksum, schema) before anything changes and,
with ``--bootstrap``, announce the switch on ``model-updates``
(:mod:`streams.model_updates`) for the workers. ``show`` with events computes
the drift (PSI per feature, :mod:`models.drift`) between the model's training
data and those events.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys

__all__ = ["configure_parser", "run"]


def _by_default() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return os.environ.get("USER") or "unknown"


def configure_parser(p: argparse.ArgumentParser) -> None:
    from streams.cli.sources import add_range_arguments, add_source_arguments
    from streams.settings import add_kafka_arguments

    p.add_argument("--registry", metavar="DIR",
                   help="registry directory (default $FLOWBREAKER_REGISTRY, else ./var/registry)")
    sub = p.add_subparsers(dest="models_command", metavar="ACTION", parser_class=type(p))
    sub.required = True
    sub.add_parser("list", help="registered versions, the current one marked with *")
    a = sub.add_parser("add", help="verify a trained model directory and copy it into the registry")
    a.add_argument("model_dir", metavar="MODEL_DIR")
    s = sub.add_parser("show", help="a version's card, history and (with events) drift")
    s.add_argument("version", nargs="?", metavar="VERSION", help="default: the current version")
    s.add_argument("--json", action="store_true", help="print JSON")
    add_source_arguments(s, required=False, metavar="EVENTS.jsonl", input_help="events to measure drift on",
                         topic_help="measure drift on this topic's events in [--since, --until)")
    add_range_arguments(s, max_events=2_000_000)
    s.add_argument("--policy", metavar="P.toml", help="policy file the events are scored with")
    add_kafka_arguments(s)
    for name, help_ in (("promote", "make VERSION current (verified first) and announce it"),
                        ("rollback", "return to the version current before the last promotion")):
        q = sub.add_parser(name, help=help_)
        if name == "promote":
            q.add_argument("version", metavar="VERSION")
        q.add_argument("--by", default=None, metavar="NAME", help="who does it (default: the login name)")
        q.add_argument("--timeout", type=float, default=30.0, metavar="SECONDS",
                       help="how long to wait for the broker when announcing (default 30)")
        add_kafka_arguments(q)
    for q in sub.choices.values():  # also accepted after the action
        q.add_argument("--registry", metavar="DIR", default=argparse.SUPPRESS, help="registry directory")


def _registry(args):
    from models.registry import Registry, default_root

    return Registry(args.registry or default_root())


def _short(ts: str | None) -> str:
    return (ts or "?")[:16].replace("T", " ")


def _list(reg) -> int:
    versions = reg.versions()
    if not versions:
        print(f"no models in {reg.root} (add one: flowbreaker models add MODEL_DIR)")
        return 0
    cur = reg.current()
    hist = reg.history()
    print(f"  {'VERSION':<22} {'TRAINING WINDOW (UTC)':<35} {'EVENTS':>9} {'AGENTS':>7}  STATUS")
    for v in versions:
        card, status = {}, "ok"
        try:
            card = reg.card(v)
            reg.verify(v)
        except ValueError as err:  # ModelError, RegistryError
            status = f"REFUSED: {err}"
        win = card.get("training_window", {})
        counts = card.get("counts", {})
        last = next((h for h in reversed(hist) if h.get("version") == v), None)
        if v == cur and last:
            status += f", current since {_short(last.get('promoted_at'))} ({last.get('action')} by {last.get('promoted_by')})"
        print(f"{'*' if v == cur else ' '} {v:<22} {_short(win.get('from')) + ' .. ' + _short(win.get('until')):<35} "
              f"{counts.get('events', '?'):>9} {counts.get('agents', '?'):>7}  {status}")
    return 0


def _drift_events(args):
    """The events to measure drift on and where they came from. Invalid events are left out silently,
    and a topic range is read as given: ``models show`` has always done both (an empty or reversed
    range ends in 'no valid events in ...')."""
    from detector.errors import UsageError
    from streams.cli.sources import read_file, read_topic
    from streams.settings import Settings
    from streams.topic_range import parse_instant

    if args.input:
        return read_file(args.input), args.input
    if not args.since:
        raise UsageError("--from-topic needs --since")
    try:
        since_ms, until_ms = parse_instant(args.since), parse_instant(args.until)
    except ValueError as err:
        raise UsageError(str(err)) from None
    events = read_topic(Settings.from_args(args), args.from_topic, since_ms=since_ms, until_ms=until_ms,
                        max_events=args.max_events, client_id="flowbreaker-models", name_broker=False)
    return events, f"{args.from_topic} [{args.since}, {args.until})"


def _show(reg, args) -> int:
    from detector.policy import load_policy
    from models.drift import drift_table, feature_rows, psi_rows
    from models.store import ModelError
    from detector.errors import UsageError

    version = args.version or reg.current()
    if version is None:
        raise UsageError(f"no current model in {reg.root}; name a VERSION or promote one")
    card = reg.card(version)
    try:
        model = reg.verify(version)
        integrity = "ok"
    except ModelError as err:
        model, integrity = None, f"REFUSED: {err}"
    out = {"version": version, "current": version == reg.current(), "path": str(reg.path(version).resolve()),
           "checksum": card.get("checksum"), "integrity": integrity,
           "training_window": card.get("training_window"), "counts": card.get("counts"),
           "source": card.get("source"), "thresholds": card.get("thresholds"), "forest": card.get("forest"),
           "history": [h for h in reg.history() if h.get("version") == version], "drift": None}
    if args.input or args.from_topic:
        if model is None:
            raise ModelError(integrity.removeprefix("REFUSED: "))
        if "train_quantiles" not in model.a:
            raise UsageError(f"model {version} has no train_quantiles (trained by an older flowbreaker); retrain it")
        events, where = _drift_events(args)
        if not events:
            raise UsageError(f"no valid events in {where}")
        rows = feature_rows(events, load_policy(args.policy), prior_for=model.prior_for)
        out["drift"] = {"events": where, "rows": int(len(rows)),
                        "features": drift_table(psi_rows(model.a["train_quantiles"], rows))}
    if args.json:
        print(json.dumps(out, indent=1))
        return 0
    win = out["training_window"] or {}
    c = out["counts"] or {}
    th = out["thresholds"] or {}
    print(f"version      {version}{' (current)' if out['current'] else ''}")
    print(f"path         {out['path']}")
    print(f"checksum     {out['checksum']}")
    print(f"integrity    {integrity}")
    print(f"trained on   {win.get('from')} .. {win.get('until')}: {c.get('events')} events, {c.get('agents')} agents, "
          f"{c.get('operators')} operators, {c.get('calibration_rows')} calibration rows")
    src = out["source"]
    if src and src.get("kind") == "kafka":
        print(f"source       topic {src['topic']} [{src['since']}, {src['until']}): {src['messages']} messages; "
              f"{src['flagged_left_out']} flagged and {src['confirmed_left_out']} confirmed left out, "
              f"{src['false_positives_reincluded']} false positives re-included")
    if th:
        print("thresholds   " + ", ".join(f"{k} {v}" for k, v in th.items()))
    if out["forest"]:
        print(f"forest       {out['forest'].get('n_estimators')} trees, max_samples {out['forest'].get('max_samples')}")
    for h in out["history"]:
        prev = f" (previous {h['previous']})" if h.get("previous") else ""
        print(f"history      {h.get('promoted_at')} {h.get('action')} by {h.get('promoted_by')}{prev}")
    if out["drift"]:
        d = out["drift"]
        print(f"drift        PSI per feature, training data -> {d['events']} ({d['rows']} rows); "
              "< 0.1 stable, > 0.25 shifted")
        for f in d["features"]:
            psi = "n/a" if f["psi"] is None else f"{f['psi']:.4f}"
            print(f"  {f['feature']:<26} {psi:>8}  {f['status']}")
    return 0


def _announce_again(args, version: str) -> str:
    """The command that announces ``version`` again: the same registry, broker and topic prefix (promoting the
    current version records nothing and re-announces it); other Kafka flags as given the first time.

    >>> import argparse
    >>> _announce_again(argparse.Namespace(registry="/srv/reg", bootstrap="k1:9092,k2:9092", topic_prefix="p-",
    ...                                    by="alice"), "m1")
    'flowbreaker models --registry /srv/reg promote m1 --by alice --bootstrap k1:9092,k2:9092 --topic-prefix p-'
    """
    import shlex

    words = ["flowbreaker", "models"]
    if getattr(args, "registry", None):
        words += ["--registry", str(args.registry)]
    words += ["promote", version]
    if getattr(args, "by", None):
        words += ["--by", args.by]
    words += ["--bootstrap", args.bootstrap]
    if getattr(args, "topic_prefix", None):
        words += ["--topic-prefix", args.topic_prefix]
    return shlex.join(words)


def _switch(reg, args) -> int:
    from detector.errors import UsageError

    by = args.by or _by_default()
    if args.models_command == "promote":
        note = reg.promote(args.version, by=by)
    else:
        note = reg.rollback(by=by)
    print(f"{note['action']}: {note['version']} is current (was {note['previous']}); checksum {note['checksum']}",
          file=sys.stderr)
    if args.bootstrap is None:
        return 0
    from kafka.errors import KafkaError

    from streams.model_updates import announce
    from streams.settings import Settings, SettingsError

    try:
        settings = Settings.from_args(args)
        topic, part, offset = announce(settings, note, timeout_s=args.timeout)
    except SettingsError as err:
        raise UsageError(f"{note['version']} is current in the registry but was not announced: {err}") from None
    except (KafkaError, OSError) as err:  # the broker, not the user: exit 1 (contract section 5)
        from streams.kafka_admin import KafkaUnavailable

        raise KafkaUnavailable(f"{note['version']} is current in the registry but announcing it at {args.bootstrap} "
                               f"failed ({type(err).__name__}: {err}); run "
                               f"`{_announce_again(args, note['version'])}` again to announce it") from None
    print(f"announced on {topic} (partition {part}, offset {offset})", file=sys.stderr)
    return 0


def run(args: argparse.Namespace) -> int:
    from models.registry import RegistryError
    from detector.errors import UsageError

    reg = _registry(args)
    try:
        if args.models_command == "list":
            return _list(reg)
        if args.models_command == "add":
            version, added = reg.add(args.model_dir)
            print(f"{'added' if added else 'already registered:'} {version} -> {reg.path(version)}", file=sys.stderr)
            return 0
        if args.models_command == "show":
            return _show(reg, args)
        return _switch(reg, args)
    except RegistryError as err:
        raise UsageError(str(err)) from None
