"""``flowbreaker release`` (streams/cli/release.py): which authority it uses and how it fails, without Kafka.

The API path is exercised against a small real HTTP server on 127.0.0.1 that
answers as a worker would; the key-holder path against Kafka is in
tests/integration/test_hostile_control.py and test_freeze_loop.py.
"""
from __future__ import annotations

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from streams.cli.main import main

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(autouse=True)
def no_ambient_credentials(monkeypatch):
    for name in ("FLOWBREAKER_API_TOKEN", "FLOWBREAKER_API_URL", "FLOWBREAKER_SIGNING_KEYS",
                 "FLOWBREAKER_SIGNING_KEYS_INLINE"):
        monkeypatch.delenv(name, raising=False)


class Worker:
    """Answers POST /v1/agents/{id}/release with ``status`` and ``body``; records what it got."""

    def __init__(self, status: int, body: dict) -> None:
        self.got: list[tuple[str, dict, dict]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                outer.got.append((self.path, dict(self.headers), json.loads(raw)))
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def one_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def test_without_a_token_or_a_signing_key_it_refuses(capsys):
    assert main(["release", "agent-1", "--reason", "ok", "--by", "alice", "--bootstrap", "127.0.0.1:1"]) == 2
    assert "needs a lead's API token" in one_line(capsys)


def test_a_key_holder_must_name_a_valid_approver(capsys, tmp_path, monkeypatch):
    from streams.clients.signing import new_key_file

    keys = tmp_path / "keys.toml"
    keys.write_text(new_key_file("k1"))
    monkeypatch.setenv("FLOWBREAKER_SIGNING_KEYS", str(keys))
    for by, needle in (("flowbreaker", "reserved"), ("alice bob", "--by: name must be"), ("", "--by NAME")):
        assert main(["release", "agent-1", "--reason", "ok", "--by", by, "--bootstrap", "127.0.0.1:1"]) == 2
        assert needle in one_line(capsys)


def test_with_a_token_it_goes_through_the_api_which_names_the_approver(capsys, tmp_path):
    worker = Worker(200, {"agent_id": "agent-1", "incident_id": "inc-7", "state": "half_open",
                          "released_by": "lee", "published": True})
    token = tmp_path / "lead.token"
    token.write_text("tok-lead\n")
    try:
        assert main(["release", "agent-1", "--reason", "false positive", "--incident", "inc-7",
                     "--token-file", str(token), "--url", worker.url]) == 0
    finally:
        worker.close()
    assert "released agent-1 (incident inc-7) by lee" in capsys.readouterr().out
    path, headers, body = worker.got[0]
    assert path == "/v1/agents/agent-1/release" and headers["Authorization"] == "Bearer tok-lead"
    assert body == {"reason": "false positive", "incident_id": "inc-7"}


def test_a_verdict_goes_with_the_release_and_the_answer_names_it(capsys, tmp_path):
    worker = Worker(200, {"agent_id": "agent-1", "incident_id": "inc-7", "state": "half_open", "released_by": "lee",
                          "published": True, "verdict": "benign", "verdict_id": "vd-0123"})
    token = tmp_path / "lead.token"
    token.write_text("tok-lead\n")
    try:
        assert main(["release", "agent-1", "--reason", "approved run", "--verdict", "benign",
                     "--token-file", str(token), "--url", worker.url]) == 0
    finally:
        worker.close()
    assert "released agent-1 (incident inc-7) by lee, verdict benign (vd-0123)" in capsys.readouterr().out
    assert worker.got[0][2] == {"reason": "approved run", "verdict": "benign"}


@pytest.mark.parametrize("status, code, needle", [
    (403, "two_person_rule", "refused: a critical incident is released by another lead"),
    (401, "unauthenticated", "the token is not known"),
    (409, "not_frozen", "not frozen"),
])
def test_the_apis_refusals_are_one_line_and_exit_2(capsys, status, code, needle, monkeypatch):
    messages = {"two_person_rule": "a critical incident is released by another lead than the one who froze it",
                "unauthenticated": "a valid bearer token is required", "not_frozen": "the agent is not frozen"}
    worker = Worker(status, {"error": {"status": status, "code": code, "message": messages[code]}})
    monkeypatch.setenv("FLOWBREAKER_API_TOKEN", "tok-x")
    try:
        assert main(["release", "agent-1", "--reason", "ok", "--url", worker.url]) == 2
    finally:
        worker.close()
    assert needle in one_line(capsys)


def test_with_a_token_by_is_refused_and_a_silent_worker_is_exit_1(capsys, monkeypatch):
    monkeypatch.setenv("FLOWBREAKER_API_TOKEN", "tok-x")
    assert main(["release", "agent-1", "--reason", "ok", "--by", "alice"]) == 2
    assert "--by is for key holders" in one_line(capsys)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens there once closed
    assert main(["release", "agent-1", "--reason", "ok", "--url", f"http://127.0.0.1:{port}", "--timeout", "2"]) == 1
    assert "no answer from" in one_line(capsys)
