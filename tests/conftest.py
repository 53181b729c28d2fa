"""How a whole test run is spread over processes (pytest-xdist), and what the processes share.

Why: the ~1,250 unit tests are CPU-bound and take a minute and a half; the ~50 integration tests
(tests/integration) mostly wait (for the broker, a worker's start-up, a rebalance, a timeout, a
webhook that keeps failing): about 85 % of their wall time, at ~15 % of one core. One after the
other the suite took 9-10 minutes on a 2-core machine; in three processes the waits overlap.

When it applies: a run whose paths include tests/integration (``pytest``, ``./scripts/test.sh``,
``pytest tests``, ``pytest tests/integration``) runs in ``FLOWBREAKER_TEST_WORKERS`` processes
(default 3; 0 or 1: one process). It does not apply, and the run stays in one process as before,
when the command line chooses (``-n N``, ``-n 0``, ``--dist``, ``--tx``, ``-p no:xdist``), with
``--collect-only`` or ``--pdb``, when pytest-xdist is not installed, or for a focused run
(``pytest tests/unit``, one file, one test).

How tests are grouped: the modules that share the two-worker API cluster (the
``two_worker_cluster`` fixture of tests/integration/conftest.py) go to one process together, in
their order; the tests of a module that uses a module- or class-scoped fixture of its own go to one
process together (the fixture is made once); every other test is scheduled on its own. The test
processes compute the groups from the fixtures each test uses and write them to the run's base
temporary directory, where the scheduler (pytest-xdist's ``loadscope`` with these groups as scopes)
reads them. Integration tests are queued before the rest (they are the long ones), the cluster's
first; the order inside a group is the files'.

One Kafka broker serves the whole run: the first process that needs it starts it (under a lock in
the run's base temporary directory; tests/integration/conftest.py), the others find it there, and
this process, which runs no tests, stops it at the end (:func:`pytest_sessionfinish`). Tests never
share topics or consumer groups (every test has its own prefix), so they may run side by side.
"""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

TESTS_DIR = Path(__file__).resolve().parent
INTEGRATION_DIR = TESTS_DIR / "integration"
REPO_DIR = TESTS_DIR.parent
DEFAULT_WORKERS = 3
#: the fixture whose users run in one process (it is one cluster per process)
CLUSTER_FIXTURE = "two_worker_cluster"
#: nodeid -> group, written by the test processes into the run's base temporary directory
GROUPS_FILE = "xdist-groups.json"
#: written by the process that started the run's broker (tests/integration/conftest.py: SHARED_BROKER_STATE)
SHARED_BROKER_STATE = "kafka-broker.json"
#: set on this process's config when it spreads the run as planned here
PLANNED = pytest.StashKey[bool]()


def _covers_integration(config: pytest.Config) -> bool:
    """True when one of the run's paths is tests/integration or a directory above it."""
    for arg in config.args:
        path = (config.invocation_params.dir / arg.split("::", 1)[0]).resolve()
        if path == INTEGRATION_DIR or path in INTEGRATION_DIR.parents:
            return True
    return False


def _workers() -> int:
    raw = os.environ.get("FLOWBREAKER_TEST_WORKERS", str(DEFAULT_WORKERS))
    try:
        return int(raw)
    except ValueError:
        raise pytest.UsageError(f"FLOWBREAKER_TEST_WORKERS={raw!r} is not a number of processes") from None


def _in_test_process(config: pytest.Config) -> bool:
    """True in a process pytest-xdist started to run tests (not the one that hands them out)."""
    return hasattr(config, "workerinput")


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist turns -n into processes
def pytest_cmdline_main(config: pytest.Config) -> None:
    if _in_test_process(config) or not config.pluginmanager.hasplugin("xdist"):
        return
    opt = config.option
    if opt.numprocesses is not None or opt.tx or opt.collectonly or opt.usepdb or opt.dist != "no":
        return  # the command line decides
    if not _covers_integration(config):
        return
    n = _workers()
    if n > 1:
        opt.numprocesses = n
        opt.dist = "loadscope"  # with this module's groups as the scopes (pytest_xdist_make_scheduler)
        opt.loadscopereorder = False  # keep the order pytest_collection_modifyitems makes
        config.stash[PLANNED] = True


def _groups_path(config: pytest.Config) -> Path:
    """The groups file of this run: the base temp dir of the process that hands out the tests, which is the
    parent of each test process's own."""
    base = config._tmp_path_factory.getbasetemp()
    return base.parent / GROUPS_FILE if _in_test_process(config) else base / GROUPS_FILE


@pytest.hookimpl(tryfirst=True, optionalhook=True)  # before pytest-xdist's own choice
def pytest_xdist_make_scheduler(config: pytest.Config, log):
    """(pytest-xdist) ``loadscope`` scheduling whose scopes are this module's groups (tests not in a group are
    scopes of their own)."""
    if not config.stash.get(PLANNED, False):
        return None
    from xdist.scheduler import LoadScopeScheduling

    groups_path = _groups_path(config)

    class GroupScheduling(LoadScopeScheduling):
        groups: dict[str, str] | None = None

        def _split_scope(self, nodeid: str) -> str:
            if self.groups is None:  # first called once every test process has collected (and written it)
                self.groups = json.loads(groups_path.read_text()) if groups_path.exists() else {}
            return self.groups.get(nodeid, nodeid)

    return GroupScheduling(config, log)


def _group(item: pytest.Item) -> str | None:
    """The process-sharing group of a test (see the module docstring), or None."""
    info = getattr(item, "_fixtureinfo", None)
    if info is None:  # a doctest
        return None
    if CLUSTER_FIXTURE in info.names_closure:
        return CLUSTER_FIXTURE
    for defs in info.name2fixturedefs.values():
        # a project fixture (not a plugin's: their baseid is "") made once per module or class
        if any(d.scope in ("module", "class", "package") and d.baseid for d in defs):
            return item.nodeid.split("::", 1)[0]
    return None


def _is_integration(item: pytest.Item) -> bool:
    return INTEGRATION_DIR in Path(str(item.path)).resolve().parents


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not _in_test_process(config):
        return

    def rank(item: pytest.Item) -> int:
        if not _is_integration(item):
            return 2
        return 0 if _group(item) == CLUSTER_FIXTURE else 1

    items.sort(key=rank)  # stable: the files' order within each rank; every test process sorts alike


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist tells the scheduler this process has collected
def pytest_collection_finish(session: pytest.Session) -> None:
    config = session.config
    if not _in_test_process(config):
        return
    groups = {item.nodeid: g for item in session.items if (g := _group(item)) is not None}
    path = _groups_path(config)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(groups))
    os.replace(tmp, path)  # every test process writes the same groups; a reader never sees half a file


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Stop the run's shared broker, in the process that ran no tests, after every other one ended."""
    config = session.config
    if _in_test_process(config) or getattr(config.option, "dist", "no") == "no" \
            or not hasattr(config, "_tmp_path_factory"):
        return  # in one process, tests/integration/conftest.py stops its own broker
    state = config._tmp_path_factory.getbasetemp() / SHARED_BROKER_STATE
    if not state.exists():
        return
    env = dict(os.environ, **json.loads(state.read_text())["env"])
    stop = subprocess.run(["bash", str(REPO_DIR / "scripts" / "kafka.sh"), "stop"], env=env, cwd=REPO_DIR,
                          capture_output=True, text=True, timeout=90, stdin=subprocess.DEVNULL)
    if stop.returncode != 0:  # pragma: no cover - diagnostics only
        print(f"scripts/kafka.sh stop failed (exit {stop.returncode}): {stop.stderr}")
