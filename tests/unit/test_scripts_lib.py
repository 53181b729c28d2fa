"""scripts/lib.sh: which Python the scripts (install, test, demo, kafka) use."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def fb_python(**env: str) -> str:
    base = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "FLOWBREAKER_PYTHON")}
    out = subprocess.run(["bash", "-c", f"source {REPO / 'scripts' / 'lib.sh'}; fb_python"], env={**base, **env},
                         capture_output=True, text=True, timeout=30, check=True)
    return out.stdout.strip()


@pytest.mark.parametrize("env, expected", [
    ({}, str(REPO / ".venv" / "bin" / "python")),                                 # a fresh clone: the project's
    ({"VIRTUAL_ENV": "/opt/venv"}, "/opt/venv/bin/python"),                          # an active virtualenv
    ({"VIRTUAL_ENV": "/opt/venv", "FLOWBREAKER_PYTHON": "python3"}, "python3"),      # chosen explicitly
])
def test_the_scripts_use_the_project_venv_unless_another_python_is_active_or_chosen(env, expected):
    assert fb_python(**env) == expected


def test_install_test_and_demo_scripts_all_take_the_python_from_lib_sh():
    for name in ("install.sh", "test.sh", "demo.sh", "kafka.sh"):
        text = (REPO / "scripts" / name).read_text()
        assert "lib.sh" in text and "fb_python" in text, name
        assert '${FLOWBREAKER_PYTHON:-python3}' not in text, name
