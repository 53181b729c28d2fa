"""``flowbreaker audit``: behaviour against intended use, per agent, over a period.

::

    flowbreaker audit --since ISO --until ISO [--agent A] (--input EVENTS.jsonl | --bootstrap HOST:PORT
                      [--topic agent-actions]) [--manifests DIR] [--policy P.toml] --report DIR

(Not the control plane's audit trail: that is ``agent-audit``, :mod:`streams.api.audit_trail`.)

For each agent active in ``[--since, --until)`` the report says:

- **out-of-scope actions by clause**: every action checked against the agent's
  manifest exactly as the stream checks it (:meth:`detector.manifest.Scope.check`,
  ceilings on sliding windows that include the previous period), with examples;
- **unused grants**: what the manifest allows and the agent never used;
- **principals seen**, **destinations and data classes reached** (destination
  classes by the policy, sensitivity of data touched and sent out);
- **volume against ceilings**: the peak of each ceiling's sliding window and its
  share of the ceiling;
- **drift against the previous period of equal length** (``[since - L, since)``):
  new and dropped tools, resource families, destination groups and principals,
  volume sent out before and after.

Manifests come from ``--manifests`` (a file or directory); without it, from the
``agent-manifests`` topic when reading Kafka (its current state). Agents without
a manifest are reported too (behaviour only). Drill agents are left out.

Output in ``--report DIR``: ``audit.json`` (``flowbreaker-usage-audit/1``, for
machines), ``audit.md`` and ``audit.html`` with two plots (out-of-scope actions
by clause per agent; records sent out per hour against the hourly ceiling for the
agents closest to theirs). Exit 0; 2 with one line on stderr for bad arguments
or a bad manifest (``FILE:LINE: why``).
"""

from __future__ import annotations

import argparse
import html
import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any, Iterable, Mapping

from detector.events import ActionEvent
from detector.manifest import CEILINGS, ManifestBook, Usage, VIOLATION_CLAUSES
from detector.manifest_suggest import OPERATOR, Observed, drift, iso_utc, parent_glob, unused_grants
from detector.policy import Policy
from streams.cli.sources import add_max_events_argument
from streams.settings import add_kafka_arguments

__all__ = ["configure_parser", "run", "audit_period", "write_report", "REPORT_FORMAT"]

REPORT_FORMAT = "flowbreaker-usage-audit/1"
EXAMPLES_PER_CLAUSE = 3
TOP = 10


def configure_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--since", required=True, metavar="ISO", help="start of the period (RFC 3339 or date; UTC if no offset)")
    p.add_argument("--until", required=True, metavar="ISO", help="end of the period, exclusive (or 'now')")
    p.add_argument("--agent", metavar="A", help="only this agent")
    p.add_argument("--input", metavar="EVENTS.jsonl", help="action events from a file (else from Kafka: --bootstrap)")
    p.add_argument("--topic", default=None, metavar="TOPIC", help="actions topic (default agent-actions, with prefix)")
    p.add_argument("--manifests", metavar="PATH", help="manifest file or directory (default: the agent-manifests "
                                                        "topic when reading Kafka)")
    p.add_argument("--policy", metavar="P.toml", help="policy file: destination classes")
    p.add_argument("--report", required=True, metavar="DIR", help="directory for audit.md, audit.html, audit.json")
    add_max_events_argument(p, max_events=5_000_000)
    p.add_argument("--quiet", action="store_true", help="no per-line reports of invalid events")
    add_kafka_arguments(p)


# --------------------------------------------------------------------------- the audit (no I/O)
def _top(counter: Mapping[str, int], n: int = TOP) -> list[list]:
    return [[k, v] for k, v in Counter(counter).most_common(n)]


