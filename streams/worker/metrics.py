"""Prometheus metrics of a flowbreaker worker: one module, one injectable registry.

A worker builds one :class:`Metrics`, calls :meth:`Metrics.observe` once per
decided event and the small methods below for everything else, and serves
:meth:`Metrics.render` on ``/metrics``. Tests build one per test with a fresh
``CollectorRegistry``; without an argument a private registry is created (never
the process-global one), so two instances never clash.

Every metric, its labels and how its cardinality is bounded
-------------------------------------------------------------
Per-event (hot path, plain Python counters exported by a custom collector):

``flowbreaker_actions_total{action, sensitivity}``
    Valid actions scored. ``action`` in read|write|delete|send|exec,
    ``sensitivity`` in public|internal|confidential|restricted; any other value
    becomes ``other``. At most 6 x 5 series, all present from the start at 0.
``flowbreaker_decisions_total{severity, action_taken}``
    Decisions by severity (ok|low|medium|high|critical) and what the breaker did
    (none|alert|freeze); unknown values -> ``other``. At most 6 x 4 series.
``flowbreaker_decision_score`` (histogram, unitless, 0..1)
    Score distribution; buckets 0.1 .. 0.9, 0.95, 0.99, 1.
``flowbreaker_processing_latency_seconds`` (histogram)
    Event time (``ts``) to decision, as measured by the caller; negative values
    (agent clock ahead) count as 0. Buckets 1 ms .. 5 min.
``flowbreaker_records_total{sensitivity, dest_class}``,
``flowbreaker_bytes_total{sensitivity, dest_class}``
    Records and bytes carried, by the event's sensitivity and each destination
    class it reached: ``internal``, ``external``, ``broadcast``, or ``none`` for an
    action without destinations. An event reaching two classes counts once in
    each (volume per class, never multiplied by the number of recipients).
    At most 5 x 4 series each.
``flowbreaker_destinations_total{dest_class}``
    Destinations addressed, one per destination (fan-out). 3 series.
``flowbreaker_event_destinations`` (histogram, unitless)
    Destinations per event, for events with at least one (fan-out shape).

Rare paths (prometheus_client metrics, labelled children cached):

``flowbreaker_alerts_total{severity, feature}``
    Decisions whose ``action_taken`` is ``alert`` or ``freeze``, by severity and
    leading reason feature (``none`` if no reason). Feature names come from the
    engine's fixed set; after 50 distinct names any new one is ``other``, and
    names are cut to 64 characters. At most 6 x 52 series. A series appears at
    its first alert, so ``rate``/``increase`` miss the alerts before its first
    scrape: count alerts with ``flowbreaker_decisions_total{action_taken=~"alert|freeze"}``
    (every series there from the start) and use this one for the breakdown by feature.
``flowbreaker_freezes_total{severity}``
    Freeze commands issued (one per incident). 6 series.
``flowbreaker_releases_total``
    Releases of frozen agents (human or TTL).
``flowbreaker_breaker_transitions_total{from_state, to_state}``
    Circuit-breaker transitions; states closed|open|half_open, else ``other``.
    At most 16 series.
``flowbreaker_dlq_events_total{code}``
    Invalid events sent to the dead-letter topic, by ``EventError.code`` (not_json,
    not_object, missing, type, enum, range, length, timestamp, encoding, depth,
    character; ``internal`` when decoding failed in an unexpected way; unknown
    codes -> ``other``). 13 series, all present from the start.
``flowbreaker_miskeyed_events_total{reason, outcome}``
    Events on ``agent-actions`` not keyed as the contract says: ``reason`` is
    ``no_key``, ``wrong_key`` (the key is not the event's ``agent_id``) or
    ``wrong_partition`` (right key, but not on the partition Kafka's default
    murmur2 partitioner gives it); ``outcome`` is ``rerouted`` (copied to the
    agent's partition and decided there) or ``decided`` (already on the agent's
    partition). 6 series, all present from the start.
``flowbreaker_duplicates_total``
    Repeated ``event_id`` values, scored once and otherwise skipped.
``flowbreaker_agents_frozen``
    Agents this worker currently holds frozen (breaker ``open``), uncapped count.
``flowbreaker_episodes_total{event}``
    Alert episodes (``detector/episodes.py``) this worker's agents opened (``event="opened"``: the
    first record of an episode) and closed (``closed``); ``changed`` counts the records in between.
    3 series, all present from the start. The SOC counts episodes, not alerted actions.
``flowbreaker_episodes_open``
    Alert episodes open now in the whole fleet, as the API's index of ``agent-alerts`` sees them
    (every worker reads the whole topic: take ``max``, not ``sum``, over workers).
``flowbreaker_verdicts_applied_total{verdict}``
    Analysts' verdicts (``benign``, ``confirmed``) this worker applied to agents it holds. 2 series.
``flowbreaker_verdicts_rejected_total{reason}``
    Records on ``agent-verdicts`` not applied: not JSON, invalid, unsigned or a signature that does not
    verify (``streams.verdicts.REJECTIONS``, 6 series, all present from the start). Every worker reads
    every verdict, so each counts a forged one.
``flowbreaker_consumer_lag{partition}``
    Messages behind the end of ``agent-actions``, per assigned partition: bounded
    by the topic's partition count; :meth:`Metrics.set_assignment` removes
    partitions the worker no longer owns.
``flowbreaker_assigned_partitions``
    Partitions of ``agent-actions`` this worker owns.
``flowbreaker_model_info{version, trained_at}``
    The model in use (one series, replaced on reload).
``flowbreaker_model_trained_timestamp_seconds``
    When that model was trained (Unix time); NaN when unknown, so a stale-model
    alert cannot fire on a missing value.
``flowbreaker_worker_info{version, worker}``
    Always 1 while the worker answers: ``count(flowbreaker_worker_info)`` is the
    number of live workers.
``process_*``, ``python_info``
    prometheus_client's process and platform collectors (``process_metrics=True``).

Intended-use manifests (``detector/manifest.py``):

``flowbreaker_scope_violations_total{where, clause, on_violation}``
    Clauses of their manifests that actions broke: ``where`` is ``stream`` (decided
    events) or ``check`` (``/v1/check``), ``clause`` one of the ten of
    ``detector.manifest.VIOLATION_CLAUSES``, ``on_violation`` ``needs_approval`` or
    ``deny``. 40 series, all present from the start.
``flowbreaker_manifests_loaded``
    Manifests (agents and roles) in force on this worker.
``flowbreaker_manifest_records_skipped_total``
    Records of ``agent-manifests`` that did not parse or were not their key's manifest.

Drills (``flowbreaker drill``, ``detector/drill.py``): decisions on drill agents are
counted here only, never in the counters above, the per-agent gauges or ``AgentFrozen``:

``flowbreaker_drill_decisions_total{action_taken}``
    Decisions on drill agents' events (none|alert|freeze).
``flowbreaker_drill_agent_frozen{agent_id}``
    1 for each drill agent this worker holds frozen (at most 10 drill agents listed);
    the ``DrillAgentFrozen`` alert, which a drill times, fires on it.
``flowbreaker_drill_last_run_timestamp_seconds``, ``flowbreaker_drill_last_success``
    When the last drill finished (Unix time) and whether it passed (1/0); NaN before
    the first one, so ``DrillStale`` and ``DrillFailed`` arm with the first drill.
``flowbreaker_drill_step_seconds{step}``
    The last drill's time per step (``streams.cli.drill.STEPS``, 9 series); NaN for a step
    that failed to happen or was skipped.

Bounded per-agent gauges (the only metrics with an ``agent_id`` label),
recomputed by :meth:`Metrics.refresh_topk` (which :meth:`Metrics.render` calls),
label sets that fall out are removed:

``flowbreaker_agent_risk_score{agent_id}``
    The ``top_k`` riskiest agents now, plus the listed frozen agents: an
    agent's risk is the highest score it had, decaying by half every
    ``risk_half_life`` seconds without a higher one; a frozen agent's risk is
    held until it is released. At most ``top_k + max_frozen`` series.
``flowbreaker_agent_frozen{agent_id, incident_id}``
    1 for each frozen agent, the ``max_frozen`` longest-frozen ones
    (``flowbreaker_agents_frozen`` has the full count). ``incident_id`` is empty
    when unknown.
``flowbreaker_agent_breaker_state{agent_id}``
    0 closed, 1 half_open, 2 open, for the agents of the two gauges above: at
    most ``top_k + max_frozen`` series. Its ``agent_id`` values are the agents
    a drill-down can show.
``flowbreaker_agent_feature_value{agent_id, feature}``,
``flowbreaker_agent_feature_baseline{agent_id, feature}``
    For the agents of ``flowbreaker_agent_risk_score``, the value and baseline
    of the (at most 3) leading reasons of their latest flagged decision, where
    numeric. At most ``3 * (top_k + max_frozen)`` series each.

Memory for the risk ranking is one float per agent with a recent score above
0.01, capped at ``max_tracked`` agents after each refresh.

Wiring (one ``Metrics`` per worker process)
-------------------------------------------
- after ``Engine.process``: ``duplicate()`` for a duplicate, else
  ``observe(event, decision, latency)`` with latency = now - event time;
- a DLQ'd event: ``dlq(err.code)``;
- on (re)assignment: ``set_assignment(partitions)``, then ``set_frozen(...)``
  from the recovered per-agent state; periodically ``set_lag(partition, lag)``;
- on model load or reload: ``set_model(version, trained_at)``; at start
  ``set_worker(worker_id)``; on a processed release: ``release(agent_id)``;
- ``GET /metrics``: ``render()`` with content type ``CONTENT_TYPE``. It calls
  ``refresh_topk()``; call that on a timer too if nothing scrapes often.

Threading: the hot path uses plain Python counters without locks. faust runs
agents and web handlers on one event loop thread, so ``observe`` and ``render``
never overlap; a scrape from another thread may see one event half-counted,
never a corrupt value.

Example:

>>> from prometheus_client import CollectorRegistry
>>> m = Metrics(CollectorRegistry(), process_metrics=False)
>>> m.dlq("range")
>>> m.registry.get_sample_value("flowbreaker_dlq_events_total", {"code": "range"})
1.0
"""

