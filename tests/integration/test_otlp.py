"""``flowbreaker otlp`` with the real things: the OpenTelemetry Python SDK and its OTLP/HTTP exporters (protobuf
and JSON), records in the Collector's Kafka encodings on a topic, and a worker deciding what it published.

The receiver runs as a subprocess (``python -m streams.cli.main otlp``) against the session's broker, with a
topic prefix of its own; what it publishes is read back from ``agent-actions``.
"""
from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from datetime import datetime, timezone
from pathlib import Path

import pytest

from worker_harness import REPO_DIR, TopicReader, WorkerProc, free_port, produce, replay, stop_process, wait_for

pytestmark = pytest.mark.timeout(240)

pytest.importorskip("opentelemetry.sdk")
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (  # noqa: E402
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.sdk.resources import Resource  # noqa: E402
from opentelemetry.sdk.trace import TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter  # noqa: E402


class OtlpProc:
    """One ``flowbreaker otlp`` subprocess; stopped by its own pid."""

    def __init__(self, bootstrap: str, prefix: str, workdir: Path, *extra: str, listen: bool = True) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.metrics_port = self.port if listen else free_port()
        self.args = [sys.executable, "-m", "streams.cli.main", "otlp", "--bootstrap", bootstrap,
                     "--topic-prefix", prefix, *extra]
        self.args += ["--listen", f"127.0.0.1:{self.port}"] if listen else \
            ["--metrics-listen", f"127.0.0.1:{self.metrics_port}"]
        self.stderr_path = workdir / f"otlp-{self.port}.err"
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        env["PYTHONPATH"] = str(REPO_DIR) + os.pathsep + env.get("PYTHONPATH", "")
        self._err = open(self.stderr_path, "wb")
        self.proc = subprocess.Popen(self.args, cwd=REPO_DIR, env=env, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=self._err)
        wait_for(lambda: self.alive() and self.metrics(timeout=1.0), 60, "flowbreaker otlp to answer", procs=[self])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1/traces"

    def metrics(self, timeout: float = 5.0) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=timeout) as r:
            return r.read().decode()

    def metric(self, name: str, **labels: str) -> float:
        from prometheus_client.parser import text_string_to_metric_families

        for family in text_string_to_metric_families(self.metrics()):
            for sample in family.samples:
                if sample.name == name and sample.labels == labels:
                    return sample.value
        return 0.0

    def post(self, body: bytes, content_type: str, **headers: str) -> tuple[int, str, bytes]:
        req = urllib.request.Request(self.url, data=body, method="POST",
                                     headers={"Content-Type": content_type, **headers})
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.status, r.headers.get("Content-Type", ""), r.read()
        except urllib.error.HTTPError as err:
            return err.code, err.headers.get("Content-Type", ""), err.read()

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stderr_tail(self, n: int = 30) -> str:
        return "\n".join(self.stderr_path.read_text(errors="replace").splitlines()[-n:])

    def stop(self) -> int | None:
        code = stop_process(self.proc, 20)
        self._err.close()
        return code


@pytest.fixture(scope="module")
def prefix() -> str:
    return f"it-otlp-{uuid.uuid4().hex[:8]}-"


@pytest.fixture(scope="module")
def receiver(kafka_bootstrap, prefix, tmp_path_factory):
    proc = OtlpProc(kafka_bootstrap, prefix, tmp_path_factory.mktemp("otlp"))
    yield proc
    assert proc.stop() == 0, proc.stderr_tail()


@pytest.fixture(scope="module")
def actions(kafka_bootstrap, prefix, receiver):
    reader = TopicReader(kafka_bootstrap, f"{prefix}agent-actions")
    yield reader
    reader.close()


def events_of(reader: TopicReader, agent: str, n: int, timeout: float = 30.0) -> list[tuple[bytes, dict]]:
    def mine(ms):
        return [(m.key, json.loads(m.value)) for m in ms if m.key == agent.encode()]
    reader.read_until(lambda ms: len(mine(ms)) >= n, timeout)
    got = mine(reader.messages)
    assert len(got) >= n, f"{len(got)} of {n} events of {agent} on agent-actions"
    return got


def provider_for(exporter, service: str | None, *, batch: bool = True):
    provider = TracerProvider(resource=Resource.create({"service.name": service} if service else {}))
    memory = InMemorySpanExporter()
    provider.add_span_processor(BatchSpanProcessor(exporter) if batch else SimpleSpanProcessor(exporter))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    return provider, memory


