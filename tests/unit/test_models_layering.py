"""The layers (style point: ``models/`` never imports ``streams``): importing any module of
``models`` loads no module of the shell, so training, evaluation and the simulator run
without Kafka, faust or the worker, and the shell depends on models, never the reverse.

One fresh interpreter per module: in one shared process an earlier import would hide
a later one's."""
from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
MODELS = REPO / "models"
#: every module of the models package, sub-packages included (models.simulate.fleet, ...)
MODULES = sorted(
    ".".join(p.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")
    for p in MODELS.rglob("*.py")
)

PROBE = """
import importlib, json, sys
importlib.import_module(sys.argv[1])
print(json.dumps(sorted(m for m in sys.modules if m == "streams" or m.startswith("streams."))))
"""


def _shell_modules_loaded_by(module: str) -> list[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", PROBE, module], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=120, check=True)
    return json.loads(done.stdout)


def test_every_models_module_is_found():
    assert {"models", "models.evaluate", "models.playback", "models.train", "models.registry", "models.drift",
            "models.store", "models.simulate", "models.simulate.fleet"} <= set(MODULES)


@pytest.mark.parametrize("module", MODULES)
def test_importing_a_models_module_loads_nothing_of_the_shell(module):
    assert _shell_modules_loaded_by(module) == []


def test_the_probe_would_see_the_shell():
    # the check above can fail: a module that imports the shell shows up
    assert "streams.cli.replay" in _shell_modules_loaded_by("streams.cli.evaluate")


def _shell_imports(source: str) -> list[str]:
    """``import streams...`` and ``from streams... import`` anywhere in a module, functions included
    (an import inside a function loads nothing at import time, so the probe above cannot see it)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
            [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else []
        found += [f"{n} (line {node.lineno})" for n in names if n == "streams" or n.startswith("streams.")]
    return found


@pytest.mark.parametrize("path", sorted(p.relative_to(REPO).as_posix() for p in MODELS.rglob("*.py")))
def test_no_models_source_imports_the_shell_even_inside_a_function(path):
    assert _shell_imports((REPO / path).read_text()) == []


def test_the_source_check_sees_an_import_inside_a_function():
    src = "def run():\n    from streams.cli.replay import load_engine\n    import streams.cli.main\nimport streamsx\n"
    assert _shell_imports(src) == ["streams.cli.replay (line 2)", "streams.cli.main (line 3)"]
