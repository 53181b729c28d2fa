"""OTLP trace requests in, contract action events out: the part of ``flowbreaker otlp`` with no I/O.

:func:`parse_request` turns a request body (OTLP/HTTP, or a record the
Collector's Kafka exporter wrote) into an ``ExportTraceServiceRequest`` with the
classes of ``opentelemetry-proto``: protobuf (``application/x-protobuf``,
``otlp_proto``) or the OTLP JSON encoding (``application/json``, ``otlp_json``:
protobuf's JSON mapping, except that trace and span ids are hex strings, not
base64), gzip- or deflate-compressed or not, within a size bound that holds for the
decompressed body too (a gzip bomb is refused before it is inflated).
A body that cannot be decoded raises :class:`BadRequest` (HTTP 400/413/415).

:class:`SpanTranslator` maps each span of a request (docs/contract.md, "Tool
spans"):

* **tool spans** are those with ``gen_ai.operation.name = execute_tool`` (the
  GenAI conventions) or ``mcp.method.name = tools/call`` (the MCP conventions);
  every other span is *ignored* and counted;
* ``agent_id``: ``gen_ai.agent.id``, else ``gen_ai.agent.name``, else the
  resource's ``service.name``; ``task_id``: ``gen_ai.conversation.id``, else the
  trace id (hex); ``event_id``: ``gen_ai.tool.call.id``, else the span id (hex);
  ``ts``: the span's end (UTC, microseconds); ``tool``: ``gen_ai.tool.name``, else
  what follows ``execute_tool`` / ``tools/call`` in the span's name;
  ``parent_event_id``: the event id of the span's parent when the parent is a
  tool span (of this request or of one seen recently);
* everything else comes from :mod:`streams.tool_mapping` (the mapping file,
  ``flowbreaker.*`` attributes, defaults), with ``gen_ai.tool.call.arguments``
  and ``gen_ai.tool.call.result`` as the call's arguments and result and the
  resource's attributes under the span's as its attributes;
* one call traced at several layers (an agent's ``execute_tool`` span, the MCP
  client's ``tools/call`` span under it, the MCP server's span under that) is one
  action: a tool span whose parent is a tool span of the same tool is the same
  call. In one request the outermost span gives the event; across requests the
  first to arrive does, and the others are ignored (``nested``). An MCP server's
  ``tools/call`` span (kind ``SERVER``) with a parent continues a trace its client
  started: the client's side reports the call (with the agent's identity, which
  the server's spans lack), so the server's is ignored (``nested``);
* a tool span that cannot give a valid event (no tool name, no agent, bad ids,
  no end time, more than :data:`MAX_ATTRIBUTES` attributes, a mapped value the
  contract refuses) is *refused* with its reason. Nothing a span holds raises
  out of :meth:`SpanTranslator.translate`.

>>> from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
>>> req = ExportTraceServiceRequest()
>>> rs = req.resource_spans.add()
>>> kv = rs.resource.attributes.add(); kv.key = "service.name"; kv.value.string_value = "support-bot"
>>> span = rs.scope_spans.add().spans.add(trace_id=bytes(range(1, 17)), span_id=bytes(range(1, 9)),
...                                       name="execute_tool crm.lookup", end_time_unix_nano=1772442000123456789)
>>> kv = span.attributes.add(); kv.key = "gen_ai.operation.name"; kv.value.string_value = "execute_tool"
>>> out = SpanTranslator().translate(req)
>>> (out.ignored, out.refused, [k for k, _ in out.records])
(0, [], [b'support-bot'])
>>> import json; ev = json.loads(out.records[0][1])
>>> (ev["tool"], ev["action"], ev["event_id"], ev["task_id"], ev["ts"])
('crm.lookup', 'read', '0102030405060708', '0102030405060708090a0b0c0d0e0f10', '2026-03-02T09:00:00.123456Z')
"""

from __future__ import annotations

import base64
import json
import time
import zlib
from dataclasses import dataclass, field
from typing import Any

import msgspec
from google.protobuf import json_format
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from detector.events import EventError, decode_event
from streams.tool_mapping import ToolMapping, load_mapping

