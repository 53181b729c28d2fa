"""During a broker outage the pre-action check does not answer from a worker's memory (issue 21, item 8).

A broker of this test's own (scripts/kafka.sh on free ports, stopped by the script, never the shared one)
and one worker: the check answers; the broker stops; within the probe's bound the check answers 503
``broker_unavailable`` and the runtime's CheckClient applies its fallback policy (restricted: deny, the
rest: allow), to be reported later; the broker starts again and the check answers again.
streams/api/broker_probe.py says why.
"""
from __future__ import annotations

import uuid

import pytest

from api_harness import TOKEN, Cluster, call, event, exfil, seed, wait_for
from conftest import _start_broker, free_port_pair, kafka_script_env, run_kafka_sh
from streams.clients.check_client import CheckClient

pytestmark = pytest.mark.timeout(400)


def test_the_check_answers_503_while_the_broker_is_gone_and_the_runtime_falls_back_by_policy(tmp_path):
    # away from 19092, where the run's shared broker starts at the same moment in another process: both saw the
    # pair free, and the second to bind failed every integration test of the run
    port, controller = free_port_pair(29600)
    env = kafka_script_env(port, controller, tmp_path / "kafka")
    cluster = client = None
    try:
        bootstrap = _start_broker(env, tmp_path / "kafka")
        (tmp_path / "cluster").mkdir()
        cluster = Cluster(bootstrap, f"it-outage-{uuid.uuid4().hex[:8]}-", tmp_path / "cluster", n=1, partitions=2)
        cluster.start()
        agent = cluster.agent_on(0, "outage")
        seed(cluster, [agent])
        url = cluster.url(0) + "/v1/check"
        assert call("POST", url, TOKEN["runtime"], event(agent, 500)).status == 200
        stop = run_kafka_sh("stop", env=env, timeout=60)
        assert stop.returncode == 0, stop.stderr

        def refused():
            r = call("POST", url, TOKEN["runtime"], event(agent, 501), timeout=10)
            return r if r.status == 503 and r.json["error"]["code"] == "broker_unavailable" else None

        r = wait_for(refused, 30, "503 broker_unavailable from /v1/check")
        assert int(r.headers["Retry-After"]) >= 1
        client = CheckClient(cluster.url(0), TOKEN["runtime"], timeout_s=2.0, report_every_s=3600)
        closed, opened = client.check(exfil(agent, 502)), client.check(event(agent, 503))
        assert (closed.verdict, closed.source) == ("deny", "fallback")
        assert (opened.verdict, opened.source) == ("allow", "fallback")
        assert len(client._reports) == 2  # reported once a worker answers again (test_check.py)
        # the broker is back: the check answers again
        _start_broker(env, tmp_path / "kafka")
        wait_for(lambda: call("POST", url, TOKEN["runtime"], event(agent, 504), timeout=10).status == 200, 90,
                 "/v1/check answering again")
    finally:
        if client is not None:
            client.close()
        if cluster is not None:
            cluster.stop()
        run_kafka_sh("stop", env=env, timeout=60)  # our own broker, by the pid file in its data dir
