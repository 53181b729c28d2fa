"""``flowbreaker train``: fit baseline profiles, peer priors, calibration and an isolation forest.

Steps (seeded, reproducible; the same input gives the same model and version):

1. Replay the history through the same feature extractor the engine uses, treating
   it as normal (novelty sketches learn everything), and collect each agent's
   feature rows in log1p units. An agent's first rows (its sketches still empty)
   are left out of its profile.
2. Profiles: per agent (with its novelty sketches: known tools, resource families and
   destinations, and its destination habits, detector/habits.py), per operator (with the
   items at least two of its agents used, and their habits pooled, for a newcomer) and per tool family (peers, from each member's first
   actions, since a peer prior is what a newcomer is judged by), and globally:
   location = median, scale = (95th percentile - median) / 1.645, the same
   definitions the online update tracks. Hour-of-day activity profiles for agents
   whose history spans at least three days.
3. Calibration, out of sample: each agent's profile is fitted on the first 75% of
   its rows and its last 25% are scored; the tails of the deviations on those
   rows calibrate the statistical score, and an isolation forest
   (scikit-learn, ``random_state``) fitted on their deviation vectors calibrates
   the combination score. The forest is exported to arrays.
   The deviations' tails are learnt per feature (``FeatureTails``), and the rarity of
   the rarest feature is then calibrated for how many features there are to be rare in.
"""

from __future__ import annotations

import hashlib
from collections import Counter, defaultdict
from datetime import datetime, timezone
from typing import Iterable

import numpy as np

from detector.baseline import FLOORS, Z95
from detector.events import ActionEvent
from detector.evidence import strength
from detector.features import FEATURE_NAMES, N_FEATURES, FeatureState, commit_novelty, extract, settle
from detector.habits import SLOTS as HABIT_SLOTS, WIDTH as HABIT_WIDTH, Habits, pooled, sends_of
from detector.policy import Policy
from detector.engine import GENERIC_MULTIPLICITY
from detector.scoring import Calibration, FeatureTails
from models.store import FORMAT, Forest, tool_family

__all__ = ["fit"]

_FLOORS = np.array(FLOORS)
_MIN_HOURS_EVENTS = 100
#: peer priors describe how agents of a group behave in their first actions (a newcomer's situation)
_EARLY_ROWS = 200
_MIN_HOURS_SPAN_S = 3 * 86400
#: an item (tool, resource family, destination, step, principal) this many of an operator's agents used is
#: not new to a newcomer of that operator
_PEER_ITEMS_MIN = 2


def _habit_rows(blobs: list[bytes]) -> np.ndarray:
    """Destination habits (:class:`detector.habits.Habits` bytes) as rows of a float array, zero-padded (a
    family's slot always holds sends > 0)."""
    out = np.zeros((len(blobs), HABIT_WIDTH * HABIT_SLOTS))
    for i, b in enumerate(blobs):
        v = np.frombuffer(b, dtype=np.float64)
        out[i, :len(v)] = v
    return out