def audit_period(events: Iterable[ActionEvent], *, since: float, until: float, book: ManifestBook | None,
                 policy: Policy | None = None, agent: str | None = None) -> dict[str, Any]:
    """The audit of ``[since, until)`` (epoch seconds) from ``events`` covering ``[since - L, until)``
    (L = until - since), in time order. Pure: returns the JSON-able report."""
    policy = policy or Policy()
    classify = policy.classify
    length = until - since
    start_prev = since - length
    book = book or ManifestBook()
    prev: dict[str, Observed] = {}
    cur: dict[str, Observed] = {}
    usage: dict[str, Usage] = {}
    out_of_scope: dict[str, Counter] = {}
    examples: dict[str, dict[str, list]] = {}
    checked: Counter = Counter()
    for ev in events:
        t = ev.t
        if not start_prev <= t < until or (agent is not None and ev.agent_id != agent):
            continue
        a = ev.agent_id
        u = usage.get(a)
        if u is None:
            u = usage[a] = Usage()
        if t >= since:
            scope = book.scope_for(a)
            if scope is not None:
                checked[a] += 1
                found = scope.check(ev, u, classify=classify)
                if found:
                    c = out_of_scope.setdefault(a, Counter())
                    c["actions"] += 1
                    ex = examples.setdefault(a, {})
                    for v in found:
                        c[v.clause] += 1
                        lst = ex.setdefault(v.clause, [])
                        if len(lst) < EXAMPLES_PER_CLAUSE:
                            lst.append({"event_id": ev.event_id, "ts": ev.ts, "tool": ev.tool, "action": ev.action,
                                        "on_violation": v.on_violation, "detail": v.detail})
            o = cur.get(a)
            if o is None:
                o = cur[a] = Observed(a)
        else:
            o = prev.get(a)
            if o is None:
                o = prev[a] = Observed(a)
        o.add(ev, classify)
        if ev.destinations:
            u.add(t, ev.records, ev.bytes)

    agents = []
    for a in sorted(cur):
        o = cur[a]
        scope = book.scope_for(a)
        entry: dict[str, Any] = {
            "agent_id": a, "operator_id": o.operator_id, "actions": o.n,
            "first": iso_utc(o.first_t), "last": iso_utc(o.last_t),
            "manifest": scope.label if scope is not None else None,
        }
        if scope is not None:
            counts = out_of_scope.get(a, Counter())
            entry["out_of_scope"] = {
                "actions": counts.get("actions", 0), "checked": checked[a],
                "by_clause": {c: counts[c] for c in VIOLATION_CLAUSES if counts.get(c)},
                "examples": examples.get(a, {}),
            }
            entry["unused_grants"] = unused_grants(scope, o)
            ceilings = scope.clauses.get("ceilings", {})
            entry["volume"] = {k: {"peak": round(o.peaks[k], 1), "ceiling": ceilings.get(k),
                                   "share": (round(o.peaks[k] / ceilings[k], 3) if ceilings.get(k) else None)}
                               for k in CEILINGS}
        else:
            entry["volume"] = {k: {"peak": round(o.peaks[k], 1), "ceiling": None, "share": None} for k in CEILINGS}
        entry["principals"] = _top(o.principals, 50)
        entry["destinations"] = {
            "distinct": len(o.destinations), "classes": dict(o.dest_classes),
            "groups": _top(Counter(parent_glob(d) or d for d in o.destinations.elements()), TOP),
            "top": _top(o.destinations),
        }
        entry["data"] = {"touched": dict(o.sens_read), "sent_out": dict(o.sens_sent),
                         "records_out": o.out_records, "bytes_out": o.out_bytes}
        entry["tools"] = _top(o.tools, 50)
        entry["hourly_records_out"] = sorted([int(h * 3600), n] for h, n in o.hourly_out.items())
        entry["drift"] = drift(prev.get(a), o)
        agents.append(entry)
    agents.sort(key=lambda e: (-(e.get("out_of_scope") or {}).get("actions", 0), e["agent_id"]))
    with_manifest = [e for e in agents if e["manifest"] is not None]
    totals = Counter()
    for e in with_manifest:
        totals.update(e["out_of_scope"]["by_clause"])
    return {
        "format": REPORT_FORMAT,
        "period": {"since": iso_utc(since), "until": iso_utc(until)},
        "previous_period": {"since": iso_utc(start_prev), "until": iso_utc(since)},
        "agents_active": len(agents), "agents_with_manifest": len(with_manifest),
        "manifests": len(book), "agent_filter": agent,
        "out_of_scope": {"actions": sum(e["out_of_scope"]["actions"] for e in with_manifest),
                         "checked": sum(e["out_of_scope"]["checked"] for e in with_manifest),
                         "by_clause": {c: totals[c] for c in VIOLATION_CLAUSES if totals.get(c)}},
        "unused_grants": sum(len(e["unused_grants"]) for e in with_manifest),
        "agents": agents,
    }


