"""An agent that calls MCP tools with OpenTelemetry tracing on both sides, for flowbreaker otlp's tests.

    python tests/integration/otel_mcp_agent.py AGENT_ID            # the agent: starts the traced server below over
                                                                    # stdio and calls read_record, then send_email
    python tests/integration/otel_mcp_agent.py --serve              # the traced MCP server (the tests' records server)

Both export their spans with the OpenTelemetry SDK's OTLP/HTTP exporter, configured by the standard environment
variables (``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``, ``OTEL_SERVICE_NAME``). Each tool call is then traced three
times: the agent framework's ``execute_tool`` span (written here, as a GenAI-instrumented framework would), the MCP
SDK client's span under it and, in the server's process, the MCP SDK server's ``tools/call`` span under that.
"""
from __future__ import annotations

import asyncio
import os
import sys

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

HERE = os.path.dirname(os.path.abspath(__file__))


def traced(delay_ms: int) -> TracerProvider:
    provider = TracerProvider(resource=Resource.create())
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(), schedule_delay_millis=delay_ms))
    trace.set_tracer_provider(provider)
    return provider


def serve() -> None:
    provider = traced(200)  # the server's spans go out as they end, before the agent's
    sys.path.insert(0, HERE)
    import mcp_tool_server

    try:
        mcp_tool_server.server.run("stdio")
    finally:
        provider.shutdown()


async def agent(agent_id: str) -> None:
    from mcp import Client, StdioServerParameters

    tracer = trace.get_tracer("test-agent-framework")
    params = StdioServerParameters(command=sys.executable, args=[os.path.abspath(__file__), "--serve"],
                                   env={**os.environ, "OTEL_SERVICE_NAME": "records-server"})
    async with Client(params) as client:
        for i, (tool, arguments) in enumerate([("read_record", {"record_id": "r1"}),
                                               ("send_email", {"to": "x@partner.example", "body": "hello"})]):
            with tracer.start_as_current_span(f"execute_tool {tool}", attributes={
                    "gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": tool,
                    "gen_ai.tool.call.id": f"{agent_id}-call-{i}", "gen_ai.agent.id": agent_id,
                    "gen_ai.conversation.id": "conv-mcp"}):
                result = await client.call_tool(tool, arguments)
                assert not result.is_error, result


if __name__ == "__main__":
    if sys.argv[1:] == ["--serve"]:
        serve()
    else:
        provider = traced(60_000)  # the agent's spans go out together when it ends (one batch, as usual)
        asyncio.run(agent(sys.argv[1]))
        provider.shutdown()
