"""The engine: the one place that updates per-agent state and decides.

``Engine.process(event) -> Decision`` (or ``process_batch`` for many) is what the
stream processors and ``flowbreaker replay`` both call, so a replay of a topic
gives the decisions the live stream gave. Decisions do not depend on how events
are batched: learning depends only on the per-feature statistics, and the
model's batch scoring is row by row.

>>> from detector.events import decode_event
>>> eng = Engine()
>>> ev = decode_event({"event_id": "e1", "ts": "2026-03-02T09:00:00Z", "agent_id": "a", "operator_id": "o",
...                    "tool": "t", "action": "read", "resource": "r://x", "sensitivity": "internal"})
>>> d = eng.process(ev)
>>> d.record["severity"], d.record["breaker_state"], eng.process(ev).duplicate
('ok', 'closed', True)
"""

from __future__ import annotations

from array import array
from collections import OrderedDict
from functools import partial
from zlib import crc32
from datetime import datetime, timezone
from typing import Iterable, NamedTuple

import msgspec
import numpy as np
from msgspec.structs import astuple

from detector import breaker as brk
from detector.baseline import _FLOORS, _KIND_FEATURES, KIND_MIN, Z95, Baseline, KindProfiles, Prior
from detector.baseline import (_ALPHA_MIN, _DOWN, _KIND_ALPHA_MIN, _KIND_FLOOR_VALUES, _KIND_SLOTS, _UP, _deviate,
                               _kind_learn)
from detector.events import ActionEvent
from detector.evidence import MIN_RARITY, fisher, strength
from detector.evidence import _compiled as _evidence_kernel
from detector.manifest import _PERIODS, ManifestBook, Usage, stream_effect
from detector.episodes import EpisodeBook
from detector.features import (FEATURE_INDEX, KNOWN_REACH_QUIET, FeatureState, Observation, commit_novel,
                               destination_family, item_key, K_DEST, K_PRINCIPAL, K_RESOURCE, K_TOOL, resource_family,
                               settle, _py_extract)
from detector.features import _kernel as _extract
from detector.model import Model
from detector.native import kernels as _kernels
from detector.policy import Policy, Thresholds
from detector.features import FEATURE_NAMES as _FEATURE_NAMES, N_FEATURES, new_row
from detector import habits as _habits
from detector.habits import Habits, family_key, sends_of
from detector.scoring import (P_FLOOR, REASON_NEGLOG, REASON_Z, Calibration, FeatureTails, explain, round4,
                              score_of)
from detector.scoring import _score as _score_kernel
from detector.sketch import dedupe_key, stable_hash
from detector.timestamps import instant_or_none, iso_utc
from detector import trace as _trace
from detector.trace import TraceStore
from detector.verdicts import Verdict

__all__ = ["Engine", "Decision", "AgentState", "ONLINE_MODEL_VERSION"]

ONLINE_MODEL_VERSION = "online-only"
_DEDUPE = 32
_END = object()  # (the end of an iterator)
_STATE_VERSION = 6
_encode = msgspec.msgpack.Encoder().encode
#: the same encoding into a buffer (the compiled kernels' content key: no bytes object made, none grown)
_encode_into = _encode.__self__.encode_into
_RAW_PARTS = msgspec.msgpack.Decoder(list[msgspec.Raw]).decode  # a state's parts, undecoded
#: an agent whose profile is worth fewer observations than this is young (see the breaker's solo_trip)
YOUNG_N = 100.0
#: with no trained model: how many effectively independent features the largest rarity is taken over
GENERIC_MULTIPLICITY = 6.0
#: pending novelty (issue 18): at most this many never-seen items are counted per agent
PENDING_SLOTS = 16
_PW = 4  # per pending item: key, uses, first use t, tainted (1.0: it came with evidence of harm)
#: bounds of the engine's sketch of what peers adopted: items tracked, items adopted per operator, operators
_PEER_ITEMS, _PEER_ADOPTED, _PEER_OPERATORS = 20_000, 4_096, 10_000
#: verdict ids remembered (idempotence)
_VERDICTS_KEPT = 20_000
_I_EXFIL, _I_RULE2, _I_DETOUR, _I_OUTSIDER = (FEATURE_INDEX[n] for n in ("task_exfil", "rule_of_two",
                                                                       "untrusted_detour", "outsider_principal"))
_I_KIND = (FEATURE_INDEX["event_volume"], FEATURE_INDEX["event_fanout"])
_I_NOVEL = FEATURE_INDEX["novel_outbound"]
_I_TASK_ACTIONS = FEATURE_INDEX["task_actions"]
#: features a benign verdict caps (magnitudes: "this much is fine for this agent"); what is new (a tool,
#: a destination, a step, a principal) settles item by item instead, and the structural signs of harm
#: (rule of two, a detour after untrusted input, an outsider asking) are never switched off
_CAPPED = {FEATURE_INDEX[n]: n for n in FEATURE_INDEX if n not in (
    "novel_tool", "novel_outbound", "task_novel_steps", "unfamiliar_principal", "outsider_principal", "rule_of_two",
    "untrusted_detour")}
_CAP_INDEX = {n: i for i, n in _CAPPED.items()}
#: a capped magnitude stays quiet up to this multiple of the value judged benign (windows hold the remains of
#: earlier actions: the same routine an hour later reads a little more than what the analyst saw)
CAP_SLACK = 1.5


def _injection_signs(x: list[float]) -> bool:
    """The structural signs of an injection in an action's features: the rule of two, a detour after
    untrusted input, an outsider directing it. Nothing an analyst or recurrence vouches for switches them off."""
    return x[_I_RULE2] > 0.0 or x[_I_DETOUR] > 0.0 or x[_I_OUTSIDER] > 0.0


def _long_task(st: "AgentState", task_id: str, n: float, z: list[float], learn: bool) -> None:
    """A task longer than the agent's usual is news when it crosses and each time its length doubles, not on
    every later action of it: the deviation of ``task_actions`` is dropped in between (``z`` changed in
    place). ``learn``: remember this crossing (the stream), or only read (the pre-action check's copy)."""
    lt = st.long_task
    key = float(stable_hash(task_id))
    if lt and lt[0] == key and n < 2.0 * lt[1]:
        z[_I_TASK_ACTIONS] = 0.0
    elif learn:
        st.long_task = array("d", (key, n))


def _py_pending_quiet(p: array) -> set[int]:
    """The untainted pending items (:data:`PENDING_SLOTS`) other than destinations: met once, not news
    again while they settle (a never-seen destination stays one for the pre-action check until it does).
    The reference of ``detector._native.pending_quiet`` (called with ``_PW, K_DEST``), which gives ``None`` for
    what it leaves to it."""
    out = set()
    for b in range(0, len(p), _PW):
        if p[b + 3] == 0.0:
            k = int(p[b])
            if k >> 32 != K_DEST:
                out.add(k)
    return out


def _score(p_stat: float, p_comb: float | None, p_harm: float) -> tuple[float, list[dict] | None]:
    """An action's score from its rarities, and the reason to add when the model's combination is what
    makes it rare. ``p_comb`` is ``None`` without a trained model: the score is then the rarest feature's
    alone (the evidence of harm counts only through the breaker)."""
    if p_comb is None:
        return score_of(p_stat), None
    extra = _combination_reason(p_comb) if p_comb < p_stat and p_comb < 1e-3 else None
    # the three rarities (the rarest feature, the forest's combination of all, the evidence of harm together)
    # as one, Bonferroni-corrected for the three: min(1, 3 min(...)) spelt out, min() as it compares
    p = p_stat
    if p_comb < p:
        p = p_comb
    if p_harm < p:
        p = p_harm
    p = 3.0 * p
    return score_of(p if p < 1.0 else 1.0), extra


def _combination_reason(p_comb: float) -> list[dict]:
    """The reason :func:`_score` adds when the model's combination is what makes an action rare."""
    return [{"feature": "combination", "value": round(p_comb, 8), "baseline": 1.0,
             "detail": "this combination of volume, destinations and timing is rare for agents "
                       f"like this one (isolation forest rarity {p_comb:.1e})."}]


def _py_scored(p_stat: float, p_comb: float | None, p_harm: float, th: Thresholds) -> tuple[float, float, str, bool]:
    """``(score, harm, severity, named)``: the action's score (:func:`_score`), the evidence of harm on the
    score scale (0 without any), the score's severity (``th.severity``), and whether the model's combination is
    a reason. The reference of ``detector._score.scored``, which takes ``th``'s bounds as :func:`_bounds` gives
    them."""
    score, extra = _score(p_stat, p_comb, p_harm)
    harm = score_of(p_harm) if p_harm != 1.0 else 0.0  # no evidence of harm: 0
    return score, harm, th.severity(score), extra is not None