__all__ = ["parse_request", "SpanTranslator", "Translation", "BadRequest", "response_body", "PROTOBUF", "JSON",
           "MAX_ATTRIBUTES", "DEFAULT_MAX_BYTES", "REFUSAL_CODES", "IGNORE_REASONS"]

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
_CONTENT_TYPES = {"application/x-protobuf": PROTOBUF, "application/protobuf": PROTOBUF, "application/json": JSON}
#: a request body (compressed or not, and once decompressed) larger than this is refused (413)
DEFAULT_MAX_BYTES = 8 * 1024 * 1024
#: a span (or a resource) with more attributes than this is refused; the SDKs' default limit is 128
MAX_ATTRIBUTES = 1000
#: attribute values nested deeper than this (arrays and key-value lists) are cut there
_MAX_VALUE_DEPTH = 8
#: bounded label values of the refused-spans counter
REFUSAL_CODES = ("no_tool", "no_agent", "ids", "time", "attributes", "event")
IGNORE_REASONS = ("not_a_tool", "nested")
_REASONS_KEPT = 5  # refusal reasons quoted in a response's error_message
_REASON_CHARS = 300  # and their length
_MEMORY = 50_000   # tool spans remembered per generation (two generations) for parents and nested calls


class BadRequest(ValueError):
    """A body that is not an OTLP trace request: ``status`` is the HTTP status to answer (400, 413, 415)."""

    def __init__(self, status: int, message: str) -> None:
        self.status = status
        super().__init__(message)


def media_type(content_type: str | None) -> str:
    """The OTLP encoding named by a Content-Type header (415 for any other).

    >>> media_type("application/json; charset=utf-8"), media_type("application/x-protobuf")
    ('application/json', 'application/x-protobuf')
    """
    base = (content_type or "").split(";", 1)[0].strip().lower()
    found = _CONTENT_TYPES.get(base)
    if found is None:
        raise BadRequest(415, f"unsupported content type {base or '(none)'!r}: send {PROTOBUF} or {JSON}")
    return found


