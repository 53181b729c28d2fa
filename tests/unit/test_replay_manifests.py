"""replay --gate --manifests and manifest suggest/check from the command line (files, no Kafka)."""
from __future__ import annotations

import json

from streams.cli.main import main


def event(i: int, **kw) -> dict:
    base = {"event_id": f"e{i}", "ts": f"2026-03-02T09:{i // 60:02d}:{i % 60:02d}Z", "agent_id": "bot",
            "operator_id": "ops", "tool": "crm.read", "action": "read", "resource": "crm://customers/1",
            "sensitivity": "internal", "records": 1}
    base.update(kw)
    return base


def write(path, events):
    path.write_text("\n".join(json.dumps(e) for e in events) + "\n")
    return path


def test_replay_with_manifests_holds_an_out_of_scope_send_that_the_learned_check_allows(tmp_path):
    history = [event(i) for i in range(30)] + [
        event(30 + i, tool="mail.send", action="send", destinations=[f"email:c{i}@client.example"])
        for i in range(6)]
    stream = write(tmp_path / "events.jsonl", history + [
        event(100, tool="mail.send", action="send", destinations=["email:c9@client.example"]),
        event(101, tool="mail.send", action="send", destinations=["email:x@other.example"])])
    mdir = tmp_path / "m"
    assert main(["manifest", "suggest", "--input", str(write(tmp_path / "h.jsonl", history)), "--out", str(mdir),
                 "--quiet"]) == 0
    assert (mdir / "bot.toml").exists()
    assert main(["manifest", "check", str(mdir)]) == 0
    plain, held = tmp_path / "plain.jsonl", tmp_path / "held.jsonl"
    assert main(["replay", "--input", str(stream), "--out", str(plain), "--gate"]) == 0
    assert main(["replay", "--input", str(stream), "--out", str(held), "--gate", "--manifests", str(mdir)]) == 0
    gate = lambda p: {r["event_id"]: r.get("gate") for r in map(json.loads, p.read_text().splitlines())}  # noqa
    assert gate(held)["e100"] == "allow"                       # a client domain it used
    assert gate(held)["e101"] == "needs_approval"              # a domain it never used
    assert gate(plain)["e101"] == gate(plain)["e100"]          # the learned check alone does not tell them apart
    assert "e0" not in {k for k, v in gate(held).items() if v is not None}  # reads get no verdict


def test_replay_refuses_a_bad_manifest_naming_file_and_line(tmp_path, capsys):
    stream = write(tmp_path / "events.jsonl", [event(0)])
    bad = tmp_path / "bad.toml"
    bad.write_text('version = 1\nagent = "bot"\n[sensitivity]\nmax_read = "secret"\n')
    assert main(["replay", "--input", str(stream), "--out", str(tmp_path / "d.jsonl"), "--gate", "--manifests",
                 str(bad)]) == 2
    assert capsys.readouterr().err.strip().endswith(f"{bad}:4: sensitivity.max_read must be one of public, "
                                                     "internal, confidential, restricted")


def test_suggest_compare_lists_unused_grants(tmp_path, capsys):
    hist = write(tmp_path / "h.jsonl", [event(i) for i in range(5)])
    mdir = tmp_path / "given"
    mdir.mkdir()
    (mdir / "bot.toml").write_text('version = 2\nagent = "bot"\n[tools]\nallow = ["crm.read", "vault.*"]\n')
    out = tmp_path / "out"
    assert main(["manifest", "suggest", "--input", str(hist), "--compare", str(mdir), "--out", str(out)]) == 0
    report = json.loads((out / "unused-grants.json").read_text())
    assert report["bot"]["manifest"] == "agent bot v2"
    assert [g["grant"] for g in report["bot"]["unused_grants"]] == ["vault.*"]
    assert "vault.*" in capsys.readouterr().out