from __future__ import annotations

import heapq
import math
import time
from bisect import bisect_left
from itertools import islice, product
from operator import itemgetter
from typing import Any, Iterable, Mapping

from prometheus_client import (
    CONTENT_TYPE_LATEST as CONTENT_TYPE,
    CollectorRegistry,
    Counter,
    Gauge,
    Info,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily
from prometheus_client.utils import floatToGoString

from detector.drill import DRILL_PREFIX
from detector.timestamps import instant_or_none
from detector.manifest import ON_VIOLATION, VIOLATION_CLAUSES

__all__ = ["Metrics", "CONTENT_TYPE"]

OTHER = "other"
ACTIONS = ("read", "write", "delete", "send", "exec")
SENSITIVITIES = ("public", "internal", "confidential", "restricted")
SEVERITIES = ("ok", "low", "medium", "high", "critical")
ACTIONS_TAKEN = ("none", "alert", "freeze")
BREAKER_STATES = ("closed", "half_open", "open")
DEST_CLASSES = ("internal", "external", "broadcast")
VOLUME_CLASSES = ("none",) + DEST_CLASSES
DLQ_CODES = (
    "not_json", "not_object", "missing", "type", "enum",
    "range", "length", "timestamp", "encoding", "depth", "character", "internal",
)
MISKEYED_REASONS = ("no_key", "wrong_key", "wrong_partition")
EPISODE_EVENTS = ("opened", "changed", "closed")
VERDICT_KINDS = ("benign", "confirmed")
#: streams.verdicts.REJECTIONS (metrics must not import the shell's clients)
VERDICT_REJECTIONS = ("not_json", "invalid", "unsigned", "malformed_signature", "unknown_key", "bad_signature")
MISKEYED_OUTCOMES = ("rerouted", "decided")
BREAKER_STATE_VALUE = {"closed": 0.0, "half_open": 1.0, "open": 2.0}

SCORE_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0)
LATENCY_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
)
FANOUT_BUCKETS = (1, 2, 5, 10, 25, 50, 100, 250, 1000, 10000)