#: Content-Encoding -> zlib window bits: gzip (the OTLP specification's), and deflate (RFC 1950, the zlib format,
#: which the Python exporter's ``deflate`` compression sends)
ENCODINGS = {"gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}


def _inflate(body: bytes, encoding: str, max_bytes: int) -> bytes:
    """Inflate at most ``max_bytes``: a bomb is refused after ``max_bytes`` are produced, never inflated whole."""
    d = zlib.decompressobj(ENCODINGS[encoding])
    try:
        out = d.decompress(body, max_bytes + 1)
    except zlib.error as err:
        raise BadRequest(400, f"{encoding} body does not decompress: {err}") from None
    if len(out) > max_bytes or d.unconsumed_tail:
        raise BadRequest(413, f"decompressed body is larger than {max_bytes} bytes")
    if not d.eof:
        raise BadRequest(400, f"{encoding} body is truncated")
    return out


_HEX_FIELDS = ("traceId", "spanId", "parentSpanId", "trace_id", "span_id", "parent_span_id")


def _hex_to_b64(obj: dict) -> None:
    for name in _HEX_FIELDS:
        value = obj.get(name)
        if isinstance(value, str):
            try:
                obj[name] = base64.b64encode(bytes.fromhex(value)).decode("ascii")
            except ValueError:
                obj[name] = ""  # an id that is not hex: the span is refused ("ids"), not the whole request


def _list(obj: Any, *names: str) -> list:
    for name in names:
        value = obj.get(name) if isinstance(obj, dict) else None
        if isinstance(value, list):
            return value
    return []


def _json_request(body: bytes) -> ExportTraceServiceRequest:
    try:
        data = json.loads(body)
    except UnicodeDecodeError:
        raise BadRequest(400, "JSON body is not valid UTF-8") from None
    except RecursionError:
        raise BadRequest(400, "JSON body is nested too deeply") from None
    except ValueError as err:
        raise BadRequest(400, f"body is not JSON: {err}") from None
    if not isinstance(data, dict):
        raise BadRequest(400, "JSON body is not an ExportTraceServiceRequest object")
    # OTLP JSON writes ids as hex (the OTLP specification), protobuf's JSON mapping as base64
    for rs in _list(data, "resourceSpans", "resource_spans"):
        for ss in _list(rs, "scopeSpans", "scope_spans"):
            for span in _list(ss, "spans"):
                if isinstance(span, dict):
                    _hex_to_b64(span)
                    for link in _list(span, "links"):
                        if isinstance(link, dict):
                            _hex_to_b64(link)
    req = ExportTraceServiceRequest()
    try:
        json_format.ParseDict(data, req, ignore_unknown_fields=True)
    except (json_format.ParseError, RecursionError, TypeError, ValueError) as err:
        raise BadRequest(400, f"JSON body is not an ExportTraceServiceRequest: {str(err)[:300]}") from None
    return req


def parse_request(body: bytes, content_type: str | None, *, encoding: str = "identity",
                  max_bytes: int = DEFAULT_MAX_BYTES) -> ExportTraceServiceRequest:
    """Decode one OTLP trace export body (``encoding``: its Content-Encoding, ``identity``, ``gzip`` or
    ``deflate``); raise :class:`BadRequest` when it is not one.

    >>> parse_request(b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "0102", "name": "x"}]}]}]}',
    ...               "application/json").resource_spans[0].scope_spans[0].spans[0].trace_id
    b'\\x01\\x02'
    >>> parse_request(b"\\xff\\xff", "application/x-protobuf")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    streams.otlp.translate.BadRequest: body is not a protobuf ExportTraceServiceRequest (...Wire format was corrupt)
    """
    kind = media_type(content_type)
    if len(body) > max_bytes:
        raise BadRequest(413, f"body is larger than {max_bytes} bytes")
    if encoding in ENCODINGS:
        body = _inflate(body, encoding, max_bytes)
    elif encoding not in ("identity", ""):
        raise BadRequest(415, f"unsupported content encoding {encoding!r}: send gzip, deflate or none")
    if kind == JSON:
        return _json_request(body)
    req = ExportTraceServiceRequest()
    try:
        req.ParseFromString(body)
    except (DecodeError, RecursionError, ValueError) as err:
        raise BadRequest(400, f"body is not a protobuf ExportTraceServiceRequest ({err})") from None
    return req


def response_body(kind: str, rejected: int = 0, message: str = "") -> bytes:
    """An ``ExportTraceServiceResponse`` in the request's encoding; ``partial_success`` set when spans were
    rejected (the OTLP specification: a full success leaves it unset).

    >>> response_body(JSON, 2, "2 spans refused")
    b'{"partialSuccess":{"rejectedSpans":"2","errorMessage":"2 spans refused"}}'
    >>> response_body(JSON)
    b'{}'
    """
    resp = ExportTraceServiceResponse()
    if rejected or message:
        resp.partial_success.rejected_spans = rejected
        resp.partial_success.error_message = message
    if kind == JSON:
        return json.dumps(json_format.MessageToDict(resp), separators=(",", ":")).encode()
    return resp.SerializeToString()


def status_body(kind: str, code: int, message: str) -> bytes:
    """A ``google.rpc.Status`` in the request's encoding: the body of a 4xx/5xx answer (the OTLP specification)."""
    from google.rpc.status_pb2 import Status

    st = Status(code=code, message=message)
    if kind == JSON:
        return json.dumps(json_format.MessageToDict(st), separators=(",", ":")).encode()
    return st.SerializeToString()


# ---------------------------------------------------------------------- attribute values
def _value(v: Any, depth: int = 0) -> Any:
    kind = v.WhichOneof("value")
    if kind == "string_value":
        return v.string_value
    if kind == "int_value":
        return v.int_value
    if kind == "bool_value":
        return v.bool_value
    if kind == "double_value":
        return v.double_value
    if depth >= _MAX_VALUE_DEPTH:
        return None
    if kind == "array_value":
        return [_value(x, depth + 1) for x in v.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: _value(kv.value, depth + 1) for kv in v.kvlist_value.values}
    if kind == "bytes_value":
        return v.bytes_value
    return None


def _attributes(kvs: Any, into: dict) -> dict:
    for kv in kvs:
        v = kv.value
        text = v.string_value  # most attributes are strings: one call instead of asking the kind first
        into[kv.key] = text if text else _value(v)
    return into


def _tool_from_name(name: str) -> str:
    """The tool a span's name gives after ``execute_tool`` or ``tools/call`` (the conventions' names; the
    MCP Python SDK's client names its span ``MCP send tools/call NAME``).

    >>> [_tool_from_name(n) for n in ("execute_tool crm.lookup", "MCP send tools/call read_record", "tools/call")]
    ['crm.lookup', 'read_record', '']
    """
    for marker in ("execute_tool ", "tools/call "):
        _, found, rest = name.partition(marker)
        if found:
            return rest.strip()
    return ""


def _is_tool_span(kvs: Any) -> bool:
    for kv in kvs:
        if kv.key == "gen_ai.operation.name" and kv.value.string_value == _TOOL_OP:
            return True
        if kv.key == "mcp.method.name" and kv.value.string_value == _MCP_CALL:
            return True
    return False


_second: tuple[int, str] = (-1, "")  # the last second formatted (spans of one request end within seconds)


def _ts(ns: int) -> str:
    global _second
    secs, rem = divmod(ns, 1_000_000_000)
    last = _second
    if secs != last[0]:
        last = _second = (secs, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)))
    return f"{last[1]}.{rem // 1000:06d}Z"