def rfc3339(ns: int) -> str:
    secs, rem = divmod(ns, 1_000_000_000)
    return datetime.fromtimestamp(secs, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S") + f".{rem // 1000:06d}Z"


def agent_run(provider, agent: str):
    """An agent's turn as a GenAI-instrumented framework traces it: an agent span, a model call, two tool calls
    (one nested in the other), and a tool call with only the standard attributes."""
    tracer = provider.get_tracer("test-agent-framework")
    with tracer.start_as_current_span("invoke_agent " + agent, attributes={
            "gen_ai.operation.name": "invoke_agent", "gen_ai.agent.id": agent}):
        with tracer.start_as_current_span("chat gpt-x", attributes={"gen_ai.operation.name": "chat"}):
            pass
        with tracer.start_as_current_span("execute_tool research", attributes={
                "gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "research",
                "gen_ai.tool.call.id": f"{agent}-call-1", "gen_ai.agent.id": agent,
                "gen_ai.conversation.id": "conv-42", "enduser.id": "dana@corp.example"}):
            with tracer.start_as_current_span("execute_tool crm.lookup", attributes={
                    "gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "crm.lookup",
                    "gen_ai.tool.call.id": f"{agent}-call-2", "gen_ai.agent.id": agent,
                    "gen_ai.conversation.id": "conv-42",
                    "gen_ai.tool.call.arguments": json.dumps({"customer": 7}),
                    "gen_ai.tool.call.result": json.dumps({"name": "Ada", "tier": "gold"})}):
                pass
        with tracer.start_as_current_span("execute_tool send_email", attributes={
                "gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "send_email"}):
            pass


@pytest.mark.parametrize("encoding", ["protobuf", "json"])
def test_the_sdk_s_tool_spans_over_otlp_http_become_action_events_keyed_by_agent(receiver, actions, encoding,
                                                                                monkeypatch):
    if encoding == "protobuf":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    else:
        from opentelemetry.exporter.otlp.json.http.trace_exporter import OTLPSpanExporter
    agent = f"agent-{encoding}"
    before = receiver.metric("flowbreaker_otlp_events_published_total")
    # configured as the README says: the exporter's and the SDK's environment variables
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", receiver.url)
    monkeypatch.setenv("OTEL_SERVICE_NAME", f"svc-{encoding}")
    provider, memory = provider_for(OTLPSpanExporter(), None)
    agent_run(provider, agent)
    assert provider.force_flush(30_000)
    spans = {s.name: s for s in memory.get_finished_spans()}
    provider.shutdown()

    got = {ev["tool"]: (key, ev) for key, ev in events_of(actions, agent, 2)}
    got.update({ev["tool"]: (key, ev) for key, ev in events_of(actions, f"svc-{encoding}", 1)})
    assert set(got) == {"research", "crm.lookup", "send_email"}
    lookup, research, send = got["crm.lookup"][1], got["research"][1], got["send_email"][1]
    assert lookup == {
        "schema_version": 1, "event_id": f"{agent}-call-2", "agent_id": agent, "task_id": "conv-42",
        "ts": rfc3339(spans["execute_tool crm.lookup"].end_time), "tool": "crm.lookup", "action": "read",
        "resource": "tool://crm.lookup", "sensitivity": "internal", "operator_id": "unknown",
        "bytes": len(json.dumps({"name": "Ada", "tier": "gold"})), "parent_event_id": f"{agent}-call-1"}
    assert research["requested_by"] == "dana@corp.example" and "parent_event_id" not in research
    # only the standard attributes: the service is the agent, the trace the task, the span the event
    bare = spans["execute_tool send_email"]
    assert send["agent_id"] == f"svc-{encoding}" and got["send_email"][0] == f"svc-{encoding}".encode()
    assert send["event_id"] == format(bare.context.span_id, "016x")
    assert send["task_id"] == format(bare.context.trace_id, "032x")
    assert send["action"] == "send"
    wait_for(lambda: receiver.metric("flowbreaker_otlp_events_published_total") >= before + 3, 10,
             "the published counter")
    assert receiver.metric("flowbreaker_otlp_spans_ignored_total", reason="not_a_tool") >= 2


def tool_span_request(*, name="execute_tool crm.lookup", tool="crm.lookup", agent="agent-raw", n_attrs=0,
                      extra=None) -> ExportTraceServiceRequest:
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    kv = rs.resource.attributes.add()
    kv.key, kv.value.string_value = "service.name", "raw-svc"
    span = rs.scope_spans.add().spans.add(trace_id=os.urandom(16), span_id=os.urandom(8), name=name,
                                          start_time_unix_nano=time.time_ns() - 1000, end_time_unix_nano=time.time_ns())
    attrs = {"gen_ai.operation.name": "execute_tool", "gen_ai.agent.id": agent, **(extra or {})}
    if tool:
        attrs["gen_ai.tool.name"] = tool
    for i in range(n_attrs):
        attrs[f"x.{i}"] = "v"
    for k, v in attrs.items():
        kv = span.attributes.add()
        kv.key, kv.value.string_value = k, v
    return req


def otlp_json(req: ExportTraceServiceRequest) -> bytes:
    """The OTLP JSON encoding: protobuf's JSON mapping with the ids in hex (base64 in protobuf's mapping)."""
    import base64

    from google.protobuf import json_format

    data = json_format.MessageToDict(req)
    for rs in data["resourceSpans"]:
        for ss in rs["scopeSpans"]:
            for span in ss["spans"]:
                for k in ("traceId", "spanId", "parentSpanId"):
                    if k in span:
                        span[k] = base64.b64decode(span[k]).hex()
    return json.dumps(data).encode()


def merged(*reqs: ExportTraceServiceRequest) -> ExportTraceServiceRequest:
    out = ExportTraceServiceRequest()
    for r in reqs:
        out.resource_spans.extend(r.resource_spans)
    return out


def test_a_refused_tool_span_is_answered_as_a_partial_success_with_its_reason(receiver, actions):
    body = merged(tool_span_request(agent="agent-partial"), tool_span_request(name="execute_tool", tool=None),
                  tool_span_request(extra={"flowbreaker.action": "erase"})).SerializeToString()
    status, ctype, raw = receiver.post(body, "application/x-protobuf")
    assert (status, ctype) == (200, "application/x-protobuf")
    resp = ExportTraceServiceResponse.FromString(raw)
    assert resp.partial_success.rejected_spans == 2
    assert "no gen_ai.tool.name" in resp.partial_success.error_message
    assert "action: 'erase' is not one of" in resp.partial_success.error_message
    events_of(actions, "agent-partial", 1)

    status, ctype, raw = receiver.post(otlp_json(tool_span_request(name="execute_tool", tool=None)),
                                       "application/json")
    assert (status, ctype) == (200, "application/json")
    assert json.loads(raw)["partialSuccess"]["rejectedSpans"] == "1"
    assert receiver.metric("flowbreaker_otlp_spans_refused_total", code="no_tool") >= 2


def test_a_full_success_answers_an_empty_response_in_the_request_s_encoding(receiver):
    status, ctype, raw = receiver.post(gzip.compress(tool_span_request().SerializeToString()),
                                       "application/x-protobuf", **{"Content-Encoding": "gzip"})
    assert (status, ctype) == (200, "application/x-protobuf")
    assert not ExportTraceServiceResponse.FromString(raw).HasField("partial_success")


@pytest.mark.parametrize("body, content_type, headers, status", [
    (b"\x0a\xff\xff\xff\xff\x0f", "application/x-protobuf", {}, 400),                  # malformed protobuf
    (b"\x0a\x05\x12\x03\x0a\x01\xff", "application/x-protobuf", {}, 400),              # bad UTF-8 in a string
    (b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"name": "\xff"}]}]}]}', "application/json", {}, 400),
    (b"[" * 100_000, "application/json", {}, 400),                                    # nested beyond reason
    (b"{\"resourceSpans\": 3}", "application/json", {}, 400),
    (b"not gzip", "application/x-protobuf", {"Content-Encoding": "gzip"}, 400),
    (gzip.compress(b"\0" * (64 * 1024 * 1024)), "application/x-protobuf", {"Content-Encoding": "gzip"}, 413),
    (b"\0" * (9 * 1024 * 1024), "application/x-protobuf", {}, 413),                  # over the 8 MiB bound
    (b"{}", "text/plain", {}, 415),
    (b"{}", "application/json", {"Content-Encoding": "br"}, 415),
], ids=["malformed-protobuf", "bad-utf8-protobuf", "bad-utf8-json", "deep-json", "wrong-json-shape", "not-gzip",
        "gzip-bomb", "huge-body", "content-type", "content-encoding"])