MAX_FEATURES = 50
MAX_DRILL_AGENTS = 10
#: the steps of ``flowbreaker drill`` (streams/cli/drill.py STEPS; metrics must not import the CLI)
DRILL_STEPS = ("decision", "freeze_command", "guard_ack", "actuator_webhook", "alert", "release",
               "release_guard_ack", "release_actuator", "probation")
MAX_FEATURE_CHARS = 64
REASONS_PER_AGENT = 3
RISK_FLOOR = 0.01
# Raw label keys remembered by the hot path's lookup cache; values outside the
# known enums (which validation should have rejected) beyond this take the
# slow path every time instead of growing the cache.
_MAX_RAW_KEYS = 1024


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("flowbreaker")
    except Exception:  # not installed (running from a checkout): still export something
        return "unknown"


class _Counts:
    """Counters keyed by a tuple of bounded label values.

    Each label tuple owns a cell, a list of ``width`` floats the hot path adds
    to in place. ``cells`` maps raw keys (as they come from events) to cells;
    a miss goes through :meth:`cell`, which maps unknown values to ``other``.
    """

    __slots__ = ("allowed", "width", "cells", "by_labels")

    def __init__(self, allowed: tuple[tuple[str, ...], ...], width: int = 1, prefill: bool = True):
        self.allowed = tuple(frozenset(a) for a in allowed)
        self.width = width
        self.cells: dict[tuple, list[float]] = {}
        self.by_labels: dict[tuple[str, ...], list[float]] = {}
        if prefill:
            for combo in product(*allowed):
                self.cells[combo] = self.by_labels[combo] = [0.0] * width

    def cell(self, key: tuple) -> list[float]:
        labels = tuple(v if v in ok else OTHER for v, ok in zip(key, self.allowed))
        found = self.by_labels.get(labels)
        if found is None:
            found = self.by_labels[labels] = [0.0] * self.width
        if len(self.cells) < _MAX_RAW_KEYS:
            self.cells[key] = found
        return found

    def samples(self, index: int = 0) -> list[tuple[tuple[str, ...], float]]:
        return [(labels, cell[index]) for labels, cell in list(self.by_labels.items())]


