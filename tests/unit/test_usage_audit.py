"""flowbreaker audit (streams/cli/audit.py): behaviour against intended use over a period, drift against the
previous period, the report files; and the manifests' file loading and topic fold it relies on."""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest

from detector.events import decode_event
from detector.manifest import ManifestBook, ManifestError, parse_manifest
from detector.policy import Policy
from streams.cli.main import main
from streams.manifests import ManifestTopicFold, load_path
from streams.cli.audit import REPORT_FORMAT, audit_period, write_report

POLICY = Policy.from_dict({"internal_domains": ["corp.example"]})
SINCE = datetime(2026, 3, 9, tzinfo=timezone.utc)
MANIFEST = """version = 4
agent = "bot"
[tools]
allow = ["crm.read", "mail.send", "vault.read"]
[destinations]
allow = ["email:*@client.example"]
on_violation = "deny"
[ceilings]
records_out_per_hour = 50
"""


def ev(i, hours, agent="bot", **kw):
    base = {"event_id": f"e{i}", "ts": (SINCE + timedelta(hours=hours)).isoformat(), "agent_id": agent,
            "operator_id": "ops", "tool": "crm.read", "action": "read", "resource": "crm://customers/1",
            "sensitivity": "internal"}
    base.update(kw)
    return decode_event(base)


def history():
    send = dict(tool="mail.send", action="send", records=10, destinations=["email:a@client.example"])
    return [
        ev(0, -20, **send),                                                  # previous period
        ev(1, -19, requested_by="alice@corp.example"),
        ev(2, 1, **send),                                                    # current period
        ev(3, 2, tool="shell.exec", action="exec", resource="host://x"),   # out of scope: tools
        ev(4, 3, **{**send, "destinations": ["email:eve@evil.example"]}),  # out of scope: destinations (deny)
        ev(5, 4, **{**send, "records": 60}),                               # ceiling
        ev(6, 5, agent="other", tool="x.y"),                                 # no manifest
        ev(7, 30, tool="late.tool"),                                         # after the period: ignored
    ]


def test_the_audit_counts_out_of_scope_actions_by_clause_with_examples():
    book = ManifestBook([parse_manifest(MANIFEST, "bot.toml")])
    r = audit_period(history(), since=SINCE.timestamp(), until=(SINCE + timedelta(days=1)).timestamp(), book=book,
                     policy=POLICY)
    assert r["format"] == REPORT_FORMAT and r["agents_active"] == 2 and r["agents_with_manifest"] == 1
    bot = next(a for a in r["agents"] if a["agent_id"] == "bot")
    oos = bot["out_of_scope"]
    assert (oos["actions"], oos["checked"]) == (3, 4)
    assert oos["by_clause"] == {"tools": 1, "destinations": 1, "ceilings.records_out_per_hour": 1}
    assert oos["examples"]["destinations"][0]["on_violation"] == "deny"
    assert oos["examples"]["tools"][0]["event_id"] == "e3"
    assert [g["grant"] for g in bot["unused_grants"]] == ["crm.read", "vault.read"]
    # at 04:00 the sliding hour still holds all of the 03:00 bucket (10) besides this send (60)
    assert bot["volume"]["records_out_per_hour"] == {"peak": 70.0, "ceiling": 50, "share": 1.4}
    assert bot["destinations"]["classes"] == {"external": 3}
    assert bot["data"]["records_out"] == 80
    # drift against the previous day: a new tool, a new destination group, a dropped requester
    assert bot["drift"]["new"]["tools"] == ["shell.exec"]
    assert bot["drift"]["new"]["destination_groups"] == ["email:*@evil.example"]
    assert bot["drift"]["dropped"]["principals"] == ["alice@corp.example"]
    other = next(a for a in r["agents"] if a["agent_id"] == "other")
    assert other["manifest"] is None and "out_of_scope" not in other
    assert r["out_of_scope"]["by_clause"]["tools"] == 1


def test_the_audit_of_one_agent_leaves_the_others_out():
    r = audit_period(history(), since=SINCE.timestamp(), until=(SINCE + timedelta(days=1)).timestamp(),
                     book=None, agent="other")
    assert [a["agent_id"] for a in r["agents"]] == ["other"]