# --------------------------------------------------------------------------- the report (I/O)
def _plots(report: dict, out: Path) -> list[tuple[str, str]]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    made = []
    offenders = [e for e in report["agents"] if (e.get("out_of_scope") or {}).get("actions")][:15]
    if offenders:
        clauses = [c for c in VIOLATION_CLAUSES if any(e["out_of_scope"]["by_clause"].get(c) for e in offenders)]
        fig, ax = plt.subplots(figsize=(9, 0.45 * len(offenders) + 1.6))
        left = [0] * len(offenders)  # bars stacked clause by clause, the worst agent on top
        names = [e["agent_id"] for e in offenders][::-1]
        for c in clauses:
            vals = [e["out_of_scope"]["by_clause"].get(c, 0) for e in offenders][::-1]
            ax.barh(names, vals, left=left, label=c)
            left = [x + y for x, y in zip(left, vals)]
        ax.set_xlabel("out-of-scope actions (an action may break several clauses)")
        ax.set_title("Out-of-scope actions by clause")
        ax.legend(fontsize=8, loc="lower right")
        fig.tight_layout()
        fig.savefig(out / "out_of_scope.png", dpi=100)
        plt.close(fig)
        made.append(("out_of_scope.png", "Out-of-scope actions by clause, per agent (most first)"))
    near = sorted((e for e in report["agents"] if (e["volume"]["records_out_per_hour"]["share"] or 0) > 0),
                  key=lambda e: -e["volume"]["records_out_per_hour"]["share"])[:6]
    if near:
        start = _epoch(report["period"]["since"])
        hours = (_epoch(report["period"]["until"]) - start) / 3600
        fig, axes = plt.subplots(len(near), 1, figsize=(9, 1.9 * len(near) + 0.6), squeeze=False)
        for ax, e in zip(axes[:, 0], near):
            pts = [(t, n) for t, n in e["hourly_records_out"] if t >= start]
            ax.bar([(t - start) / 3600 + 0.5 for t, _ in pts], [n for _, n in pts], width=0.9, color="#4878a8")
            ax.axhline(e["volume"]["records_out_per_hour"]["ceiling"], color="#c0392b", lw=1.2, ls="--")
            ax.set_xlim(0, hours)
            if e["volume"]["records_out_per_hour"]["share"] > 5:  # a spike far above: keep the ceiling visible
                ax.set_yscale("symlog", linthresh=1.0)
            ax.set_ylabel("records", fontsize=8)
            ax.set_title(f"{e['agent_id']}: records sent out per hour (dashed: ceiling; peak "
                         f"{100 * e['volume']['records_out_per_hour']['share']:.0f} % of it)", fontsize=9)
        axes[-1, 0].set_xlabel(f"hours since {report['period']['since']}")
        fig.tight_layout()
        fig.savefig(out / "volume.png", dpi=100)
        plt.close(fig)
        made.append(("volume.png", "Records sent out per hour against the hourly ceiling (closest agents)"))
    return made


