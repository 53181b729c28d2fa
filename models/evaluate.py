"""``flowbreaker evaluate``: replay labelled events through the engine and report detection quality.

The events are scored in file order by one :class:`detector.engine.Engine` per
model, through the offline loop ``flowbreaker replay`` uses
(:class:`models.playback.Playback`), and the decision records are compared with a
labels file (``flowbreaker-labels/1``, the format ``flowbreaker simulate`` writes;
see ``docs/retraining.md``). This module is the measurement and the report; the
command line (reading files, building engines) is ``streams/cli/evaluate.py``.

What is measured (all from decision records and labels, by the pure functions
:func:`incident_outcomes` and :func:`summarize`):

* per incident: **caught at the first harmful event** (the agent was frozen on
  an incident event at or before the first harmful event, or the first harmful
  event got severity ``high`` or ``critical``), **caught later** (a freeze on a
  later event of the incident), or **missed**. Only freezes on the incident's
  own events count; an incident whose agent was already frozen by an unrelated
  freeze when it began is ``masked`` (counted as missed unless its first harmful
  event alerted high). Incidents whose first harmful event is not in the input
  are left out of every rate;
* **detection delay**: from the first harmful event to the freeze, in seconds
  and in the agent's events (0 = frozen on the first harmful event or before),
  and how many harmful events were done by then (the freezing event included:
  events report actions already performed);
* **false freezes per 1,000 agent-days**: freezes on events that belong to no
  incident; agent-days = distinct (agent, UTC date) pairs among the scored events;
* **alert precision**: decisions that reached the SOC (``action_taken`` alert or
  freeze) on incident events, over all of them; the same for freezes alone;
* **event-level ROC-AUC and PR-AUC** of ``score`` (scikit-learn's
  ``roc_auc_score`` and ``average_precision_score``): positives are harmful
  events, negatives are events of no incident; an incident's preparatory events
  (a read before the exfiltrating send) are neither;
* look-alikes: alerts and freezes on their events, per kind;
* **benign alerted actions per agent-day**: alerts (``action_taken`` ``alert``) on events
  of no incident while the agent was not frozen, per agent-day; and with a simulated
  analyst (``--analyst``), the **analyst's verdicts per agent-day** (what the SOC answers);
* drift: PSI per feature between the model's training rows and the evaluated
  events outside labelled incidents (:mod:`models.drift`): has normal behaviour
  moved away from what the model was trained on?

Offline, a frozen agent keeps acting (the file does not know it was stopped),
and nothing releases it, as in ``replay``. ``--release-after SECONDS`` plays an
analyst who releases every frozen agent that long (in event time) after its
freeze, through ``Engine.release``, so one early false freeze does not hide
everything that agent does afterwards.

>>> recs = [{"event_id": "b1", "agent_id": "a", "ts": "2026-03-02T09:00:00Z", "score": 0.1, "severity": "ok",
...          "action_taken": "none", "breaker_state": "closed"},
...         {"event_id": "x1", "agent_id": "a", "ts": "2026-03-02T09:01:00Z", "score": 0.97,
...          "severity": "critical", "action_taken": "freeze", "breaker_state": "open"}]
>>> labels = {"format": "flowbreaker-labels/1", "incidents": [{"incident_id": "i1", "kind": "k", "agent_id": "a",
...           "event_ids": ["x1"], "harmful_event_ids": ["x1"], "first_harmful_event_id": "x1"}], "lookalikes": []}
>>> m = summarize(recs, labels)
>>> m["incidents"]["caught_first"], m["false_freezes"]["count"], m["event_level"]["roc_auc"]
(1, 0, 1.0)
"""

from __future__ import annotations

import base64
import html
import json
import math
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np

from detector.engine import Engine
from detector.events import ActionEvent
from detector.features import FEATURE_NAMES
from detector.timestamps import instant

__all__ = ["LABELS_FORMAT", "LabelsError", "check_labels", "load_labels", "incident_outcomes", "event_labels",
           "lookalikes_frozen", "gate_summary", "summarize", "score_events", "drift_of", "ModelRun",
           "evaluate_model", "write_report", "one_line"]

LABELS_FORMAT = "flowbreaker-labels/1"
REPORT_FORMAT = "flowbreaker-evaluation/1"
_HIGH = frozenset(("high", "critical"))
_SOC = frozenset(("alert", "freeze"))
_KEEP = ("event_id", "agent_id", "ts", "score", "severity", "action_taken", "breaker_state")


class LabelsError(ValueError):
    """A labels file that cannot be used; the text says why, in one line."""


# ------------------------------------------------------------------ labels
def check_labels(obj: object, where: str = "labels") -> dict:
    """Validate a ``flowbreaker-labels/1`` object; returns it. Raises :class:`LabelsError`.

    >>> check_labels({"format": "flowbreaker-labels/1", "incidents": [{"incident_id": "i"}]})
    Traceback (most recent call last):
    ...
    models.evaluate.LabelsError: labels: incidents[0] lacks 'kind'
    """
    if not isinstance(obj, dict):
        raise LabelsError(f"{where}: not a JSON object")
    if obj.get("format") != LABELS_FORMAT:
        raise LabelsError(f"{where}: format is {obj.get('format')!r}, expected {LABELS_FORMAT!r}")
    incidents = obj.get("incidents")
    if not isinstance(incidents, list):
        raise LabelsError(f"{where}: 'incidents' must be a list")
    for i, inc in enumerate(incidents):
        if not isinstance(inc, dict):
            raise LabelsError(f"{where}: incidents[{i}] is not an object")
        for key in ("incident_id", "kind", "agent_id", "event_ids", "harmful_event_ids", "first_harmful_event_id"):
            if key not in inc:
                raise LabelsError(f"{where}: incidents[{i}] lacks {key!r}")
        for key in ("event_ids", "harmful_event_ids"):
            if not isinstance(inc[key], list) or not all(isinstance(e, str) for e in inc[key]):
                raise LabelsError(f"{where}: incidents[{i}].{key} must be a list of event ids")
        first = inc["first_harmful_event_id"]
        if first is not None and not isinstance(first, str):
            raise LabelsError(f"{where}: incidents[{i}].first_harmful_event_id must be an event id or null")
    looks = obj.get("lookalikes", [])
    if not isinstance(looks, list):
        raise LabelsError(f"{where}: 'lookalikes' must be a list")
    for i, la in enumerate(looks):
        if not isinstance(la, dict) or not isinstance(la.get("event_ids"), list) or "kind" not in la:
            raise LabelsError(f"{where}: lookalikes[{i}] needs 'kind' and a list 'event_ids'")
    return obj