def test_a_hostile_body_is_refused_with_a_status_and_the_receiver_goes_on(receiver, body, content_type, headers,
                                                                         status):
    from google.rpc.status_pb2 import Status

    got, ctype, raw = receiver.post(body, content_type, **headers)
    assert got == status, raw[:300]
    if ctype == "application/x-protobuf":
        assert Status.FromString(raw).message
    else:
        assert json.loads(raw)["message"]
    ok, _, _ = receiver.post(tool_span_request().SerializeToString(), "application/x-protobuf")
    assert ok == 200 and receiver.alive()


def test_a_tool_span_with_ten_thousand_attributes_is_refused_not_a_crash(receiver):
    status, _, raw = receiver.post(tool_span_request(n_attrs=10_000).SerializeToString(), "application/x-protobuf")
    assert status == 200
    resp = ExportTraceServiceResponse.FromString(raw)
    assert resp.partial_success.rejected_spans == 1 and "attributes" in resp.partial_success.error_message


def test_collector_kafka_records_in_otlp_proto_and_otlp_json_become_action_events(
        kafka_bootstrap, prefix, tmp_path, make_topics, actions):
    """What the Collector's Kafka exporter writes: one ExportTraceServiceRequest per record, encoded by the SDK's
    own OTLP encoders (protobuf, and the OTLP JSON encoding with hex ids), with a record that is neither."""
    from opentelemetry.exporter.otlp.json.common._internal.trace_encoder import encode_spans as encode_json
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans as encode_proto

    records = {}
    for encoding, encode in (("otlp_proto", lambda s: encode_proto(s).SerializeToString()),
                             ("otlp_json", lambda s: encode_json(s).to_json().encode())):
        memory = InMemorySpanExporter()
        provider = TracerProvider(resource=Resource.create({"service.name": f"svc-{encoding}"}))
        provider.add_span_processor(SimpleSpanProcessor(memory))
        agent_run(provider, f"agent-{encoding}")
        records[encoding] = encode(memory.get_finished_spans())
        provider.shutdown()

    procs = []
    try:
        for encoding, record in records.items():
            topic = f"{prefix}otlp_spans_{encoding}"
            make_topics(kafka_bootstrap, [topic], partitions=2)
            produce(kafka_bootstrap, topic, [(None, b"\xff not a request"), (None, record)])
            procs.append(OtlpProc(kafka_bootstrap, prefix, tmp_path / encoding, "--from-topic", topic,
                                  "--topic-encoding", encoding, listen=False))
        for encoding, proc in zip(records, procs):
            got = {ev["tool"]: ev for _k, ev in events_of(actions, f"agent-{encoding}", 2)}
            assert got["crm.lookup"]["parent_event_id"] == f"agent-{encoding}-call-1"
            assert got["crm.lookup"]["task_id"] == "conv-42"
            assert any(ev["tool"] == "send_email" for _k, ev in events_of(actions, f"svc-{encoding}", 1))
            wait_for(lambda: proc.metric("flowbreaker_otlp_requests_total", transport="kafka",
                                         outcome="bad_request") >= 1, 10, "the bad record counted")
            assert proc.alive()
    finally:
        for proc in procs:
            assert proc.stop() == 0, proc.stderr_tail()


