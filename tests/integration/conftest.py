"""Integration-test fixtures: a real single-node Kafka broker for the test session.

By default the session starts its own broker with ``scripts/kafka.sh`` on a free
127.0.0.1 port pair (19092/19093 when free), with a fresh data dir, and stops it
at the end. When pytest-xdist spreads the run over processes (tests/conftest.py),
the run has one broker: the first process that needs it starts it, the others use
it, and the controlling process stops it at the end. Set
``FLOWBREAKER_TEST_KAFKA=host:port`` to use an already running broker instead
(nothing is started or stopped then).

``two_worker_cluster`` is one two-worker API cluster shared by the modules that
only talk to a healthy cluster (test_api, test_api_fuzz, test_approvals_cli,
test_check); see :class:`_SharedCluster`.

Every test under ``tests/integration`` is marked ``integration``; deselect them
with ``pytest -m 'not integration'``.
"""
from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
import socket
import subprocess
import sys
import time
import types
import uuid
from pathlib import Path

import pytest

from worker_harness import make_topics  # the make_topics fixture hands it out

REPO_DIR = Path(__file__).resolve().parents[2]
KAFKA_SH = REPO_DIR / "scripts" / "kafka.sh"
HERE = Path(__file__).resolve().parent
HOST = "127.0.0.1"

# First run may download ~46 MB of jars from Maven Central; the broker itself is ready in seconds.
START_TIMEOUT_S = float(os.environ.get("FLOWBREAKER_TEST_KAFKA_START_TIMEOUT", "600"))
STOP_TIMEOUT_S = 60.0
#: where a run spread over processes records its one broker (read by tests/conftest.py, which stops it)
SHARED_BROKER_STATE = "kafka-broker.json"


def pytest_configure(config):
    # kafka-python 3.0 loads its protocol schemas with the legacy importlib.resources API
    # (one DeprecationWarning per schema on import): noise, not ours.
    config.addinivalue_line("filterwarnings", "ignore:read_text is deprecated:DeprecationWarning")
    config.addinivalue_line("filterwarnings", "ignore:open_text is deprecated:DeprecationWarning")


def pytest_collection_modifyitems(config, items):
    for item in items:
        path = Path(str(getattr(item, "path", item.fspath))).resolve()
        if HERE == path or HERE in path.parents:
            item.add_marker(pytest.mark.integration)


@dataclasses.dataclass(frozen=True)
class KafkaBroker:
    bootstrap: str
    managed: bool                 # True: started (and stopped) by this session via scripts/kafka.sh
    env: dict | None = None       # environment that scripts/kafka.sh was run with (managed only)
    data_dir: Path | None = None  # FLOWBREAKER_KAFKA_DIR (managed only)

    def script(self, *args: str, timeout: float = 120.0, env: dict | None = None) -> subprocess.CompletedProcess:
        """Run scripts/kafka.sh with this broker's environment (managed brokers only)."""
        if self.env is None and env is None:
            raise RuntimeError("external broker (FLOWBREAKER_TEST_KAFKA): no kafka.sh environment")
        return run_kafka_sh(*args, env=env or self.env, timeout=timeout)


def run_kafka_sh(*args: str, env: dict, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(KAFKA_SH), *args],
        env=env, cwd=REPO_DIR, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
    )


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((HOST, port))
        except OSError:
            return False
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:  # nothing listening either
        s.settimeout(0.2)
        return s.connect_ex((HOST, port)) != 0


def free_port_pair(preferred: int = 19092) -> tuple[int, int]:
    """A (client, controller) pair of free consecutive ports on 127.0.0.1."""
    for port in range(preferred, preferred + 40, 2):
        if _port_free(port) and _port_free(port + 1):
            return port, port + 1
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((HOST, 0))
            port = s.getsockname()[1]
        if port < 65535 and _port_free(port) and _port_free(port + 1):
            return port, port + 1
    raise RuntimeError("no free port pair on 127.0.0.1")


#: the variables :func:`kafka_script_env` sets: with them, scripts/kafka.sh finds the same broker again
KAFKA_SCRIPT_VARS = ("FLOWBREAKER_KAFKA_PORT", "FLOWBREAKER_KAFKA_CONTROLLER_PORT", "FLOWBREAKER_KAFKA_DIR",
                     "FLOWBREAKER_PYTHON")


def kafka_script_env(port: int, controller_port: int, data_dir: Path) -> dict:
    env = dict(os.environ)
    env.update(
        FLOWBREAKER_KAFKA_PORT=str(port),
        FLOWBREAKER_KAFKA_CONTROLLER_PORT=str(controller_port),
        FLOWBREAKER_KAFKA_DIR=str(data_dir),
        FLOWBREAKER_PYTHON=sys.executable,  # same interpreter (has kafka-python) for the readiness check
    )
    return env


