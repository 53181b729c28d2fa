"""``flowbreaker otlp`` on the command line: usage errors exit 2 in one line, a broker that does not answer exits 1."""

from __future__ import annotations

import os
import socket

import pytest

from streams.cli.main import main


def run(argv, capsys, monkeypatch):
    for name in [k for k in os.environ if k.startswith("FLOWBREAKER_")]:
        monkeypatch.delenv(name)
    try:
        code = main(["otlp", *argv])
    except SystemExit as exit_:
        code = exit_.code
    return code, capsys.readouterr().err.splitlines()


@pytest.mark.parametrize("argv, says", [
    (["--listen", "4318"], "--listen must be HOST:PORT, got '4318'"),
    (["--listen", "127.0.0.1:99999"], "--listen must be HOST:PORT"),
    (["--metrics-listen", "nowhere"], "--metrics-listen must be HOST:PORT"),
    (["--max-request-bytes", "10"], "--max-request-bytes must be >= 1024"),
    (["--timeout", "0"], "--timeout must be > 0"),
    (["--from-topic", " "], "--from-topic needs a topic name"),
    (["--topic-encoding", "jaeger_proto"], "invalid choice: 'jaeger_proto'"),
    (["--mapping", "{tmp}/missing.toml"], "cannot read mapping file"),
    (["--mapping", "{tmp}/bad.toml"], "tool[0].action: 'erase' is not one of"),
])
def test_a_bad_flag_or_mapping_file_exits_2_with_one_line(argv, says, tmp_path, capsys, monkeypatch):
    (tmp_path / "bad.toml").write_text('[[tool]]\nmatch = "*"\naction = "erase"\n')
    code, err = run([a.format(tmp=tmp_path) for a in argv], capsys, monkeypatch)
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith("flowbreaker otlp: ") and says in err[0], err


def test_a_broker_that_does_not_answer_exits_1_with_one_line(capsys, monkeypatch):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code, err = run(["--bootstrap", f"127.0.0.1:{port}", "--timeout", "2"], capsys, monkeypatch)
    assert code == 1 and len(err) == 1, err
    assert err[0].startswith("flowbreaker otlp: no Kafka broker answered at 127.0.0.1:")