@dataclass
class Translation:
    """What one request gave: ``records`` (key, value) for ``agent-actions``, in span order, and the counts."""

    records: list[tuple[bytes, bytes]] = field(default_factory=list)
    received: int = 0
    ignored: int = 0
    nested: int = 0
    refused: list[str] = field(default_factory=list)  # the first refusals' reasons (at most _REASONS_KEPT)
    refused_codes: dict[str, int] = field(default_factory=dict)
    rejected: int = 0  # tool spans refused

    def refuse(self, code: str, span: Any, reason: str) -> None:
        self.refused_codes[code] = self.refused_codes.get(code, 0) + 1
        self.rejected += 1
        if len(self.refused) < _REASONS_KEPT:
            sid = span.span_id.hex() or "(no id)"
            if len(reason) > _REASON_CHARS:  # a reason may quote a value the span sent
                reason = reason[:_REASON_CHARS] + "..."
            self.refused.append(f"span {sid} ({span.name[:64]!r}): {reason}")

    def error_message(self) -> str:
        """One line naming the first refusals (empty when none)."""
        if not self.rejected:
            return ""
        text = f"{self.rejected} tool span(s) refused: " + "; ".join(self.refused)
        more = self.rejected - len(self.refused)
        return text + (f"; and {more} more" if more else "")


class _Memory:
    """Bounded memory of recent tool spans: two generations of dicts, the older dropped when the newer fills."""

    __slots__ = ("new", "old", "size")

    def __init__(self, size: int) -> None:
        self.new: dict = {}
        self.old: dict = {}
        self.size = size

    def get(self, key: Any) -> Any:
        found = self.new.get(key)
        return self.old.get(key) if found is None else found

    def put(self, key: Any, value: Any) -> None:
        if len(self.new) >= self.size:
            self.old, self.new = self.new, {}
        self.new[key] = value


_ZERO16, _ZERO8 = bytes(16), bytes(8)
_SERVER = 2  # Span.SPAN_KIND_SERVER
_AGENT_KEYS = ("gen_ai.agent.id", "gen_ai.agent.name", "service.name")
_TOOL_OP = "execute_tool"
_MCP_CALL = "tools/call"
_encode = msgspec.json.Encoder().encode


