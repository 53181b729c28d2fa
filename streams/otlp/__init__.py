"""``flowbreaker otlp``: OpenTelemetry tool spans in, contract action events on ``agent-actions`` out.

- :mod:`streams.otlp.translate`: OTLP bodies (protobuf, JSON, gzip) to requests, tool spans to events (no I/O);
- :mod:`streams.otlp.receiver`: OTLP/HTTP ``POST /v1/traces``, the Collector's Kafka records, publishing;
- :mod:`streams.otlp.metrics`: its Prometheus counters;
- ``streams/cli/otlp.py``: the command line. The fields the conventions do not carry come from
  :mod:`streams.tool_mapping` (shared with ``flowbreaker mcp-proxy``).
"""
