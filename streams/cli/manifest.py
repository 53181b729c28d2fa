"""``flowbreaker manifest``: suggest, check and publish intended-use manifests.

::

    flowbreaker manifest suggest --input HISTORY.jsonl [--agent A] [--out DIR] [--compare MANIFEST_DIR]
    flowbreaker manifest suggest --from-topic agent-actions --bootstrap HOST:PORT --since ISO [--until ISO] ...
    flowbreaker manifest check PATH [--policy P.toml]
    flowbreaker manifest publish PATH --bootstrap HOST:PORT
    flowbreaker manifest withdraw KEY... --bootstrap HOST:PORT     (KEY: agent:<id> or role:<name>)

``suggest`` proposes a least-privilege manifest per agent from what it actually
did (:func:`detector.manifest_suggest.suggest`: the grants it used, with margins),
for an operator to review: ``DIR/<agent>.toml`` with ``--out``, else on stdout.
With ``--compare DIR`` it also lists, per agent, the grants the manifests in DIR
declare and the behaviour never used (over-broad scopes), on stdout, and in
``OUT/unused-grants.json`` with ``--out``. Drill agents (:mod:`detector.drill`)
are left out. ``check`` validates a file or directory (one line per manifest;
the first bad one is ``FILE:LINE: why`` on stderr, exit 2). ``publish`` puts them
on the compacted ``agent-manifests`` topic, which every worker follows.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from streams.cli.sources import (add_range_arguments, add_source_arguments, parse_range, read_source,
                                 refuse_topic_options, require_since)
from streams.settings import Settings, SettingsError, add_kafka_arguments

__all__ = ["configure_parser", "run", "safe_filename"]


def configure_parser(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="manifest_command", metavar="SUBCOMMAND", parser_class=type(p))
    sub.required = True
    s = sub.add_parser("suggest", help="least-privilege manifests from observed behaviour")
    add_source_arguments(s)
    s.add_argument("--agent", metavar="A", help="only this agent")
    s.add_argument("--out", metavar="DIR", help="write DIR/<agent>.toml (default: print on stdout)")
    s.add_argument("--compare", metavar="MANIFEST_DIR",
                   help="list grants these manifests declare that the behaviour never used")
    s.add_argument("--policy", metavar="P.toml", help="policy file: destination classes, broadcast destinations")
    s.add_argument("--margin", type=float, default=2.0, help="ceilings = observed peak x this (default 2)")
    s.add_argument("--min-group", dest="min_group", type=int, default=2, metavar="N",
                   help="grant *@domain (or a host's URLs) once N of its addresses were used (default 2)")
    s.add_argument("--version", type=int, default=1, help="version of the suggested manifests (default 1)")
    add_range_arguments(s, max_events=5_000_000)
    s.add_argument("--quiet", action="store_true", help="no per-line reports of invalid events")
    add_kafka_arguments(s)
    c = sub.add_parser("check", help="validate manifests (a file or a directory of *.toml)")
    c.add_argument("path", metavar="PATH")
    pub = sub.add_parser("publish", help="publish manifests to the agent-manifests topic")
    pub.add_argument("path", metavar="PATH")
    add_kafka_arguments(pub)
    w = sub.add_parser("withdraw", help="withdraw manifests from the agent-manifests topic (tombstones)")
    w.add_argument("keys", nargs="+", metavar="KEY", help="agent:<id> or role:<name>")
    add_kafka_arguments(w)


def safe_filename(agent_id: str) -> str:
    """A file name for an agent's manifest: the id where it is a safe name, else a cleaned one with a
    short digest (two ids never share a file).

    >>> safe_filename("support-agent-003"), safe_filename("a/b")[:4]
    ('support-agent-003.toml', 'a_b-')
    """
    clean = re.sub(r"[^A-Za-z0-9._-]", "_", agent_id).lstrip(".") or "_"
    if clean == agent_id:
        return agent_id + ".toml"
    import hashlib

    return f"{clean[:80]}-{hashlib.sha256(agent_id.encode('utf-8', 'surrogatepass')).hexdigest()[:8]}.toml"


def _comments(seen, margin: float) -> dict[str, str]:
    from detector.manifest_suggest import OPERATOR, iso_utc

    cls = seen.dest_classes
    peaks = ", ".join(f"{k} {v:,.0f}" for k, v in seen.peaks.items())
    return {
        "": (f"Suggested by `flowbreaker manifest suggest` from {seen.n:,} actions of {seen.agent_id}\n"
             f"({iso_utc(seen.first_t)} to {iso_utc(seen.last_t)}), operator {seen.operator_id}.\n"
             "Review before enforcing: every grant below was used; ceilings are the observed peak x "
             f"{margin:g}.\nSet on_violation = \"deny\" on a clause where no approval would ever be given."),
        "tools": f"{len(seen.tools)} tools used",
        "resources": f"{len(seen.resources):,} distinct resources touched, grouped into families",
        "sensitivity": f"data touched: {dict(seen.sens_read)}; sent out: {dict(seen.sens_sent)}",
        "destinations": (f"{len(seen.destinations):,} distinct destinations: {cls.get('internal', 0):,} internal, "
                         f"{cls.get('external', 0):,} external, {cls.get('broadcast', 0):,} broadcast addressings"),
        "principals": (f"{len(seen.principals) - (OPERATOR in seen.principals)} requesters; "
                       f"{seen.principals.get(OPERATOR, 0):,} actions for its operator directly"),
        "ceilings": f"observed peaks: {peaks}",
    }


def _suggest(args: argparse.Namespace) -> int:
    from detector.errors import UsageError
    from detector.manifest import ManifestError, render_manifest
    from detector.manifest_suggest import observe, suggest, unused_grants
    from detector.policy import load_policy
    from streams.manifests import load_path

    if args.margin < 1:
        raise UsageError(f"--margin must be >= 1, got {args.margin:g}")
    if args.min_group < 1 or args.version < 1:
        raise UsageError("--min-group and --version must be >= 1")
    refuse_topic_options(args, "--since")
    require_since(args)
    policy = load_policy(args.policy)
    compare = None
    if args.compare:
        try:
            compare = load_path(args.compare)[0]
        except ManifestError as err:
            raise UsageError(str(err)) from None
    since, until = parse_range(args.since, args.until) if args.from_topic else (None, None)
    events = read_source(args, since_ms=since, until_ms=until, client_id="flowbreaker-manifest-suggest")
    seen = observe(events, policy, agent=args.agent)
    if not seen:
        raise UsageError(f"no valid events{' of agent ' + args.agent if args.agent else ''} in "
                         f"{args.input or args.from_topic}")
    out_dir = Path(args.out) if args.out else None
    if out_dir is not None:
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise UsageError(f"cannot write {out_dir}: {err.strerror}") from None
    texts = []
    for agent in sorted(seen):
        m = suggest(seen[agent], policy=policy, margin=args.margin, min_group=args.min_group, version=args.version)
        text = render_manifest(m, comments=_comments(seen[agent], args.margin))
        if out_dir is not None:
            (out_dir / safe_filename(agent)).write_text(text, encoding="utf-8")
        else:
            texts.append(text)
    if texts:
        sys.stdout.write("\n".join(texts))
    report = {}
    if compare is not None:
        agents = sorted(set(seen) | set(compare.agents()) if args.agent is None else {args.agent})
        for agent in agents:
            scope = compare.scope_for(agent)
            if scope is None:
                continue
            grants = unused_grants(scope, seen.get(agent))
            report[agent] = {"manifest": scope.label, "actions": seen[agent].n if agent in seen else 0,
                             "unused_grants": grants}
        stream = sys.stderr if out_dir is None else sys.stdout
        for agent, r in report.items():
            print(f"{agent} ({r['manifest']}, {r['actions']:,} actions): {len(r['unused_grants'])} unused grants",
                  file=stream)
            for g in r["unused_grants"]:
                print(f"  {g['clause']}: {g['grant']} ({g['detail']})", file=stream)
        if out_dir is not None:
            (out_dir / "unused-grants.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    where = f"{out_dir}/" if out_dir is not None else "stdout"
    print(f"manifest suggest: {len(seen)} agents from {len(events):,} events -> {where}"
          + (f"; unused grants of {len(report)} manifests compared" if compare is not None else ""), file=sys.stderr)
    return 0


def _check(args: argparse.Namespace) -> int:
    from detector.errors import UsageError
    from detector.manifest import ManifestError
    from streams.manifests import load_path

    try:
        book, items = load_path(args.path)
    except ManifestError as err:
        raise UsageError(str(err)) from None
    roles = {m.name for m in book.manifests.values() if m.kind == "role"}
    for key in sorted(items):
        m = items[key][0]
        extra = ""
        if m.kind == "agent" and m.role is not None:
            extra = f", role {m.role}" + ("" if m.role in roles else " (not in this set)")
        if m.kind == "role" and m.agents:
            extra = f", agents {', '.join(m.agents)}"
        print(f"{m.source}: {m.label}: {', '.join(m.clauses) or 'no clauses'}{extra}")
    return 0


def _settings(args: argparse.Namespace) -> Settings:
    from detector.errors import UsageError

    try:
        return Settings.from_args(args)
    except SettingsError as err:
        raise UsageError(str(err)) from None


def _publish(args: argparse.Namespace) -> int:
    from kafka.errors import KafkaError

    from detector.errors import UsageError
    from detector.manifest import ManifestError
    from streams.kafka_admin import KafkaUnavailable, ensure_topics
    from streams.manifests import load_path, publish

    try:
        _, items = load_path(args.path)
    except ManifestError as err:
        raise UsageError(str(err)) from None
    settings = _settings(args)
    try:
        ensure_topics(settings, topics=["manifests"])
        n = publish(settings, items.values())
    except (KafkaUnavailable, KafkaError, TimeoutError) as err:
        print(f"flowbreaker manifest: {err}", file=sys.stderr)
        return 1
    print(f"published {n} manifests to {settings.topic('manifests')}")
    return 0


def _withdraw(args: argparse.Namespace) -> int:
    from kafka.errors import KafkaError

    from detector.errors import UsageError
    from streams.manifests import withdraw

    bad = [k for k in args.keys if not re.fullmatch(r"(agent|role):.+", k)]
    if bad:
        raise UsageError(f"{bad[0]!r}: a key is agent:<id> or role:<name>")
    settings = _settings(args)
    try:
        n = withdraw(settings, args.keys)
    except (KafkaError, TimeoutError) as err:
        print(f"flowbreaker manifest: {err}", file=sys.stderr)
        return 1
    print(f"withdrew {n} manifests from {settings.topic('manifests')}")
    return 0


def run(args: argparse.Namespace) -> int:
    return {"suggest": _suggest, "check": _check, "publish": _publish, "withdraw": _withdraw}[args.manifest_command](
        args)
