"""OTLP trace requests to action events (streams/otlp/translate.py): the span mapping, and hostile bodies."""

from __future__ import annotations

import base64
import gzip
import json
import re
import zlib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytest.importorskip("opentelemetry.proto")

from google.protobuf import json_format  # noqa: E402
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (  # noqa: E402
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from detector.events import decode_event  # noqa: E402
from streams.otlp.translate import (  # noqa: E402
    JSON,
    MAX_ATTRIBUTES,
    PROTOBUF,
    BadRequest,
    SpanTranslator,
    parse_request,
    response_body,
)
from streams.tool_mapping import load_mapping  # noqa: E402

END = 1772442000_123456789  # 2026-03-02T09:00:00.123456789Z
TRACE = bytes(range(1, 17))


def set_value(v, value):
    if isinstance(value, bool):
        v.bool_value = value
    elif isinstance(value, int):
        v.int_value = value
    elif isinstance(value, float):
        v.double_value = value
    elif isinstance(value, bytes):
        v.bytes_value = value
    elif isinstance(value, list):
        v.array_value.SetInParent()
        for item in value:
            set_value(v.array_value.values.add(), item)
    elif isinstance(value, dict):
        v.kvlist_value.SetInParent()
        for k, item in value.items():
            kv = v.kvlist_value.values.add()
            kv.key = k
            set_value(kv.value, item)
    else:
        v.string_value = value


def request(*spans: dict, resource: dict | None = None) -> ExportTraceServiceRequest:
    """A request with one resource; each span a dict: attributes plus name, ids, end."""
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    for k, v in ({"service.name": "svc"} if resource is None else resource).items():
        kv = rs.resource.attributes.add()
        kv.key = k
        set_value(kv.value, v)
    ss = rs.scope_spans.add()
    for i, spec in enumerate(spans):
        spec = dict(spec)
        span = ss.spans.add(trace_id=spec.pop("trace_id", TRACE),
                            span_id=spec.pop("span_id", bytes([9, 9, 9, 9, 9, 9, 9, i + 1])),
                            parent_span_id=spec.pop("parent", b""), name=spec.pop("name", "execute_tool"),
                            end_time_unix_nano=spec.pop("end", END), kind=spec.pop("kind", 0))
        for k, v in spec.items():
            kv = span.attributes.add()
            kv.key = k
            set_value(kv.value, v)
    return req


def tool(name="crm.lookup", **attrs):
    return {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": name, **attrs}


def events(out):
    return [json.loads(v) for _k, v in out.records]


def test_a_tool_span_with_only_standard_attributes_gives_an_accepted_event():
    out = SpanTranslator().translate(request(tool()))
    [ev] = events(out)
    assert ev == {"schema_version": 1, "event_id": "0909090909090901", "ts": "2026-03-02T09:00:00.123456Z",
                  "agent_id": "svc", "tool": "crm.lookup", "action": "read", "resource": "tool://crm.lookup",
                  "sensitivity": "internal", "operator_id": "unknown", "bytes": 0,
                  "task_id": "0102030405060708090a0b0c0d0e0f10"}
    assert out.records[0][0] == b"svc"
    decode_event(ev)


def test_agent_task_and_event_come_from_the_genai_attributes_first():
    span = tool(**{"gen_ai.agent.id": "a-id", "gen_ai.agent.name": "a-name", "gen_ai.conversation.id": "conv",
                   "gen_ai.tool.call.id": "call_1"})
    [ev] = events(SpanTranslator().translate(request(span)))
    assert (ev["agent_id"], ev["task_id"], ev["event_id"]) == ("a-id", "conv", "call_1")
    named = tool(**{"gen_ai.agent.name": "a-name"})
    assert events(SpanTranslator().translate(request(named)))[0]["agent_id"] == "a-name"


def test_the_tool_name_falls_back_to_the_span_name_and_mcp_tools_call_spans_count():
    out = SpanTranslator().translate(request(
        {"name": "execute_tool web.search", "gen_ai.operation.name": "execute_tool"},
        {"name": "tools/call delete_file", "mcp.method.name": "tools/call", "mcp.session.id": "s1"}))
    assert [(e["tool"], e["action"]) for e in events(out)] == [("web.search", "read"), ("delete_file", "delete")]


def test_other_spans_are_ignored_and_counted():
    out = SpanTranslator().translate(request(
        {"name": "chat gpt", "gen_ai.operation.name": "chat"}, {"name": "tools/list", "mcp.method.name": "tools/list"},
        {"name": "GET /"}, tool()))
    assert (out.received, out.ignored, out.rejected, len(out.records)) == (4, 3, 0, 1)


def test_arguments_result_and_flowbreaker_attributes_reach_the_mapping(tmp_path):
    path = tmp_path / "m.toml"
    path.write_text('[[tool]]\nmatch = "send_*"\naction = "send"\n'
                    'destinations = { from = "arguments.to", prefix = "email:" }\n')
    span = tool("send_mail", **{"gen_ai.tool.call.arguments": '{"to": ["x@partner.example"]}',
                                "gen_ai.tool.call.result": "sent", "flowbreaker.sensitivity": "restricted",
                                "flowbreaker.records": 3})
    [ev] = events(SpanTranslator(load_mapping(path)).translate(request(span)))
    assert (ev["action"], ev["destinations"], ev["sensitivity"], ev["records"], ev["bytes"]) == (
        "send", ["email:x@partner.example"], "restricted", 3, 4)


def test_a_resource_attribute_is_overridden_by_the_span_s():
    out = SpanTranslator().translate(request(tool(**{"flowbreaker.operator_id": "span-team"}),
                                             resource={"service.name": "svc", "flowbreaker.operator_id": "res-team"}))
    assert events(out)[0]["operator_id"] == "span-team"


def test_a_tool_span_under_another_tool_span_names_it_as_parent_in_one_request_or_later():
    parent = tool("research", span_id=b"\1" * 8, **{"gen_ai.tool.call.id": "call-p"})
    child = tool("web.fetch", span_id=b"\2" * 8, parent=b"\1" * 8)
    together = events(SpanTranslator().translate(request(child, parent)))
    assert {e["tool"]: e.get("parent_event_id") for e in together} == {"web.fetch": "call-p", "research": None}
    t = SpanTranslator()
    t.translate(request(parent))
    assert events(t.translate(request(child)))[0]["parent_event_id"] == "call-p"


def test_one_call_traced_at_several_layers_is_one_event_whatever_the_order():
    outer = tool("search", span_id=b"\1" * 8, **{"gen_ai.agent.id": "agent-7"})
    client = {"name": "tools/call search", "mcp.method.name": "tools/call", "span_id": b"\2" * 8, "parent": b"\1" * 8}
    server = {"name": "tools/call search", "mcp.method.name": "tools/call", "span_id": b"\3" * 8, "parent": b"\2" * 8,
              "gen_ai.operation.name": "execute_tool"}
    one = SpanTranslator().translate(request(server, client, outer))
    assert [e["agent_id"] for e in events(one)] == ["agent-7"] and one.nested == 2
    for order in ([server], [client, outer]), ([client, outer], [server]), ([server], [client], [outer]):
        t = SpanTranslator()
        outs = [t.translate(request(*batch)) for batch in order]
        assert sum(len(o.records) for o in outs) == 1, order
        assert sum(o.nested for o in outs) == 2


def test_an_mcp_server_span_continuing_its_client_s_trace_is_left_to_the_client():
    server = {"name": "tools/call read_record", "mcp.method.name": "tools/call", "gen_ai.operation.name": "execute_tool",
              "gen_ai.tool.name": "read_record", "kind": 2}
    out = SpanTranslator().translate(request({**server, "parent": b"\5" * 8}))
    assert (out.nested, len(out.records)) == (1, 0)
    alone = SpanTranslator().translate(request(server))  # no traced client: the server's span is the call
    assert [e["tool"] for e in events(alone)] == ["read_record"]


@pytest.mark.parametrize("span, resource, code, reason", [
    ({"name": "execute_tool", "gen_ai.operation.name": "execute_tool"}, None, "no_tool", "no gen_ai.tool.name"),
    (tool(), {}, "no_agent", "no gen_ai.agent.id"),
    (tool(trace_id=b"\0" * 16), None, "ids", "trace_id must be 16 bytes"),
    (tool(span_id=b"\1\2"), None, "ids", "span_id 8"),
    (tool(end=0), None, "time", "no end time"),
    (tool(**{f"x{i}": "v" for i in range(MAX_ATTRIBUTES + 1)}), None, "attributes", "1003 attributes; at most 1000"),
    (tool(**{"flowbreaker.action": "erase"}), None, "event", "action: 'erase' is not one of"),
    (tool(**{"gen_ai.agent.id": "a\u200bb"}), None, "event", "agent_id: contains U+200B"),
    (tool(**{"flowbreaker.records": -4}), None, "event", "records"),
])
def test_a_bad_tool_span_is_refused_with_its_reason(span, resource, code, reason):
    out = SpanTranslator().translate(request(span, tool(name="ok", **{"gen_ai.agent.id": "ok-agent"}),
                                             resource=resource))
    assert out.refused_codes == {code: 1} and out.rejected == 1
    assert reason in out.error_message() and out.error_message().startswith("1 tool span(s) refused: span ")
    assert len(out.records) == 1  # the good span of the request goes on


def test_the_error_message_quotes_the_first_five_refusals_and_counts_the_rest():
    out = SpanTranslator().translate(request(*[tool(end=0) for _ in range(8)]))
    msg = out.error_message()
    assert out.rejected == 8 and msg.count("no end time") == 5 and msg.endswith("and 3 more")


def test_a_span_with_ten_thousand_attributes_that_is_no_tool_call_is_only_ignored():
    out = SpanTranslator().translate(request({"name": "big", **{f"k{i}": i for i in range(10_000)}}))
    assert (out.ignored, out.rejected) == (1, 0)


# ---------------------------------------------------------------------- bodies
def otlp_json(req: ExportTraceServiceRequest) -> bytes:
    data = json_format.MessageToDict(req)
    for rs in data.get("resourceSpans", []):
        for ss in rs.get("scopeSpans", []):
            for span in ss.get("spans", []):
                for k in ("traceId", "spanId", "parentSpanId"):
                    if k in span:
                        span[k] = base64.b64decode(span[k]).hex()
    return json.dumps(data).encode()


def test_otlp_json_with_hex_ids_decodes_to_the_same_request_as_protobuf():
    req = request(tool(parent=b"\7" * 8, **{"gen_ai.tool.call.arguments": '{"a": 1}', "n": 5, "f": 1.5,
                                            "arr": ["x", 2], "kv": {"k": True}}))
    assert parse_request(otlp_json(req), "application/json; charset=utf-8") == req
    assert parse_request(req.SerializeToString(), PROTOBUF) == req
    assert parse_request(gzip.compress(req.SerializeToString()), PROTOBUF, encoding="gzip") == req
    assert parse_request(zlib.compress(req.SerializeToString()), PROTOBUF, encoding="deflate") == req


def test_an_id_that_is_not_hex_refuses_the_span_not_the_request():
    data = json.loads(otlp_json(request(tool())))
    data["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["spanId"] = "not-hex!"
    out = SpanTranslator().translate(parse_request(json.dumps(data).encode(), JSON))
    assert out.refused_codes == {"ids": 1}


@pytest.mark.parametrize("body, content_type, kw, status", [
    (b"\x0a\xff\xff\xff\xff\x0f", PROTOBUF, {}, 400),
    (b"\x0a\x05\x12\x03\x0a\x01\xff", PROTOBUF, {}, 400),
    (b'{"resourceSpans": "x"}', JSON, {}, 400),
    (b"[" * 50_000, JSON, {}, 400),
    (b'{"a": "\xff"}', JSON, {}, 400),
    (b"[]", JSON, {}, 400),
    (b"not gzip", PROTOBUF, {"encoding": "gzip"}, 400),
    (gzip.compress(b"\n\0" * 1000)[:-12], PROTOBUF, {"encoding": "gzip"}, 400),
    (gzip.compress(b"\0" * 200_000), PROTOBUF, {"encoding": "gzip", "max_bytes": 100_000}, 413),
    (b"\0" * 2048, PROTOBUF, {"max_bytes": 1024}, 413),
    (zlib.compress(b"\0" * 200_000), PROTOBUF, {"encoding": "deflate", "max_bytes": 100_000}, 413),
    (b"{}", JSON, {"encoding": "br"}, 415),
    (b"{}", "text/plain", {}, 415),
    (b"{}", None, {}, 415),
], ids=["malformed-protobuf", "bad-utf8-protobuf", "wrong-json-shape", "deep-json", "bad-utf8-json", "json-array",
        "not-gzip", "truncated-gzip", "gzip-bomb", "huge-body", "deflate-bomb", "content-encoding", "content-type",
        "no-content-type"])
def test_a_body_that_is_no_trace_request_is_refused_with_its_status(body, content_type, kw, status):
    with pytest.raises(BadRequest) as err:
        parse_request(body, content_type, **kw)
    assert err.value.status == status and str(err.value)


def test_the_answer_is_an_export_response_with_the_partial_success_in_the_request_s_encoding():
    resp = ExportTraceServiceResponse.FromString(response_body(PROTOBUF, 3, "3 refused"))
    assert (resp.partial_success.rejected_spans, resp.partial_success.error_message) == (3, "3 refused")
    assert not ExportTraceServiceResponse.FromString(response_body(PROTOBUF)).HasField("partial_success")
    assert json.loads(response_body(JSON, 1, "x")) == {"partialSuccess": {"rejectedSpans": "1", "errorMessage": "x"}}


# ---------------------------------------------------------------------- hostile input, generated
any_value = st.recursive(
    st.text() | st.integers(min_value=-2**63, max_value=2**63 - 1) | st.floats() | st.booleans() | st.binary(max_size=20),
    lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=6), kids, max_size=3), max_leaves=8)
keys = st.sampled_from(["gen_ai.agent.id", "gen_ai.agent.name", "gen_ai.tool.name", "gen_ai.tool.call.id",
                        "gen_ai.conversation.id", "gen_ai.tool.call.arguments", "gen_ai.tool.call.result",
                        "flowbreaker.action", "flowbreaker.records", "flowbreaker.bytes", "flowbreaker.destinations",
                        "flowbreaker.sensitivity", "flowbreaker.resource", "enduser.id", "service.name"]) | st.text()
spans = st.fixed_dictionaries({
    "trace_id": st.binary(max_size=17), "span_id": st.binary(max_size=9), "parent": st.binary(max_size=9),
    "name": st.text(max_size=30), "end": st.integers(min_value=0, max_value=2**64 - 1),
    "gen_ai.operation.name": st.sampled_from(["execute_tool", "chat", ""])},
    optional={"mcp.method.name": st.sampled_from(["tools/call", "tools/list"])}).flatmap(
    lambda base: st.dictionaries(keys, any_value, max_size=6).map(lambda extra: {**extra, **base}))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(spans, max_size=4), st.dictionaries(keys, any_value, max_size=3))