def load_labels(path: str | Path) -> dict:
    """Read and validate a labels file. Raises :class:`LabelsError` (one line)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as err:
        raise LabelsError(f"cannot read labels {path}: {err.strerror}") from None
    except UnicodeDecodeError:
        raise LabelsError(f"labels {path} is not UTF-8 text") from None
    try:
        obj = json.loads(text)
    except ValueError as err:
        raise LabelsError(f"labels {path} is not JSON: {err}") from None
    return check_labels(obj, str(path))


# ------------------------------------------------------------------ metrics (pure)
def _t(ts: str) -> float:
    return instant(ts)  # detector/timestamps.py


def _index(records: Sequence[Mapping]) -> dict[str, tuple[int, Mapping]]:
    """event_id -> (position in its agent's scored sequence, record)."""
    seq: dict[str, int] = defaultdict(int)
    pos: dict[str, tuple[int, Mapping]] = {}
    for rec in records:
        a = rec["agent_id"]
        k = seq[a]
        seq[a] = k + 1
        pos.setdefault(rec["event_id"], (k, rec))
    return pos


def incident_outcomes(records: Sequence[Mapping], labels: Mapping) -> list[dict]:
    """One row per labelled incident: ``outcome`` (``first``, ``later``, ``missed`` or
    ``not_in_input``), ``masked``, the freezing event, delays and harmful events done,
    and the freeze-only outcomes of the independent evaluation (issue 11), all judged on
    the first freeze on one of the incident's own events, by position in the agent's
    scored sequence:

    * ``caught_at_first_harmful``: that freeze is at or before the first harmful event;
    * ``contained``: it is at or before the incident's *last* harmful event (the breaker
      opened while the incident was still doing harm, so the rest of it would have been
      stopped; a caught incident is contained);
    * ``stopped_before_harm``: it is strictly before the first harmful event;
    * ``first_harmful_gate``: the pre-action verdict on the first harmful event, if any.

    ``records`` are decision records (contract section 3) in scoring order.

    >>> rec = lambda e, act="none", gate=None: {"event_id": e, "agent_id": "a", "ts": "2026-03-02T09:00:00Z",
    ...     "score": 0.9, "severity": "high", "action_taken": act, "breaker_state": "closed",
    ...     **({"gate": gate} if gate else {})}
    >>> labels = {"incidents": [{"incident_id": "i", "kind": "k", "agent_id": "a", "event_ids": ["r", "s1", "s2"],
    ...           "harmful_event_ids": ["s1", "s2"], "first_harmful_event_id": "s1"}]}
    >>> o = incident_outcomes([rec("r"), rec("s1", gate="needs_approval"), rec("s2", "freeze")], labels)[0]
    >>> o["caught_at_first_harmful"], o["contained"], o["stopped_before_harm"], o["first_harmful_gate"]
    (False, True, False, 'needs_approval')
    """
    pos = _index(records)
    out = []
    for inc in labels["incidents"]:
        ids = [e for e in inc["event_ids"] if e in pos]
        harmful = [e for e in inc["harmful_event_ids"] if e in pos]
        first = inc["first_harmful_event_id"]
        row = {"incident_id": inc["incident_id"], "kind": inc["kind"], "agent_id": inc["agent_id"],
               "events": len(ids), "harmful": len(harmful), "outcome": "not_in_input", "masked": False,
               "first_severity": None, "freeze_event_id": None, "delay_s": None, "delay_events": None,
               "harmful_done": None, "max_score": None, "caught_at_first_harmful": False, "contained": False,
               "stopped_before_harm": False, "first_harmful_gate": None}
        if first is None or first not in pos:
            out.append(row)
            continue
        k0, r0 = pos[first]
        ids.sort(key=lambda e: pos[e][0])
        start = pos[ids[0]][1]
        freezes = [e for e in ids if pos[e][1]["action_taken"] == "freeze"]
        fz = freezes[0] if freezes else None
        row["masked"] = start["breaker_state"] == "open" and start["action_taken"] != "freeze"
        row["first_severity"] = r0["severity"]
        row["max_score"] = max(pos[e][1]["score"] for e in ids)
        if (fz is not None and pos[fz][0] <= k0) or r0["severity"] in _HIGH:
            row["outcome"] = "first"
        elif fz is not None:
            row["outcome"] = "later"
        else:
            row["outcome"] = "missed"
        row["first_harmful_gate"] = r0.get("gate")
        if fz is not None:
            kf, rf = pos[fz]
            k_last = max(pos[e][0] for e in harmful)
            row["caught_at_first_harmful"] = kf <= k0
            row["contained"] = kf <= k_last
            row["stopped_before_harm"] = kf < k0
            row["freeze_event_id"] = fz
            row["delay_s"] = round(max(0.0, _t(rf["ts"]) - _t(r0["ts"])), 3)
            row["delay_events"] = max(0, kf - k0)
            row["harmful_done"] = sum(1 for e in harmful if pos[e][0] <= kf)
        else:
            row["harmful_done"] = len(harmful)
        out.append(row)
    return out


def event_labels(records: Sequence[Mapping], labels: Mapping) -> tuple[np.ndarray, np.ndarray]:
    """``(y, score)`` over the records that are harmful (1) or of no incident (0)."""
    harmful = {e for inc in labels["incidents"] for e in inc["harmful_event_ids"]}
    incident = {e for inc in labels["incidents"] for e in inc["event_ids"]}
    y, s = [], []
    for rec in records:
        e = rec["event_id"]
        if e in harmful:
            y.append(1)
        elif e in incident:
            continue
        else:
            y.append(0)
        s.append(float(rec["score"]))
    return np.array(y, dtype=np.int64), np.array(s, dtype=np.float64)


def _ratio(a: int, b: int) -> float | None:
    return round(a / b, 4) if b else None


def lookalikes_frozen(records: Sequence[Mapping], labels: Mapping) -> dict:
    """How many look-alikes had their agent frozen on one of their own events.

    >>> recs = [{"event_id": "x", "action_taken": "freeze"}, {"event_id": "y", "action_taken": "alert"}]
    >>> lookalikes_frozen(recs, {"lookalikes": [{"kind": "k", "event_ids": ["x"]}, {"kind": "k", "event_ids": ["y"]}]})
    {'frozen': 1, 'of': 2, 'kinds_frozen': ['k']}
    """
    frozen = {r["event_id"] for r in records if r["action_taken"] == "freeze"}
    seen = {r["event_id"] for r in records}
    looks = [la for la in labels.get("lookalikes", []) if any(e in seen for e in la["event_ids"])]
    hit = [la for la in looks if any(e in frozen for e in la["event_ids"])]
    return {"frozen": len(hit), "of": len(looks), "kinds_frozen": sorted({la["kind"] for la in hit})}


def gate_summary(records: Sequence[Mapping], labels: Mapping, outbound_ids: set[str] | None,
                 outcomes: list[dict] | None = None) -> dict | None:
    """The pre-action check as the independent evaluation counts it (``None`` without ``gate`` fields).

    * ``first_harmful_held``: incidents whose first harmful event got ``needs_approval``
      or ``deny``, of the incidents whose first harmful event was scored;
    * ``approvals_per_1000_benign_outbound``: ``needs_approval`` verdicts on benign
      outbound actions (in no incident, with destinations) per 1,000 of them;
      ``held_per_1000_benign_outbound`` counts ``deny`` too (a frozen agent's actions).

    ``outbound_ids`` are the ids of events with destinations (decision records do not
    carry destinations); without them, every record with a ``gate`` field that is not a
    delete is taken as outbound, which the caller cannot check, so pass them.

    >>> recs = [{"event_id": "h", "gate": "needs_approval"}, {"event_id": "b1", "gate": "allow"},
    ...         {"event_id": "b2", "gate": "needs_approval"}]
    >>> labels = {"incidents": [{"incident_id": "i", "kind": "k", "agent_id": "a", "event_ids": ["h"],
    ...           "harmful_event_ids": ["h"], "first_harmful_event_id": "h"}]}
    >>> g = gate_summary(recs, labels, {"h", "b1", "b2"})
    >>> g["first_harmful_held"], g["benign_outbound"], g["approvals_per_1000_benign_outbound"]
    (1, 2, 500.0)
    """
    if not any("gate" in r for r in records):
        return None
    by_id = {r["event_id"]: r for r in records}
    incident_ids = {e for inc in labels["incidents"] for e in inc["event_ids"]}
    held = of = 0
    for inc in labels["incidents"]:
        r = by_id.get(inc["first_harmful_event_id"] or "")
        if r is None:
            continue
        of += 1
        held += r.get("gate") in ("needs_approval", "deny")
    benign = [r for r in records if r["event_id"] not in incident_ids and
              (r["event_id"] in outbound_ids if outbound_ids is not None else "gate" in r)]
    asked = sum(r.get("gate") == "needs_approval" for r in benign)
    denied = sum(r.get("gate") == "deny" for r in benign)
    n = len(benign)
    return {"first_harmful_held": held, "of": of, "benign_outbound": n, "approvals": asked, "denied": denied,
            "approvals_per_1000_benign_outbound": round(1000.0 * asked / n, 3) if n else None,
            "held_per_1000_benign_outbound": round(1000.0 * (asked + denied) / n, 3) if n else None}


def summarize(records: Sequence[Mapping], labels: Mapping, *, outcomes: list[dict] | None = None,
              outbound_ids: set[str] | None = None, verdicts: int | None = None) -> dict:
    """All the numbers of the report for one model's decision records (see the module docstring).

    ``outbound_ids`` (ids of events with destinations) are needed for the gate's
    approvals per 1,000 benign outbound actions (:func:`gate_summary`).
    """
    from sklearn.metrics import average_precision_score, roc_auc_score

    outcomes = incident_outcomes(records, labels) if outcomes is None else outcomes
    incident_ids = {e for inc in labels["incidents"] for e in inc["event_ids"]}
    scored = [o for o in outcomes if o["outcome"] != "not_in_input"]
    n_first = sum(o["outcome"] == "first" for o in scored)
    n_later = sum(o["outcome"] == "later" for o in scored)
    n_missed = sum(o["outcome"] == "missed" for o in scored)
    by_kind: dict[str, dict[str, int]] = {}
    for o in scored:
        k = by_kind.setdefault(o["kind"], {"first": 0, "later": 0, "missed": 0})
        k[o["outcome"]] += 1

    days = {(r["agent_id"], datetime.fromisoformat(r["ts"]).astimezone(timezone.utc).date()) for r in records}
    freezes = [r for r in records if r["action_taken"] == "freeze"]
    false_freezes = [r for r in freezes if r["event_id"] not in incident_ids]
    soc = [r for r in records if r["action_taken"] in _SOC]
    soc_hit = sum(1 for r in soc if r["event_id"] in incident_ids)
    benign_alerted = sum(1 for r in soc if r["action_taken"] == "alert" and r["breaker_state"] != "open"
                         and r["event_id"] not in incident_ids)

    y, s = event_labels(records, labels)
    n_pos = int(y.sum())
    both = 0 < n_pos < len(y)
    roc = round(float(roc_auc_score(y, s)), 4) if both else None
    ap = round(float(average_precision_score(y, s)), 4) if both else None

    delays = [o for o in scored if o["delay_s"] is not None]
    ds = np.array([o["delay_s"] for o in delays], dtype=np.float64)
    de = np.array([o["delay_events"] for o in delays], dtype=np.float64)

    looks: dict[str, dict[str, int]] = {}
    by_id = {r["event_id"]: r for r in records}
    for la in labels.get("lookalikes", []):
        k = looks.setdefault(la["kind"], {"events": 0, "alerts": 0, "freezes": 0})
        for e in la["event_ids"]:
            r = by_id.get(e)
            if r is None:
                continue
            k["events"] += 1
            k["alerts"] += r["action_taken"] in _SOC
            k["freezes"] += r["action_taken"] == "freeze"

    return {
        "decisions": len(records),
        "incidents": {"labelled": len(outcomes), "in_input": len(scored), "caught_first": n_first,
                      "caught_later": n_later, "missed": n_missed,
                      "masked": sum(1 for o in scored if o["masked"]),
                      "detection_rate": _ratio(n_first + n_later, len(scored)), "by_kind": by_kind},
        "freeze_outcomes": {"of": len(scored),
                            "caught_at_first_harmful": sum(o["caught_at_first_harmful"] for o in scored),
                            "contained": sum(o["contained"] for o in scored),
                            "stopped_before_harm": sum(o["stopped_before_harm"] for o in scored)},
        "false_freezes": {"count": len(false_freezes), "agent_days": len(days),
                          "per_1000_agent_days": round(1000.0 * len(false_freezes) / len(days), 3) if days else None,
                          "agents": len({r["agent_id"] for r in false_freezes}),
                          "event_ids": [r["event_id"] for r in false_freezes]},
        "lookalikes_frozen": lookalikes_frozen(records, labels),
        "gate": gate_summary(records, labels, outbound_ids, outcomes),
        "alerts": {"count": len(soc), "on_incident_events": soc_hit, "precision": _ratio(soc_hit, len(soc)),
                   "benign_alerted": benign_alerted,
                   "benign_alerted_per_agent_day": round(benign_alerted / len(days), 3) if days else None},
        "analyst": None if verdicts is None else {
            "verdicts": verdicts, "per_agent_day": round(verdicts / len(days), 3) if days else None},
        "freezes": {"count": len(freezes), "on_incident_events": len(freezes) - len(false_freezes),
                    "precision": _ratio(len(freezes) - len(false_freezes), len(freezes))},
        "event_level": {"positives": n_pos, "negatives": int(len(y) - n_pos), "roc_auc": roc, "pr_auc": ap,
                        "prevalence": _ratio(n_pos, len(y))},
        "detection_delay": {
            "frozen_incidents": len(delays),
            "median_s": round(float(np.median(ds)), 3) if len(ds) else None,
            "max_s": round(float(ds.max()), 3) if len(ds) else None,
            "median_events": float(np.median(de)) if len(de) else None,
            "max_events": int(de.max()) if len(de) else None,
        },
        "lookalikes": looks,
    }


# ------------------------------------------------------------------ scoring
def score_events(engine: Engine, events: Sequence[ActionEvent], *, release_after: float | str | None = None,
                 gate: bool = False, by: str = "evaluate", analyst=None,
                 stats: dict | None = None) -> tuple[list[dict], int]:
    """Score ``events`` in order; returns ``(decision records, duplicates skipped)``.

    This is ``replay``'s loop (:class:`models.playback.Playback`): with ``gate`` each
    record of an action with destinations or a delete gets the pre-action verdict
    (``gate``); with ``release_after`` (seconds or a duration such as ``"1h"``) a
    simulated analyst releases every freeze that long after it; with ``analyst`` (a
    :class:`models.playback.Analyst`) a simulated analyst gives verdicts (``stats["verdicts"]``
    counts them when ``stats`` is given).
    """
    from detector.gate import Gate
    from models.playback import Playback

    pb = Playback(engine, gate=Gate(engine) if gate else None, release_after=release_after, by=by, analyst=analyst)
    records: list[dict] = []
    dup = 0
    for d in pb.run(events):
        if d.duplicate:
            dup += 1
            continue
        rec = d.record
        out = {k: rec[k] for k in _KEEP}
        if "gate" in rec:
            out["gate"] = rec["gate"]
        records.append(out)
    if stats is not None:
        stats["verdicts"] = len(pb.verdicts)
        stats["releases"] = len(pb.releases)
    return records, dup


def drift_of(model, events: Sequence[ActionEvent], policy, labels: Mapping | None = None) -> list[dict] | None:
    """PSI per feature between ``model``'s training rows and the rows of ``events`` outside
    labelled incidents (None without a model or without ``train_quantiles``)."""
    from models.drift import drift_table, feature_rows, psi_rows

    if model is None or "train_quantiles" not in getattr(model, "a", {}):
        return None
    incident = {e for inc in labels["incidents"] for e in inc["event_ids"]} if labels else set()
    rows = feature_rows(events, policy, prior_for=model.prior_for, keep=lambda ev: ev.event_id not in incident)
    return drift_table(psi_rows(model.a["train_quantiles"], rows))


@dataclass
class ModelRun:
    """One model evaluated on the events.

    ``entry`` is its part of the report (an element of ``metrics.json``'s ``models``: role,
    version, path, metrics, incidents, drift, and ``metrics_without_release`` when a simulated
    analyst released freezes); ``records`` and ``duplicates`` are :func:`score_events`'
    result; ``scored`` holds the arrays the plots draw (harmful, score, kind of event).
    """

    entry: dict
    records: list[dict]
    duplicates: int
    scored: tuple[np.ndarray, np.ndarray, np.ndarray]


def evaluate_model(role: str, path: str | Path, engine: Engine, events: Sequence[ActionEvent], labels: Mapping,
                   policy, *, release_after: float | None = None, fresh_engine: Callable[[], Engine] | None = None,
                   outbound_ids: set[str] | None = None, analyst=None) -> ModelRun:
    """Score ``events`` with ``engine`` (the gate's verdict on every record) and measure against ``labels``.

    ``role`` (``candidate``, ``baseline``) and ``path`` only label the result; ``policy`` is the
    one the engine uses (for drift). With ``release_after`` (seconds) a simulated analyst
    releases every freeze that long after it, and the same model is scored again with
    nothing released, on ``fresh_engine()`` (a new engine of the same model and policy, since
    ``engine`` has kept state); ``ValueError`` if it is missing. ``outbound_ids``: the ids of
    the events with destinations (computed when not given; pass it to share it across models).
    """
    if (release_after is not None or analyst is not None) and fresh_engine is None:
        raise ValueError("release_after needs fresh_engine: the never-released figures need an engine of their own")
    if outbound_ids is None:
        outbound_ids = {ev.event_id for ev in events if ev.destinations}
    stats: dict = {}
    records, dup = score_events(engine, events, release_after=release_after, gate=True, analyst=analyst,
                                stats=stats)
    outcomes = incident_outcomes(records, labels)
    metrics = summarize(records, labels, outcomes=outcomes, outbound_ids=outbound_ids,
                        verdicts=stats["verdicts"] if analyst is not None else None)
    entry = {"role": role, "version": engine.model_version, "path": str(path), "metrics": metrics,
             "incidents": outcomes, "drift": drift_of(engine.model, events, policy, labels)}
    if release_after is not None or analyst is not None:  # nothing ever released, as replay without the flags
        plain, _ = score_events(fresh_engine(), events, gate=True)
        entry["metrics_without_release"] = summarize(plain, labels, outbound_ids=outbound_ids)
    return ModelRun(entry, records, dup, _plot_arrays(records, labels))


# ------------------------------------------------------------------ report
def _fmt(v, pct: bool = False) -> str:
    if v is None:
        return "n/a"
    if pct:
        return f"{100.0 * v:.1f}%"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _duration(s: float | None) -> str:
    if s is None:
        return "n/a"
    if s < 120:
        return f"{s:.0f} s"
    if s < 7200:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.1f} h"


