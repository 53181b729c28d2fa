"""What every ``flowbreaker`` sub-command does the same way (docs/contract.md, section 5).

- A command that writes a file creates the file's parent directories, so the README's
  ``--out /tmp/fb/...`` works on a fresh machine.
- ``train``, ``replay`` and ``evaluate`` without ``--policy`` say once, on stderr, that every
  destination then counts as external.
- Bad usage or input is one line on stderr, ``flowbreaker COMMAND: REASON``, and exit 2.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from streams.cli.main import main

REPO = Path(__file__).resolve().parents[2]
POLICY = REPO / "examples" / "policy.toml"


def _simulate(where: Path) -> tuple[Path, Path]:
    """A small fleet into ``where`` (which does not exist yet): (events, history)."""
    events, history = where / "a" / "events.jsonl", where / "b" / "history.jsonl"
    assert main(["simulate", "--out", str(events), "--history-out", str(history),
                 "--labels", str(where / "c" / "labels.json"), "--agents", "4", "--days", "3", "--seed", "1"]) == 0
    return events, history


# --------------------------------------------------------------------------- parent directories

def test_simulate_creates_the_parent_directories_of_all_three_files(tmp_path):
    events, history = _simulate(tmp_path / "fresh")
    assert events.stat().st_size and history.stat().st_size
    assert json.loads((tmp_path / "fresh" / "c" / "labels.json").read_text())["format"] == "flowbreaker-labels/1"


def test_train_and_replay_create_their_output_directories(tmp_path):
    events, history = _simulate(tmp_path / "sim")
    model = tmp_path / "x" / "y" / "model"
    assert main(["train", "--input", str(history), "--policy", str(POLICY), "--out", str(model),
                 "--trees", "5", "--quiet"]) == 0
    out, incidents = tmp_path / "d1" / "decisions.jsonl", tmp_path / "d2" / "incidents.jsonl"
    assert main(["replay", "--model", str(model), "--policy", str(POLICY), "--input", str(events),
                 "--out", str(out), "--incidents", str(incidents), "--quiet"]) == 0
    assert (model / "model.json").is_file() and out.stat().st_size and incidents.exists()


def test_runtime_history_creates_its_parent_directory(tmp_path):
    out = tmp_path / "h" / "history.jsonl"
    assert main(["runtime", "--history-out", str(out), "--agents", "2", "--history-sessions", "1",
                 "--history-minutes", "1", "--history-every", "1"]) == 0
    assert out.stat().st_size


# --------------------------------------------------------------------------- running without a policy

def test_replay_without_a_policy_says_once_what_that_means(tmp_path, capsys):
    events, _ = _simulate(tmp_path / "sim")
    capsys.readouterr()
    assert main(["replay", "--input", str(events), "--out", str(tmp_path / "d.jsonl"), "--quiet"]) == 0
    notes = [x for x in capsys.readouterr().err.splitlines() if "--policy" in x]
    assert notes == ["flowbreaker replay: note: no --policy, so every destination counts as external; "
                     "expect more alerts and false freezes"]


def test_no_note_with_a_policy_and_no_note_beside_a_usage_error(tmp_path, capsys):
    events, _ = _simulate(tmp_path / "sim")
    capsys.readouterr()
    assert main(["replay", "--policy", str(POLICY), "--input", str(events), "--out", str(tmp_path / "d.jsonl"),
                 "--quiet"]) == 0
    assert "--policy" not in capsys.readouterr().err
    assert main(["replay", "--input", str(tmp_path / "nope.jsonl"), "--out", str(tmp_path / "e.jsonl")]) == 2
    assert len(capsys.readouterr().err.splitlines()) == 1


# --------------------------------------------------------------------------- one error style

@pytest.mark.parametrize("argv, says", [
    (["frobnicate"], "invalid choice"),
    (["train", "--out", "m"], "one of the arguments --input --from-topic is required"),
    (["replay", "--bogus"], "required: --input, --out"),
    (["simulate", "--out", "{tmp}/e.jsonl", "--days", "0"], "--days must be > 0"),
    (["evaluate", "--model", "{tmp}/m", "--input", "{tmp}/nope.jsonl", "--labels", "{tmp}/l.json",
      "--report", "{tmp}/r"], ""),
    (["runtime", "--speed", "0"], "--speed must be > 0"),
    (["demo", "--agents", "0"], "--agents must be >= 1"),
    (["actuator", "--log-format", "xml"], "invalid choice: 'xml'"),
    (["release"], "the following arguments are required"),
    (["release", "a", "--reason", "r", "--verdict", "maybe"], "invalid choice: 'maybe'"),
    (["verdicts", "dump", "--out", "{tmp}/v.jsonl"], "the command keys are needed"),
    (["approvals", "list"], "no API token"),
    (["topics", "--partitions", "0"], "partitions"),
    (["worker", "--web-port", "0"], "web port 0"),
    (["models", "add"], "required: MODEL_DIR"),
    (["keys", "new"], "required: FILE"),
    (["keys", "activate", "{tmp}/none.toml", "k1"], "cannot read signing key file"),
])
def test_every_command_reports_bad_usage_as_one_line_flowbreaker_command_reason_and_exit_2(
        argv, says, tmp_path, capsys, monkeypatch):
    for name in [k for k in os.environ if k.startswith("FLOWBREAKER_")]:
        monkeypatch.delenv(name)
    argv = [a.format(tmp=tmp_path) for a in argv]
    try:
        code = main(argv)
    except SystemExit as exit_:  # argparse's errors leave through SystemExit
        code = exit_.code
    err = capsys.readouterr().err.splitlines()
    command = argv[0] if argv[0] != "frobnicate" else None
    prefix = f"flowbreaker {command}" if command else "flowbreaker"
    assert code == 2 and len(err) == 1, err
    assert re.match(rf"{prefix}( \w+)?: (?!error)", err[0]) and says in err[0], err


def test_the_shared_usage_error_is_the_one_the_cli_re_exports():
    import streams.cli.main
    from detector.errors import UsageError

    assert streams.cli.main.UsageError is UsageError