def _bounds(th: Thresholds) -> tuple[float, float, float, float, float]:
    """What ``detector._score.scored`` compares a score with: the severities' thresholds, then score_of's floor."""
    return th.critical, th.high, th.medium, th.low, P_FLOOR


class _Reading(NamedTuple):
    """One action read against its agent's state (:meth:`Engine._read`): everything scoring needs but
    the model's combination p-value, which is computed for a whole batch at once."""

    obs: Observation
    #: clauses of the agent's intended-use manifest the action breaks (empty without a manifest)
    violations: list
    #: signed robust z per feature, and its tail rarity (-log p), both zero where the action is not blamed
    z: list[float]
    r: list[float]
    #: the profile's location as the action was compared with it, kept for the reasons only when some
    #: feature is rare enough to be named (learning replaces the profile)
    loc: array | None
    #: rarity of the rarest feature (calibrated), and of the evidence of harm
    p_stat: float
    p_harm: float
    #: the feature values in log1p units (what a verdict teaches)
    xl: array


#: a _Reading from a tuple of its fields, without the named tuple's Python-level __new__
_new_reading = tuple.__new__


def _harm(ev: ActionEvent, obs: Observation) -> float:
    """What one action can damage by itself: data leaving or destroyed counts fully, data
    written half-way, data only read a third; public data that is not deleted nothing."""
    if ev.action == "delete" or obs.outbound and ev.sensitivity != "public":
        return 1.0
    if ev.sensitivity == "public":
        return 0.0
    return 0.5 if ev.action == "write" or ev.destinations else 0.35


def _py_rarities(tails: FeatureTails, z: list[float], x: list[float], caps: array | None, quiet: tuple[int, ...],
                 known_reach: bool) -> tuple[list[float], float, float]:
    """The tail rarity of each deviation in ``z``, the largest, and the largest the action is blamed for.

    ``caps`` (a benign verdict's, or ``None``): what an analyst judged benign is not news up to the value
    judged (``z`` zeroed where ``x`` is at most :data:`CAP_SLACK` times the cap). The blame, after the
    largest rarity is taken (learning looks at every feature: an action in the wake of a spike teaches
    nothing): an action is blamed only for the windows it added to (``quiet``: the wake of an earlier spike is
    not news), and not for fan-out when it reached only destinations it reached before (``known_reach``: a
    destination against its own history); ``z`` and the rarities are zeroed there. ``z`` changes in place.
    The reference of ``detector._native.rarities``."""
    if caps is not None:
        for i, cap in enumerate(caps):
            if cap > 0.0 and z[i] > 0.0 and x[i] <= CAP_SLACK * cap:
                z[i] = 0.0
    r = tails.neglogs(z)
    raw = max(r)
    for i in quiet:
        if z[i] > 0.0:
            z[i] = 0.0
            r[i] = 0.0
    if known_reach:
        for i in KNOWN_REACH_QUIET:
            if z[i] > 0.0:
                z[i] = 0.0
                r[i] = 0.0
    return r, raw, max(r)


_k_rarities = getattr(_kernels, "rarities", None)
#: detector._native.pending_quiet (_py_pending_quiet compiled), or None
_k_quiet = getattr(_kernels, "pending_quiet", None)
#: detector._score.scored (_py_scored compiled), or None
_scored = getattr(_score_kernel, "scored", None)
#: detector._score.Evidence.harm_pvalue (Engine._py_harm_pvalue compiled), or None
_harm_kernel = _evidence_kernel.harm_pvalue if _evidence_kernel is not None else None


def _rarities_consts(tails: FeatureTails) -> tuple | None:
    """What ``detector._native.rarities`` takes first for ``tails`` (its tables laid end to end, and the
    constants), or ``None`` when the kernel is not built or ``tails`` does not lay its tables out for it."""
    if _k_rarities is None or type(tails).neglogs is not FeatureTails.neglogs:
        return None
    try:
        return (tails._flat, tails._slopes, int(tails._n), float(tails.STEPS_PER_Z), float(tails.Z_MAX), CAP_SLACK,
                KNOWN_REACH_QUIET)
    except (AttributeError, TypeError, ValueError):
        return None


def _rarities_kernel(tails: FeatureTails):
    """``detector._native.rarities`` bound to ``tails`` (called with ``z, x, caps, quiet, known_reach[,
    rows]``), or ``None`` (see :func:`_rarities_consts`)."""
    consts = _rarities_consts(tails)
    return partial(_k_rarities, consts) if consts is not None else None


#: detector._native.read_tail: Engine._read after _extract for an ordinary action, compiled (None: not built)
_read_tail = getattr(_kernels, "read_tail", None)
#: read_tail settles what it read itself (Engine._settle compiled, for an Engine; the method for what it leaves): its
#: reference is Engine._settle (False: read_tail calls the method)
_settle_fused = True


def _read_consts(eng: "Engine"):
    """What ``detector._native.read_tail`` takes first for ``eng`` (its constants, parsed once by ``read_setup``),
    or ``None``: the kernel is not built, or the rarities' tables are not its to take (``eng._rarities``)."""
    if _read_tail is None or eng._rarities is None or _k_rarities is None:
        return None
    curves = eng._harm_curves
    curve = eng._cal.compiled if type(eng._cal).pvalue is Calibration.pvalue else None
    habits_c = _habits._k_sends is not None and _habits._k_observe is not None
    return _kernels.read_setup((
        eng._rarities, _FLOORS, _KIND_FEATURES, _KIND_FLOOR_VALUES, KIND_MIN, Z95, _UP, _DOWN, _KIND_ALPHA_MIN,
        _KIND_SLOTS, _ALPHA_MIN, REASON_Z, REASON_NEGLOG, eng._learn_raw, MIN_RARITY, YOUNG_N,
        _I_TASK_ACTIONS, _I_RULE2, _I_DETOUR, _I_OUTSIDER,
        _harm_kernel if curves is not None else None, *(curves if curves is not None else (None, None)),
        curve.pvalue if curve is not None else None, _new_row, _Reading, Baseline, KindProfiles, Habits, Usage,
        _PERIODS, _habits.EXTERNAL, _habits.BROADCAST, family_key, _habits._COUNTED, _habits.SLOTS, _habits.HALF_AT,
        habits_c, sends_of, _habits.MIN_SENDS, _habits.MIN_SHARE, _I_NOVEL, commit_novel,
        Engine if _settle_fused else None, P_FLOOR, _I_EXFIL, *_I_KIND, PENDING_SLOTS, _PEER_ITEMS, _PEER_ADOPTED,
        _PEER_OPERATORS, settle))


#: detector._native.pending_count and peers_count: Engine._py_pending and Engine._py_peers compiled (None: not built)
_k_pending = getattr(_kernels, "pending_count", None)
_k_peers = getattr(_kernels, "peers_count", None)


#: detector._native.decide: process_batch's second loop for an ordinary decision, compiled (None: not built)
_decide = getattr(_kernels, "decide", None)


def _decide_consts(eng: "Engine") -> tuple | None:
    """``(thresholds, consts)``: the thresholds ``detector._native.decide`` was set up for and what it takes first
    (its constants, parsed once by ``decide_setup``), or ``None``: the kernel is not built, or the thresholds are
    not all floats (or the budget's half-life not positive) as it takes them."""
    if _decide is None:
        return None
    th = eng.policy.thresholds
    nums = (*_bounds(th), th.evidence, th.budget_floor, th.budget_half_life_s, th.risk_budget, brk._LN2, YOUNG_N)
    if any(type(v) is not float for v in nums) or not th.budget_half_life_s > 0.0:
        return None
    return th, _kernels.decide_setup((*nums, brk.CLOSED, brk.OPEN, brk._NONE[0], "ok", round4, eng._version,
                                      TraceStore, _trace._Ring, OrderedDict, OrderedDict.move_to_end,
                                      _trace._encode_into, _trace._ORDER, _trace.CHUNK))


def _attribution(trace: list[dict], *, operator_id: str, requested_by: str | None, instruction_hash: str | None,
                 task_id: str | None, trigger_event_id: str | None) -> dict:
    """Who and what stands behind an incident, from the agent's recent trace: the operator, requester,
    configuration and task of the triggering action (for a human freeze, of the agent's last one), the
    task's events, the chain of parents back from the trigger (none without one, at most 50 hops), and
    every operator, requester and configuration the trace shows."""
    by_id = {e["event_id"]: e for e in trace}
    chain, cur, hops = [], trigger_event_id, 0
    while cur is not None and cur in by_id and hops < 50:
        chain.append(cur)
        cur = by_id[cur]["parent_event_id"]
        hops += 1
    return {
        "operator_id": operator_id, "requested_by": requested_by,
        "instruction_hash": instruction_hash, "task_id": task_id,
        "task_events": [e["event_id"] for e in trace if task_id is not None and e["task_id"] == task_id],
        "parent_chain": chain,
        "operators_seen": sorted({e["operator_id"] for e in trace}),
        "requesters_seen": sorted({e["requested_by"] for e in trace if e["requested_by"]}),
        "instruction_hashes_seen": sorted({e["instruction_hash"] for e in trace if e["instruction_hash"]}),
    }


