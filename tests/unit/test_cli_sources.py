"""Where a command's events come from (streams/cli/sources.py): a file or a topic range.

The readers, the invalid-line reporter and the range checks on their own, then through the
commands that share them: each reports invalid lines, a missing file and a reversed range the
same way (one line, exit 2), and keeps its own ``--max-events`` default.
"""
from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import pytest

from detector.errors import UsageError
from streams.cli.main import build_parser, main
from streams.cli.sources import (InvalidLines, parse_range, read_events, read_file, refuse_topic_options,
                                 require_since, topic_errors)

REPO = Path(__file__).resolve().parents[2]
POLICY = str(REPO / "examples" / "policy.toml")
SINCE, UNTIL = "2026-03-02T00:00:00Z", "2026-03-03T00:00:00Z"


@pytest.fixture(scope="module")
def history(tmp_path_factory) -> tuple[Path, int]:
    """A small simulated history with 25 invalid lines spread through it: (file, valid events)."""
    from models.simulate import simulate

    events, _ = simulate(n_agents=3, days=1, seed=4, incidents=[], lookalikes=False)
    lines = [json.dumps(e) for e in events]
    for i in range(25):
        lines.insert(3 * i + 1, "{not json" if i % 2 else '{"event_id": "no-ts"}')
    path = tmp_path_factory.mktemp("hist") / "history.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path, len(events)


def invalid_lines(err: str, path: Path, wording: str = "invalid event skipped") -> list[str]:
    return [x for x in err.splitlines() if x.startswith(f"{path}:") and f": {wording}: " in x]


# --------------------------------------------------------------------------- the reporter
def test_the_reporter_names_the_first_20_invalid_lines_and_counts_them_all(history, capsys):
    path, n = history
    invalid = InvalidLines(str(path))
    events = read_file(str(path), on_error=invalid)
    shown = invalid_lines(capsys.readouterr().err, path)
    assert len(events) == n and invalid.count == 25 and len(shown) == 20
    assert shown[0] == f"{path}:2: invalid event skipped: ts: required field is missing"
    assert shown[-1].startswith(f"{path}:59: ")  # the 20th invalid line (every third line is one)
    assert invalid.by_code == {"missing": 13, "not_json": 12}


def test_quiet_counts_without_a_word_and_show_none_names_every_line(history, capsys):
    path, _ = history
    quiet = InvalidLines(str(path), quiet=True)
    read_file(str(path), on_error=quiet)
    assert quiet.count == 25 and capsys.readouterr().err == ""
    every = InvalidLines(str(path), show=None, wording="invalid event")
    read_file(str(path), on_error=every)
    assert len(invalid_lines(capsys.readouterr().err, path, "invalid event")) == 25


def test_blank_lines_are_neither_events_nor_invalid():
    invalid = InvalidLines("x", quiet=True)
    assert list(read_events(io.BytesIO(b"\n  \n\n"), on_error=invalid)) == [] and invalid.count == 0


# --------------------------------------------------------------------------- files
def test_a_missing_file_is_a_usage_error_naming_it(tmp_path):
    with pytest.raises(UsageError, match=r"^cannot read .*nope\.jsonl: No such file or directory$"):
        read_file(str(tmp_path / "nope.jsonl"))


class _Stdin:
    """Standard input for the test: only ``buffer`` is read."""

    def __init__(self, data: bytes) -> None:
        self.buffer = io.BytesIO(data)


def test_standard_input_is_read_and_left_open(monkeypatch, history):
    path, n = history
    stdin = _Stdin(path.read_bytes())
    monkeypatch.setattr(sys, "stdin", stdin)
    assert len(read_file("-", on_error=InvalidLines("-", quiet=True))) == n
    assert not stdin.buffer.closed


# --------------------------------------------------------------------------- ranges
def test_a_range_is_parsed_once_and_must_not_be_empty():
    assert parse_range("2026-03-02", "2026-03-02T01:00:00+00:00") == (1772409600000, 1772413200000)
    with pytest.raises(UsageError, match=r"^--since 2026-03-03 is not before --until 2026-03-02$"):
        parse_range("2026-03-03", "2026-03-02")
    with pytest.raises(UsageError, match="is not before"):
        parse_range(SINCE, SINCE)
    with pytest.raises(UsageError, match=r"^--since/--until: not an RFC 3339 timestamp, a date or 'now': 'soon'$"):
        parse_range(SINCE, "soon")


def test_topic_options_with_a_file_and_a_topic_without_since_are_refused():
    from argparse import Namespace

    with pytest.raises(UsageError, match=r"^--feedback-topic goes with --from-topic, not --input$"):
        refuse_topic_options(Namespace(input="h.jsonl", since=None, feedback_topic="fb"), "--since", "--feedback-topic")
    refuse_topic_options(Namespace(input=None, since=SINCE), "--since")
    with pytest.raises(UsageError, match=r"^--from-topic needs --since \(and optionally --until\)$"):
        require_since(Namespace(from_topic="agent-actions", since=None))


