"""The pure core (style point 1): ``detector`` imports no stream, metrics or training
framework, and never reads the clock (time comes in on the event)."""
from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DETECTOR = REPO / "detector"
FORBIDDEN = ("faust", "kafka", "aiokafka", "prometheus_client", "sklearn", "joblib")
MODULES = sorted(p.stem for p in DETECTOR.glob("*.py") if p.stem != "__init__")

PROBE = """
import importlib, json, sys
for name in sys.argv[1:]:
    importlib.import_module(name)
print(json.dumps(sorted(sys.modules)))
"""


def _loaded_after_importing(*modules: str) -> set[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", PROBE, *modules], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=60, check=True)
    return set(json.loads(done.stdout))


def test_every_detector_module_is_found():
    assert {"events", "policy", "features", "baseline", "scoring", "breaker", "trace", "engine", "gate"} <= set(MODULES)


def test_importing_the_whole_detector_loads_no_stream_metrics_or_training_framework():
    loaded = _loaded_after_importing("detector", *(f"detector.{m}" for m in MODULES))
    assert {f"detector.{m}" for m in MODULES} <= loaded
    bad = sorted(m for m in loaded if m.split(".")[0] in FORBIDDEN)
    assert bad == []


def test_the_probe_would_see_a_forbidden_import():
    # the check above can fail: importing sklearn in the same probe shows up
    assert "sklearn" in {m.split(".")[0] for m in _loaded_after_importing("detector", "sklearn")}


def _clock_reads(source: str) -> list[str]:
    """Calls such as time.time(), datetime.now(), date.today(), time.monotonic() in a module."""
    clock = {("time", "time"), ("time", "time_ns"), ("time", "monotonic"), ("time", "monotonic_ns"),
             ("time", "perf_counter"), ("time", "localtime"), ("time", "gmtime"), ("datetime", "now"),
             ("datetime", "utcnow"), ("datetime", "today"), ("date", "today")}
    found = []
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            base = node.value
            name = base.id if isinstance(base, ast.Name) else base.attr if isinstance(base, ast.Attribute) else ""
            if (name, node.attr) in clock:
                found.append(f"{name}.{node.attr} (line {node.lineno})")
        if isinstance(node, ast.ImportFrom) and node.module in ("time",):
            for alias in node.names:
                if ("time", alias.name) in clock:
                    found.append(f"from time import {alias.name} (line {node.lineno})")
    return found


@pytest.mark.parametrize("module", MODULES)
def test_no_detector_module_reads_the_clock(module):
    assert _clock_reads((DETECTOR / f"{module}.py").read_text()) == []


def test_the_clock_check_recognises_clock_reads():
    src = "import time\nfrom datetime import datetime, date\nx = time.time()\ny = datetime.now()\nz = date.today()\n" \
          "import datetime as dt\nw = dt.datetime.utcnow()\nfrom time import monotonic\n"
    assert len(_clock_reads(src)) == 5