def test_a_span_is_decided_by_a_worker_like_the_hand_written_event(kafka_bootstrap, tmp_path, signing_keys):
    """The integrator's hand-written event and the span with the mapping file's help give the same event,
    and the worker decides it as `flowbreaker replay` decides the hand-written one."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    prefix = f"it-otlp-worker-{uuid.uuid4().hex[:8]}-"
    mapping = tmp_path / "mapping.toml"
    mapping.write_text("""
[defaults]
operator_id = "team-finance"

[[tool]]
match = "sftp.upload"
action = "send"
resource = { from = "arguments.source" }
sensitivity = "confidential"
destinations = { from = "arguments.host", prefix = "sftp:" }
records = { from = "arguments.rows" }
""")
    worker = WorkerProc(kafka_bootstrap, prefix, f"{prefix}app", tmp_path / "worker").start()
    receiver = None
    try:
        worker.wait_ready(timeout=90)
        receiver = OtlpProc(kafka_bootstrap, prefix, tmp_path / "otlp", "--mapping", str(mapping))
        provider, memory = provider_for(OTLPSpanExporter(endpoint=receiver.url), "fin-runtime")
        with provider.get_tracer("fin").start_as_current_span("execute_tool sftp.upload", attributes={
                "gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "sftp.upload",
                "gen_ai.tool.call.id": "ev-fin-002-7731", "gen_ai.agent.id": "fin-agent-002",
                "gen_ai.conversation.id": "tsk-q1-partner-export", "enduser.id": "dana.okafor@corp.example",
                "gen_ai.tool.call.arguments": json.dumps({"source": "erp://ledger/2026-q1/export", "rows": 1840,
                                                          "host": "files.partner.example/inbound/q1"}),
                "gen_ai.tool.call.result": json.dumps({"uploaded": 912384})}):
            pass
        assert provider.force_flush(30_000)
        span = memory.get_finished_spans()[0]
        provider.shutdown()
        hand_written = {
            "schema_version": 1, "event_id": "ev-fin-002-7731", "ts": rfc3339(span.end_time),
            "agent_id": "fin-agent-002", "operator_id": "team-finance", "requested_by": "dana.okafor@corp.example",
            "task_id": "tsk-q1-partner-export", "tool": "sftp.upload", "action": "send",
            "resource": "erp://ledger/2026-q1/export", "sensitivity": "confidential", "records": 1840,
            "bytes": len(json.dumps({"uploaded": 912384})), "destinations": ["sftp:files.partner.example/inbound/q1"]}
        published = TopicReader(kafka_bootstrap, f"{prefix}agent-actions")
        [(_key, event)] = events_of(published, "fin-agent-002", 1)
        published.close()
        assert event == hand_written
        decisions = TopicReader(kafka_bootstrap, f"{prefix}agent-decisions")
        got = decisions.read_until(lambda ms: any(json.loads(m.value)["event_id"] == "ev-fin-002-7731" for m in ms),
                                   60)
        decisions.close()
        live = [json.loads(m.value) for m in got if json.loads(m.value)["event_id"] == "ev-fin-002-7731"]
        assert live, f"no decision from the worker\n{worker.stderr_tail()}"
        assert live[0] == replay([hand_written], tmp_path / "replay")["ev-fin-002-7731"]
    finally:
        if receiver is not None:
            receiver.stop()
        worker.stop()


def test_a_listen_address_already_taken_exits_1_with_one_line(kafka_bootstrap, prefix, receiver):
    done = subprocess.run([sys.executable, "-m", "streams.cli.main", "otlp", "--bootstrap", kafka_bootstrap,
                           "--topic-prefix", prefix, "--listen", f"127.0.0.1:{receiver.port}"], cwd=REPO_DIR,
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert done.returncode == 1
    assert done.stderr.splitlines()[-1].startswith(f"flowbreaker otlp: cannot listen on 127.0.0.1:{receiver.port}: ")
    assert receiver.alive()


def test_an_mcp_tool_call_traced_by_the_agent_its_mcp_client_and_the_server_is_one_event_of_the_agent(
        receiver, actions, tmp_path):
    pytest.importorskip("mcp")
    env = dict(os.environ, OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=receiver.url, OTEL_SERVICE_NAME="agent-runtime",
               PYTHONPATH=str(REPO_DIR) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    before = receiver.metric("flowbreaker_otlp_spans_ignored_total", reason="nested")
    done = subprocess.run([sys.executable, str(Path(__file__).parent / "otel_mcp_agent.py"), "agent-mcp"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
                          stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr[-3000:]
    events_of(actions, "agent-mcp", 2)
    time.sleep(2)  # anything published late (a second event of one call) would be on the topic by now
    actions.poll()
    got = [ev for ev in map(lambda m: json.loads(m.value), actions.messages)
           if ev["agent_id"] in ("agent-mcp", "agent-runtime", "records-server")]
    assert sorted((ev["agent_id"], ev["tool"], ev["event_id"], ev["task_id"]) for ev in got) == [
        ("agent-mcp", "read_record", "agent-mcp-call-0", "conv-mcp"),
        ("agent-mcp", "send_email", "agent-mcp-call-1", "conv-mcp")]
    assert receiver.metric("flowbreaker_otlp_spans_ignored_total", reason="nested") >= before + 4


def test_sigterm_stops_it_with_0_and_ctrl_c_with_130(kafka_bootstrap, prefix, tmp_path):
    import signal

    for sig, code in ((signal.SIGTERM, 0), (signal.SIGINT, 130)):
        proc = OtlpProc(kafka_bootstrap, prefix, tmp_path / sig.name)
        os.kill(proc.proc.pid, sig)
        assert proc.proc.wait(timeout=30) == code, proc.stderr_tail()
        proc.stop()