@pytest.mark.parametrize("raised, says, kind", [
    ("TopicMissing", "topic t does not exist at 127.0.0.1:9", "usage"),
    ("RangeTooLarge", "t holds 9; narrow --since/--until or raise --max-events", "usage"),
    ("TimeoutError", "reading t from 127.0.0.1:9 failed: t holds 9", "broker"),
    ("KafkaTimeoutError", "reading t from 127.0.0.1:9 failed: KafkaTimeoutError: t holds 9", "broker"),
])
def test_reading_a_topic_fails_as_one_line_usage_exit_2_and_broker_exit_1(raised, says, kind):
    from kafka.errors import KafkaTimeoutError

    from streams.kafka_admin import KafkaUnavailable
    from streams.topic_range import RangeTooLarge, TopicMissing

    cls = {"TopicMissing": TopicMissing, "RangeTooLarge": RangeTooLarge, "TimeoutError": TimeoutError,
           "KafkaTimeoutError": KafkaTimeoutError}[raised]
    # main() prints a UsageError as one line with exit 2, a KafkaUnavailable (the broker) with exit 1
    with pytest.raises(UsageError if kind == "usage" else KafkaUnavailable) as caught:
        with topic_errors("t", "127.0.0.1:9"):
            raise cls("t holds 9")
    assert str(caught.value) == says


def test_models_show_keeps_its_own_wording_for_a_broker_that_does_not_answer():
    from streams.kafka_admin import KafkaUnavailable

    with pytest.raises(KafkaUnavailable, match=r"^reading t failed: t: no messages for 30s$"):
        with topic_errors("t", "127.0.0.1:9", name_broker=False):
            raise TimeoutError("t: no messages for 30s")


# --------------------------------------------------------------------------- through the commands
def test_train_names_20_invalid_lines_and_records_all_25_in_the_card(history, tmp_path, capsys):
    path, n = history
    out = tmp_path / "model"
    assert main(["train", "--input", str(path), "--policy", POLICY, "--out", str(out), "--trees", "5"]) == 0
    err = capsys.readouterr().err
    assert len(invalid_lines(err, path)) == 20 and f"train: {n} events to train on (25 invalid skipped)" in err
    assert json.loads((out / "model.json").read_text())["counts"]["invalid_lines"] == 25


def test_replay_names_every_invalid_line(history, tmp_path, capsys):
    path, n = history
    assert main(["replay", "--policy", POLICY, "--input", str(path), "--out", str(tmp_path / "d.jsonl")]) == 0
    err = capsys.readouterr().err
    assert len(invalid_lines(err, path, "invalid event")) == 25
    assert f"replay: {n} decisions" in err and "25 invalid lines (missing=13, not_json=12)" in err


def test_manifest_suggest_names_20_invalid_lines(history, capsys):
    path, _ = history
    assert main(["manifest", "suggest", "--input", str(path), "--policy", POLICY]) == 0
    assert len(invalid_lines(capsys.readouterr().err, path)) == 20


@pytest.mark.parametrize("argv", [
    ["train", "--input", "{nope}", "--out", "{tmp}/m"],
    ["replay", "--input", "{nope}", "--out", "{tmp}/d.jsonl"],
    ["manifest", "suggest", "--input", "{nope}"],
    ["audit", "--since", SINCE, "--until", UNTIL, "--input", "{nope}", "--report", "{tmp}/r"],
])
def test_a_missing_input_file_is_one_line_and_exit_2_for_every_command(argv, tmp_path, capsys):
    nope = tmp_path / "nope.jsonl"
    argv = [a.format(nope=nope, tmp=tmp_path) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err.splitlines()
    assert err == [f"flowbreaker {argv[0]}: cannot read {nope}: No such file or directory"]


@pytest.mark.parametrize("argv", [
    ["train", "--from-topic", "agent-actions", "--out", "{tmp}/m"],
    ["manifest", "suggest", "--from-topic", "agent-actions"],
    ["audit", "--input", "{tmp}/h.jsonl", "--report", "{tmp}/r"],
])
def test_a_since_after_until_is_refused_before_anything_is_read(argv, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("FLOWBREAKER_BOOTSTRAP", raising=False)
    argv = [a.format(tmp=tmp_path) for a in argv] + ["--since", UNTIL, "--until", SINCE]
    assert main(argv) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"flowbreaker {argv[0]}: --since {UNTIL} is not before --until {SINCE}"]


@pytest.mark.parametrize("argv, default", [
    (["train", "--input", "h", "--out", "m"], 5_000_000),
    (["manifest", "suggest", "--input", "h"], 5_000_000),
    (["audit", "--since", SINCE, "--until", UNTIL, "--report", "r"], 5_000_000),
    (["models", "show"], 2_000_000),
])
def test_each_command_keeps_its_own_max_events_default(argv, default):
    args = build_parser(argv[0]).parse_args(argv)
    assert args.max_events == default
    if argv[0] != "audit":  # audit's period is required and has no default end
        assert args.until == "now" and args.since is None