def _epoch(iso: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def _md(report: dict, plots: list[tuple[str, str]]) -> str:
    p = report["period"]
    lines = [f"# Intended-use audit {p['since']} to {p['until']}", "",
             f"{report['agents_active']} agents active, {report['agents_with_manifest']} with a manifest "
             f"({report['manifests']} manifests). Out of scope: {report['out_of_scope']['actions']:,} of "
             f"{report['out_of_scope']['checked']:,} checked actions; {report['unused_grants']} unused grants. "
             f"Drift against {report['previous_period']['since']} to {report['previous_period']['until']}.", ""]
    if report["out_of_scope"]["by_clause"]:
        lines += ["| clause | out-of-scope actions |", "|---|---|"]
        lines += [f"| {c} | {n:,} |" for c, n in report["out_of_scope"]["by_clause"].items()] + [""]
    for file, caption in plots:
        lines += [f"![{caption}]({file})", ""]
    for e in report["agents"]:
        lines += [f"## {e['agent_id']}", "",
                  f"{e['actions']:,} actions ({e['first']} to {e['last']}), operator {e['operator_id']}; "
                  f"manifest: {e['manifest'] or 'none (behaviour only)'}", ""]
        oos = e.get("out_of_scope")
        if oos is not None:
            lines.append(f"- **out of scope**: {oos['actions']:,} of {oos['checked']:,} actions"
                         + (": " + ", ".join(f"{c} {n:,}" for c, n in oos["by_clause"].items()) if oos["by_clause"]
                            else ""))
            for c, exs in oos["examples"].items():
                for x in exs:
                    lines.append(f"  - {c} ({x['on_violation']}): {x['ts']} {x['action']} {x['tool']} "
                                 f"`{x['event_id']}`: {x['detail']}")
            grants = e["unused_grants"]
            lines.append(f"- **unused grants**: {len(grants)}"
                         + ("".join(f"\n  - {g['clause']}: `{g['grant']}` ({g['detail']})" for g in grants)))
        lines.append("- **principals**: " + ", ".join(f"{k} ({v:,})" for k, v in e["principals"][:TOP]))
        d = e["destinations"]
        lines.append(f"- **destinations**: {d['distinct']:,} distinct; classes "
                     + (", ".join(f"{k} {v:,}" for k, v in d["classes"].items()) or "none")
                     + ("; groups " + ", ".join(f"`{k}` ({v:,})" for k, v in d["groups"]) if d["groups"] else ""))
        lines.append("- **data**: touched " + ", ".join(f"{k} {v:,}" for k, v in e["data"]["touched"].items())
                     + "; sent out " + (", ".join(f"{k} {v:,}" for k, v in e["data"]["sent_out"].items()) or "none")
                     + f" ({e['data']['records_out']:,} records, {e['data']['bytes_out']:,} bytes)")
        vol = [f"{k} peak {v['peak']:,.0f}" + (f" of {v['ceiling']:,} ({100 * v['share']:.0f} %)"
                                                 if v["ceiling"] else "") for k, v in e["volume"].items()]
        lines.append("- **volume**: " + "; ".join(vol))
        dr = e["drift"]
        new = "; ".join(f"{k}: {', '.join(map(str, v[:5]))}{' ...' if len(v) > 5 else ''}"
                        for k, v in dr["new"].items() if v)
        ratio = dr["records_out"]["ratio"]
        lines.append(f"- **drift**: actions {dr['actions']['previous']:,} -> {dr['actions']['current']:,}; records out "
                     f"{dr['records_out']['previous']:,} -> {dr['records_out']['current']:,}"
                     + (f" (x{ratio:.2f})" if ratio is not None else "") + (f"; new {new}" if new else ""))
        lines.append("")
    return "\n".join(lines)


def _html(md_report: dict, plots: list[tuple[str, str]]) -> str:
    e = html.escape
    r = md_report
    p = r["period"]
    body = [f"<h1>Intended-use audit {e(p['since'])} to {e(p['until'])}</h1>",
            f"<p>{r['agents_active']} agents active, {r['agents_with_manifest']} with a manifest. Out of scope: "
            f"<b>{r['out_of_scope']['actions']:,}</b> of {r['out_of_scope']['checked']:,} checked actions; "
            f"<b>{r['unused_grants']}</b> unused grants. Drift against {e(r['previous_period']['since'])} to "
            f"{e(r['previous_period']['until'])}.</p>"]
    for file, caption in plots:
        body.append(f'<figure><img src="{e(file)}" alt="{e(caption)}"><figcaption>{e(caption)}</figcaption></figure>')
    body.append("<table><tr><th>agent</th><th>manifest</th><th>actions</th><th>out of scope</th>"
                "<th>by clause</th><th>unused grants</th><th>principals</th><th>destination classes</th>"
                "<th>records out/h: peak / ceiling</th><th>new since the previous period</th></tr>")
    for a in r["agents"]:
        oos = a.get("out_of_scope")
        vol = a["volume"]["records_out_per_hour"]
        new = "; ".join(f"{k}: {', '.join(map(str, v[:3]))}" for k, v in a["drift"]["new"].items() if v)
        body.append(
            "<tr>" + "".join(f"<td>{x}</td>" for x in (
                e(a["agent_id"]), e(a["manifest"] or "none"), f"{a['actions']:,}",
                f"{oos['actions']:,}" if oos else "-",
                e(", ".join(f"{c} {n}" for c, n in oos["by_clause"].items())) if oos else "-",
                e("; ".join(g["grant"] for g in a["unused_grants"][:6])
                  + (" ..." if len(a["unused_grants"]) > 6 else "")) if oos else "-",
                e(", ".join(k for k, _ in a["principals"][:4])),
                e(", ".join(f"{k} {v}" for k, v in a["destinations"]["classes"].items())),
                f"{vol['peak']:,.0f} / {vol['ceiling']:,}" if vol["ceiling"] else f"{vol['peak']:,.0f} / -",
                e(new) or "-")) + "</tr>")
    body.append("</table>")
    style = ("body{font-family:sans-serif;margin:2em;max-width:1200px}table{border-collapse:collapse;font-size:90%}"
             "td,th{border:1px solid #ccc;padding:3px 6px;vertical-align:top}th{background:#eee}"
             "img{max-width:100%}")
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>flowbreaker intended-use audit"
            f"</title><style>{style}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")


