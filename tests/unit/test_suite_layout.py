"""The test suite itself: everything is collected, nothing is skipped for being "not built yet",
and no file names a benchmark that does not exist."""
from __future__ import annotations

import re
import subprocess
import tomllib
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def tracked(*patterns: str) -> list[Path]:
    out = subprocess.run(["git", "ls-files", *patterns], cwd=ROOT, capture_output=True, text=True, check=True)
    return [ROOT / p for p in out.stdout.split() if (ROOT / p).is_file()]


def test_test_file_names_are_unique_so_one_run_collects_them_all():
    # the test directories are not packages (the integration tests import their harnesses by bare name):
    # two files with one basename stop the whole run at collection
    names = Counter(p.name for p in (ROOT / "tests").rglob("test_*.py"))
    assert [n for n, k in names.items() if k > 1] == []


def test_the_doctests_of_every_package_are_collected():
    conf = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
    assert {"detector", "models", "streams", "tests"} <= set(conf["testpaths"])
    assert "--doctest-modules" in conf["addopts"]


def test_no_test_is_skipped_because_a_module_might_not_be_built():
    pattern = re.compile(r"not built yet|HAVE_[A-Z]+\s*=")
    me = Path(__file__).resolve()
    assert [p.name for p in tracked("tests/*.py") if p.resolve() != me and pattern.search(p.read_text())] == []


def test_every_benchmark_a_file_mentions_exists():
    mentioned = {m for p in tracked("*.py", "*.md") for m in re.findall(r"bench/(\w+\.py)", p.read_text())}
    assert sorted(m for m in mentioned if not (ROOT / "bench" / m).exists()) == []
