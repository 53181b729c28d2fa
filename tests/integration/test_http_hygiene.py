"""The worker's HTTP server against hostile clients, on real sockets (127.0.0.1), one worker on the real broker.

Issue 21, item 5: an oversized ``Authorization`` header was echoed in the 400 body and logged with the
token; malformed requests wrote a traceback each; half-sent requests were held open for a minute; one
runtime token could open hundreds of approval requests in a burst. Every test here is bounded in count
and time; the worker runs with small limits (environment below) so the bounds show quickly.
"""
from __future__ import annotations

import os
import re
import socket
import time
import uuid

import pytest

from api_harness import TOKEN, Cluster, call, exfil, seed, wait_for

pytestmark = pytest.mark.timeout(240)

HEADER_TIMEOUT_S = 2.0
BODY_TIMEOUT_S = 2.0
RATE = {"FLOWBREAKER_API_RATE_PER_S": "5", "FLOWBREAKER_API_BURST": "20",
        "FLOWBREAKER_MAX_OPEN_APPROVALS_PER_AGENT": "3",
        "FLOWBREAKER_API_WRITE_RATE_PER_S": "0.01", "FLOWBREAKER_API_WRITE_BURST": "5",
        "FLOWBREAKER_HTTP_HEADER_TIMEOUT_S": str(HEADER_TIMEOUT_S),
        "FLOWBREAKER_HTTP_BODY_TIMEOUT_S": str(BODY_TIMEOUT_S)}
SECRET = "s3cr3t-token-" + "A" * 40


@pytest.fixture(scope="module")
def worker(kafka_bootstrap, tmp_path_factory):
    saved = {k: os.environ.get(k) for k in RATE}
    os.environ.update(RATE)  # the worker subprocess inherits them
    cluster = Cluster(kafka_bootstrap, f"it-http-{uuid.uuid4().hex[:8]}-", tmp_path_factory.mktemp("http"), n=1,
                      partitions=2)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _raw(port: int, data: bytes, *, read_s: float = 10.0) -> bytes:
    """Send ``data`` on a fresh connection and read the answer until the server closes (bounded)."""
    with socket.create_connection(("127.0.0.1", port), timeout=read_s) as s:
        s.sendall(data)
        out = b""
        deadline = time.monotonic() + read_s
        while time.monotonic() < deadline:
            try:
                chunk = s.recv(65536)
            except socket.timeout:
                break
            if not chunk:
                break
            out += chunk
        return out


def _log(cluster: Cluster) -> str:
    w = cluster.workers[0]
    return w.stderr_path.read_text(errors="replace") + w.stderr_path.with_suffix(".out").read_text(errors="replace")


def test_an_oversized_authorization_header_is_refused_generically_and_the_token_is_never_echoed_or_logged(worker):
    port = worker.workers[0].web_port
    for size in (2_000, 9_000, 70_000):  # over the token bound; over aiohttp's header field limit; far over
        token = SECRET + "x" * size
        answer = _raw(port, (f"GET /v1/breakers HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
                             "Connection: close\r\n\r\n").encode())
        assert re.match(rb"HTTP/1\.[01] 400 ", answer), answer[:200]
        assert SECRET.encode() not in answer and b"xxxxxxxx" not in answer
    time.sleep(0.5)
    assert SECRET not in _log(worker)


def test_malformed_requests_are_refused_with_one_rate_limited_line_each_and_no_tracebacks(worker):
    port = worker.workers[0].web_port
    before = _log(worker)
    for i in range(200):
        answer = _raw(port, b"GET /v1/breakers HTTP/1.1\r\nHost: x\r\nBad Header\x00: " + SECRET.encode()
                      + b"\r\n\r\n", read_s=5)
        assert re.match(rb"HTTP/1\.[01] 400 ", answer), answer[:200]
        assert SECRET.encode() not in answer
    time.sleep(0.5)
    new = _log(worker)[len(before):]
    assert "Traceback" not in new and SECRET not in new
    refusal_lines = [ln for ln in new.splitlines() if "malformed request" in ln]
    assert 1 <= len(refusal_lines) <= 30, refusal_lines[:5]  # rate-limited: 200 refusals, a few lines


def test_half_sent_requests_are_closed_within_the_header_and_body_timeouts(worker):
    port = worker.workers[0].web_port
    socks = []
    try:
        for i in range(40):
            s = socket.create_connection(("127.0.0.1", port), timeout=30)
            if i % 2:  # headers never finished
                s.sendall(b"GET /v1/breakers HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            else:      # headers sent, the announced body never is
                s.sendall(b"POST /v1/check HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + TOKEN["runtime"].encode()
                          + b"\r\nContent-Type: application/json\r\nContent-Length: 5000\r\n\r\n{\"ev")
            socks.append(s)
        t0 = time.monotonic()
        closed = 0
        for s in socks:
            s.settimeout(max(0.1, t0 + 6 * HEADER_TIMEOUT_S + 5 - time.monotonic()))
            try:
                while s.recv(65536):
                    pass
                closed += 1
            except (socket.timeout, ConnectionResetError):
                pass
        assert closed == len(socks)
    finally:
        for s in socks:
            s.close()
    # the server is still there for everyone else
    assert call("GET", worker.url(0) + "/v1/breakers", TOKEN["viewer"]).status == 200


def test_one_token_is_rate_limited_with_429_and_retry_after_and_others_are_not(worker):
    url = worker.url(0) + "/v1/breakers"
    statuses = []
    limited = None
    for _ in range(60):
        r = call("GET", url, TOKEN["analyst"])
        statuses.append(r.status)
        if r.status == 429:
            limited = r
            break
    assert limited is not None, statuses
    assert int(limited.headers["Retry-After"]) >= 1 and limited.json["error"]["code"] == "rate_limited"
    assert call("GET", url, TOKEN["viewer"]).status == 200  # another token has its own budget
    wait_for(lambda: call("GET", url, TOKEN["analyst"]).status == 200, 10, "the analyst's budget refilled")


def _ask(worker, agent: str, n: int, first: int) -> tuple[set, list]:
    opened, refused = set(), []
    for i in range(first, first + n):  # different destinations: different requests
        r = call("POST", worker.url(0) + "/v1/check", TOKEN["runtime"],
                 exfil(agent, i, destinations=[f"email:x{i}@ext-partner.example"], records=40,
                       sensitivity="confidential"))
        if r.status == 200 and r.json["approval_request_id"]:
            opened.add(r.json["approval_request_id"])
        else:
            refused.append(r)
        time.sleep(0.25)  # stay under the token's rate for all calls
    return opened, refused


def test_open_approval_requests_per_agent_and_per_token_are_bounded(worker):
    a, b = worker.agent_on(0, "http-appr-a"), worker.agent_on(0, "http-appr-b")
    seed(worker, [a, b])
    opened, refused = _ask(worker, a, 6, 700)
    assert len(opened) == 3, (opened, refused)  # FLOWBREAKER_MAX_OPEN_APPROVALS_PER_AGENT
    assert refused and all(r.status == 429 and r.json["error"]["code"] == "too_many_approval_requests"
                           and "Retry-After" in r.headers for r in refused)
    # the token's write budget (5) is what is left for every other agent: 2 more requests, then 429
    opened, refused = _ask(worker, b, 4, 800)
    assert len(opened) == 2, (opened, refused)
    assert refused and all(r.status == 429 and r.json["error"]["code"] == "rate_limited" for r in refused)
