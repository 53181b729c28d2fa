"""Every ``flowbreaker demo`` run starts clean unless told to keep the last run's data (issue 21, item 9).

A second run used to inherit the first one's broker data: agents frozen from before and "event id already
used" alerts, because the simulated runtime's task feed repeats (one seed). Here, with a real broker:

* the demo's own broker (it starts one when nothing answers) gets an empty data dir: a topic of the last run
  is gone; with ``--keep`` it is still there;
* on a broker that was already running, which is not the demo's to empty, a run without ``--topic-prefix``
  uses topics of its own, and its worker an app id (state changelog, consumer group) of its own.

Only the start-up steps run (no training, worker or runtime); the broker the demo starts is stopped by the
demo's own stop, which stops it by its pid.
"""
from __future__ import annotations

import argparse
import io
import socket

import pytest
from kafka.admin import KafkaAdminClient, NewTopic

from streams.demo.live import Demo, configure_parser
from streams.settings import Settings

pytestmark = pytest.mark.timeout(240)


def free_port_pair() -> int:
    """A port whose successor (the KRaft controller's) is free too, below the ephemeral range (where a client's
    own connection could take it between two starts of the broker)."""
    for port in range(19700, 19900, 2):
        try:
            with socket.socket() as a, socket.socket() as b:
                a.bind(("127.0.0.1", port))
                b.bind(("127.0.0.1", port + 1))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port pair in 19700-19900")


def demo(*argv: str) -> Demo:
    p = argparse.ArgumentParser()
    configure_parser(p)
    args = p.parse_args(list(argv))
    d = Demo(args, Settings.from_args(args))
    d.out = io.StringIO()
    return d


def topics(bootstrap: str) -> set[str]:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=20000)
    try:
        return set(admin.list_topics())
    finally:
        admin.close()


def create(bootstrap: str, name: str) -> None:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=20000)
    try:
        admin.create_topics([NewTopic(name, 1, 1)])
    finally:
        admin.close()


def test_the_broker_the_demo_starts_is_empty_at_each_start_unless_kept(tmp_path):
    bootstrap = f"127.0.0.1:{free_port_pair()}"
    workdir = str(tmp_path / "demo")
    first = demo("--bootstrap", bootstrap, "--workdir", workdir)
    try:
        first.start_kafka()
        create(bootstrap, "agent-control")  # what the last run left: freezes, say
    finally:
        first.stop_all()

    kept = demo("--bootstrap", bootstrap, "--workdir", workdir, "--keep")
    try:
        kept.start_kafka()
        assert "agent-control" in topics(bootstrap)
    finally:
        kept.stop_all()

    clean = demo("--bootstrap", bootstrap, "--workdir", workdir)
    try:
        clean.start_kafka()
        assert "agent-control" not in topics(bootstrap)
        assert "the last run's data" in clean.out.getvalue() and "is gone" in clean.out.getvalue()
    finally:
        clean.stop_all()


def test_on_a_broker_already_running_each_run_gets_topics_and_a_worker_state_of_its_own(kafka_bootstrap, tmp_path,
                                                                                           unique_topic_prefix):
    runs = [demo("--bootstrap", kafka_bootstrap, "--workdir", str(tmp_path / f"demo{i}")) for i in range(2)]
    for d in runs:
        d.start_kafka()
        d.name_app()
        assert d.started == []  # not started here, so not the demo's to stop (or to empty)
    prefixes = [d.settings.topic_prefix for d in runs]
    assert all(p.startswith("demo-") for p in prefixes) and prefixes[0] != prefixes[1]
    assert [d.settings.app_id for d in runs] == [f"{p}flowbreaker" for p in prefixes]
    assert runs[0].run_id != runs[1].run_id  # also in the runtime's event ids

    told = demo("--bootstrap", kafka_bootstrap, "--workdir", str(tmp_path / "told"), "--topic-prefix",
                unique_topic_prefix)
    kept = demo("--bootstrap", kafka_bootstrap, "--workdir", str(tmp_path / "kept"), "--keep")
    for d in (told, kept):
        d.start_kafka()
        d.name_app()
    assert told.settings.topic_prefix == unique_topic_prefix and kept.settings.topic_prefix == ""
