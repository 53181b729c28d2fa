"""``flowbreaker approvals`` against two running workers on the real broker.

list (pending, JSON), approve and deny from the command line (asking the worker
that does not own the agent), and the one-line errors with exit 2 for a missing
or unknown token, a role that may not approve, an unknown id, an empty reason;
the token is never printed.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from api_harness import NAME, TOKEN, Cluster, call, exfil, seed

pytestmark = pytest.mark.timeout(240)
REPO_DIR = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-c", "import sys; from streams.cli.main import main; sys.exit(main())"]


@pytest.fixture(scope="module")
def cluster(two_worker_cluster):
    """The two-worker cluster this module shares with its neighbours (conftest.py)."""
    return two_worker_cluster


def cli(*args: str, token: str | None = None, token_file: Path | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWBREAKER_API_")}
    env["PYTHONPATH"] = str(REPO_DIR)
    if token is not None:
        env["FLOWBREAKER_API_TOKEN"] = token
    extra = ["--token-file", str(token_file)] if token_file is not None else []
    return subprocess.run([*CLI, "approvals", *args, *extra], cwd=REPO_DIR, env=env, capture_output=True, text=True,
                          timeout=60, stdin=subprocess.DEVNULL)


def ask(cluster: Cluster, agent: str, i: int) -> str:
    r = call("POST", cluster.url(0) + "/v1/check", TOKEN["runtime"], exfil(agent, i))
    assert r.status == 200 and r.json["verdict"] == "needs_approval", r
    return r.json["approval_request_id"]


def test_list_approve_and_deny_from_the_command_line(cluster, tmp_path):
    a1, a2 = cluster.agent_on(1, "acli-ok"), cluster.agent_on(1, "acli-no")
    seed(cluster, [a1, a2])
    ok, no = ask(cluster, a1, 500), ask(cluster, a2, 500)
    url = cluster.url(0)  # not the owner: the worker forwards

    p = cli("list", "--state", "pending", "--url", url, token=TOKEN["viewer"])
    assert p.returncode == 0, p.stderr
    assert ok in p.stdout and no in p.stdout and a1 in p.stdout
    p = cli("list", "--state", "pending", "--json", "--url", url, token=TOKEN["viewer"])
    ids = {a["approval_id"] for a in json.loads(p.stdout)["approvals"]}
    assert {ok, no} <= ids

    tf = tmp_path / "analyst.token"
    tf.write_text(TOKEN["analyst"] + "\n")
    p = cli("approve", ok, "--reason", "quarterly audit export", "--url", url, token_file=tf)
    assert p.returncode == 0, p.stderr
    assert f"{ok} approved until" in p.stdout and NAME["analyst"] in p.stdout
    p = cli("deny", no, "--reason", "not a known partner", "--url", url, token_file=tf)
    assert p.returncode == 0 and f"{no} denied" in p.stdout, p.stderr
    rec = call("GET", url + f"/v1/approvals/{ok}", TOKEN["viewer"]).json
    assert rec["state"] == "approved" and rec["decided_by"] == NAME["analyst"]
    assert rec["decision_reason"] == "quarterly audit export"
    p = cli("list", "--state", "approved", "--url", url, token=TOKEN["viewer"])
    assert ok in p.stdout and no not in p.stdout

    # already decided: a conflict, one line, exit 2
    p = cli("approve", ok, "--reason", "again", "--url", url, token_file=tf)
    assert p.returncode == 2 and p.stderr.count("\n") == 1 and "409" in p.stderr


def test_bad_input_and_refusals_are_one_line_and_exit_2(cluster, tmp_path):
    agent = cluster.agent_on(0, "acli-err")
    seed(cluster, [agent])
    aid = ask(cluster, agent, 500)
    url = cluster.url(1)
    cases = [
        (cli("list", "--url", url), "no API token"),
        (cli("list", "--url", url, token="tok-nobody-knows-this"), "unauthenticated"),
        (cli("approve", aid, "--reason", "x", "--url", url, token=TOKEN["viewer"]), "forbidden"),
        (cli("approve", aid, "--reason", "x", "--url", url, token=TOKEN["runtime"]), "forbidden"),
        (cli("approve", "apr-" + "0" * 32, "--reason", "x", "--url", url, token=TOKEN["analyst"]), "not found"),
        (cli("deny", aid, "--reason", "  ", "--url", url, token=TOKEN["analyst"]), "--reason"),
        (cli("approve", aid, "--url", url, token=TOKEN["analyst"]), "--reason"),
        (cli("list", "--url", "ftp://x", token=TOKEN["viewer"]), "--url"),
        (cli("list", "--url", url, token_file=tmp_path / "missing"), "cannot read token file"),
    ]
    for p, words in cases:
        assert p.returncode == 2, (words, p.stdout, p.stderr)
        assert p.stderr.count("\n") == 1 and words in p.stderr, (words, p.stderr)
        for secret in TOKEN.values():
            assert secret not in p.stderr and secret not in p.stdout
    assert call("GET", url + f"/v1/approvals/{aid}", TOKEN["viewer"]).json["state"] == "pending"
    # no worker answering: exit 1, one line
    p = cli("list", "--url", "http://127.0.0.1:9", token=TOKEN["viewer"])
    assert p.returncode == 1 and "no answer" in p.stderr