def _summary_rows(models: list[dict]) -> list[list[str]]:
    def row(label, f):
        return [label] + [f(m["metrics"]) for m in models]

    def frac(m, k):
        i = m["incidents"]
        return f"{i[k]}/{i['in_input']}"

    def fo(m, k):
        f = m["freeze_outcomes"]
        return f"{f[k]}/{f['of']}"

    def gate(m, f):
        g = m.get("gate")
        return f(g) if g else "n/a (no gate)"

    return [
        row("caught at the first harmful action (frozen on an incident event at or before it)",
            lambda m: fo(m, "caught_at_first_harmful")),
        row("contained (frozen on an incident event at or before its last harmful event)",
            lambda m: fo(m, "contained")),
        row("stopped strictly before harm", lambda m: fo(m, "stopped_before_harm")),
        row("false freezes (freezes on events of no incident; agents)",
            lambda m: f"{m['false_freezes']['count']} ({m['false_freezes']['agents']} agents)"),
        row("look-alikes frozen", lambda m: f"{m['lookalikes_frozen']['frozen']}/{m['lookalikes_frozen']['of']}"),
        row("benign actions alerted (agent not frozen) per agent-day",
            lambda m: f"{_fmt(m['alerts'].get('benign_alerted_per_agent_day'))} ({m['alerts'].get('benign_alerted')})"),
        row("analyst's verdicts per agent-day (simulated analyst)",
            lambda m: f"{_fmt(m['analyst']['per_agent_day'])} ({m['analyst']['verdicts']})"
            if m.get("analyst") else "n/a (no analyst)"),
        row("pre-action check: first harmful actions held",
            lambda m: gate(m, lambda g: f"{g['first_harmful_held']}/{g['of']}")),
        row("pre-action check: approvals per 1,000 benign outbound actions",
            lambda m: gate(m, lambda g: f"{_fmt(g['approvals_per_1000_benign_outbound'])} ({g['approvals']}/"
                                        f"{g['benign_outbound']})")),
        row("incidents caught at the first harmful event (freeze, or high/critical severity)",
            lambda m: frac(m, "caught_first")),
        row("incidents caught later", lambda m: frac(m, "caught_later")),
        row("incidents missed", lambda m: frac(m, "missed") + (f" ({m['incidents']['masked']} masked)"
                                                               if m["incidents"]["masked"] else "")),
        row("detection rate", lambda m: _fmt(m["incidents"]["detection_rate"], True)),
        row("false freezes per 1,000 agent-days",
            lambda m: f"{_fmt(m['false_freezes']['per_1000_agent_days'])} ({m['false_freezes']['count']} in "
                      f"{m['false_freezes']['agent_days']} agent-days)"),
        row("alert precision (alerts and freezes on incident events)",
            lambda m: f"{_fmt(m['alerts']['precision'], True)} ({m['alerts']['on_incident_events']}/"
                      f"{m['alerts']['count']})"),
        row("freeze precision", lambda m: f"{_fmt(m['freezes']['precision'], True)} "
                                          f"({m['freezes']['on_incident_events']}/{m['freezes']['count']})"),
        row("event-level ROC-AUC (harmful vs. no incident)", lambda m: _fmt(m["event_level"]["roc_auc"])),
        row("event-level PR-AUC (average precision)",
            lambda m: f"{_fmt(m['event_level']['pr_auc'])} (prevalence {_fmt(m['event_level']['prevalence'], True)})"),
        row("detection delay, median", lambda m: f"{_duration(m['detection_delay']['median_s'])}, "
                                                 f"{_fmt(m['detection_delay']['median_events'])} events"),
        row("detection delay, max", lambda m: f"{_duration(m['detection_delay']['max_s'])}, "
                                              f"{_fmt(m['detection_delay']['max_events'])} events"),
    ]


