"""Every command that needs the Kafka broker exits 1 when it does not answer (contract section 5), with its
reason on one line and never a traceback (issue 21, item 8: ``audit --bootstrap`` printed a traceback, and
``train --from-topic`` and ``manifest suggest --from-topic`` exited 2).

No broker is needed: the commands are pointed at 127.0.0.1:1, where nothing listens. They run side by side,
each bounded by the test's timeout.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO_DIR = Path(__file__).resolve().parents[2]
DEAD = "127.0.0.1:1"
SINCE, UNTIL = "2026-03-01T00:00:00Z", "2026-03-02T00:00:00Z"

pytestmark = pytest.mark.timeout(300)

#: name -> (argv after `flowbreaker`, one-shot: its stderr is one line)
COMMANDS = {
    "topics": (["topics", "--timeout", "5"], True),
    "audit": (["audit", "--since", SINCE, "--until", UNTIL, "--report", "{tmp}/audit"], True),
    "train": (["train", "--from-topic", "agent-actions", "--since", SINCE, "--out", "{tmp}/model"], True),
    "manifest suggest": (["manifest", "suggest", "--from-topic", "agent-actions", "--since", SINCE], True),
    "manifest publish": (["manifest", "publish", "{tmp}/m.toml"], True),
    "drill": (["drill", "--token-file", "{tmp}/token"], True),
    "worker": (["worker", "--broker-timeout", "5", "--web-port", "{port}", "--datadir", "{tmp}/worker"], True),
    "release": (["release", "some-agent", "--reason", "checked", "--by", "alice"], False),
    "actuator": (["actuator", "--webhook", "http://127.0.0.1:9/hook"], False),
    "runtime": (["runtime", "--duration", "5"], False),
    "otlp": (["otlp", "--from-topic", "otel-spans"], False),
}


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_every_command_that_needs_the_broker_exits_1_with_one_line_when_it_does_not_answer(tmp_path):
    keys = tmp_path / "keys.toml"
    subprocess.run([sys.executable, "-m", "streams.cli.main", "keys", "new", str(keys)], cwd=REPO_DIR, check=True,
                   capture_output=True, timeout=60)
    (tmp_path / "m.toml").write_text('agent = "a1"\nversion = 1\n')
    (tmp_path / "token").write_text("a-token\n")
    env = {**os.environ, "PYTHONPATH": str(REPO_DIR), "FLOWBREAKER_SIGNING_KEYS": str(keys)}
    procs = {}
    for name, (argv, _) in COMMANDS.items():
        argv = [a.format(tmp=tmp_path, port=_free_port()) for a in argv]
        err = open(tmp_path / f"{name}.err", "wb")
        procs[name] = subprocess.Popen([sys.executable, "-m", "streams.cli.main", *argv, "--bootstrap", DEAD],
                                       cwd=REPO_DIR, env=env, stdin=subprocess.DEVNULL,
                                       stdout=subprocess.DEVNULL, stderr=err)
    deadline = time.monotonic() + 240
    try:
        for name, p in procs.items():
            p.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()  # our own child, by its handle
                p.wait()
    problems = []
    for name, p in procs.items():
        err = (tmp_path / f"{name}.err").read_text(errors="replace")
        lines = err.strip().splitlines()
        command = name.split()[0]
        ok = p.returncode == 1 and "Traceback" not in err and lines \
            and lines[-1].startswith(f"flowbreaker {command}: ")
        if COMMANDS[name][1]:
            ok = ok and len(lines) == 1
        if not ok:
            problems.append(f"{name}: exit {p.returncode}, stderr:\n{err[-1500:]}")
    assert not problems, "\n\n".join(problems)
