"""Start-up shared by the benchmarks that need a real broker (bench_check.py, bench_stream.py).

Importing it puts the repository and ``tests/integration`` (the worker and Kafka helpers the
integration tests use) on ``sys.path``, so a benchmark run as ``python bench/bench_check.py`` from a
checkout finds ``worker_harness`` and ``conftest``. Then:

- :func:`broker`: the ``--bootstrap`` broker when one is given, else a broker of its own started with
  ``scripts/kafka.sh`` on free ports (fresh data dir under ``tmp``) and stopped at the end;
- :func:`pct`: a percentile of a list, by rank (no interpolation), ``nan`` for an empty list;
- :func:`best_of`: the least wall time of a few runs of a function.

>>> pct([3.0, 1.0, 2.0, 4.0], 50), pct([], 99)
(3.0, nan)

When it fails: a broker that does not start stops the benchmark with ``SystemExit`` and
scripts/kafka.sh's reason.
"""
from __future__ import annotations

import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

REPO = Path(__file__).resolve().parents[1]
for _p in (str(REPO / "tests" / "integration"), str(REPO)):
    if _p not in sys.path:
        sys.path.insert(0, _p)

__all__ = ["REPO", "best_of", "broker", "pct"]


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, max(0, int(round(q / 100 * (len(s) - 1)))))]


def best_of(runs: int, fn) -> float:
    """The least wall time (seconds) of ``runs`` calls of ``fn``."""
    best = float("inf")
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


@contextmanager
def broker(bootstrap: str | None, tmp: Path, preferred_port: int) -> Iterator[str]:
    """The broker to run against: ``bootstrap`` itself, or one started here (on ``preferred_port`` and
    the next one when they are free) that is stopped when the block ends."""
    if bootstrap:
        yield bootstrap
        return
    from conftest import free_port_pair, kafka_script_env, run_kafka_sh

    port, cport = free_port_pair(preferred_port)
    env = kafka_script_env(port, cport, tmp / "kafka")
    proc = run_kafka_sh("start", env=env, timeout=600)
    if proc.returncode != 0:
        raise SystemExit(f"kafka.sh start failed: {proc.stderr}")
    try:
        yield proc.stdout.strip().splitlines()[-1]
    finally:
        run_kafka_sh("stop", env=env, timeout=60)