def _plots(report: Path, models: list[dict], scored: list[tuple[np.ndarray, np.ndarray, np.ndarray]],
           thresholds=None) -> dict:
    """Write the PNGs; returns ``{name: file name}``. Score histograms are drawn as outlines (benign
    shaded) so no class hides another, with the severity cut-offs marked; the ROC curve's false positive
    rate is on a log scale, where an alerting detector lives."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import precision_recall_curve, roc_curve

    files = {}
    colors = ["#1f77b4", "#ff7f0e"]

    # score distributions
    fig, axes = plt.subplots(1, len(models), figsize=(6 * len(models), 3.6), squeeze=False)
    bins = np.linspace(0.0, 1.0, 41)
    if thresholds is None:
        from detector.policy import Thresholds

        thresholds = Thresholds()
    cuts = (("low", thresholds.low), ("medium", thresholds.medium), ("high", thresholds.high),
            ("critical", thresholds.critical))
    for ax, m, (y, s, kind) in zip(axes[0], models, scored):
        for mask, label, color in ((kind == 0, "benign", "#7f7f7f"), (kind == 2, "look-alike", "#2ca02c"),
                                   (kind == 1, "incident", "#d62728")):
            if mask.any():
                ax.hist(s[mask], bins=bins, label=f"{label} ({int(mask.sum())})", color=color, density=True,
                        histtype="stepfilled" if label == "benign" else "step",
                        alpha=0.35 if label == "benign" else 1.0, linewidth=1.8)
        for name, x in cuts:
            ax.axvline(x, ls="--", lw=0.8, color="#444444")
            ax.text(x, 0.02, name, rotation=90, va="bottom", ha="right", fontsize=7, color="#444444",
                    transform=ax.get_xaxis_transform())
        ax.set_yscale("log")
        ax.set_xlabel("score")
        ax.set_ylabel("density (log)")
        ax.set_title(f"{m['role']}: {m['version']}", fontsize=10)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(report / "scores.png", dpi=100)
    plt.close(fig)
    files["scores"] = "scores.png"

    # ROC and PR
    have = [(m, y, s) for m, (y, s, _) in zip(models, scored) if 0 < y.sum() < len(y)]
    if have:
        fig, ax = plt.subplots(figsize=(5, 4.2))
        for c, (m, y, s) in zip(colors, have):
            fpr, tpr, _ = roc_curve(y, s)
            floor = 0.5 / max(1, int((y == 0).sum()))  # a log axis has no 0: half of one negative
            ax.plot(np.maximum(fpr, floor), tpr, color=c, drawstyle="steps-post",
                    label=f"{m['role']} (AUC {m['metrics']['event_level']['roc_auc']:.3f})")
        grid = np.logspace(-5, 0, 50)
        ax.plot(grid, grid, ls=":", color="#999999")
        ax.set_xscale("log")
        ax.set_xlim(max(1e-5, 0.5 / max(1, int((have[0][1] == 0).sum()))), 1.0)
        ax.set_xlabel("false positive rate (log)")
        ax.set_ylabel("true positive rate (harmful events)")
        ax.set_title("ROC, event level", fontsize=10)
        ax.legend(fontsize=8, loc="lower right")
        fig.tight_layout()
        fig.savefig(report / "roc.png", dpi=100)
        plt.close(fig)
        files["roc"] = "roc.png"

        fig, ax = plt.subplots(figsize=(5, 4.2))
        for c, (m, y, s) in zip(colors, have):
            prec, rec, _ = precision_recall_curve(y, s)
            ax.plot(rec, prec, color=c, drawstyle="steps-post",
                    label=f"{m['role']} (AP {m['metrics']['event_level']['pr_auc']:.3f})")
        ax.axhline(have[0][1].mean(), ls=":", color="#999999", label="prevalence")
        ax.set_xlabel("recall (harmful events)")
        ax.set_ylabel("precision")
        ax.set_ylim(0, 1.02)
        ax.set_title("precision-recall, event level", fontsize=10)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(report / "pr.png", dpi=100)
        plt.close(fig)
        files["pr"] = "pr.png"

    # drift
    drifts = [(m, {d["feature"]: d["psi"] for d in m["drift"]}) for m in models if m.get("drift")]
    if drifts:
        fig, ax = plt.subplots(figsize=(7, 5))
        names = list(FEATURE_NAMES)
        h = 0.8 / len(drifts)
        for j, (c, (m, d)) in enumerate(zip(colors, drifts)):
            vals = [d.get(n) or 0.0 for n in names]
            ax.barh(np.arange(len(names)) + j * h, vals, height=h, color=c, label=f"{m['role']}: {m['version']}")
        ax.set_yticks(np.arange(len(names)) + 0.4 - h / 2)
        ax.set_yticklabels(names, fontsize=8)
        ax.invert_yaxis()
        ax.axvline(0.1, ls=":", color="#999999")
        ax.axvline(0.25, ls="--", color="#d62728")
        ax.set_xlabel("population stability index (0.1 watch, 0.25 shifted)")
        ax.set_title("feature drift: training data -> evaluated data", fontsize=10)
        ax.legend(fontsize=8, loc="lower right")
        fig.tight_layout()
        fig.savefig(report / "drift.png", dpi=100)
        plt.close(fig)
        files["drift"] = "drift.png"
    return files


_PLOT_TITLES = {"scores": "Score distributions: benign, look-alike and incident events",
                "roc": "ROC curve (event level)", "pr": "Precision-recall curve (event level)",
                "drift": "Per-feature drift (PSI) between the training data and the evaluated data"}

_DEFINITIONS = [
    "Freeze outcomes (as the independent evaluation counts them), from the first freeze on one of the incident's own "
    "events, by position in the agent's scored sequence: caught at the first harmful action = at or before the first "
    "harmful event; contained = at or before the last harmful event (the breaker opened while the incident was still "
    "doing harm); stopped before harm = strictly before the first harmful event.",
    "Look-alikes frozen: look-alikes whose agent was frozen on one of their own events. Pre-action check: first harmful "
    "actions whose verdict was needs_approval or deny; approvals = needs_approval verdicts on benign outbound actions "
    "(in no incident, with destinations) per 1,000 of them.",
    "With --release-after, a simulated analyst releases every freeze that long (event time) after it (probation as "
    "after a human release); the report shows each model with and without it.",
    "Caught at the first harmful event: the agent was frozen on an incident event at or before the first harmful "
    "event, or the first harmful event got severity high or critical. Caught later: a freeze on a later event of the "
    "incident. Missed: neither. Masked: the agent was already frozen by an unrelated freeze when the incident began.",
    "False freezes: freezes on events that belong to no incident, per 1,000 agent-days (distinct agent and UTC date "
    "pairs among the scored events).",
    "Alert precision: decisions with action_taken alert or freeze on incident events, over all of them.",
    "Event level: positives are harmful events, negatives events of no incident; preparatory incident events are "
    "left out. PR-AUC is scikit-learn's average precision.",
    "Detection delay: from the first harmful event to the freeze, in seconds and in the agent's events; harmful done "
    "counts the harmful events performed up to and including the freezing event.",
    "Drift: population stability index per feature between the model's training deciles and the feature rows of the "
    "evaluated events outside labelled incidents (computed as training computes them); below 0.1 stable, above 0.25 "
    "shifted.",
]


def _sections(meta: dict, models: list[dict], plots: dict) -> list[tuple]:
    sec: list[tuple] = []
    inp = meta["input"]
    sec.append(("h1", "flowbreaker evaluation"))
    sec.append(("p", f"Input {inp['path']}: {inp['events']} valid events ({inp['invalid_lines']} invalid lines, "
                     f"{inp['duplicates']} duplicates), {inp['agents']} agents, {inp['agent_days']} agent-days. "
                     f"Labels {meta['labels']['path']}: {meta['labels']['incidents']} incidents, "
                     f"{meta['labels']['lookalikes']} look-alikes. Policy: {meta['policy'] or 'defaults'}. "
                     + (f"Frozen agents released after {meta['release_after_s']:g} s of event time."
                        if meta["release_after_s"] else
                        f"A simulated analyst gave every freeze (releasing it) and every alert episode a verdict "
                        f"{meta['analyst']['delay_s']:g} s of event time after it (after the episode closed)."
                        if meta.get("analyst") else "No releases (as replay).")))
    sec.append(("h2", "Summary"))
    cols = []
    for m in models:
        if "metrics_without_release" in m:
            with_ = (f"simulated analyst, verdicts after {meta['analyst']['delay_s']:g} s" if meta.get("analyst")
                     else f"released after {meta['release_after_s']:g} s")
            cols.append({"title": f"{m['role']}: {m['version']} ({with_})", "metrics": m["metrics"]})
            cols.append({"title": f"{m['role']}: {m['version']} (never released)",
                         "metrics": m["metrics_without_release"]})
        else:
            cols.append({"title": f"{m['role']}: {m['version']}", "metrics": m["metrics"]})
    head = ["metric"] + [c["title"] for c in cols]
    sec.append(("table", head, _summary_rows(cols)))
    for m in models:
        sec.append(("h2", f"Incidents, {m['role']} ({m['version']})"))
        rows = []
        for o in m["incidents"]:
            rows.append([o["incident_id"], o["kind"], o["agent_id"],
                         o["outcome"] + (" (masked)" if o["masked"] else ""), _fmt(o["first_severity"]),
                         _duration(o["delay_s"]) + ("" if o["delay_events"] is None else f", {o['delay_events']} ev"),
                         f"{_fmt(o['harmful_done'])}/{o['harmful']}", _fmt(o["max_score"])])
        sec.append(("table", ["incident", "kind", "agent", "outcome", "first harmful severity", "delay to freeze",
                              "harmful done", "top score"], rows))
    looks = models[0]["metrics"]["lookalikes"]
    if looks:
        sec.append(("h2", "Benign look-alikes"))
        rows = [[k] + [f"{m['metrics']['lookalikes'][k]['alerts']} alerts, {m['metrics']['lookalikes'][k]['freezes']} "
                       f"freezes / {m['metrics']['lookalikes'][k]['events']} events" for m in models]
                for k in sorted(looks)]
        sec.append(("table", ["kind"] + [m["role"] for m in models], rows))
    sec.append(("h2", "Plots"))
    for name in ("scores", "roc", "pr", "drift"):
        if name in plots:
            sec.append(("img", _PLOT_TITLES[name], plots[name]))
    drifted = [m for m in models if m.get("drift")]
    if drifted:
        sec.append(("h2", "Drift (PSI per feature)"))
        feats = [d["feature"] for d in drifted[0]["drift"]]
        look = [{d["feature"]: d for d in m["drift"]} for m in drifted]
        rows = [[f] + [f"{_fmt(lk[f]['psi'])} {lk[f]['status']}" for lk in look] for f in feats]
        sec.append(("table", ["feature"] + [m["role"] for m in drifted], rows))
    sec.append(("h2", "Definitions"))
    for d in _DEFINITIONS:
        sec.append(("p", d))
    return sec


def _markdown(sections: list[tuple]) -> str:
    out = []
    for s in sections:
        if s[0] == "h1":
            out.append(f"# {s[1]}\n")
        elif s[0] == "h2":
            out.append(f"## {s[1]}\n")
        elif s[0] == "p":
            out.append(s[1] + "\n")
        elif s[0] == "table":
            cell = lambda v: str(v).replace("|", "\\|")  # noqa: E731
            out.append("| " + " | ".join(cell(h) for h in s[1]) + " |")
            out.append("|" + "---|" * len(s[1]))
            out.extend("| " + " | ".join(cell(v) for v in r) + " |" for r in s[2])
            out.append("")
        elif s[0] == "img":
            out.append(f"![{s[1]}]({s[2]})\n")
    return "\n".join(out)


def _html(sections: list[tuple], report: Path) -> str:
    e = html.escape
    body = []
    for s in sections:
        if s[0] in ("h1", "h2"):
            body.append(f"<{s[0]}>{e(s[1])}</{s[0]}>")
        elif s[0] == "p":
            body.append(f"<p>{e(s[1])}</p>")
        elif s[0] == "table":
            body.append("<table><thead><tr>" + "".join(f"<th>{e(str(h))}</th>" for h in s[1]) + "</tr></thead><tbody>")
            body.extend("<tr>" + "".join(f"<td>{e(str(v))}</td>" for v in r) + "</tr>" for r in s[2])
            body.append("</tbody></table>")
        elif s[0] == "img":
            data = base64.b64encode((report / s[2]).read_bytes()).decode("ascii")
            body.append(f"<figure><img alt=\"{e(s[1])}\" src=\"data:image/png;base64,{data}\">"
                        f"<figcaption>{e(s[1])}</figcaption></figure>")
    style = ("body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}"
             "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;text-align:left;"
             "font-size:14px}th{background:#f3f3f3}img{max-width:100%}figure{margin:1em 0}"
             "figcaption{color:#555;font-size:13px}")
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>flowbreaker evaluation</title>"
            f"<style>{style}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")


def write_report(report: str | Path, meta: dict, models: list[dict],
                 scored: list[tuple[np.ndarray, np.ndarray, np.ndarray]], thresholds=None) -> Path:
    """Write ``metrics.json``, the PNG plots, ``report.md`` and ``report.html`` into ``report``.

    ``models`` are ``{"role", "version", "path", "metrics", "incidents", "drift"}``;
    ``scored`` holds per model ``(y, score, kind)`` over all decisions, with ``y`` 1 for
    harmful events and ``kind`` 0 benign, 1 incident, 2 look-alike (for the plots); ``thresholds``
    (the policy's severity cut-offs, defaults when ``None``) are marked on the score plot.
    """
    report = Path(report)
    report.mkdir(parents=True, exist_ok=True)
    plots = _plots(report, models, scored, thresholds)
    doc = {"format": REPORT_FORMAT, **meta, "plots": plots, "models": models}
    (report / "metrics.json").write_text(json.dumps(doc, indent=1, default=_json_default) + "\n")
    sections = _sections(meta, models, plots)
    (report / "report.md").write_text(_markdown(sections))
    (report / "report.html").write_text(_html(sections, report))
    return report


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return None if not math.isfinite(float(o)) else float(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def _plot_arrays(records: Sequence[Mapping], labels: Mapping) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    harmful = {e for inc in labels["incidents"] for e in inc["harmful_event_ids"]}
    incident = {e for inc in labels["incidents"] for e in inc["event_ids"]}
    looks = {e for la in labels.get("lookalikes", []) for e in la["event_ids"]}
    y = np.array([r["event_id"] in harmful for r in records], dtype=np.int64)
    s = np.array([r["score"] for r in records], dtype=np.float64)
    kind = np.array([1 if r["event_id"] in incident else (2 if r["event_id"] in looks else 0) for r in records],
                    dtype=np.int64)
    return y, s, kind


# ------------------------------------------------------------------ headline
def one_line(mm: dict) -> str:
    """The headline figures of :func:`summarize`'s output, as one line."""
    f, ff, la, g = mm["freeze_outcomes"], mm["false_freezes"], mm["lookalikes_frozen"], mm.get("gate")
    gate = (f"; gate held {g['first_harmful_held']}/{g['of']} first harmful actions at "
            f"{_fmt(g['approvals_per_1000_benign_outbound'])} approvals/1000 benign outbound") if g else ""
    return (f"caught at first harmful {f['caught_at_first_harmful']}/{f['of']}, contained {f['contained']}/{f['of']}, "
            f"stopped before harm {f['stopped_before_harm']}/{f['of']}; false freezes {ff['count']} "
            f"({_fmt(ff['per_1000_agent_days'])}/1000 agent-days); look-alikes frozen {la['frozen']}/{la['of']}; "
            f"ROC-AUC {_fmt(mm['event_level']['roc_auc'])}, PR-AUC {_fmt(mm['event_level']['pr_auc'])}{gate}"
            f"; benign alerted {_fmt(mm['alerts'].get('benign_alerted_per_agent_day'))}/agent-day; "
            f"freezes outside incidents {ff['count']}"
            + (f"; analyst verdicts {_fmt(mm['analyst']['per_agent_day'])}/agent-day ({mm['analyst']['verdicts']})"
               if mm.get("analyst") else ""))
