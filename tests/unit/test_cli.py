"""The command line (streams/cli/main.py, streams/cli/replay.py, models/train.py), contract section 5.

Run in-process through ``streams.cli.main.main`` and, for exit codes, in a subprocess.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from detector.events import decode_event
from streams.cli.main import main

REPO = Path(__file__).resolve().parents[2]
POLICY = REPO / "examples" / "policy.toml"
RECORD_FIELDS = {"event_id", "agent_id", "ts", "score", "severity", "reasons", "action_taken", "breaker_state",
                 "model_version"}
ENTRY = "import sys; from streams.cli.main import main; raise SystemExit(main(sys.argv[1:]))"


def flowbreaker(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, "-c", ENTRY, *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=60)


def lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def stderr_lines(text: str) -> list[str]:
    return [x for x in text.splitlines() if x.strip()]


def event(i: int, **kw) -> dict:
    d = {"event_id": f"ev-{i}", "ts": f"2026-03-02T09:{i // 60:02d}:{i % 60:02d}+00:00", "agent_id": "agent-a",
         "operator_id": "op", "tool": "db.query", "action": "read", "resource": "db://t/1",
         "sensitivity": "internal", "records": 1}
    d.update(kw)
    return d


@pytest.fixture(scope="module")
def simulated(tmp_path_factory):
    """``flowbreaker simulate`` then ``flowbreaker train`` on its history: (dir, events file, model dir)."""
    d = tmp_path_factory.mktemp("sim")
    assert main(["simulate", "--out", str(d / "events.jsonl"), "--history-out", str(d / "history.jsonl"),
                 "--agents", "8", "--days", "5", "--seed", "2"]) == 0
    assert main(["train", "--input", str(d / "history.jsonl"), "--policy", str(POLICY), "--out", str(d / "model"),
                 "--trees", "20", "--quiet"]) == 0
    return d, d / "events.jsonl", d / "model"


# --------------------------------------------------------------------------- usage errors

@pytest.mark.parametrize("argv", [["replay", "--bogus"], ["replay", "--input", "x.jsonl"], ["frobnicate"], [],
                                  ["train", "--out", "m"]])
def test_a_bad_flag_or_command_exits_2_with_one_line_on_stderr(argv, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = stderr_lines(capsys.readouterr().err)
    assert len(err) == 1 and re.match(r"flowbreaker( replay| train)?: (?!error)", err[0]), err  # the house style


def test_a_bad_flag_exits_2_with_one_line_in_a_real_process(tmp_path):
    done = flowbreaker("replay", "--bogus", "--input", "x", "--out", "y", cwd=tmp_path)
    assert done.returncode == 2
    assert len(stderr_lines(done.stderr)) == 1 and "--bogus" in done.stderr


def test_a_missing_input_file_exits_2_naming_it(tmp_path, capsys):
    assert main(["replay", "--input", str(tmp_path / "nope.jsonl"), "--out", str(tmp_path / "d.jsonl")]) == 2
    err = stderr_lines(capsys.readouterr().err)
    assert len(err) == 1 and "nope.jsonl" in err[0]


def test_a_missing_input_file_exits_2_in_a_real_process(tmp_path):
    done = flowbreaker("replay", "--input", "nope.jsonl", "--out", "d.jsonl", cwd=tmp_path)
    assert done.returncode == 2
    assert len(stderr_lines(done.stderr)) == 1 and "nope.jsonl" in done.stderr


def test_python_dash_m_streams_cli_also_exits_2_on_a_missing_input_file(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-m", "streams.cli.main", "replay", "--input", "nope.jsonl",
                           "--out", "d.jsonl"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert len(stderr_lines(done.stderr)) == 1


@pytest.mark.parametrize("breakage", ["empty", "absent", "garbage_card"])
def test_a_broken_model_directory_exits_2_with_one_line(tmp_path, capsys, breakage):
    inp = tmp_path / "in.jsonl"
    inp.write_text(json.dumps(event(1)) + "\n")
    model = tmp_path / "model"
    if breakage != "absent":
        model.mkdir()
    if breakage == "garbage_card":
        (model / "model.json").write_text("{]")
        (model / "arrays.npz").write_bytes(b"")
    assert main(["replay", "--model", str(model), "--input", str(inp), "--out", str(tmp_path / "d.jsonl")]) == 2
    err = stderr_lines(capsys.readouterr().err)
    assert len(err) == 1 and "model" in err[0]


def test_a_broken_model_directory_exits_2_in_a_real_process(tmp_path):
    (tmp_path / "model").mkdir()
    (tmp_path / "in.jsonl").write_text(json.dumps(event(1)) + "\n")
    done = flowbreaker("replay", "--model", "model", "--input", "in.jsonl", "--out", "d.jsonl", cwd=tmp_path)
    assert done.returncode == 2
    assert len(stderr_lines(done.stderr)) == 1


def test_a_bad_policy_file_exits_2_with_one_line(tmp_path, capsys):
    inp = tmp_path / "in.jsonl"
    inp.write_text(json.dumps(event(1)) + "\n")
    pol = tmp_path / "p.toml"
    pol.write_text("approval_threshold = 3\n")
    assert main(["replay", "--policy", str(pol), "--input", str(inp), "--out", str(tmp_path / "d.jsonl")]) == 2
    err = stderr_lines(capsys.readouterr().err)
    assert len(err) == 1 and "approval_threshold" in err[0]


def test_training_on_a_file_without_valid_events_exits_2(tmp_path, capsys):
    inp = tmp_path / "h.jsonl"
    inp.write_text("garbage\n{}\n")
    assert main(["train", "--input", str(inp), "--out", str(tmp_path / "m"), "--quiet"]) == 2
    assert "no valid events" in capsys.readouterr().err


# --------------------------------------------------------------------------- replay

def test_replay_reports_invalid_lines_by_number_and_still_decides_the_valid_ones(tmp_path, capsys):
    inp = tmp_path / "in.jsonl"
    rows = [json.dumps(event(1)), "not json at all", json.dumps(event(2)), "",
            json.dumps({**event(3), "action": "fly"}), json.dumps(event(4)), json.dumps({**event(5), "records": -2})]
    inp.write_text("\n".join(rows) + "\n")
    out = tmp_path / "d.jsonl"
    assert main(["replay", "--input", str(inp), "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert f"{inp}:2:" in err and f"{inp}:5:" in err and f"{inp}:7:" in err
    assert f"{inp}:1:" not in err and f"{inp}:4:" not in err
    assert "action" in err and "records" in err
    assert "3 invalid lines" in err
    assert [r["event_id"] for r in lines(out)] == ["ev-1", "ev-2", "ev-4"]


def test_replay_without_a_model_writes_one_contract_record_per_valid_event(tmp_path, capsys):
    inp = tmp_path / "in.jsonl"
    inp.write_text("".join(json.dumps(event(i)) + "\n" for i in range(50)) + json.dumps(event(45)) + "\n")
    out = tmp_path / "d.jsonl"
    assert main(["replay", "--input", str(inp), "--out", str(out), "--quiet"]) == 0
    recs = lines(out)
    assert [r["event_id"] for r in recs] == [f"ev-{i}" for i in range(50)]  # the repeated ev-45 is scored once
    assert "1 duplicates skipped" in capsys.readouterr().err
    assert all(set(r) == RECORD_FIELDS for r in recs)
    assert {r["model_version"] for r in recs} == {"online-only"}


def test_train_then_replay_on_simulated_files_writes_decisions_and_incidents(simulated, tmp_path):
    d, events, model = simulated
    out, incidents = tmp_path / "d.jsonl", tmp_path / "inc.jsonl"
    assert main(["replay", "--model", str(model), "--policy", str(POLICY), "--input", str(events),
                 "--out", str(out), "--incidents", str(incidents), "--quiet"]) == 0
    recs = lines(out)
    sent = [json.loads(x) for x in events.read_text().splitlines()]
    assert [r["event_id"] for r in recs] == [e["event_id"] for e in sent]
    version = json.loads((model / "model.json").read_text())["version"]
    assert {r["model_version"] for r in recs} == {version}
    assert all(set(r) == RECORD_FIELDS for r in recs)
    freezes = [r for r in recs if r["action_taken"] == "freeze"]
    incs = lines(incidents)
    assert len(incs) == len(freezes)
    assert [i["trigger_event_id"] for i in incs] == [r["event_id"] for r in freezes]
    assert all(i["trace"] and i["attribution"]["operator_id"] for i in incs)


def test_replay_gives_the_same_file_twice_and_the_same_records_as_the_engine(simulated, tmp_path):
    from detector.engine import Engine
    from detector.policy import load_policy
    from models.store import load_model

    d, events, model = simulated
    outs = []
    for k in range(2):
        out = tmp_path / f"d{k}.jsonl"
        assert main(["replay", "--model", str(model), "--policy", str(POLICY), "--input", str(events),
                     "--out", str(out), "--quiet"]) == 0
        outs.append(out.read_bytes())
    assert outs[0] == outs[1]
    eng = Engine(policy=load_policy(POLICY), model=load_model(model))
    direct = [eng.process(decode_event(x)).record for x in events.read_bytes().splitlines()]
    assert [json.loads(x) for x in outs[0].splitlines()] == json.loads(json.dumps(direct))


def test_gate_adds_a_verdict_only_to_actions_with_destinations_and_deletes(simulated, tmp_path):
    d, events, model = simulated
    out = tmp_path / "d.jsonl"
    assert main(["replay", "--model", str(model), "--policy", str(POLICY), "--gate", "--input", str(events),
                 "--out", str(out), "--quiet"]) == 0
    sent = {e["event_id"]: e for e in map(json.loads, events.read_text().splitlines())}
    recs = lines(out)
    gated = 0
    for r in recs:
        e = sent[r["event_id"]]
        should = bool(e.get("destinations")) or e["action"] == "delete"
        assert ("gate" in r) == should, e
        if should:
            gated += 1
            assert r["gate"] in ("allow", "needs_approval", "deny")
        assert set(r) - {"gate"} == RECORD_FIELDS
    assert 0 < gated < len(recs)
    assert any(r.get("gate") == "needs_approval" for r in recs)


def test_gate_does_not_change_the_decisions(simulated, tmp_path):
    d, events, model = simulated
    plain, gated = tmp_path / "p.jsonl", tmp_path / "g.jsonl"
    for out, extra in ((plain, []), (gated, ["--gate"])):
        assert main(["replay", "--model", str(model), "--policy", str(POLICY), *extra, "--input", str(events),
                     "--out", str(out), "--quiet"]) == 0
    without_gate = [{k: v for k, v in r.items() if k != "gate"} for r in lines(gated)]
    assert without_gate == lines(plain)


def test_train_then_replay_in_real_processes_exit_0(simulated, tmp_path):
    d, events, _ = simulated
    done = flowbreaker("train", "--input", str(d / "history.jsonl"), "--out", "m", "--trees", "5", "--quiet",
                       cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    done = flowbreaker("replay", "--model", "m", "--input", str(events), "--out", "d.jsonl", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "decisions" in done.stderr
    assert len(lines(tmp_path / "d.jsonl")) == len(events.read_text().splitlines())