def test_whatever_a_span_holds_translation_publishes_only_valid_events_and_counts_the_rest(span_list, resource):
    req = request(*span_list, resource=resource)
    t = SpanTranslator()
    for body in (req.SerializeToString(), otlp_json(req)):
        parsed = parse_request(body, PROTOBUF if body[:1] != b"{" else JSON)
        out = t.translate(parsed)
        assert out.received == len(span_list)
        assert out.ignored + out.rejected + len(out.records) == out.received
        for key, value in out.records:
            assert decode_event(value).agent_id.encode() == key


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400), st.sampled_from([PROTOBUF, JSON]), st.booleans())
def test_random_bytes_are_a_request_or_a_bad_request_never_a_crash(body, content_type, gzipped):
    try:
        req = parse_request(gzip.compress(body) if gzipped else body, content_type,
                            encoding="gzip" if gzipped else "identity")
    except BadRequest as err:
        assert err.status in (400, 413)
        return
    SpanTranslator().translate(req)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_a_valid_body_with_bytes_flipped_is_a_request_or_a_bad_request_never_a_crash(data):
    body = bytearray(request(tool(**{"gen_ai.tool.call.arguments": '{"to": ["a@b"]}'}), tool("x")).SerializeToString())
    for _ in range(data.draw(st.integers(1, 4))):
        body[data.draw(st.integers(0, len(body) - 1))] = data.draw(st.integers(0, 255))
    try:
        req = parse_request(bytes(body), PROTOBUF)
    except BadRequest:
        return
    out = SpanTranslator().translate(req)
    for _key, value in out.records:
        decode_event(value)