def _py_remember(seen: array, content: array, pos: int, h: int | str, hc: int) -> int:
    """Look up event id key ``h`` (or an event id: its :func:`dedupe_key`) with content key ``hc`` in an
    agent's ring of recent ids (``seen``) and their content keys (``content``, 0: not known): 2 for a true
    duplicate (the same id with the same or an unknown content; nothing is written), else ``h`` and ``hc`` are
    written at ``pos`` and the answer is 1 for an id reused for another action, 0 for a new id. The reference
    of ``detector._native.remember``."""
    if isinstance(h, str):
        h = dedupe_key(h)
    if h in seen:
        if any(seen[k] == h and content[k] in (hc, 0) for k in range(len(seen))):
            return 2
        status = 1
    else:
        status = 0
    seen[pos] = h
    content[pos] = hc
    return status


_remember = getattr(_kernels, "remember", None) or _py_remember
#: a new row of N_FEATURES doubles (the log1p row an action teaches: an array, not a list of floats)
_new_row = new_row


def content_key(ev: ActionEvent) -> int:
    """A non-zero 16-bit key of everything an event says, to tell a redelivered event (same id, same
    content) from an id reused for another action (one reuse in 65,535 passes as a redelivery): of its values
    (msgspec's ``astuple``, which the trace's row takes too), :func:`values_key`."""
    return values_key(astuple(ev))


def values_key(values: tuple) -> int:
    """The content key of an event's values: the CRC-32 of their msgpack (an array), its low 16 bits made odd.
    (Before state version 6 the key was of the event's msgpack, field names included, which cost 0.45 us an action
    against 0.29: a ring of that version is checked against both keys until it has turned once, see
    :func:`_legacy_content_key`.)"""
    return (crc32(_encode(values)) & 0xFFFF) | 1


def _legacy_content_key(ev: ActionEvent) -> int:
    """The content key of state versions 1-5: of the event's msgpack, field names included (see :func:`values_key`)."""
    return (crc32(_encode(ev)) & 0xFFFF) | 1


def _remember_either(seen: array, content: array, pos: int, h: int | str, hc: int, hc_legacy: int) -> int:
    """:func:`_py_remember` of a ring that may still hold content keys of either encoding: the same id with the
    legacy key ``hc_legacy`` is a true duplicate too (a redelivery of an event decided before the upgrade; nothing
    is written); otherwise the ring answers for ``hc`` and keeps it."""
    key = dedupe_key(h) if isinstance(h, str) else h
    if any(seen[k] == key and content[k] == hc_legacy for k in range(len(seen))):
        return 2
    return _py_remember(seen, content, pos, key, hc)


class AgentState:
    """Everything the engine keeps per agent (the trace aside). Bounded."""

    __slots__ = ("features", "baseline", "breaker", "seen", "seen_content", "seen_pos", "operator_id", "usage",
                 "pending", "caps", "kinds", "habits", "long_task", "legacy_keys")

    def __init__(self, prior: Prior, operator_id: str) -> None:
        self.features = FeatureState()
        self.features.hours = prior.hours
        if prior.sketches is not None:
            self.features.seed_sketches(prior.sketches)
        self.baseline = Baseline.from_prior(prior)
        self.breaker = brk.BreakerState()
        #: the agent's last event ids (32-bit keys) and, beside each, a key of that event's content
        self.seen = array("I", bytes(4 * _DEDUPE))
        self.seen_content = array("H", bytes(2 * _DEDUPE))
        self.seen_pos = 0
        #: how many of the ring's content keys may still be of state version 5's encoding (_legacy_content_key):
        #: counts down as new keys overwrite them
        self.legacy_keys = 0
        self.operator_id = operator_id
        #: records and bytes sent out per hour and day (intended-use ceilings; kept for every agent, so a
        #: manifest published later sees what the agent already sent)
        self.usage = Usage()
        #: pending novelty: never-seen items counted until they settle (PENDING_SLOTS x (key, uses, first t,
        #: tainted)), empty until the agent meets one
        self.pending = array("d")
        #: per feature, the largest value an analyst judged benign (a benign verdict's reasons stop alerting
        #: up to it), or None before any verdict
        self.caps: array | None = None
        #: per-action magnitudes per kind of action (like with like)
        self.kinds = KindProfiles()
        #: per family of destination, how often a send goes somewhere new (detector/habits.py); from training
        self.habits = Habits(prior.habits or b"")
        #: the last task alerted for its length, and its length then (a long task is news when it crosses the
        #: agent's usual length and each time it doubles, not on every later action): (task key, actions)
        self.long_task = array("d")

    def dump(self, episode: tuple | None = None) -> bytes:
        """The state as bytes (the worker's changelog value), with the agent's open alert episode
        (:meth:`detector.episodes.EpisodeBook.open_state`) when given."""
        # a ring that may still hold version 5's content keys is written as version 5 (the same parts): read back,
        # it is checked against both keys again until its last such key is overwritten
        version = 5 if self.legacy_keys else _STATE_VERSION
        return msgspec.msgpack.encode((version, self.operator_id, self.features.to_tuple(),
                                       self.baseline.to_tuple(), self.breaker.to_tuple(), self.seen.tobytes(),
                                       self.seen_pos, self.seen_content.tobytes(), self.usage.to_tuple(),
                                       self.pending.tobytes(), self.caps.tobytes() if self.caps is not None else None,
                                       self.kinds.to_bytes(), self.habits.to_bytes(), self.long_task.tobytes(),
                                       episode))

    @classmethod
    def load(cls, blob: bytes, hours: tuple[float, ...] | None = None) -> "AgentState":
        """The state :meth:`dump` wrote (this version; version 5, whose dedupe ring's content keys are of another
        encoding (:func:`_legacy_content_key`: an event is checked against both until the ring has turned once, as
        for versions 3 and 4); version 4, without destination habits; version 3, without pending novelty, verdict
        caps and kind profiles; or version 1 whose dedupe ring kept no content keys (an id from that ring counts as
        a true duplicate), and which kept no usage)."""
        parts = msgspec.msgpack.decode(blob)
        ver = parts[0] if isinstance(parts, list) and parts else None
        usage = None
        pending, caps, kinds, habits, long_task = b"", None, b"", b"", b""
        if ver == 1 and len(parts) == 7:
            ver, op, f, b, br, seen, pos = parts
            content = bytes(2 * _DEDUPE)
        elif ver == 3 and len(parts) == 9:
            ver, op, f, b, br, seen, pos, content, usage = parts
        elif ver == 4 and len(parts) == 12:
            ver, op, f, b, br, seen, pos, content, usage, pending, caps, kinds = parts
        elif ver in (5, _STATE_VERSION) and len(parts) == 15:
            ver, op, f, b, br, seen, pos, content, usage, pending, caps, kinds, habits, long_task, _ = parts
        else:
            raise ValueError(f"agent state version {ver} is not {_STATE_VERSION}")
        s = cls.__new__(cls)
        s.operator_id = op
        s.features = FeatureState.from_tuple(f)
        s.features.hours = hours
        s.baseline = Baseline.from_tuple(b)
        s.breaker = brk.BreakerState.from_tuple(br)
        s.seen = array("I", seen)
        s.seen_content = array("H", content)
        if len(s.seen) != _DEDUPE or len(s.seen_content) != _DEDUPE:
            raise ValueError("agent state has the wrong dedupe ring size")
        s.seen_pos = pos
        s.legacy_keys = _DEDUPE if ver in (3, 4, 5) else 0  # keys of the msgpack encoding (version 1: none)
        s.usage = Usage.from_tuple(usage) if usage is not None else Usage()
        s.pending = array("d", pending)
        s.caps = array("d", caps) if caps is not None else None
        if len(s.pending) % _PW or len(s.pending) > _PW * PENDING_SLOTS or (
                s.caps is not None and len(s.caps) != N_FEATURES):
            raise ValueError("agent state has the wrong pending novelty or verdict caps size")
        s.kinds = KindProfiles(kinds)
        s.habits = Habits(habits)
        s.long_task = array("d", long_task)
        if len(s.long_task) not in (0, 2):
            raise ValueError("agent state has the wrong long-task size")
        return s

    @staticmethod
    def episode_of(blob: bytes) -> tuple | None:
        """The open alert episode a state :meth:`dump` wrote carries (plain values), or ``None``; without
        building the rest. Raises ValueError on a state that cannot be read."""
        try:
            parts = _RAW_PARTS(blob)
            if len(parts) != 15:
                return None
            return msgspec.msgpack.decode(parts[14])
        except (msgspec.DecodeError, TypeError) as err:
            raise ValueError(f"agent state is not readable: {err}") from None

    @staticmethod
    def breaker_of(blob: bytes) -> brk.BreakerState:
        """The breaker of a state :meth:`dump` wrote, without building the rest (~1.5 us against ~13 us for
        :meth:`load`): a worker finds the frozen agents among the thousands its table recovered. Raises
        ValueError on a state :meth:`load` would refuse for its version or length."""
        try:
            parts = _RAW_PARTS(blob)
            ver = msgspec.msgpack.decode(parts[0]) if parts else None
            if (ver, len(parts)) not in ((1, 7), (3, 9), (4, 12), (5, 15), (_STATE_VERSION, 15)):
                raise ValueError(f"agent state version {ver} is not {_STATE_VERSION}")
            return brk.BreakerState.from_tuple(msgspec.msgpack.decode(parts[4]))
        except (msgspec.DecodeError, TypeError) as err:
            raise ValueError(f"agent state is not readable: {err}") from None


