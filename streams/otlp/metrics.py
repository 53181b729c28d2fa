"""Prometheus metrics of ``flowbreaker otlp``, on an injectable registry (a fresh one per test).

Labels are bounded: ``transport`` (``http``, ``kafka``), ``outcome`` (below), the
refusal ``code`` (:data:`streams.otlp.translate.REFUSAL_CODES`) and the ignore
``reason`` (:data:`streams.otlp.translate.IGNORE_REASONS`).

>>> from prometheus_client import CollectorRegistry
>>> reg = CollectorRegistry()
>>> m = OtlpMetrics(reg)
>>> m.spans_received.labels("http").inc(3)
>>> reg.get_sample_value("flowbreaker_otlp_spans_received_total", {"transport": "http"})
3.0
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

from streams.otlp.translate import IGNORE_REASONS, REFUSAL_CODES

__all__ = ["OtlpMetrics", "OUTCOMES"]

#: what became of a request (an HTTP POST or a record of --from-topic)
OUTCOMES = ("ok", "partial", "bad_request", "too_large", "unsupported", "unavailable")


class OtlpMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.requests = Counter("flowbreaker_otlp_requests_total",
                                "OTLP trace export requests (HTTP POSTs, topic records) by what became of them",
                                ["transport", "outcome"], registry=registry)
        self.spans_received = Counter("flowbreaker_otlp_spans_received_total", "spans received",
                                      ["transport"], registry=registry)
        self.spans_ignored = Counter("flowbreaker_otlp_spans_ignored_total",
                                     "spans that are not tool calls (not_a_tool) or a call already seen at another "
                                     "layer of the trace (nested)", ["reason"], registry=registry)
        self.spans_refused = Counter("flowbreaker_otlp_spans_refused_total",
                                     "tool spans refused (rejected_spans in the answer), by reason",
                                     ["code"], registry=registry)
        self.events_published = Counter("flowbreaker_otlp_events_published_total",
                                        "action events published on agent-actions", registry=registry)
        self.request_seconds = Histogram("flowbreaker_otlp_request_seconds",
                                         "time from a request's arrival to its answer (events on the broker)",
                                         ["transport"], registry=registry,
                                         buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5))
        for t in ("http", "kafka"):
            self.spans_received.labels(t)
            for o in OUTCOMES:
                self.requests.labels(t, o)
        for r in IGNORE_REASONS:
            self.spans_ignored.labels(r)
        for c in REFUSAL_CODES:
            self.spans_refused.labels(c)

    def count(self, transport: str, translation) -> None:
        """Count what one translated request held (:class:`streams.otlp.translate.Translation`)."""
        self.spans_received.labels(transport).inc(translation.received)
        if translation.ignored - translation.nested:
            self.spans_ignored.labels("not_a_tool").inc(translation.ignored - translation.nested)
        if translation.nested:
            self.spans_ignored.labels("nested").inc(translation.nested)
        for code, n in translation.refused_codes.items():
            self.spans_refused.labels(code).inc(n)