class SpanTranslator:
    """Maps tool spans to action events (see the module docstring). Keeps a bounded memory of recent tool
    spans (parents, nested calls); otherwise each request is translated on its own."""

    def __init__(self, mapping: ToolMapping | None = None, *, memory: int = _MEMORY) -> None:
        self.mapping = mapping if mapping is not None else load_mapping(None)
        self._spans = _Memory(memory)     # (trace_id, span_id) -> (tool, event_id)
        self._children = _Memory(memory)  # (trace_id, parent span_id) -> tool of a tool span under it

    def translate(self, req: ExportTraceServiceRequest) -> Translation:
        out = Translation()
        found: list[tuple] = []   # this request's tool spans: (span, attributes, tool, trace id, span id, parent id)
        here: dict[tuple[bytes, bytes], tuple] = {}  # (trace id, span id) -> (tool, event_id, parent span id)
        for rs in req.resource_spans:
            res_kvs = rs.resource.attributes
            resource: dict | None = None
            for ss in rs.scope_spans:
                for span in ss.spans:
                    out.received += 1
                    kvs = span.attributes
                    if len(kvs) > MAX_ATTRIBUTES or len(res_kvs) > MAX_ATTRIBUTES:
                        if _is_tool_span(kvs):  # a tool span too large to map; any other span: ignored
                            out.refuse("attributes", span, f"{max(len(kvs), len(res_kvs))} attributes; at most "
                                                           f"{MAX_ATTRIBUTES} are accepted")
                        else:
                            out.ignored += 1
                        continue
                    own = _attributes(kvs, {})
                    if own.get("gen_ai.operation.name") != _TOOL_OP and own.get("mcp.method.name") != _MCP_CALL:
                        out.ignored += 1
                        continue
                    if span.kind == _SERVER and span.parent_span_id and own.get("mcp.method.name") == _MCP_CALL:
                        out.nested += 1  # an MCP server's side of a call its traced client reports
                        out.ignored += 1
                        continue
                    if resource is None:
                        resource = _attributes(res_kvs, {})
                    attrs = {**resource, **own} if resource else own
                    tool = attrs.get("gen_ai.tool.name")
                    if not isinstance(tool, str) or not tool:
                        tool = _tool_from_name(span.name)
                    if not tool:
                        out.refuse("no_tool", span, "no gen_ai.tool.name and no tool in the span's name")
                        continue
                    tid, sid = span.trace_id, span.span_id
                    if len(tid) != 16 or tid == _ZERO16 or len(sid) != 8 or sid == _ZERO8:
                        out.refuse("ids", span, "trace_id must be 16 bytes and span_id 8, not all zero")
                        continue
                    pid = span.parent_span_id
                    found.append((span, attrs, tool, tid, sid, pid))
                    here[(tid, sid)] = (tool, self._event_id(sid, attrs), pid)
        layered = self._layered(found, here) if found else ()
        for item in found:
            if (item[3], item[4]) in layered:
                out.nested += 1
                out.ignored += 1
                continue
            self._one(out, item, here)
        for _span, _attrs, tool, tid, sid, pid in found:  # remembered for the requests to come, duplicates too
            self._spans.put((tid, sid), here[(tid, sid)][:2])
            if pid:
                self._children.put((tid, pid), tool)
        return out

    @staticmethod
    def _event_id(span_id: bytes, attrs: dict) -> str:
        call_id = attrs.get("gen_ai.tool.call.id")
        return call_id if isinstance(call_id, str) and call_id else span_id.hex()

    def _layered(self, found: list, here: dict) -> set:
        """The tool spans of this request that are a call already given by another span: each chain of
        same-tool spans (parent and child) keeps its outermost member, unless a member is linked to a
        same-tool span of an earlier request, which gave the event then."""
        out: set = set()
        chains: dict[tuple[bytes, bytes], list] = {}
        for _span, _attrs, tool, tid, sid, pid in found:
            chains.setdefault(self._root(tool, tid, sid, pid, here), []).append((tool, tid, sid, pid))
        spans, children = self._spans, self._children
        for root, members in chains.items():
            earlier = False
            for tool, tid, sid, pid in members:
                known = spans.get((tid, pid)) if pid else None
                if known is not None and known[0] == tool or children.get((tid, sid)) == tool:
                    earlier = True
                    break
            for _tool, tid, sid, _pid in members:
                if earlier or (tid, sid) != root:
                    out.add((tid, sid))
        return out

    @staticmethod
    def _root(tool: str, tid: bytes, sid: bytes, pid: bytes, here: dict) -> tuple[bytes, bytes]:
        """The outermost span of this request reached from a span through parents of the same tool."""
        key, hops = (tid, sid), 0
        while pid and hops <= len(here):  # bounded: ids come from outside and may form a cycle
            known = here.get((tid, pid))
            if known is None or known[0] != tool:
                break
            key = (tid, pid)
            pid = known[2]
            hops += 1
        return key

    def _one(self, out: Translation, item: tuple, here: dict) -> None:
        span, attrs, tool, trace_id, span_id, parent = item
        parent_event_id = None
        if parent:  # a tool span of another tool (one of the same tool made this span a layer, above)
            known = here.get((trace_id, parent)) or self._spans.get((trace_id, parent))
            if known is not None:
                parent_event_id = known[1]
        for key in _AGENT_KEYS:
            agent = attrs.get(key)
            if isinstance(agent, str) and agent:
                break
        else:
            out.refuse("no_agent", span, "no gen_ai.agent.id, gen_ai.agent.name or service.name")
            return
        end = span.end_time_unix_nano
        if not end:
            out.refuse("time", span, "the span has no end time")
            return
        conversation = attrs.get("gen_ai.conversation.id")
        task_id = conversation if isinstance(conversation, str) and conversation else trace_id.hex()
        try:
            ev = self.mapping.event_for(tool=tool, agent_id=agent, task_id=task_id,
                                        event_id=here[(trace_id, span_id)][1], ts=_ts(end),
                                        arguments=attrs.get("gen_ai.tool.call.arguments"),
                                        result=attrs.get("gen_ai.tool.call.result"), attributes=attrs,
                                        parent_event_id=parent_event_id)
            checked = decode_event(ev)
        except EventError as err:
            out.refuse("event", span, str(err))
            return
        except (OverflowError, ValueError, OSError) as err:  # a timestamp beyond what the platform formats
            out.refuse("time", span, str(err)[:200])
            return
        out.records.append((checked.agent_id.encode("utf-8"), _encode(ev)))
