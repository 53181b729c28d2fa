"""A hostile-input sweep of the API from its own OpenAPI document (schemathesis), on the two running workers
conftest.py shares (requests go to the first; those for agents the second owns are forwarded to it).

Schemathesis generates requests for every operation from ``/v1/openapi.json``,
valid and invalid (``--mode all``: wrong types, missing fields, oversized
strings, odd path ids), in its coverage and fuzzing phases, with a bounded
number of examples per operation. It runs five times:

- without a token, with a wrong token and with a viewer's token: no answer may
  be a 5xx, and nothing may change: ``agent-control``, ``agent-feedback`` and
  ``agent-approvals`` get no message, the agents' breakers stay closed, and the
  audit trail records only refusals (from a mark taken before: the trail also holds
  the records of the modules that used the cluster earlier);
- with a lead's token and with a runtime's token (state changes allowed): no
  5xx, and schemathesis' ``ignored_auth`` check confirms the routes refuse the
  same requests without the token.

The number of requests the first worker served is printed (``-s`` shows it) and
checked to be substantial.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from api_harness import TOKEN, AuditMark, Cluster, call, end_offsets, metric, records, seed

pytestmark = pytest.mark.timeout(300)

EXAMPLES = 8  # per operation and phase: bounded, so the sweep takes about a minute


def _st() -> list[str] | None:
    exe = shutil.which("st") or shutil.which("schemathesis")
    if exe:
        return [exe]
    try:
        import schemathesis  # noqa: F401
    except ImportError:
        return None
    return [sys.executable, "-m", "schemathesis.cli"]


@pytest.fixture(scope="module")
def cluster(two_worker_cluster):
    """The two-worker cluster conftest.py shares with the other API modules."""
    return two_worker_cluster


def served(cluster: Cluster) -> float:
    """Requests the first worker served (schemathesis sends every request there)."""
    return metric(cluster.workers[0].metrics(), "flowbreaker_api_requests_total")


def five_xx(cluster: Cluster) -> list[str]:
    """The workers' request counters with a 5xx status (an empty list when there is none)."""
    return [f"worker {i}: {line}" for i, w in enumerate(cluster.workers) for line in w.metrics().splitlines()
            if line.startswith("flowbreaker_api_requests_total{") and 'status="5' in line
            and not line.endswith(" 0.0")]


def run_schemathesis(cluster: Cluster, workdir: Path, header: str | None, checks: str,
                     seed: int) -> subprocess.CompletedProcess:
    st = _st()
    # one schemathesis worker: two threads trip a CPython 3.11 race in hypothesis' lambda-source parsing
    cmd = [*st, "run", cluster.url(0) + "/v1/openapi.json", "--checks", checks, "--mode", "all",
           "--phases", "coverage,fuzzing", "--max-examples", str(EXAMPLES), "--workers", "1",
           "--request-timeout", "10", "--seed", str(seed), "--no-shrink"]
    if header is not None:
        cmd += ["-H", header]
    return subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, timeout=150,
                          env={**os.environ, "NO_COLOR": "1", "SCHEMATHESIS_TELEMETRY": "false"})


@pytest.mark.skipif(_st() is None, reason="schemathesis is not installed (pip install schemathesis)")
def test_fuzzing_the_api_from_its_openapi_document_finds_no_5xx_and_no_unauthorised_change(cluster, tmp_path):
    agents = [f"fuzz-agent-{i}" for i in range(3)]
    seed(cluster, agents)
    guarded = [cluster.topic("control"), cluster.topic("feedback"), cluster.topic("approvals")]
    total = 0
    startup = five_xx(cluster)  # the readiness probe's 503s while the workers read the control topics
    # 1. nobody, a wrong token, a viewer: nothing may change
    mark = AuditMark(cluster)
    before = end_offsets(cluster.bootstrap, guarded)
    for n, header in enumerate((None, "Authorization: Bearer forged-token-0000",
                                f"Authorization: Bearer {TOKEN['viewer']}")):
        start = served(cluster)
        done = run_schemathesis(cluster, tmp_path, header, "not_a_server_error", seed=1000 + n)
        total += served(cluster) - start
        (tmp_path / f"st-{start}.out").write_text(done.stdout + done.stderr)
        assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert five_xx(cluster) == startup, five_xx(cluster)
    assert end_offsets(cluster.bootstrap, guarded) == before, "a state change without authorisation"
    audit = mark.records()
    assert audit and all(r["result"] in ("unauthenticated", "forbidden") for r in audit), \
        {r["result"] for r in audit}
    for a in agents:
        assert call("GET", cluster.url(0) + f"/v1/agents/{a}", TOKEN["viewer"]).json["breaker"]["state"] == "closed"
    unauthorised = total
    # 2. a lead and a runtime: state may change, still no 5xx, and the token is what lets them in
    for n, role in enumerate(("lead", "runtime")):
        start = served(cluster)
        done = run_schemathesis(cluster, tmp_path, f"Authorization: Bearer {TOKEN[role]}",
                                "not_a_server_error,ignored_auth", seed=2000 + n)
        total += served(cluster) - start
        (tmp_path / f"st-{start}.out").write_text(done.stdout + done.stderr)
        assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert five_xx(cluster) == startup, five_xx(cluster)
    print(f"\nschemathesis: {int(total)} API requests ({int(unauthorised)} without authorisation), no 5xx")
    assert total >= 500
    for token in TOKEN.values():
        raw = b"".join(str(r).encode() for r in records(cluster.bootstrap, cluster.topic("audit")))
        assert token.encode() not in raw
