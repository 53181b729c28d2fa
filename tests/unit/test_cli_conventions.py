"""What every ``flowbreaker`` sub-command does the same way (docs/contract.md, section 5).

- A command that writes a file creates the file's parent directories, so the README's
  ``--out /tmp/fb/...`` works on a fresh machine.
- ``train``, ``replay`` and ``evaluate`` without ``--policy`` say once, on stderr, that every
  destination then counts as external.
"""
from __future__ import annotations

import json
from pathlib import Path

from streams.cli import main

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