class Decision(msgspec.Struct, gc=False):
    """The outcome of one event. ``record`` is the contract's decision record.

    A struct made in C with its defaults (a Python ``__init__`` setting fourteen slots cost ~150 ns more an
    event); not tracked by the garbage collector: nothing it holds refers back to it."""

    event: ActionEvent
    record: dict = {}
    freeze: dict | None = None
    incident: dict | None = None
    transition: tuple[str, str] | None = None
    #: a true duplicate (same id, same content): skipped, no record
    duplicate: bool = False
    #: an id from the agent's recent events with different content: decided, and flagged in the reasons
    reused_id: bool = False
    #: why the event's approval_id was refused (its event is scored without it), or None
    approval_refused: str | None = None
    #: clauses of the agent's intended-use manifest this action breaks (detector.manifest.Violation)
    violations: list | tuple = ()
    dest_classes: tuple[str, ...] = ()
    #: the deviations (an array('d'), or a list without the compiled kernel)
    z: array | list[float] | None = None
    #: the feature values (natural units; an array('d'), or a list without the compiled kernel), for drift monitoring
    x: array | list[float] | None = None
    #: the evidence of harm on the score scale (what one action needs to trip the breaker alone);
    #: :meth:`Engine.assess` gives the same number before the action
    harm: float | None = None
    #: alert episode records (detector/episodes.py) this decision opened, changed or closed, to publish
    #: on agent-alerts keyed by agent id
    episodes: list[dict] | tuple = ()


#: detector._native.admit: process_batch's first loop for an ordinary event, compiled (None: not built)
_admit = getattr(_kernels, "admit", None)


def _admit_consts():
    """What ``detector._native.admit`` takes first (its constants, parsed once by ``admit_setup``), or ``None``: the
    kernel is not built, or the dedupe ring's kernel is not the one it calls (``_remember``). Beside the first loop's
    own, those of :meth:`Engine._read`'s first lines, which it takes itself in the plain case: ``_read`` as defined
    here (``_ENGINE_READ``: a subclass's or an instance's own is called), this module's globals (its ``_extract`` and
    ``_read_tail`` are read there at each call of ``admit``, with the engine's ``_fused``, ``_adopted`` and
    ``policy``: Python the reads call back does not rebind them) and the pending items' layout."""
    if _admit is None or _remember is not getattr(_kernels, "remember", None):
        return None
    return _kernels.admit_setup((astuple, _encode_into, Decision, _Reading, _DEDUPE, _ENGINE_READ, globals(), _PW,
                                 K_DEST, array))