def test_the_report_has_markdown_html_json_and_plots(tmp_path):
    book = ManifestBook([parse_manifest(MANIFEST, "bot.toml")])
    r = audit_period(history(), since=SINCE.timestamp(), until=(SINCE + timedelta(days=1)).timestamp(), book=book,
                     policy=POLICY)
    out = write_report(r, tmp_path / "rep")
    assert json.loads((out / "audit.json").read_text())["agents"][0]["agent_id"] == "bot"
    md = (out / "audit.md").read_text()
    assert "## bot" in md and "tools 1" in md and "out_of_scope.png" in md
    html = (out / "audit.html").read_text()
    assert "<table>" in html and "volume.png" in html
    assert (out / "out_of_scope.png").stat().st_size > 1000 and (out / "volume.png").exists()


def test_the_command_reads_a_file_and_refuses_a_bad_manifest_with_its_line(tmp_path, capsys):
    events = tmp_path / "events.jsonl"
    events.write_text("\n".join(json.dumps(e.to_dict()) for e in history()) + "\nnot json\n")
    mdir = tmp_path / "manifests"
    mdir.mkdir()
    (mdir / "bot.toml").write_text(MANIFEST)
    rc = main(["audit", "--input", str(events), "--since", "2026-03-09", "--until", "2026-03-10",
               "--manifests", str(mdir), "--report", str(tmp_path / "rep"), "--quiet"])
    assert rc == 0
    assert json.loads((tmp_path / "rep" / "audit.json").read_text())["out_of_scope"]["actions"] == 3
    (mdir / "bad.toml").write_text('version = 1\nagent = "x"\n[tools]\nallow = "y"\n')
    capsys.readouterr()
    assert main(["audit", "--input", str(events), "--since", "2026-03-09", "--until", "2026-03-10",
                 "--manifests", str(mdir), "--report", str(tmp_path / "rep")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"flowbreaker audit: {mdir}/bad.toml:4: tools.allow must be a list of strings"


def test_the_command_refuses_a_period_that_ends_before_it_starts(tmp_path, capsys):
    assert main(["audit", "--input", "x", "--since", "2026-03-10", "--until", "2026-03-09",
                 "--report", str(tmp_path)]) == 2
    assert "is not before" in capsys.readouterr().err


# --------------------------------------------------------------------------- manifests in the shell

def test_a_directory_of_manifests_loads_and_a_duplicate_names_both_files(tmp_path):
    (tmp_path / "a.toml").write_text('version = 1\nagent = "a"\n')
    (tmp_path / "r.toml").write_text('version = 1\nrole = "r"\nagents = ["b*"]\n')
    (tmp_path / "notes.txt").write_text("ignored")
    book, items = load_path(tmp_path)
    assert sorted(items) == ["agent:a", "role:r"] and book.scope_for("b1").label == "role r v1"
    (tmp_path / "z.toml").write_text('version = 2\nagent = "a"\n')
    with pytest.raises(ManifestError, match=r"z.toml:1: agent 'a' is also declared in .*a.toml"):
        load_path(tmp_path)
    with pytest.raises(ManifestError, match="no such file"):
        load_path(tmp_path / "missing")


def test_the_topic_fold_skips_and_counts_bad_records_and_keeps_what_it_had():
    fold = ManifestTopicFold(ManifestBook([parse_manifest('version = 1\nagent = "f"\n', "file")]))
    assert fold.apply(b"agent:a", b'version = 1\nagent = "a"\n[tools]\nallow = ["x"]\n') == "added"
    assert fold.apply(b"agent:a", b"version = 2\nagent = \n") == "invalid"
    assert fold.apply(b"agent:a", b"\xff\xfe") == "invalid"
    assert fold.apply(b"\xff", b'version = 3\nagent = "a"\n') == "invalid"
    assert fold.apply(b"agent:a", b"[" * 5000) == "invalid"
    assert (fold.invalid, fold.applied) == (4, 1)
    assert fold.book.scope_for("a").clauses["tools"]["allow"] == ("x",)
    assert fold.apply(b"agent:f", b'version = 2\nagent = "f"\n') == "replaced"  # a newer one than the file's
    assert fold.apply(b"agent:zz", None) == "stale"
