"""``flowbreaker mcp-proxy``: an MCP gateway that checks every tool call and obeys freezes.

Between an MCP client (a desktop assistant, an IDE, an agent framework) and one
MCP server, for one agent: each ``tools/call`` is checked before it reaches the
server (``POST /v1/check``, and the freezes on ``agent-control``); a call that
goes through is published as an action event on ``agent-actions``; everything
else passes through untouched. Modules:

- :mod:`streams.mcp_proxy.gate`: the decision for one call (pure of I/O but for the
  check client and the guard it is given);
- :mod:`streams.mcp_proxy.relay`: one session, message by message;
- :mod:`streams.mcp_proxy.publisher`: action events onto Kafka, off the relay's path;
- :mod:`streams.mcp_proxy.serve`: the SDK transports on both sides, the HTTP listener;
- :mod:`streams.mcp_proxy.cli`: the command line.
"""