def test_the_mapping_file_examples_of_the_contract_load_and_give_accepted_events(tmp_path):
    contract = (Path(__file__).resolve().parents[2] / "docs" / "contract.md").read_text()
    section = contract[contract.index("### The tool mapping file"):]
    block = re.search(r"```toml\n(.*?)```", section, re.S).group(1)
    path = tmp_path / "mapping.toml"
    path.write_text(block)
    m = load_mapping(path)
    t = SpanTranslator(m)
    out = t.translate(request(
        tool("gmail.send", **{"gen_ai.tool.call.arguments": json.dumps({"to": ["a@x.example"], "attachments": [1, 2]})}),
        tool("hr_db.query", **{"gen_ai.tool.call.arguments": '{"table": "salaries"}',
                               "gen_ai.tool.call.result": json.dumps({"rows": [1, 2, 3]})})))
    send, read = events(out)
    assert (send["action"], send["destinations"], send["records"], send["operator_id"]) == (
        "send", ["email:a@x.example"], 2, "team-support")
    assert (read["resource"], read["records"], read["sensitivity"]) == ("hr://salaries", 3, "restricted")


def test_a_refusal_quoting_a_huge_value_is_cut_in_the_answer():
    out = SpanTranslator().translate(request(tool(**{"flowbreaker.action": "x" * 100_000})))
    assert out.rejected == 1 and len(out.error_message()) < 500 and out.error_message().endswith("...")
