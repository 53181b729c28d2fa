"""Promote -> a running worker switches models mid-stream; rollback switches back; a tampered model is refused.

Every event is decided (exactly one distinct record per event), each decision names
the model that made it, and the versions follow the announcements in order.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from worker_harness import (REPO_DIR, TopicReader, WorkerProc, decisions_by_event, event_messages, fleet, produce,
                            wait_for)

pytestmark = pytest.mark.timeout(240)
POLICY = REPO_DIR / "examples" / "policy.toml"


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "streams.cli.main", *args], cwd=REPO_DIR, capture_output=True,
                          text=True, timeout=120)


def train(history: list[dict], out: Path, seed: int) -> str:
    src = out.with_suffix(".jsonl")
    src.write_text("".join(json.dumps(e) + "\n" for e in history))
    r = cli("train", "--input", str(src), "--policy", str(POLICY), "--out", str(out), "--seed", str(seed),
            "--trees", "20", "--quiet")
    assert r.returncode == 0, r.stderr
    return json.loads((out / "model.json").read_text())["version"]


def test_a_promoted_model_is_picked_up_without_a_restart_and_a_rollback_returns(
        kafka_bootstrap, unique_topic_prefix, tmp_path):
    events = fleet(n_agents=8, days=2, seed=5, incidents=[])
    half = len(events) // 2
    a = train(events[: half // 2], tmp_path / "model-a", seed=0)
    b = train(events[: half], tmp_path / "model-b", seed=1)
    assert a != b
    registry = tmp_path / "registry"
    p = unique_topic_prefix
    kafka = ["--bootstrap", kafka_bootstrap, "--topic-prefix", p]
    for d in ("model-a", "model-b"):
        assert cli("models", "--registry", str(registry), "add", str(tmp_path / d)).returncode == 0
    r = cli("models", "--registry", str(registry), "promote", a, "--by", "alice", *kafka)
    assert r.returncode == 0, r.stderr

    worker = WorkerProc(kafka_bootstrap, p, f"{p}app", tmp_path / "w", extra=["--model", str(tmp_path / "model-a")])
    worker.start()
    try:
        worker.wait_ready(timeout=90)
        decisions = TopicReader(kafka_bootstrap, f"{p}agent-decisions")
        n1, n2 = len(events) // 3, 2 * len(events) // 3

        produce(kafka_bootstrap, f"{p}agent-actions", event_messages(events[:n1]))
        decisions.read_until(lambda ms: len(decisions_by_event(ms)) >= n1, timeout=60)

        r = cli("models", "--registry", str(registry), "promote", b, "--by", "bob", *kafka)
        assert r.returncode == 0, r.stderr
        wait_for(lambda: any(f"model {b} announced" in line for line in worker.lines), 30, "the announcement")
        produce(kafka_bootstrap, f"{p}agent-actions", event_messages(events[n1:n2]))
        decisions.read_until(lambda ms: len(decisions_by_event(ms)) >= n2, timeout=60)

        # a tampered copy announced as current is refused: the worker keeps b
        bad = registry / "tampered"
        shutil.copytree(registry / b, bad)
        with np.load(bad / "arrays.npz") as z:
            arrays = {k: z[k] for k in z.files}
        arrays["agent_loc"] = arrays["agent_loc"] * 0.5
        np.savez(bad / "arrays.npz", **arrays)
        from streams.model_updates import announce
        from streams.settings import Settings

        card = json.loads((bad / "model.json").read_text())
        announce(Settings.from_env({}, bootstrap=kafka_bootstrap, topic_prefix=p),
                 {"version": "m-evil", "path": str(bad), "checksum": card["checksum"],
                  "promoted_at": "2026-03-06T10:00:00.000Z", "promoted_by": "mallory"})
        wait_for(lambda: "model update refused" in worker.stderr_tail(200), 30, "the refusal")

        r = cli("models", "--registry", str(registry), "rollback", "--by", "carol", *kafka)
        assert r.returncode == 0, r.stderr
        wait_for(lambda: any(f"model {a} announced" in line for line in worker.lines), 30, "the rollback")
        produce(kafka_bootstrap, f"{p}agent-actions", event_messages(events[n2:]))
        got = decisions_by_event(decisions.read_until(lambda ms: len(decisions_by_event(ms)) >= len(events),
                                                      timeout=90))
    finally:
        assert worker.stop(timeout=30) == 0

    assert set(got) == {e["event_id"] for e in events}, "every event decided"
    assert all(len(set(copies)) == 1 for copies in got.values()), "one distinct record per event"
    version = [json.loads(got[e["event_id"]][0])["model_version"] for e in events]
    assert set(version[:n1]) == {a}
    assert set(version[n1:n2]) == {b}  # switched before these were produced
    assert set(version[n2:]) == {a}  # rolled back; the tampered model never scored anything