def _profile(m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    med = np.median(m, axis=0)
    q95 = np.quantile(m, 0.95, axis=0)
    return med, np.maximum((q95 - med) / Z95, 0.0)


def _pooled(blocks: list[np.ndarray], rng: np.random.Generator, cap: int = 50_000) -> np.ndarray:
    m = np.concatenate(blocks) if len(blocks) > 1 else blocks[0]
    if len(m) > cap:
        m = m[rng.choice(len(m), cap, replace=False)]
    return m


def fit(events: Iterable[ActionEvent], policy: Policy, *, seed: int = 0, n_estimators: int = 100,
        max_samples: int = 256, progress=None) -> tuple[dict, dict[str, np.ndarray]]:
    """Fit a model from history; returns ``(card, arrays)`` for :func:`models.store.save_model`."""
    evs = list(events)
    if not evs:
        raise ValueError("no valid events to train on")
    rng = np.random.default_rng(seed)
    by_agent: dict[str, list[ActionEvent]] = defaultdict(list)
    for ev in evs:
        by_agent[ev.agent_id].append(ev)
    agents = sorted(by_agent)

    # hour-of-day profiles where the history supports them
    hours: dict[str, tuple[float, ...]] = {}
    for a in agents:
        ts = [e.t for e in by_agent[a]]
        if len(ts) >= _MIN_HOURS_EVENTS and max(ts) - min(ts) >= _MIN_HOURS_SPAN_S:
            counts = np.bincount((np.array(ts) // 3600).astype(np.int64) % 24, minlength=24).astype(float)
            hours[a] = tuple(((counts + 0.5) / (counts.sum() + 12.0)).tolist())

    rows: dict[str, np.ndarray] = {}
    early: dict[str, np.ndarray] = {}
    quiet: dict[str, np.ndarray] = {}
    sketches: dict[str, bytes] = {}
    habits: dict[str, Habits] = {}
    items: dict[str, set[int]] = {}
    done = 0
    for a in agents:
        st = FeatureState()
        st.hours = hours.get(a)
        xs = []
        q = np.zeros((len(by_agent[a]), N_FEATURES), dtype=bool)
        hab = habits[a] = Habits()
        met = items[a] = set()
        for k, ev in enumerate(by_agent[a]):
            obs = extract(st, ev, policy)
            commit_novelty(st, obs)
            met.update(obs.novel)
            if obs.outbound:  # history is normal: every send counts towards the agent's destination habits
                hab.observe(sends_of(ev.destinations, obs.dest_classes, obs.new_outbound))
            xs.append(obs.x)
            q[k, list(obs.quiet)] = True
        done += len(xs)
        if progress is not None:
            progress(done, len(evs))
        m = np.log1p(np.array(xs, dtype=np.float64))
        sketches[a] = b"".join(st.sketches())
        early[a] = m[:_EARLY_ROWS]
        skip = min(20, len(m) // 5)
        if len(m) - skip < 5:
            skip = 0
        rows[a], quiet[a] = m[skip:], q[skip:]

    operator_of = {a: Counter(e.operator_id for e in by_agent[a]).most_common(1)[0][0] for a in agents}
    # an agent belongs to every tool family it uses for at least a tenth of its actions
    families_of: dict[str, set[str]] = {}
    for a in agents:
        fc = Counter(tool_family(e.tool) for e in by_agent[a])
        families_of[a] = {f for f, c in fc.items() if c >= 0.1 * len(by_agent[a])}
    operators = sorted(set(operator_of.values()))
    families = sorted(set().union(*families_of.values()))

    A = len(agents)
    agent_loc = np.zeros((A, N_FEATURES))
    agent_scale = np.zeros((A, N_FEATURES))
    agent_n = np.zeros(A)
    agent_hours = -np.ones((A, 24))
    for i, a in enumerate(agents):
        agent_loc[i], agent_scale[i] = _profile(rows[a])
        agent_n[i] = len(rows[a])
        if a in hours:
            agent_hours[i] = hours[a]

    def group(keys: list[str], member) -> tuple[np.ndarray, np.ndarray]:
        locs, scales = np.zeros((len(keys), N_FEATURES)), np.zeros((len(keys), N_FEATURES))
        for j, k in enumerate(keys):
            locs[j], scales[j] = _profile(_pooled([early[a] for a in agents if member(a, k)], rng))
        return locs, scales

    op_loc, op_scale = group(operators, lambda a, k: operator_of[a] == k)
    # what a newcomer of an operator is not new to: the items at least two of its agents used (a tool
    # rolled out to the role, the payee the whole desk pays), and its agents' destination habits pooled
    op_sketches, op_habits = [], []
    for o in operators:
        members = [a for a in agents if operator_of[a] == o]
        used = Counter(k for a in members for k in items[a])
        fs = FeatureState()
        for k, n in used.items():
            if n >= _PEER_ITEMS_MIN:
                settle(fs, k)
        op_sketches.append(b"".join(fs.sketches()))
        op_habits.append(pooled(habits[a] for a in members).to_bytes())
    fam_loc, fam_scale = group(families, lambda a, k: k in families_of[a])
    g_loc, g_scale = _profile(_pooled([early[a] for a in agents], rng))
    # a newcomer is judged against its peers, whose spread between agents widens the band
    spread = np.maximum(g_scale, np.median(np.abs(agent_loc - g_loc), axis=0) * 1.4826)
    g_scale = np.maximum(g_scale, spread)

    # out-of-sample deviations for calibration
    zs = []
    for a in agents:
        m = rows[a]
        if len(m) < 40:
            continue
        cut = int(len(m) * 0.75)
        loc, scale = _profile(m[:cut])
        z = (m[cut:] - loc) / np.maximum(scale, _FLOORS)
        zs.append(np.where(quiet[a][cut:], np.minimum(z, 0.0), z))  # as the engine blames
    card_cal: dict = {}
    forest_arrays: dict[str, np.ndarray] = {}
    forest_card = None
    if zs and sum(len(z) for z in zs) >= 200:
        Z = np.concatenate(zs)
        tails = FeatureTails.fit(Z)
        neglogs = [tails.neglogs(row) for row in Z.tolist()]
        raw = [max(nl) for nl in neglogs]
        # the evidence of harm together (every evidence feature counted: an upper bound of what one
        # action can sum, so the calibration errs towards calling sums common)
        ev_cal = Calibration.fit([strength(nl, moving=True, sensitive=True)[1] for nl in neglogs],
                                 beta=1.0 / np.log(10.0))
        card_cal["evidence"] = ev_cal.to_dict()
        # beyond the data, the smallest of the per-feature p-values is taken at face value (slope 1 in log10)
        stat_cal = Calibration.fit(raw, beta=1.0 / np.log(10.0))
        from sklearn.ensemble import IsolationForest

        Zc = np.clip(Z, -10.0, 10.0)
        iforest = IsolationForest(n_estimators=n_estimators, max_samples=min(max_samples, len(Zc)),
                                  random_state=seed).fit(Zc)
        forest = Forest.from_sklearn(iforest)
        comb_cal = Calibration.fit(forest.score_samples(Zc).tolist(), min_beta=0.05)
        card_cal["combination"] = comb_cal.to_dict()
        forest_arrays = {"forest_feature": forest.feature, "forest_threshold": forest.threshold,
                         "forest_path": forest.path}
        forest_card = {"n_estimators": n_estimators, "max_samples": forest.max_samples,
                       "max_depth": forest.depth, "trained_on": "clipped robust deviations (+-10)",
                       "layout": "complete binary trees; bottom slots hold path lengths"}
        n_cal = len(Z)
    else:
        tails = FeatureTails.generic(N_FEATURES)
        stat_cal = Calibration.multiplicity(GENERIC_MULTIPLICITY)
        n_cal = 0
    tables, slopes = tails.to_arrays()
    forest_arrays["tail_tables"] = np.array(tables)
    forest_arrays["tail_slopes"] = np.array(slopes)
    card_cal["max_deviation"] = stat_cal.to_dict()

    all_rows = np.concatenate([rows[a] for a in agents])
    arrays = {
        "agent_loc": agent_loc, "agent_scale": agent_scale, "agent_n": agent_n, "agent_hours": agent_hours,
        "agent_sketches": np.frombuffer(b"".join(sketches[a] for a in agents), dtype=np.uint8).reshape(A, -1),
        "agent_habits": _habit_rows([habits[a].to_bytes() for a in agents]),
        "operator_sketches": np.frombuffer(b"".join(op_sketches), dtype=np.uint8).reshape(len(operators), -1),
        "operator_habits": _habit_rows(op_habits),
        "operator_loc": op_loc, "operator_scale": op_scale, "family_loc": fam_loc, "family_scale": fam_scale,
        "global_loc": g_loc, "global_scale": g_scale,
        "train_quantiles": np.quantile(all_rows, np.linspace(0, 1, 11), axis=0),
        **forest_arrays,
    }
    digest = hashlib.sha256()
    for k in sorted(arrays):
        digest.update(k.encode())
        digest.update(np.ascontiguousarray(arrays[k]).tobytes())
    t_min, t_max = min(e.t for e in evs), max(e.t for e in evs)
    iso = lambda t: datetime.fromtimestamp(t, timezone.utc).isoformat().replace("+00:00", "Z")  # noqa: E731
    version = "m" + datetime.fromtimestamp(t_max, timezone.utc).strftime("%Y%m%d") + "-" + digest.hexdigest()[:8]
    th = policy.thresholds
    card = {
        "format": FORMAT,
        "version": version,
        "training_window": {"from": iso(t_min), "until": iso(t_max)},
        "counts": {"events": len(evs), "agents": A, "operators": len(operators), "tool_families": len(families),
                   "calibration_rows": n_cal, "agents_with_hour_profile": len(hours)},
        "feature_schema": {"names": list(FEATURE_NAMES), "transform": "log1p", "floors": list(FLOORS)},
        "thresholds": {"low": th.low, "medium": th.medium, "high": th.high, "critical": th.critical,
                       "risk_budget": th.risk_budget},
        "calibration": card_cal,
        "feature_tails": {"steps_per_z": FeatureTails.STEPS_PER_Z, "z_max": FeatureTails.Z_MAX,
                          "arrays": ["tail_tables", "tail_slopes"]},
        "forest": forest_card,
        "priors": {"global_weight": 20.0, "peer_weight": 30.0, "max_agent_weight": 500.0,
                   "peer_groups": ["operator", "tool_family"]},
        "seed": seed,
        "agents": agents,
        "operators": operators,
        "tool_families": families,
        "score": "in [0, 1], higher is more anomalous: -log10(p)/6, p = rarity among normal actions",
    }
    return card, arrays