def _start_broker(env: dict, data_dir: Path) -> str:
    """``scripts/kafka.sh start`` with ``env``; the bootstrap address. On failure the broker is stopped and
    RuntimeError says why."""
    try:
        proc = run_kafka_sh("start", env=env, timeout=START_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        run_kafka_sh("stop", env=env, timeout=STOP_TIMEOUT_S)
        raise RuntimeError(f"scripts/kafka.sh start did not finish within {START_TIMEOUT_S:.0f}s "
                           f"(data dir {data_dir})") from None
    if proc.returncode != 0:
        run_kafka_sh("stop", env=env, timeout=STOP_TIMEOUT_S)
        raise RuntimeError(f"scripts/kafka.sh start failed (exit {proc.returncode}):\n{proc.stderr}{proc.stdout}")
    return proc.stdout.strip().splitlines()[-1]


@contextlib.contextmanager
def _file_lock(path: Path, timeout: float):
    """An exclusive lock on ``path`` between this run's processes; waits at most ``timeout`` seconds."""
    with open(path, "a") as fh:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{path} stayed locked for {timeout:.0f}s") from None
                time.sleep(0.1)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _shared_broker(run_dir: Path) -> KafkaBroker:
    """The broker of a run spread over processes by pytest-xdist (tests/conftest.py): the first process to ask
    starts it and writes where it is to ``run_dir/SHARED_BROKER_STATE``; the others read that. Stopped by the
    controlling process after every test process has ended (tests/conftest.py, pytest_sessionfinish). A start
    that failed is recorded too, so every process fails with its reason instead of trying again."""
    state = run_dir / SHARED_BROKER_STATE
    with _file_lock(run_dir / (SHARED_BROKER_STATE + ".lock"), timeout=START_TIMEOUT_S + 2 * STOP_TIMEOUT_S):
        if not state.exists():
            port, controller_port = free_port_pair()
            data_dir = run_dir / "kafka"
            env = kafka_script_env(port, controller_port, data_dir)
            record = {"env": {k: env[k] for k in KAFKA_SCRIPT_VARS},
                      "data_dir": str(data_dir), "bootstrap": None, "error": None}
            try:
                record["bootstrap"] = _start_broker(env, data_dir)
            except RuntimeError as err:
                record["error"] = str(err)
            state.write_text(json.dumps(record))
        record = json.loads(state.read_text())
    if record["error"]:
        pytest.fail(record["error"])
    return KafkaBroker(bootstrap=record["bootstrap"], managed=True, env=dict(os.environ, **record["env"]),
                       data_dir=Path(record["data_dir"]))


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory) -> KafkaBroker:
    external = os.environ.get("FLOWBREAKER_TEST_KAFKA", "").strip()
    if external:
        yield KafkaBroker(bootstrap=external, managed=False)
        return
    if os.environ.get("PYTEST_XDIST_WORKER"):
        # one broker for the whole run: the controlling process's base temp dir is this one's parent
        yield _shared_broker(tmp_path_factory.getbasetemp().parent)
        return

    port, controller_port = free_port_pair()
    data_dir = tmp_path_factory.mktemp("kafka")
    env = kafka_script_env(port, controller_port, data_dir)
    try:
        bootstrap = _start_broker(env, data_dir)
    except RuntimeError as err:
        pytest.fail(str(err))
    try:
        yield KafkaBroker(bootstrap=bootstrap, managed=True, env=env, data_dir=data_dir)
    finally:
        stop = run_kafka_sh("stop", env=env, timeout=STOP_TIMEOUT_S)
        if stop.returncode != 0:  # pragma: no cover - diagnostics only
            sys.stderr.write(f"scripts/kafka.sh stop failed (exit {stop.returncode}): {stop.stderr}\n")


@pytest.fixture(scope="session", autouse=True)
def signing_keys(tmp_path_factory):
    """The session's freeze/release command signing keys (streams/clients/signing.py): a fresh key file, named in
    ``FLOWBREAKER_SIGNING_KEYS`` for every worker, actuator, runtime and CLI the tests start (they inherit the
    environment). Yields the :class:`streams.clients.signing.KeyRing`, for tests that sign commands themselves."""
    from streams.clients.signing import KeyRing, new_key_file

    path = tmp_path_factory.mktemp("signing") / "signing-keys.toml"
    path.write_text(new_key_file("k-test"))
    path.chmod(0o600)
    saved = {k: os.environ.get(k) for k in ("FLOWBREAKER_SIGNING_KEYS", "FLOWBREAKER_SIGNING_KEYS_INLINE")}
    os.environ["FLOWBREAKER_SIGNING_KEYS"] = str(path)
    os.environ.pop("FLOWBREAKER_SIGNING_KEYS_INLINE", None)
    try:
        yield KeyRing.from_file(path)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