def write_report(report: dict, out: str | Path) -> Path:
    """``audit.json``, ``audit.md``, ``audit.html`` and the plots into ``out``."""
    d = Path(out)
    d.mkdir(parents=True, exist_ok=True)
    (d / "audit.json").write_text(json.dumps(report, indent=1, sort_keys=False) + "\n", encoding="utf-8")
    plots = _plots(report, d)
    (d / "audit.md").write_text(_md(report, plots), encoding="utf-8")
    (d / "audit.html").write_text(_html(report, plots), encoding="utf-8")
    return d


def run(args: argparse.Namespace) -> int:
    from detector.errors import UsageError
    from detector.manifest import ManifestError
    from detector.policy import load_policy
    from streams.cli.sources import parse_range, read_source
    from streams.settings import Settings, SettingsError

    policy = load_policy(args.policy)
    since_ms, until_ms = parse_range(args.since, args.until)
    length = until_ms - since_ms
    book = None
    if args.manifests:
        from streams.manifests import load_path

        try:
            book = load_path(args.manifests)[0]
        except ManifestError as err:
            raise UsageError(str(err)) from None
    if args.input is None:
        try:
            settings = Settings.from_args(args)
        except SettingsError as err:
            raise UsageError(str(err)) from None
        args.from_topic = args.topic or settings.topic("actions")
        if book is None:
            from streams.manifests import read_topic_book

            book, skipped = read_topic_book(settings)
            if skipped:
                print(f"audit: {skipped} manifest records on {settings.topic('manifests')} skipped (invalid or "
                      "stale)", file=sys.stderr)
    else:
        args.from_topic = None
    events = read_source(args, since_ms=since_ms - length, until_ms=until_ms, client_id="flowbreaker-audit")
    report = audit_period(events, since=since_ms / 1000, until=until_ms / 1000, book=book, policy=policy,
                          agent=args.agent)
    try:
        out = write_report(report, args.report)
    except OSError as err:
        raise UsageError(f"cannot write {args.report}: {err.strerror}") from None
    print(f"audit: {report['agents_active']} agents, {report['out_of_scope']['actions']:,} out-of-scope actions, "
          f"{report['unused_grants']} unused grants -> {out}/audit.html (and audit.md, audit.json)", file=sys.stderr)
    return 0