class _Histogram:
    """Bucket counts for ``le`` upper bounds; slot ``len(bounds)`` is +Inf."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: Iterable[float]):
        self.bounds = [float(b) for b in bounds]
        self.counts = [0] * (len(self.bounds) + 1)
        self.sum = 0.0

    def family(self, name: str, documentation: str) -> HistogramMetricFamily:
        counts = list(self.counts)
        buckets, total = [], 0
        for bound, n in zip(self.bounds + [math.inf], counts):
            total += n
            buckets.append((floatToGoString(bound), total))
        return HistogramMetricFamily(name, documentation, buckets=buckets, sum_value=self.sum)


class _HotCollector:
    """Exports the hot-path counters of one :class:`Metrics` at scrape time."""

    def __init__(self, m: "Metrics"):
        self._m = m

    def describe(self):
        # names only, so the registry can detect clashes without a full collect
        return [
            CounterMetricFamily("flowbreaker_actions_total", "", labels=("action", "sensitivity")),
            CounterMetricFamily("flowbreaker_decisions_total", "", labels=("severity", "action_taken")),
            CounterMetricFamily("flowbreaker_records_total", "", labels=("sensitivity", "dest_class")),
            CounterMetricFamily("flowbreaker_bytes_total", "", labels=("sensitivity", "dest_class")),
            CounterMetricFamily("flowbreaker_destinations_total", "", labels=("dest_class",)),
            HistogramMetricFamily("flowbreaker_decision_score", ""),
            HistogramMetricFamily("flowbreaker_processing_latency_seconds", ""),
            HistogramMetricFamily("flowbreaker_event_destinations", ""),
        ]

    def collect(self):
        m = self._m
        yield _counter(
            "flowbreaker_actions_total",
            "Valid agent actions scored, by action and data sensitivity.",
            ("action", "sensitivity"), m._actions.samples(),
        )
        yield _counter(
            "flowbreaker_decisions_total",
            "Decisions by severity and what the circuit breaker did.",
            ("severity", "action_taken"), m._decisions.samples(),
        )
        yield _counter(
            "flowbreaker_records_total",
            "Records carried by actions, by sensitivity and destination class reached "
            "(none = no destination).",
            ("sensitivity", "dest_class"), m._volume.samples(0),
        )
        yield _counter(
            "flowbreaker_bytes_total",
            "Bytes carried by actions, by sensitivity and destination class reached "
            "(none = no destination).",
            ("sensitivity", "dest_class"), m._volume.samples(1),
        )
        yield _counter(
            "flowbreaker_destinations_total",
            "Destinations addressed by actions (fan-out), by destination class.",
            ("dest_class",), m._dests.samples(),
        )
        yield m._score.family(
            "flowbreaker_decision_score",
            "Anomaly score of each decision, 0 (normal) to 1 (most anomalous).",
        )
        yield m._latency.family(
            "flowbreaker_processing_latency_seconds",
            "Time from the action's event time to its decision.",
        )
        yield m._fanout.family(
            "flowbreaker_event_destinations",
            "Number of destinations per action that has destinations.",
        )


def _counter(name, documentation, labelnames, samples) -> CounterMetricFamily:
    family = CounterMetricFamily(name, documentation, labels=labelnames)
    for labels, value in samples:
        family.add_metric(labels, value)
    return family


def _parse_timestamp(text: str | None) -> float:
    t = instant_or_none(str(text) if text else None, assume_utc=True)  # a card without offset: UTC
    return math.nan if t is None else t


def _number(x: Any) -> float | None:
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return None
    x = float(x)
    return x if math.isfinite(x) else None


class Metrics:
    """The metrics of one worker, in ``registry`` (a fresh private one if None).

    Parameters beyond the registry bound the per-agent gauges: ``top_k``
    riskiest agents, ``max_frozen`` frozen agents listed, ``max_tracked`` agents
    remembered for the ranking, ``risk_half_life`` seconds of risk decay.
    ``process_metrics`` adds prometheus_client's process and platform
    collectors. ``clock`` (monotonic seconds) is injectable for tests.

    Fails with ``ValueError`` from prometheus_client if ``registry`` already
    holds flowbreaker metrics (one ``Metrics`` per registry).
    """

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        top_k: int = 20,
        max_frozen: int = 100,
        max_tracked: int = 10_000,
        risk_half_life: float = 300.0,
        process_metrics: bool = True,
        clock=time.monotonic,
    ):
        if top_k < 1 or max_frozen < 1 or max_tracked < top_k:
            raise ValueError("need top_k >= 1, max_frozen >= 1 and max_tracked >= top_k")
        # `_created` series double the series count for no use on these dashboards
        disable_created_metrics()
        self.registry = CollectorRegistry() if registry is None else registry
        self.top_k = top_k
        self.max_frozen = max_frozen
        self.max_tracked = max_tracked
        self.risk_half_life = float(risk_half_life)
        self._clock = clock
        self._last_refresh = clock()
        reg = self.registry

        # hot path accumulators
        self._actions = _Counts((ACTIONS, SENSITIVITIES))
        self._decisions = _Counts((SEVERITIES, ACTIONS_TAKEN))
        self._volume = _Counts((SENSITIVITIES, VOLUME_CLASSES), width=2)
        self._dests = _Counts((DEST_CLASSES,))
        self._score = _Histogram(SCORE_BUCKETS)
        self._latency = _Histogram(LATENCY_BUCKETS)
        self._fanout = _Histogram(FANOUT_BUCKETS)
        reg.register(_HotCollector(self))

        # per-agent working state, bounded as the module docstring says
        self._window: dict[str, float] = {}   # peak score since the last refresh
        self._risk: dict[str, float] = {}     # decayed risk, pruned at refresh
        self._reasons: dict[str, list] = {}   # latest non-empty reasons
        self._frozen: dict[str, str] = {}     # agent -> incident id, oldest first
        self._breaker: dict[str, str] = {}    # agents not closed -> state
        self._features: set[str] = set()

        self._alerts = Counter(
            "flowbreaker_alerts_total",
            "Alerts and freezes raised, by severity and leading reason feature.",
            ("severity", "feature"), registry=reg,
        )
        self._alert_children: dict[tuple[str, str], Any] = {}
        self._freezes = Counter(
            "flowbreaker_freezes_total", "Agents frozen by the circuit breaker, by severity.",
            ("severity",), registry=reg,
        )
        self._freeze_children = {s: self._freezes.labels(s) for s in SEVERITIES}
        self._releases = Counter(
            "flowbreaker_releases_total", "Frozen agents released.", registry=reg,
        )
        self._transitions = Counter(
            "flowbreaker_breaker_transitions_total", "Circuit-breaker state transitions.",
            ("from_state", "to_state"), registry=reg,
        )
        for a, b in product(BREAKER_STATES, BREAKER_STATES):
            if a != b:
                self._transitions.labels(a, b)
        self._dlq = Counter(
            "flowbreaker_dlq_events_total",
            "Invalid events sent to the dead-letter topic, by reason code.",
            ("code",), registry=reg,
        )
        self._dlq_children = {c: self._dlq.labels(c) for c in DLQ_CODES + (OTHER,)}
        self._duplicates = Counter(
            "flowbreaker_duplicates_total", "Repeated event ids, scored once and skipped.",
            registry=reg,
        )
        self._miskeyed = Counter(
            "flowbreaker_miskeyed_events_total",
            "Events on agent-actions without their agent_id as key, or off their agent's partition.",
            ("reason", "outcome"), registry=reg,
        )
        self._miskeyed_children = {
            (r, o): self._miskeyed.labels(r, o) for r in MISKEYED_REASONS for o in MISKEYED_OUTCOMES
        }
        self._frozen_count = Gauge(
            "flowbreaker_agents_frozen", "Agents currently frozen on this worker.", registry=reg,
        )
        self._episodes = Counter(
            "flowbreaker_episodes_total", "Alert episodes opened and closed (and records in between).",
            ("event",), registry=reg,
        )
        self._episode_children = {e: self._episodes.labels(e) for e in EPISODE_EVENTS}
        self._episodes_open = Gauge(
            "flowbreaker_episodes_open", "Alert episodes open now in the fleet (agent-alerts, as this worker "
            "reads it).", registry=reg,
        )
        self._verdicts = Counter(
            "flowbreaker_verdicts_applied_total", "Analysts' verdicts applied to this worker's agents.",
            ("verdict",), registry=reg,
        )
        self._verdict_children = {v: self._verdicts.labels(v) for v in VERDICT_KINDS}
        self._verdicts_rejected = Counter(
            "flowbreaker_verdicts_rejected_total", "Records on agent-verdicts not applied, by reason.",
            ("reason",), registry=reg,
        )
        self._verdict_rejected_children = {r: self._verdicts_rejected.labels(r) for r in VERDICT_REJECTIONS}
        self._frozen_count.set_function(lambda: len(self._frozen))
        self._lag = Gauge(
            "flowbreaker_consumer_lag",
            "Messages behind the end of agent-actions, per assigned partition.",
            ("partition",), registry=reg,
        )
        self._lag_children: dict[int, Any] = {}
        self._assigned = Gauge(
            "flowbreaker_assigned_partitions", "Partitions of agent-actions owned by this worker.",
            registry=reg,
        )
        self._model = Info("flowbreaker_model", "Baseline model in use.", registry=reg)
        self._model.info({"version": "none", "trained_at": ""})
        self._model_trained = Gauge(
            "flowbreaker_model_trained_timestamp_seconds",
            "When the model in use was trained (Unix time; NaN if unknown).",
            registry=reg,
        )
        self._model_trained.set(math.nan)
        self._drift = Gauge(
            "flowbreaker_model_drift_psi",
            "Population stability index of each feature: live traffic (decayed, about the last hour of "
            "events) against the model's training data. Above 0.25: the model is going stale.",
            ["feature"], registry=reg,  # bounded: the engine's fixed feature names
        )
        self._worker = Info("flowbreaker_worker", "A live flowbreaker worker.", registry=reg)
        self._version = _version()
        self._worker.info({"version": self._version, "worker": ""})

        self._risk_gauge = Gauge(
            "flowbreaker_agent_risk_score",
            "Recent peak anomaly score of the top-K riskiest agents and of frozen agents "
            "(decays by half every risk half-life unless frozen).", ("agent_id",), registry=reg,
        )
        self._frozen_gauge = Gauge(
            "flowbreaker_agent_frozen", "1 for each frozen agent (capped list).",
            ("agent_id", "incident_id"), registry=reg,
        )
        self._state_gauge = Gauge(
            "flowbreaker_agent_breaker_state",
            "Breaker state of listed agents: 0 closed, 1 half_open, 2 open.",
            ("agent_id",), registry=reg,
        )
        self._value_gauge = Gauge(
            "flowbreaker_agent_feature_value",
            "Value of a leading reason feature of a listed agent's latest flagged decision.",
            ("agent_id", "feature"), registry=reg,
        )
        self._baseline_gauge = Gauge(
            "flowbreaker_agent_feature_baseline",
            "Baseline of a leading reason feature of a listed agent's latest flagged decision.",
            ("agent_id", "feature"), registry=reg,
        )
        # label tuples currently exported by each per-agent gauge
        self._exposed: dict[int, set[tuple[str, ...]]] = {
            id(g): set() for g in (
                self._risk_gauge, self._frozen_gauge, self._state_gauge,
                self._value_gauge, self._baseline_gauge,
            )
        }

        self._scope = Counter(
            "flowbreaker_scope_violations_total",
            "Clauses of intended-use manifests broken, where (stream or check), by clause and what it asks.",
            ("where", "clause", "on_violation"), registry=reg,
        )
        self._scope_children = {k: self._scope.labels(*k)
                                for k in product(("stream", "check"), VIOLATION_CLAUSES, ON_VIOLATION)}
        self._manifests = Gauge("flowbreaker_manifests_loaded", "Intended-use manifests in force on this worker.",
                                registry=reg)
        self._manifest_skipped = Counter("flowbreaker_manifest_records_skipped_total",
                                         "agent-manifests records skipped (not a valid manifest for its key).",
                                         registry=reg)
        self._drill_decisions = Counter("flowbreaker_drill_decisions_total",
                                        "Decisions on drill agents' events (kept out of every other count).",
                                        ("action_taken",), registry=reg)
        self._drill_children = {a: self._drill_decisions.labels(a) for a in ACTIONS_TAKEN + (OTHER,)}
        self._drill_frozen: dict[str, int] = {}
        self._drill_frozen_gauge = Gauge("flowbreaker_drill_agent_frozen",
                                         "1 for each drill agent frozen on this worker (at most 10).",
                                         ("agent_id",), registry=reg)
        self._exposed[id(self._drill_frozen_gauge)] = set()
        self._drill_last = Gauge("flowbreaker_drill_last_run_timestamp_seconds",
                                 "When the last freeze drill finished (Unix time; NaN before the first).",
                                 registry=reg)
        self._drill_last.set(math.nan)
        self._drill_ok = Gauge("flowbreaker_drill_last_success",
                               "Whether the last freeze drill passed every step (1) or not (0); NaN before the first.",
                               registry=reg)
        self._drill_ok.set(math.nan)
        self._drill_step = Gauge("flowbreaker_drill_step_seconds", "The last freeze drill's time per step.",
                                 ("step",), registry=reg)
        for step in DRILL_STEPS:
            self._drill_step.labels(step).set(math.nan)

        if process_metrics:
            ProcessCollector(registry=reg)
            PlatformCollector(registry=reg)

    # ------------------------------------------------------------------ hot path

    def observe_batch(self, decisions, now: float) -> None:
        """:meth:`observe` for every decision of a batch that is not a duplicate, the latency being ``now``
        less the event's time, and :meth:`duplicate` folded into one increment."""
        self._count((d.event, d, now - d.event.t) for d in decisions if not d.duplicate)
        dups = sum(1 for d in decisions if d.duplicate)
        if dups:
            self._duplicates.inc(dups)

    def observe(self, event, decision, latency_seconds: float) -> None:
        """Count one decided event. Call once per non-duplicate decision.

        ``event`` needs ``agent_id, action, sensitivity, records, bytes``;
        ``decision`` needs ``record`` (the contract's decision record),
        ``transition``, ``freeze`` and ``dest_classes`` (one class per
        destination). Raises ``KeyError``/``AttributeError`` if they are
        missing: a wiring bug, not data.
        """
        self._count(((event, decision, latency_seconds),))

    def _count(self, items) -> None:
        """:meth:`observe` of each ``(event, decision, latency_seconds)``: one loop for a whole batch, the
        metrics' cells and histograms looked up once (a call of observe per decision was ~4 % of the batch step)."""
        actions, counted, volume, dests = self._actions, self._decisions, self._volume, self._dests
        score_h, latency_h, fanout = self._score, self._latency, self._fanout
        window, reasons_of = self._window, self._reasons
        for event, decision, latency in items:
            rec = decision.record
            agent = event.agent_id
            if agent.startswith(DRILL_PREFIX):  # a rehearsal: counted apart, never as an incident
                self._drill(agent, rec, decision.transition)
                continue
            sens = event.sensitivity

            key = (event.action, sens)
            cell = actions.cells.get(key) or actions.cell(key)
            cell[0] += 1

            taken = rec["action_taken"]
            key = (rec["severity"], taken)
            cell = counted.cells.get(key) or counted.cell(key)
            cell[0] += 1

            score = rec["score"]
            if not 0.0 <= score <= 1.0:  # also catches NaN
                score = 1.0 if score > 1.0 else 0.0
            score_h.counts[bisect_left(score_h.bounds, score)] += 1
            score_h.sum += score

            if not latency >= 0.0:
                latency = 0.0
            latency_h.counts[bisect_left(latency_h.bounds, latency)] += 1
            latency_h.sum += latency

            records = event.records
            nbytes = event.bytes
            classes = decision.dest_classes
            n = len(classes)
            if n == 0:
                key = (sens, "none")
                cell = volume.cells.get(key) or volume.cell(key)
                cell[0] += records
                cell[1] += nbytes
            else:
                fanout.counts[bisect_left(fanout.bounds, n)] += 1
                fanout.sum += n
                if n == 1:
                    c = classes[0]
                    cell = dests.cells.get((c,)) or dests.cell((c,))
                    cell[0] += 1
                    key = (sens, c)
                    cell = volume.cells.get(key) or volume.cell(key)
                    cell[0] += records
                    cell[1] += nbytes
                else:
                    self._observe_many(sens, records, nbytes, classes)

            violations = getattr(decision, "violations", None)
            if violations:
                self.scope_violations("stream", violations)
            if score > window.get(agent, RISK_FLOOR):
                window[agent] = score
            if rec["reasons"]:
                reasons_of[agent] = rec["reasons"]
            if taken != "none":
                self._alert(rec)
            if decision.transition is not None:
                self._transition(agent, decision.transition, decision.freeze)
            if decision.freeze is not None:
                sev = rec["severity"]
                (self._freeze_children.get(sev) or self._freezes.labels(OTHER)).inc()

    def _observe_many(self, sens: str, records: int, nbytes: int, classes) -> None:
        dests, volume = self._dests, self._volume
        seen = 0
        for c in DEST_CLASSES:
            k = classes.count(c)
            if k:
                seen += k
                dests.cells[(c,)][0] += k
                cell = volume.cells[(sens, c)] if (sens, c) in volume.cells else volume.cell((sens, c))
                cell[0] += records
                cell[1] += nbytes
        if seen < len(classes):  # classes outside the contract: count them as `other`
            dests.cell((OTHER,))[0] += len(classes) - seen
            cell = volume.cell((sens, OTHER))
            cell[0] += records
            cell[1] += nbytes

    # ------------------------------------------------------------------ rare paths

    def _feature_label(self, name: Any) -> str:
        if not isinstance(name, str) or not name:
            return OTHER
        name = name[:MAX_FEATURE_CHARS]
        if name in self._features:
            return name
        if len(self._features) < MAX_FEATURES:
            self._features.add(name)
            return name
        return OTHER

    def _alert(self, rec: Mapping) -> None:
        reasons = rec["reasons"]
        feature = reasons[0].get("feature") if reasons else None
        key = (rec["severity"], feature)
        child = self._alert_children.get(key)
        if child is None:
            sev = key[0] if key[0] in SEVERITIES else OTHER
            label = "none" if feature is None else self._feature_label(feature)
            child = self._alerts.labels(sev, label)
            if len(self._alert_children) < _MAX_RAW_KEYS:
                self._alert_children[key] = child
        child.inc()

    def _transition(self, agent: str, transition, freeze: Mapping | None) -> None:
        old, new = transition
        self._transitions.labels(
            old if old in BREAKER_STATE_VALUE else OTHER,
            new if new in BREAKER_STATE_VALUE else OTHER,
        ).inc()
        if new == "open":
            incident = (freeze or {}).get("incident_id") or self._frozen.get(agent, "")
            self._frozen.pop(agent, None)
            self._frozen[agent] = str(incident)
        elif old == "open":
            self._frozen.pop(agent, None)
        if new == "closed":
            self._breaker.pop(agent, None)
        else:
            self._breaker[agent] = new

    def _drill(self, agent: str, rec: Mapping, transition) -> None:
        (self._drill_children.get(rec.get("action_taken")) or self._drill_children[OTHER]).inc()
        if transition is not None:
            if transition[1] == "open":
                self._drill_frozen[agent] = 1
            elif transition[0] == "open":
                self._drill_frozen.pop(agent, None)

    def scope_violations(self, where: str, violations) -> None:
        """Count the clauses an action broke (``detector.manifest.Violation``s) at ``where`` (stream|check)."""
        for v in violations:
            child = self._scope_children.get((where, v.clause, v.on_violation))
            if child is not None:
                child.inc()

    def set_manifests(self, count: int) -> None:
        """How many manifests (agents and roles) are in force."""
        self._manifests.set(count)

    def manifest_skipped(self) -> None:
        """Count one ``agent-manifests`` record skipped."""
        self._manifest_skipped.inc()

    def set_drill(self, result: Mapping) -> None:
        """The last drill's result (a ``flowbreaker-drill/1`` record from ``agent-drills``)."""
        self._drill_last.set(float(result.get("finished_t") or math.nan))
        self._drill_ok.set(1.0 if result.get("passed") else 0.0)
        times = {s.get("step"): s.get("seconds") for s in result.get("steps") or () if isinstance(s, Mapping)}
        for step in DRILL_STEPS:
            v = times.get(step)
            ok = isinstance(v, (int, float)) and not isinstance(v, bool)
            self._drill_step.labels(step).set(float(v) if ok else math.nan)

    def episode(self, rec: Mapping) -> None:
        """Count one alert episode record published on ``agent-alerts``: ``opened`` for an episode's first
        record (``opened`` equal to ``updated``), ``closed`` for its closing one, else ``changed``."""
        state = rec.get("state")
        if state == "closed":
            event = "closed"
        elif state == "open" and rec.get("opened") == rec.get("updated"):
            event = "opened"
        else:
            event = "changed"
        self._episode_children[event].inc()

    def set_episodes_open(self, n: int) -> None:
        """Alert episodes open now in the fleet (the API's index of ``agent-alerts``)."""
        self._episodes_open.set(n)

    def verdict(self, kind: str) -> None:
        """Count one verdict (``benign`` or ``confirmed``) applied to an agent of this worker."""
        child = self._verdict_children.get(kind)
        if child is not None:
            child.inc()

    def verdict_rejected(self, reason: str) -> None:
        """Count one record of ``agent-verdicts`` not applied (``streams.verdicts.REJECTIONS``)."""
        (self._verdict_rejected_children.get(reason) or self._verdict_rejected_children["invalid"]).inc()

    def dlq(self, code: str) -> None:
        """Count one event sent to the dead-letter topic, by ``EventError.code``."""
        (self._dlq_children.get(code) or self._dlq_children[OTHER]).inc()

    def duplicate(self) -> None:
        """Count one repeated ``event_id`` (skipped, not scored again)."""
        self._duplicates.inc()

    def miskeyed(self, reason: str, rerouted: bool, n: int = 1) -> None:
        """Count ``n`` mis-keyed events (``reason`` one of MISKEYED_REASONS), re-routed or decided in place."""
        child = self._miskeyed_children.get((reason, "rerouted" if rerouted else "decided"))
        if child is not None:
            child.inc(n)

    def release(self, agent_id: str | None = None) -> None:
        """Count one release; with ``agent_id``, that agent leaves the frozen list
        and its breaker becomes ``half_open`` (as ``Engine.release`` does)."""
        if agent_id is not None and agent_id.startswith(DRILL_PREFIX):
            self._drill_frozen.pop(agent_id, None)
            return
        self._releases.inc()
        if agent_id is not None:
            self._frozen.pop(agent_id, None)
            self._breaker[agent_id] = "half_open"

    def set_frozen(self, frozen: Mapping[str, str]) -> None:
        """Replace the frozen list with ``{agent_id: incident_id}``.

        For a worker that recovered its tables or gained partitions after a
        rebalance: it knows frozen agents that no transition reported here.
        Open agents missing from ``frozen`` are forgotten (moved to another
        worker); a release is reported through :meth:`release` instead.
        """
        for agent, state in list(self._breaker.items()):
            if state == "open" and agent not in frozen:
                del self._breaker[agent]
        self._drill_frozen = {str(a): 1 for a in frozen if str(a).startswith(DRILL_PREFIX)}
        self._frozen = {str(a): str(i or "") for a, i in frozen.items() if not str(a).startswith(DRILL_PREFIX)}
        for agent in self._frozen:
            self._breaker[agent] = "open"

    def set_lag(self, partition: int, lag: int) -> None:
        """Set the consumer lag of one partition of ``agent-actions``."""
        child = self._lag_children.get(partition)
        if child is None:
            child = self._lag_children[partition] = self._lag.labels(str(int(partition)))
        child.set(lag)

    def set_assignment(self, partitions: Iterable[int]) -> None:
        """Declare the partitions this worker owns; drops the lag of the others."""
        keep = {int(p) for p in partitions}
        for p in list(self._lag_children):
            if p not in keep:
                self._lag.remove(str(p))
                del self._lag_children[p]
        self._assigned.set(len(keep))

    def set_model(self, version: str, trained_at: str | None) -> None:
        """Declare the model in use: its version and ISO 8601 training time."""
        self._model.info({"version": str(version), "trained_at": str(trained_at or "")})
        self._model_trained.set(_parse_timestamp(trained_at))

    def set_drift(self, psi: dict[str, float]) -> None:
        """Per-feature PSI of live traffic against the model's training distribution."""
        for feature, value in psi.items():
            self._drift.labels(feature=feature).set(value)

    def set_worker(self, worker: str) -> None:
        """Name this worker (e.g. its faust worker id) in ``flowbreaker_worker_info``."""
        self._worker.info({"version": self._version, "worker": str(worker)})

    # ------------------------------------------------------------------ per-agent gauges

    def refresh_topk(self, now: float | None = None) -> None:
        """Recompute the bounded per-agent gauges; label sets that fell out are removed."""
        now = self._clock() if now is None else now
        elapsed = max(0.0, now - self._last_refresh)
        self._last_refresh = now
        decay = 0.5 ** (elapsed / self.risk_half_life) if self.risk_half_life > 0 else 0.0

        window, self._window = self._window, {}
        frozen = self._frozen
        risk = {}
        for agent, r in self._risk.items():
            if agent not in frozen:  # a frozen agent acts no more: hold its risk
                r *= decay
            if r >= RISK_FLOOR:
                risk[agent] = r
        for agent, s in window.items():
            if s > risk.get(agent, 0.0):
                risk[agent] = s
        if len(risk) > self.max_tracked:
            pinned = {a: risk[a] for a in frozen if a in risk}
            risk = dict(heapq.nlargest(self.max_tracked, risk.items(), key=itemgetter(1)))
            risk.update(pinned)
        self._risk = risk
        if len(self._reasons) > len(risk):
            self._reasons = {a: r for a, r in self._reasons.items() if a in risk}

        listed = dict(islice(frozen.items(), self.max_frozen))
        shown = dict(heapq.nlargest(self.top_k, risk.items(), key=itemgetter(1)))
        shown.update((a, risk[a]) for a in listed if a in risk)
        self._sync(self._risk_gauge, {(a,): r for a, r in shown.items()})
        self._sync(self._frozen_gauge, {(a, i): 1.0 for a, i in listed.items()})

        agents = set(listed).union(shown)
        self._sync(self._state_gauge, {
            (a,): BREAKER_STATE_VALUE.get(self._breaker.get(a, "closed"), 0.0) for a in agents
        })

        values, baselines = {}, {}
        for agent in shown:
            for reason in (self._reasons.get(agent) or ())[:REASONS_PER_AGENT]:
                if not isinstance(reason, Mapping):
                    continue
                feature = self._feature_label(reason.get("feature"))
                value, base = _number(reason.get("value")), _number(reason.get("baseline"))
                if value is not None:
                    values[(agent, feature)] = value
                if base is not None:
                    baselines[(agent, feature)] = base
        self._sync(self._value_gauge, values)
        self._sync(self._baseline_gauge, baselines)
        self._sync(self._drill_frozen_gauge, {(a,): 1.0 for a in islice(self._drill_frozen, MAX_DRILL_AGENTS)})

    def _sync(self, gauge: Gauge, desired: Mapping[tuple[str, ...], float]) -> None:
        exposed = self._exposed[id(gauge)]
        for labels in exposed - desired.keys():
            gauge.remove(*labels)
        for labels, value in desired.items():
            gauge.labels(*labels).set(value)
        self._exposed[id(gauge)] = set(desired)

    # ------------------------------------------------------------------ exposition

    def render(self) -> bytes:
        """Refresh the per-agent gauges and return the text exposition format."""
        self.refresh_topk()
        return generate_latest(self.registry)