class _SharedCluster:
    """One two-worker API cluster (``api_harness.Cluster``) for the test modules that only talk to a healthy
    cluster: test_api, test_api_fuzz, test_approvals_cli, test_check (a worker takes 15-20 s to serve its API
    here, so one start instead of four saves about a minute of the run).

    Started when the first test that asks for ``two_worker_cluster`` runs, and stopped as soon as the
    next test to run does not ask for it (:func:`pytest_runtest_teardown`), so its workers do not idle
    through the rest of the session (tests/conftest.py keeps its users together, also in a run spread over
    processes); a later module that asks again gets a fresh one.

    Sharing rules, for a module that joins: use agent ids of its own (a stem naming the module); assert on
    counters and topics as changes over the module's own calls (:func:`api_harness.metrics_sum`,
    :func:`api_harness.AuditMark`), never on their totals; do not stop, restart or reconfigure a worker (a
    test that does starts workers of its own). The workers summarise refused calls per
    ``REFUSAL_WINDOW_S`` (test_api checks the summaries)."""

    #: FLOWBREAKER_AUDIT_REFUSAL_WINDOW_S of the shared workers: refused calls of one client are summarised per
    #: this window, short so that test_api sees its summaries within seconds
    REFUSAL_WINDOW_S = 2.0

    def __init__(self) -> None:
        self.cluster = None

    def get(self, bootstrap: str, tmp: Path):
        if self.cluster is None:
            from api_harness import Cluster

            saved = os.environ.get("FLOWBREAKER_AUDIT_REFUSAL_WINDOW_S")
            os.environ["FLOWBREAKER_AUDIT_REFUSAL_WINDOW_S"] = str(self.REFUSAL_WINDOW_S)  # the workers inherit it
            cluster = Cluster(bootstrap, f"it-shared-{uuid.uuid4().hex[:8]}-", tmp, n=2,
                              refusal_window_s=self.REFUSAL_WINDOW_S)
            try:
                cluster.start()
            except BaseException:
                cluster.stop()
                raise
            finally:
                if saved is None:
                    os.environ.pop("FLOWBREAKER_AUDIT_REFUSAL_WINDOW_S", None)
                else:
                    os.environ["FLOWBREAKER_AUDIT_REFUSAL_WINDOW_S"] = saved
            self.cluster = cluster
        return self.cluster

    def stop(self) -> None:
        if self.cluster is not None:
            cluster, self.cluster = self.cluster, None
            cluster.stop()


_SHARED = _SharedCluster()


@pytest.fixture(scope="module")
def two_worker_cluster(kafka_bootstrap, tmp_path_factory):
    """Two workers of one app with the API test tokens (``api_harness``), shared by consecutive modules
    (see :class:`_SharedCluster` for the rules). Tests use agents of their own."""
    return _SHARED.get(kafka_bootstrap, tmp_path_factory.mktemp("shared-cluster"))


def pytest_runtest_teardown(item, nextitem):
    if _SHARED.cluster is not None and (nextitem is None or "two_worker_cluster" not in nextitem.fixturenames):
        _SHARED.stop()


@pytest.fixture(scope="session")
def kafka_script():
    """Helpers to drive scripts/kafka.sh directly: ``run(*args, env=, timeout=)``,
    ``env(port, controller_port, data_dir)``, ``free_port_pair(preferred)``."""
    return types.SimpleNamespace(run=run_kafka_sh, env=kafka_script_env, free_port_pair=free_port_pair)


@pytest.fixture(scope="session")
def kafka_bootstrap(kafka_broker: KafkaBroker) -> str:
    """Bootstrap address of the session's broker, e.g. '127.0.0.1:19092'."""
    return kafka_broker.bootstrap


@pytest.fixture
def unique_topic_prefix(request) -> str:
    """A per-test prefix so tests never share topics (or consumer groups) on the session broker."""
    name = "".join(c if c.isalnum() else "-" for c in request.node.name)[:40].strip("-")
    return f"it-{name}-{uuid.uuid4().hex[:8]}-"


@pytest.fixture(name="make_topics")
def make_topics_fixture():
    """The :func:`make_topics` helper: ``make_topics(bootstrap, names, partitions=8, configs=None)``."""
    return make_topics


def pytest_sessionfinish(session, exitstatus):
    _SHARED.stop()  # after an interrupted run too