class Engine:
    """Scores actions against per-agent baselines and runs the circuit breakers.

    ``model`` is a trained :class:`detector.model.Model` or ``None`` (online
    baselines only: each agent starts from a wide generic prior).
    """

    def __init__(self, *, policy: Policy | None = None, model: Model | None = None, trace_length: int = 200,
                 trace_agents: int = 5000, approvals=None, manifests: ManifestBook | None = None) -> None:
        self.policy = policy or Policy()
        #: where ``approval_id``s are checked: any object with ``screen(event) -> rejection | None``
        #: (:class:`detector.approvals.ApprovalBook`, or the worker's store). ``None``: ids are taken at
        #: their word (an offline replay with no approvals dump).
        self.approvals = approvals
        #: intended-use manifests in force (detector/manifest.py), or None (no agent has one). The shell
        #: swaps in a new book between batches; read once per batch.
        self.manifests = manifests
        self.agents: dict[str, AgentState] = {}
        self.traces = TraceStore(length=trace_length, max_agents=trace_agents)
        #: alert episodes (open ones, and closed ones a verdict may still name): kept by the engine, not in
        #: the agents' state, so an agent that rests keeps its episode
        self.episodes = EpisodeBook(quiet_s=self.policy.thresholds.episode_quiet_s)
        #: what peers adopted: (operator, item) -> [tainted, agent hashes...], and per operator the items
        #: enough of its agents took up without evidence of harm (bounded: _PEER_*)
        # (OrderedDicts: dropping the oldest of a plain dict again and again costs a scan over the holes)
        self._peer_items: OrderedDict[int, list] = OrderedDict()
        self._adopted: dict[str, set[int]] = {}
        self._verdicts: OrderedDict[str, None] = OrderedDict()
        self._generic = Prior.generic()
        # the compiled first loop's constants (detector._native.admit), or None: the Python lines
        self._admitted = _admit_consts()
        self.swap_model(model)

    def swap_model(self, model: Model | None) -> None:
        """Score from now on with ``model`` (a promoted version, or ``None``). Per-agent online
        state (baselines, sketches, breakers) carries over; agents first seen later start from
        the new model's priors; hour profiles come from the new model."""
        self.model = model
        self._cal = model.stat_calibration if model is not None else Calibration.multiplicity(GENERIC_MULTIPLICITY)
        self._tails = model.feature_tails if model is not None else FeatureTails.generic(N_FEATURES)
        self._rarities = _rarities_consts(self._tails)  # the rarities kernel's first argument, or None
        self._version = model.version if model is not None else ONLINE_MODEL_VERSION
        self._evidence_cal = getattr(model, "evidence_calibration", None) if model is not None else None
        # the compiled curves of both calibrations for the harm kernel, or None (the reference): a calibration
        # without one (its numbers not the kernel's to take) keeps the whole computation in Python
        cal_curve = self._cal.compiled
        ev_curve = self._evidence_cal.compiled if self._evidence_cal is not None else None
        self._harm_curves = ((cal_curve, ev_curve) if _harm_kernel is not None and cal_curve is not None
                             and (self._evidence_cal is None or ev_curve is not None) else None)
        # actions whose rarest deviation stays below this teach the baseline (score < medium)
        self._learn_raw = self._cal.inverse(10.0 ** (-6.0 * self.policy.thresholds.medium))
        # the fused read's constants (detector._native.read_tail), or None: _read runs its Python lines
        self._fused = _read_consts(self)
        # the compiled second loop's thresholds and constants (detector._native.decide), or None: the Python lines
        self._decided = _decide_consts(self)
        for agent_id, st in self.agents.items():
            st.features.hours = self._prior(agent_id, st.operator_id, "").hours if model is not None else None

    @property
    def model_version(self) -> str:
        return self._version

    # ------------------------------------------------------------- state I/O
    def _new_agent(self, ev: ActionEvent) -> AgentState:
        """The state of an agent met for the first time (its prior's), made the engine's: what process_batch does
        before reading an agent's first event (detector._native.admit calls it too)."""
        st = self.agents[ev.agent_id] = AgentState(self._prior(ev.agent_id, ev.operator_id, ev.tool), ev.operator_id)
        return st

    def _prior(self, agent_id: str, operator_id: str, tool: str) -> Prior:
        if self.model is None:
            return self._generic
        return self.model.prior_for(agent_id, operator_id, tool)

    def dump_agent(self, agent_id: str) -> bytes | None:
        """The agent's state with its open alert episode, as the worker keeps it; ``None`` when unknown."""
        st = self.agents.get(agent_id)
        return st.dump(self.episodes.open_state(agent_id)) if st is not None else None

    def load_agent(self, agent_id: str, blob: bytes) -> None:
        """Make a state :meth:`dump_agent` wrote the agent's; its open alert episode joins the episodes
        unless they hold it already (closed while the agent rested, or open)."""
        st = AgentState.load(blob)
        try:  # an episode that is not one (a record someone else wrote) is left out; the state stands
            ep = AgentState.episode_of(blob)
            if ep is not None:
                self.episodes.restore(agent_id, ep)
        except ValueError:
            pass
        if self.model is not None:
            st.features.hours = self.model.prior_for(agent_id, st.operator_id, "").hours
        self.agents[agent_id] = st

    def breaker_state(self, agent_id: str) -> str | None:
        st = self.agents.get(agent_id)
        return st.breaker.state if st is not None else None

    # -------------------------------------------------------------- deciding
    def process(self, event: ActionEvent) -> Decision:
        return self.process_batch((event,))[0]

    def process_batch(self, events: Iterable[ActionEvent]) -> list[Decision]:
        policy = self.policy
        th = policy.thresholds
        agents = self.agents
        out: list[Decision] = []
        pending: list[tuple[Decision, AgentState, _Reading, tuple]] = []
        approvals = self.approvals
        book = self.manifests
        remember, encode = _remember, _encode
        zrows = bytearray() if self.model is not None else None  # the model's rows, filled by _read
        # the ordinary events of a list or tuple (no approval to screen, an agent held, a ring of this state version)
        # in one compiled call (detector._native.admit), which stops at the first one it leaves to the lines below
        seq = type(events) is list or type(events) is tuple
        ak = self._admitted if seq else None
        it = None if seq else iter(events)
        i, n_ev = 0, len(events) if seq else -1
        while True:
            if seq:
                if ak is not None:
                    i = _admit(ak, self, events, i, out, pending, zrows, book, agents, approvals)
                if i >= n_ev:
                    break
                ev = events[i]
                i += 1
            else:
                ev = next(it, _END)
                if ev is _END:
                    break
            refused = None
            if ev.approval_id is not None and approvals is not None:
                refused = approvals.screen(ev)
                if refused is not None:  # an id that does not cover the action signs nothing off
                    ev = ev.replace(approval_id=None)
            st = agents.get(ev.agent_id)
            if st is None:
                st = self._new_agent(ev)
            pos = st.seen_pos
            values = astuple(ev)  # the trace's row is made of them too
            hc = (crc32(encode(values)) & 0xFFFF) | 1  # values_key
            if st.legacy_keys:  # a ring from before state version 6: the key it may hold counts too
                seen = _remember_either(st.seen, st.seen_content, pos, ev.event_id, hc, _legacy_content_key(ev))
            else:
                seen = remember(st.seen, st.seen_content, pos, ev.event_id, hc)
            if seen == 2:
                out.append(Decision(ev, approval_refused=refused, duplicate=True))
                continue
            st.seen_pos = (pos + 1) % _DEDUPE
            if st.legacy_keys:  # one old key overwritten (a duplicate writes nothing)
                st.legacy_keys -= 1
            reading = self._read(st, ev, book, rows=zrows)
            obs = reading.obs
            # seen == 1: the same id on a different action: never a reason to look away (reused_id)
            d = Decision(ev, approval_refused=refused, reused_id=seen == 1, violations=reading.violations,
                         dest_classes=obs.dest_classes, z=reading.z, x=obs.x)
            out.append(d)
            pending.append((d, st, reading, values))
        if not pending:
            return out
        # the model scores the whole batch in one call (row by row, so batching changes no number)
        if self.model is not None:
            rows = np.frombuffer(zrows, dtype=np.float64).reshape(len(pending), N_FEATURES)
            p_comb = self.model.combination_pvalues(rows)
            p_comb = p_comb.tolist() if isinstance(p_comb, np.ndarray) else [float(p) for p in p_comb]
        else:
            p_comb = None
        episodes = self.episodes
        severity_of, step, trace = th.severity, brk.step, self.traces.add_values
        version = self._version
        bounds = _bounds(th)
        # the ordinary decisions (scored "ok", the breaker closed or open and not tripping, no episode closing) in one
        # compiled call (detector._native.decide), which stops at the first one it leaves to the lines below
        decided = self._decided
        dk = decided[1] if decided is not None and decided[0] is th and type(episodes) is EpisodeBook else None
        k, n = 0, len(pending)
        while k < n:
            if dk is not None:
                k = _decide(dk, pending, p_comb, k, self.traces, episodes)
                if k >= n:
                    break
            d, st, (obs, _, z, r, loc, p_stat, p_harm, xl), values = pending[k]
            ev = d.event
            pc = None if p_comb is None else p_comb[k]
            k += 1
            got = _scored(p_stat, pc, p_harm, bounds) if _scored is not None else None
            score, harm_score, severity, named = got if got is not None else _py_scored(p_stat, pc, p_harm, th)
            extra = _combination_reason(pc) if named else None
            d.harm = harm_score
            effect = None
            if d.reused_id or d.violations:
                if d.reused_id and score < th.medium:
                    score = th.medium  # an analyst should see it
                effect = stream_effect(d.violations, th) if d.violations else None
                if effect is not None and score < effect[0]:
                    score = effect[0]  # outside its intended use: an alert, and spent from the risk budget
                severity = severity_of(score)
            reasons: list[dict] = []
            if severity != "ok":
                reasons = explain(z, r, obs.x, loc, extra=extra)
                if effect is not None:
                    reasons.insert(0, effect[1])
                if obs.config_change:
                    reasons.append({"feature": "config_change", "value": 1.0, "baseline": 0.0,
                                    "detail": "this happens within an hour of a change of the agent's configured "
                                              f"instructions (instruction_hash now {ev.instruction_hash!r})."})
                if obs.new_outbound and not any(r["feature"] == "novel_outbound" for r in reasons):
                    reasons.append({"feature": "novel_outbound", "value": float(len(obs.new_outbound)),
                                    "baseline": 0.0,
                                    "detail": "first time sending to " + ", ".join(obs.new_outbound) + "."})
                if d.reused_id:
                    reasons.append({"feature": "reused_event_id", "value": 1.0, "baseline": 0.0,
                                    "detail": f"event id {ev.event_id!r} was already used by a different recent action "
                                              "of this agent; both are scored."})
                if d.approval_refused is not None:
                    reasons.append({"feature": "approval_refused", "value": 1.0, "baseline": 0.0,
                                    "detail": f"the action came with an approval id that does not cover it "
                                              f"({d.approval_refused}); scored as unapproved."})
                if not reasons:  # rare only taken together: name what added most
                    names = [_FEATURE_NAMES[i] for i in sorted(range(N_FEATURES), key=lambda i: (-r[i], i))[:3]
                             if r[i] > 0.0]
                    reasons.append({"feature": "combination", "value": round4(score), "baseline": 0.0,
                                    "detail": "no single feature is rare enough to name; rare taken together"
                                              + (": " + ", ".join(names) if names else "") + "."})
                if obs.approved:
                    reasons.append({"feature": "approved", "value": 1.0, "baseline": 0.0,
                                    "detail": f"signed off by approval {ev.approval_id!r}; counted, never the cause "
                                              "of a freeze."})
            b = st.breaker
            if obs.approved and b.state != brk.OPEN:
                action, transition = ("alert" if severity in ("medium", "high", "critical") else "none"), None
            else:
                # one action trips the breaker by itself only on evidence of harm: a harm feature is itself
                # rare for this agent (novelty alone is held by the pre-action check and spends the budget);
                # a young agent (still judged mostly by its peers' profile) only when the action moves
                # sensitive data out or destroys something
                sensitive_out = obs.outbound and ev.sensitivity in ("confidential", "restricted")
                solo = (harm_score >= th.evidence
                        and (st.baseline.n >= YOUNG_N or ev.action == "delete" or sensitive_out))
                # what the action spends of the budget: max(min(score, harm), the manifest's floor), spelt out
                spend = harm_score if harm_score < score else score
                if effect and effect[0] > spend:
                    spend = effect[0]
                elif not effect and 0.0 > spend:
                    spend = 0.0
                action, transition = step(b, t=ev.t, score=score, severity=severity, agent_id=ev.agent_id,
                                          event_id=ev.event_id, th=th, solo_trip=solo, harm=_harm(ev, obs),
                                          evidence=spend)
            d.transition = transition
            score4 = round4(score)  # once: the record's score is the trace's
            d.record = {
                "event_id": ev.event_id, "agent_id": ev.agent_id, "ts": ev.ts, "score": score4,
                "severity": severity, "reasons": reasons, "action_taken": action, "breaker_state": b.state,
                "model_version": version,
            }
            trace(ev.agent_id, values, score4, severity, obs.dest_classes)
            if action == "freeze":
                lead = reasons[0]["detail"] if reasons else f"risk budget exhausted (score {score:.2f})"
                d.freeze = {"command": "freeze", "agent_id": ev.agent_id, "incident_id": b.incident_id,
                            "issued_at": ev.ts, "reason": lead, "issued_by": "flowbreaker"}
                d.incident = self._incident(ev, b.incident_id, score, severity, reasons)
            alerted = action == "alert" or action == "freeze"
            if alerted or ev.agent_id in episodes.open:
                codes = [rr["feature"] for rr in reasons]
                d.episodes = episodes.observe(
                    ev.agent_id, ev.t, ev.event_id, severity, codes, alerted=alerted,
                    incident_id=b.incident_id if action == "freeze" else None, items=obs.novel, row=xl,
                    caps=[(_CAP_INDEX[c], obs.x[_CAP_INDEX[c]]) for c in codes if c in _CAP_INDEX])
        return out

    def _incident(self, ev: ActionEvent, incident_id: str, score: float, severity: str, reasons: list) -> dict:
        trace = self.traces.snapshot(ev.agent_id)
        return {
            "incident_id": incident_id, "agent_id": ev.agent_id, "opened_at": ev.ts,
            "trigger_event_id": ev.event_id, "score": round4(score), "severity": severity, "reasons": reasons,
            "model_version": self._version,
            "attribution": _attribution(trace, operator_id=ev.operator_id, requested_by=ev.requested_by,
                                        instruction_hash=ev.instruction_hash, task_id=ev.task_id,
                                        trigger_event_id=ev.event_id),
            "trace": trace,
        }

    def assess(self, event: ActionEvent) -> tuple[float, Observation, list[float], str, float]:
        """What the engine would make of ``event`` right now, changing nothing:
        ``(score, observation, deviations, breaker_state, harm)`` where ``harm`` is the evidence of harm on
        the score scale (what a freeze needs). For pre-action checks.

        ``score`` and ``harm`` are the numbers :meth:`process_batch` would give the event next (the same
        pipeline, :meth:`_read`, on a copy of the agent's state), unrounded. What the stream adds on top
        is left out: a reused event id and a broken manifest clause raise the stream's score, and an
        approval id is taken at its word (the gate screens it, and checks manifests itself)."""
        st = self.agents.get(event.agent_id)
        if st is None:
            prior = self._prior(event.agent_id, event.operator_id, event.tool)
            st = AgentState(prior, event.operator_id)
        else:  # a copy: reading an action moves the agent's feature windows and its manifest usage
            hours = st.features.hours
            st = AgentState.load(st.dump(), hours)
        obs, _, z, _, _, p_stat, p_harm, _ = self._read(st, event, self.manifests, learn=False)
        p_comb = None
        if self.model is not None:
            p_comb = float(self.model.combination_pvalues(np.array([z], dtype=np.float64))[0])
        score, _ = _score(p_stat, p_comb, p_harm)
        return score, obs, z, st.breaker.state, score_of(p_harm)

    def _read(self, st: AgentState, ev: ActionEvent, book: ManifestBook | None, *,
              learn: bool = True, rows: bytearray | None = None, obs: Observation | None = None) -> _Reading:
        """Read one action against its agent's state ``st``, and update that state as the stream does:
        the feature windows move, the manifest usage grows, and an action that is not rare (and breaks no
        manifest clause) teaches the profile. The one scoring pipeline: :meth:`process_batch` runs it on
        the agent's state, :meth:`assess` on a copy, so the stream and the pre-action check give the
        same numbers for the same action in the same state.

        The evidence of harm is judged on the profile's weight *after* learning from this action (an
        agent's 100th ordinary action already counts as established), which decisions have always done.
        ``learn=False`` (for a copy that is thrown away) skips the learning itself and counts the weight
        it would have added. ``rows``: the action's final deviations are appended there (native doubles: the
        batch's rows for the model). ``obs``: the action's observation when it was extracted already (by
        ``detector._native.admit``, which takes these first lines itself and leaves the rest here when the fused read
        does): neither the extraction nor the fused read runs again.
        """
        peers = adopted = self._adopted.get(ev.operator_id)
        quiet = None
        if st.pending:  # the kernel, else the reference (what the kernel leaves to it)
            quiet = _k_quiet(st.pending, _PW, K_DEST) if _k_quiet is not None else None
            if quiet is None:
                quiet = _py_pending_quiet(st.pending)
        if quiet:  # a never-seen item is news once: while pending (untainted) its uses are not news again
            adopted = quiet | peers if peers else quiet
        extracted = obs is not None
        if not extracted:
            obs = _extract(st.features, ev, self.policy, adopted) if _extract is not None else None
            if obs is None:  # no kernel, or a state or event it leaves to the reference
                obs = _py_extract(st.features, ev, self.policy, adopted)
        scope = book.scope_for(ev.agent_id) if book is not None else None
        # an action with no manifest scope and nothing its peers adopted (so no pending item met again): the rest in one
        # compiled call (detector._native.read_tail), which leaves anything else (changing nothing) to the lines below
        fused = self._fused
        if fused is not None and scope is None and learn and not extracted:
            got = _read_tail(fused, self, st, ev, obs, rows)
            if got is not None:
                return got
        # pending items met again (extract took them as known; they settle by the rule, not by this use)
        again = [k for k in obs.adopted if k in quiet and not (peers and k in peers)] if quiet else ()
        violations = scope.check(ev, st.usage, classify=self.policy.classify) if scope is not None else []
        if ev.destinations:  # after the check: an action is judged on the usage before it
            st.usage.add(ev.t, ev.records, ev.bytes)
        # the row in log1p units and its deviations; like with like: this action's magnitudes against this
        # kind of action's too (once it has a profile)
        bl = st.baseline
        # Baseline.deviate, the log1p row and the deviations as arrays
        xl, z, by_kind = _deviate(obs.x, bl.loc, bl.scale, _FLOORS, st.kinds.a, float(obs.kind), _KIND_FEATURES,
                                  KIND_MIN, Z95, _new_row(), _new_row())
        if z[_I_TASK_ACTIONS] >= REASON_Z and ev.task_id is not None:  # a long task is news once
            _long_task(st, ev.task_id, obs.x[_I_TASK_ACTIONS], z, learn)
        # a never-seen destination of a family this agent often sends somewhere new (new payees, new
        # customers) is routine for it: not news, so not a reason to ask or alert (detector/habits.py)
        new_sent = obs.new_outbound
        if new_sent and st.habits and all(map(st.habits.habitual, map(family_key, new_sent))):
            obs.new_outbound = []
            if z[_I_NOVEL] > 0.0:
                z[_I_NOVEL] = 0.0
        caps = st.caps
        x = obs.x
        # what an analyst judged benign is not news up to the value judged, unless a structural sign of harm
        # (the rule of two, a detour after untrusted input, an outsider asking) comes with it: a verdict on
        # routine work vouches for its magnitudes, not for an injection that moves as much
        if caps is not None and _injection_signs(x):
            caps = None
        # the rarities, the largest (raw: what learning looks at), and the blame (_py_rarities)
        rar = self._rarities
        got = _k_rarities(rar, z, x, caps, obs.quiet, obs.known_reach, rows, _new_row()) if rar is not None else None
        if got is None:
            got = _py_rarities(self._tails, z, x, caps, obs.quiet, obs.known_reach)
            if rows is not None:
                rows += array("d", z).tobytes()
        r, raw, top = got
        # the profile as this action was compared with it, for the reasons (a copy: learning moves it in place)
        loc = array("d", bl.loc) if raw >= REASON_NEGLOG else None
        weight = bl.n
        learned = raw < self._learn_raw and not violations  # an out-of-scope action teaches nothing
        if learned:
            if learn:
                bl.learn_log_in_place(xl)
                if again:  # what is new in it becomes known, what is pending keeps counting
                    for key in obs.novel:
                        settle(st.features, key)
                elif obs.novel:  # commit_novelty's effect, as _settle settles what peers adopted
                    commit_novel(st.features, obs)
                weight = bl.n
            else:
                weight += 1.0  # what learn_log adds (tests/unit/test_engine.py holds the two paths together)
        # no feature as rare as evidence needs (blame only lowers r): no evidence of harm, strength() would say
        p_harm = 1.0 if raw < MIN_RARITY else self._harm_pvalue(ev, obs, r, weight >= YOUNG_N)
        if learn:
            if learned and not obs.novel and not again:  # _settle's common case, without the call
                for key in obs.adopted:  # what the agent's peers adopted is its own at once
                    settle(st.features, key)
                # KindProfiles.learn: its kernel first (a step, or a new kind in place of the least recently
                # used one); the method when that leaves it a free slot to take or a row to the reference
                if not obs.approved and not _kind_learn(st.kinds.a, float(obs.kind), xl, ev.t, _KIND_FEATURES,
                                                        _KIND_FLOOR_VALUES, Z95, _UP, _DOWN, _KIND_ALPHA_MIN,
                                                        _KIND_SLOTS):
                    st.kinds.learn(obs.kind, xl, ev.t)
                if obs.outbound:  # every destination known: the sends count, none of them new
                    st.habits.observe(sends_of(ev.destinations, obs.dest_classes, ()))
            else:
                self._settle(st, ev, obs, z, r, xl, learned, violations, p_harm, by_kind, new_sent, again)
        return _new_reading(_Reading, (obs, violations, z, r, loc, self._cal.pvalue(top), p_harm, xl))

    def _settle(self, st: AgentState, ev: ActionEvent, obs: Observation, z: list[float], r: list[float],
                xl: list[float],
                learned: bool, violations: list, p_harm: float, by_kind: bool, new_sent: list[str],
                again: list[int] | tuple) -> None:
        """Novelty that settles, peers' adoptions, and the kind profiles (issue 18). An item the agent's
        peers adopted is its own at once; a never-seen item of an action that was not learned is counted
        (pending novelty) and settles after ``settle_uses`` uses over ``settle_s``, unless any use came with
        evidence of harm (the item is tainted: only a benign verdict teaches it). Each never-seen item also
        counts towards its operator's adoptions. A kind of action learns its magnitudes from the actions
        that teach the profile and from those with no evidence of harm whose magnitudes are not rare for
        the kind (until a kind has a profile, every one of its actions without evidence of harm).

        The common case (a learned action that met nothing new: its peers' adoptions settle, its kind learns,
        its sends count) is taken in :meth:`_read` itself; it is kept here too, for any other caller."""
        th = self.policy.thresholds
        x = obs.x
        novel = obs.novel
        for key in obs.adopted:
            if key not in again:  # what the agent's peers adopted is its own at once
                settle(st.features, key)
        if learned and not novel and not again:  # the common case: nothing new, nothing to judge
            if not obs.approved:
                st.kinds.learn(obs.kind, xl, ev.t)
            if obs.outbound:  # every destination known: the sends count, none of them new
                st.habits.observe(sends_of(ev.destinations, obs.dest_classes, ()))
            return
        # evidence of harm that is not novelty itself (never-used access to sensitive data, a new destination,
        # a new step or colleague would otherwise keep every new thing from ever settling)
        harmful = (x[_I_EXFIL] > 0.0 or _injection_signs(x)
                   or bool(violations) or score_of(p_harm) >= th.gate_evidence
                   and score_of(self._harm_pvalue(ev, obs, r, False)) >= th.gate_evidence)
        if not obs.approved and (learned or not harmful and (not by_kind or z[_I_KIND[0]] < 3.0
                                                             and z[_I_KIND[1]] < 3.0)):
            st.kinds.learn(obs.kind, xl, ev.t)
        if obs.outbound and self._habit_ok(ev, obs, z, r, violations, harmful, new_sent):
            st.habits.observe(sends_of(ev.destinations, obs.dest_classes, new_sent))
        if again:
            self._pending(st, again, ev.t, harmful, th)
        if not novel:
            return
        if not learned:
            self._pending(st, novel, ev.t, harmful, th)
        self._peers(ev, novel, harmful, th)

    def _habit_ok(self, ev: ActionEvent, obs: Observation, z: list[float], r: list[float], violations: list,
                  harmful: bool, new_sent: list[str]) -> bool:
        """Whether an action's sends count towards its agent's destination habits: not when it came with
        evidence of harm other than the new destination itself (which is what a habit is about). Data read in
        the task going out counts against it only when that is unusual for the agent (a booking desk sends
        the traveller's details to every payee it pays); the signs of an injection always do."""
        if not harmful:
            return True
        x = obs.x
        if _injection_signs(x) or violations or not new_sent or x[_I_EXFIL] > 0.0 and z[_I_EXFIL] >= REASON_Z:
            return False
        rest = list(r)
        rest[_I_NOVEL] = 0.0
        th = self.policy.thresholds
        return score_of(self._harm_pvalue(ev, obs, rest, False)) < th.gate_evidence

    def _pending(self, st: AgentState, novel: list[int], t: float, harmful: bool, th) -> None:
        """Count the items ``novel`` (met for the first time) as pending novelty of the agent, at ``t``: tainted when
        ``harmful``; an untainted one settles (its sketch learns it, its slot goes) at ``settle_uses`` uses over
        ``settle_s``. ``detector._native.pending_count`` counts when built (the reference: :meth:`_py_pending`)."""
        done = (_k_pending(st.pending, novel, t, harmful, th.settle_uses, th.settle_s, PENDING_SLOTS)
                if _k_pending is not None else None)
        if done is None:  # no kernel, or arguments it leaves to the reference
            self._py_pending(st, novel, t, harmful, th)
            return
        for key in done:  # the items that settled
            settle(st.features, key)

    def _py_pending(self, st: AgentState, novel: list[int], t: float, harmful: bool, th) -> None:
        p = st.pending
        uses, span = th.settle_uses, th.settle_s
        for key in novel:
            fk = float(key)
            for b in range(0, len(p), _PW):
                if p[b] == fk:
                    break
            else:
                if len(p) < _PW * PENDING_SLOTS:
                    b = len(p)
                    p.extend((fk, 0.0, t, 0.0))
                else:  # the oldest untainted item makes room (a tainted one only when all are)
                    b = min(range(0, len(p), _PW), key=lambda i: (p[i + 3], p[i + 2], i))
                    p[b], p[b + 1], p[b + 2], p[b + 3] = fk, 0.0, t, 0.0
            p[b + 1] += 1.0
            if harmful:
                p[b + 3] = 1.0
            elif p[b + 3] == 0.0 and p[b + 1] >= uses and t - p[b + 2] >= span:
                settle(st.features, key)
                del p[b:b + _PW]

    def _peers(self, ev: ActionEvent, novel: list[int], harmful: bool, th) -> None:
        """Count the items ``novel`` (met for the first time by ``ev``'s agent) towards its operator's adoptions: an
        item ``peer_adopters`` of the operator's agents took up, none of them with evidence of harm, is adopted.
        ``detector._native.peers_count`` counts when built (the reference: :meth:`_py_peers`)."""
        if _k_peers is None or _k_peers(self._peer_items, self._adopted, ev.operator_id, ev.agent_id, novel, harmful,
                                        th.peer_adopters, _PEER_ITEMS, _PEER_ADOPTED, _PEER_OPERATORS) is None:
            self._py_peers(ev, novel, harmful, th)

    def _py_peers(self, ev: ActionEvent, novel: list[int], harmful: bool, th) -> None:
        op = ev.operator_id
        items = self._peer_items
        need = int(th.peer_adopters)
        if need <= 0:
            return
        who = stable_hash(ev.agent_id)
        opk = stable_hash(op) << 40  # one int per (operator, item): items are < 2**35
        for key in novel:
            e = items.get(opk | key)
            if e is None:
                if len(items) >= _PEER_ITEMS:
                    items.popitem(last=False)
                e = items[opk | key] = [False]
            if harmful:
                e[0] = True
                continue
            if e[0] or who in e[1:]:
                continue
            e.append(who)
            if len(e) - 1 >= need:
                adopted = self._adopted.get(op)
                if adopted is None:
                    if len(self._adopted) >= _PEER_OPERATORS:
                        continue
                    adopted = self._adopted[op] = set()
                if len(adopted) < _PEER_ADOPTED:
                    adopted.add(key)

    def _harm_pvalue(self, ev: ActionEvent, obs: Observation, r: list[float], established: bool) -> float:
        """Rarity of the evidence of harm (:mod:`detector.evidence`): of its rarest solo piece, or (with a
        model that calibrated it) of all of it together, whichever is rarer. 1 when there is none.
        ``detector._score.Evidence.harm_pvalue`` when the calibrations have compiled curves (one call for the
        strength, the p-values and fisher); :meth:`_py_harm_pvalue` otherwise, and for what it leaves to it."""
        moving = obs.outbound or ev.action == "delete"
        sensitive = ev.sensitivity in ("confidential", "restricted")
        curves = self._harm_curves
        if curves is not None:
            p = _harm_kernel(r, moving, sensitive, established, *curves)
            if p is not None:
                return p
        return self._py_harm_pvalue(r, moving, sensitive, established)

    def _py_harm_pvalue(self, r: list[float], moving: bool, sensitive: bool, established: bool) -> float:
        """The reference of ``detector._score.Evidence.harm_pvalue``."""
        solo, total, k = strength(r, moving=moving, sensitive=sensitive, established=established)
        if solo == 0.0:
            return 1.0
        p = self._cal.pvalue(solo)
        if self._evidence_cal is not None and k > 1:
            p_sum = max(fisher(total, k), self._evidence_cal.pvalue(total))
            if p_sum < p:
                p = p_sum
        return p

    # -------------------------------------------------------------- episodes and verdicts
    def close_quiet(self, now: float) -> list[dict]:
        """Close the alert episodes whose agent had no alerted action for ``episode_quiet_s`` (30 min) by
        ``now`` (event time: the worker's watermark; replay at the end). Each closes at ``updated +
        episode_quiet_s`` whenever this is called, so records do not depend on how often it is. Returns the
        closed episodes' records (to publish on agent-alerts)."""
        return self.episodes.close_quiet(now)

    def apply_verdict(self, v: Verdict) -> list[dict]:
        """Apply an analyst's verdict at once (docs/contract.md, "Verdicts"). Returns the episode records it
        changed (to publish on agent-alerts). Idempotent by ``verdict_id``.

        ``v.target`` names an alert episode or an incident (whose freeze belongs to an episode). ``benign``:
        the episode's actions teach the agent's profile (their feature rows) and its novelty sketches (every
        item they met for the first time), and each reason they were alerted for stops alerting on this agent
        up to 1.5 times the largest value the episode reached; when the target is the agent's current incident
        its risk budget is cleared (probation after a release stays: the analyst vouched for what was seen,
        not for what comes next). An incident the engine keeps no
        episode of (a manual freeze, a worker that restarted) teaches from the agent's trace: the tools,
        resource families, destinations and principals of its alerted actions since an episode before the
        freeze. ``confirmed``: nothing is taught, and the episode's never-seen items are marked tainted
        (they never settle by recurring). A verdict for an agent this engine does not hold changes nothing
        and is not remembered (apply it where the agent's state is).

        >>> from detector.events import decode_event
        >>> eng = Engine()
        >>> e = lambda i: decode_event({"event_id": f"e{i}", "ts": f"2026-03-02T09:0{i}:00Z", "agent_id": "a",
        ...     "operator_id": "o", "tool": "t", "action": "read", "resource": "r://x", "sensitivity": "internal"})
        >>> _ = [eng.process(e(i)) for i in range(3)]
        >>> eng.apply_verdict(Verdict("v1", "a", "ep-unknown", "benign", 1772442300.0))
        []
        """
        if v.verdict_id in self._verdicts:
            return []
        st = self.agents.get(v.agent_id)
        ep = self.episodes.find(v.agent_id, v.target)
        if st is None:
            return []
        self._verdicts[v.verdict_id] = None
        if len(self._verdicts) > _VERDICTS_KEPT:
            self._verdicts.popitem(last=False)
        b = st.breaker
        current = b.incident_id is not None and (v.target == b.incident_id
                                                 or (ep is not None and b.incident_id in ep.incidents))
        if v.benign:
            if ep is not None:
                self._teach(st, ep.items, ep.rows, ep.caps)
            elif current or v.target.startswith(("inc-", "man-")):
                self._teach(st, self._trace_items(v.agent_id, b.opened_t if current else v.at, v.at), [], {})
            if current:
                b.risk = 0.0
        elif ep is not None:  # confirmed: what it met for the first time never settles by recurring
            self._pending(st, ep.items, v.at, True, self.policy.thresholds)
        if ep is None:
            return []
        ep.verdict = {"verdict": v.verdict, "verdict_id": v.verdict_id, "by": v.by, "at": iso_utc(v.at),
                      "target": v.target}
        return [ep.record()]

    def _teach(self, st: AgentState, items, rows, caps: dict) -> None:
        feats = st.features
        p = st.pending
        for key in items:
            settle(feats, key)
            fk = float(key)
            for b in range(0, len(p), _PW):
                if p[b] == fk:
                    del p[b:b + _PW]
                    break
        # the rows move the profile but do not make the agent any older: an agent judged by its peers'
        # profile stays so until it has acted enough (a verdict vouches for what it saw, not for the agent)
        n = st.baseline.n
        for xl in rows:
            st.baseline.learn_log(xl)
        st.baseline.n = n
        if caps:
            if st.caps is None:
                st.caps = array("d", bytes(8 * N_FEATURES))
            for f, v in caps.items():
                if v > st.caps[f]:
                    st.caps[f] = v

    def _trace_items(self, agent_id: str, since: float, until: float) -> list[int]:
        """Novelty items of the agent's alerted actions in its trace between ``since`` (less one episode's
        quiet time) and ``until``."""
        lo = since - self.policy.thresholds.episode_quiet_s
        out: list[int] = []
        for e in self.traces.snapshot(agent_id):
            if e.get("severity") not in ("medium", "high", "critical"):
                continue
            t = instant_or_none(e.get("ts"))
            if t is None or not lo <= t <= until:
                continue
            out.append(item_key(K_TOOL, stable_hash(e["tool"])))
            out.append(item_key(K_RESOURCE, stable_hash(resource_family(e["resource"]))))
            for d in e.get("destinations") or ():
                out.append(item_key(K_DEST, stable_hash(d)))
                out.append(item_key(K_DEST, stable_hash(destination_family(d))))
            who = e.get("requested_by")
            if who and who != e.get("operator_id"):
                out.append(item_key(K_PRINCIPAL, stable_hash(who)))
        return out

    # -------------------------------------------------------------- outside
    def freeze_manual(self, agent_id: str, *, at: datetime | float, by: str, reason: str,
                      severity: str = "high") -> Decision | None:
        """A human froze the agent: the same outcome as a trip (breaker ``open``, one incident),
        as a :class:`Decision` without an event (``freeze``, ``incident``, ``transition``).
        ``None`` when the agent is unknown or already frozen. The incident id starts with ``man-``
        and is stable for the same agent, time and person; the incident names ``frozen_by``.

        >>> from detector.events import decode_event
        >>> eng = Engine()
        >>> _ = eng.process(decode_event({"event_id": "e1", "ts": "2026-03-02T09:00:00Z", "agent_id": "a",
        ...     "operator_id": "o", "tool": "t", "action": "read", "resource": "r://x", "sensitivity": "internal"}))
        >>> d = eng.freeze_manual("a", at=1772442000.0, by="alice", reason="suspicious", severity="critical")
        >>> d.transition, d.freeze["issued_by"], d.incident["frozen_by"], eng.breaker_state("a")
        (('closed', 'open'), 'alice', 'alice', 'open')
        >>> eng.freeze_manual("a", at=1772442001.0, by="bob", reason="again") is None
        True
        """
        st = self.agents.get(agent_id)
        if st is None:
            return None
        t = at.timestamp() if isinstance(at, datetime) else float(at)
        issued = datetime.fromtimestamp(t, timezone.utc).isoformat().replace("+00:00", "Z")
        b = st.breaker
        transition = brk.trip_manual(b, t=t, agent_id=agent_id, key=f"manual|{by}|{issued}")
        if transition is None:  # already frozen: one freeze per incident
            return None
        d = Decision(None)  # type: ignore[arg-type]
        d.transition = transition
        d.freeze = {"command": "freeze", "agent_id": agent_id, "incident_id": b.incident_id, "issued_at": issued,
                    "reason": reason, "issued_by": by}
        trace = self.traces.snapshot(agent_id)
        last = trace[-1] if trace else {}
        d.incident = {
            "incident_id": b.incident_id, "agent_id": agent_id, "opened_at": issued, "trigger_event_id": None,
            "score": None, "severity": severity, "manual": True, "frozen_by": by,
            "reasons": [{"feature": "manual", "value": 1.0, "baseline": 0.0, "detail": f"frozen by {by}: {reason}"}],
            "model_version": self._version,
            "attribution": _attribution(trace, operator_id=st.operator_id, requested_by=last.get("requested_by"),
                                        instruction_hash=last.get("instruction_hash"), task_id=last.get("task_id"),
                                        trigger_event_id=None),
            "trace": trace,
        }
        return d

    def release(self, agent_id: str, *, at: datetime | float, by: str, reason: str) -> dict | None:
        """A human released a frozen agent: probation (``half_open``). Returns the release command,
        or ``None`` when the agent is not frozen."""
        st = self.agents.get(agent_id)
        if st is None:
            return None
        t = at.timestamp() if isinstance(at, datetime) else float(at)
        incident = st.breaker.incident_id
        if brk.release(st.breaker, t=t, probation_s=self.policy.thresholds.probation_s) is None:
            return None
        issued = datetime.fromtimestamp(t, timezone.utc).isoformat().replace("+00:00", "Z")
        return {"command": "release", "agent_id": agent_id, "incident_id": incident, "issued_at": issued,
                "reason": reason, "issued_by": by}


#: Engine._read as defined above: detector._native.admit takes its first lines itself only for an engine whose _read
#: this is (see _admit_consts)
_ENGINE_READ = Engine._read
