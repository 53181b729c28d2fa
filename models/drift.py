"""Feature drift: population stability index (PSI) between a model's training data and live rows.

``flowbreaker train`` stores ``train_quantiles`` in the model's ``arrays.npz``:
the 0, 10, ..., 100th percentiles of every feature over the training rows, in
log1p units (shape ``(11, n_features)``). Those ten deciles are the expected
distribution; rows scored later (an evaluated file, a time range of a topic, a
worker's recent traffic) are binned on the same edges and compared with

    PSI = sum over bins of (actual - expected) * ln(actual / expected)

Rule of thumb: below 0.1 stable, 0.1 to 0.25 worth a look, above 0.25 the
feature has moved and the model is going stale for it.

Ties: a feature that is 0 for most actions has several equal deciles, and
deciles alone cannot say whether 90% or 99.5% of the training rows were 0. Equal
edges merge into one bin, and the expected share at such an edge is taken
anywhere in what the deciles allow (if the 90th percentile is 0 and the maximum
is not, between 90% and 100% of the rows were 0), as close to the observed share
as it can be. The index is therefore a lower bound: it never reports a drift the
stored deciles cannot prove, and it is exact for continuous features. Bins are
right-closed: a value equal to an edge falls in the bin below it; values above
the training maximum get a bin of their own, which expected nothing. Values
below :data:`RESOLUTION` count as 0 on both sides.

Counting is separate from comparing so a long-running process can keep a small
fixed-size count array and add batches to it (:meth:`Binning.counts`), then ask
for the index whenever it likes (:func:`psi`). Pure numpy; no clock, no I/O.

>>> import numpy as np
>>> q = np.quantile(np.arange(1000.0)[:, None] * [1.0, 0.0], np.linspace(0, 1, 11), axis=0)
>>> b = Binning.from_quantiles(q)
>>> len(b.edges[0]), b.edges[1].tolist()          # nine deciles; one edge for the all-zero feature
(9, [0.0])
>>> same = np.arange(1000.0)[:, None] * [1.0, 0.0]
>>> psi(b, b.counts(same)).round(3).tolist()
[0.0, 0.0]
>>> shifted = same + [500.0, 0.0]
>>> bool(psi(b, b.counts(shifted))[0] > 0.25)
True
"""

from __future__ import annotations

from collections import defaultdict
from typing import Iterable, Sequence

import numpy as np

from detector.events import ActionEvent
from detector.features import FEATURE_NAMES, N_FEATURES, FeatureState, commit_novelty, extract
from detector.policy import Policy

__all__ = ["Binning", "psi", "psi_rows", "feature_rows", "drift_table", "STABLE", "SHIFTED", "EPS", "RESOLUTION"]

#: below this a feature is stable; above :data:`SHIFTED` it has moved
STABLE = 0.1
SHIFTED = 0.25
#: share given to an empty bin so the logarithm stays finite (both sides get it)
EPS = 1e-4
#: values below this (log1p units: about 0.01 records, actions or bytes) count as 0. The windows
#: decay exponentially and never quite reach 0 again, so without it the deciles of a rare
#: feature would measure "how long ago" in magnitudes like 1e-40 instead of "how much"
RESOLUTION = 0.01


class Binning:
    """Per-feature bin edges and expected cumulative shares, from a model's ``train_quantiles``.

    ``edges[f]`` are the distinct interior deciles of feature ``f`` (at most 9);
    the training share of rows at or below ``edges[f][j]`` lies in
    ``[lo[f][j], hi[f][j]]`` (a single value unless the edge is a tied decile).
    Fails with ``ValueError`` when the quantiles are not an ``(11, n)`` array of
    finite, non-decreasing numbers.
    """

    def __init__(self, edges: Sequence[np.ndarray], lo: Sequence[np.ndarray], hi: Sequence[np.ndarray]) -> None:
        self.edges = [np.asarray(e, dtype=np.float64) for e in edges]
        self.lo = [np.asarray(x, dtype=np.float64) for x in lo]
        self.hi = [np.asarray(x, dtype=np.float64) for x in hi]
        self.n_features = len(self.edges)
        #: widest bin count over features: the column count of :meth:`counts`
        self.width = max((len(e) + 1 for e in self.edges), default=1)

    @classmethod
    def from_quantiles(cls, quantiles: np.ndarray) -> "Binning":
        q = np.asarray(quantiles, dtype=np.float64)
        if q.ndim != 2 or q.shape[0] != 11:
            raise ValueError(f"train_quantiles must have shape (11, n_features), got {q.shape}")
        if not np.all(np.isfinite(q)) or np.any(np.diff(q, axis=0) < -1e-12):
            raise ValueError("train_quantiles must be finite and non-decreasing")
        q = _snap(q)
        edges, lo, hi = [], [], []
        for f in range(q.shape[1]):
            uniq = np.unique(q[1:10, f])
            l, h = [], []
            for u in uniq:
                at = np.flatnonzero(q[:, f] == u)
                i = int(at.max())
                l.append(i / 10.0)
                # a tied decile is a point mass: up to the next decile level may sit on it
                h.append(min(1.0, (i + 1) / 10.0) if len(at) > 1 and i < 10 else i / 10.0)
            edges.append(uniq)
            lo.append(np.array(l))
            hi.append(np.array(h))
        return cls(edges, lo, hi)

    def counts(self, rows: np.ndarray) -> np.ndarray:
        """Bin counts of ``rows`` (shape ``(n, n_features)``, log1p units) as an
        ``(n_features, width)`` integer array; add such arrays to accumulate."""
        rows = np.asarray(rows, dtype=np.float64)
        out = np.zeros((self.n_features, self.width), dtype=np.int64)
        if rows.size == 0:
            return out
        if rows.ndim != 2 or rows.shape[1] != self.n_features:
            raise ValueError(f"rows must have shape (n, {self.n_features}), got {rows.shape}")
        rows = _snap(rows)
        for f, e in enumerate(self.edges):
            idx = np.searchsorted(e, rows[:, f], side="left")
            out[f, :len(e) + 1] += np.bincount(idx, minlength=len(e) + 1)
        return out


def _snap(a: np.ndarray) -> np.ndarray:
    return np.where(np.abs(a) < RESOLUTION, 0.0, a)


def _term(a: float, e: float) -> float:
    a, e = a + EPS, e + EPS
    return (a - e) * np.log(a / e)


def psi(binning: Binning, counts: np.ndarray) -> np.ndarray:
    """PSI per feature from accumulated :meth:`Binning.counts`; NaN for a feature with no rows.

    Where the deciles leave an expected share open (tied deciles), the shares are chosen
    within what they allow so that the index is smallest (it is convex in each of them):
    the result is a lower bound of the index against the true training distribution.
    """
    counts = np.asarray(counts, dtype=np.float64)
    out = np.full(binning.n_features, np.nan)
    for f, e in enumerate(binning.edges):
        k = len(e) + 1
        c = counts[f, :k]
        n = c.sum()
        if n <= 0:
            continue
        act = c / n
        lo, hi = binning.lo[f], binning.hi[f]
        cum = np.concatenate(([0.0], np.clip(np.cumsum(act)[:-1], lo, hi), [1.0]))
        free = [j for j in range(k - 1) if hi[j] > lo[j]]
        for _ in range(3 if free else 0):
            for j in free:  # cum[j + 1] bounds bins j and j + 1
                left, right = max(lo[j], cum[j]), min(hi[j], cum[j + 2])

                def cost(x: float) -> float:
                    return _term(act[j], x - cum[j]) + _term(act[j + 1], cum[j + 2] - x)

                for _ in range(40):  # ternary search on a convex function
                    m1, m2 = left + (right - left) / 3, right - (right - left) / 3
                    if cost(m1) <= cost(m2):
                        right = m2
                    else:
                        left = m1
                cum[j + 1] = (left + right) / 2
        expected = np.diff(cum)
        out[f] = float(sum(_term(a_, e_) for a_, e_ in zip(act, expected)))
    return out


def psi_rows(train_quantiles: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """PSI per feature of ``rows`` (log1p units) against a model's ``train_quantiles``."""
    b = Binning.from_quantiles(train_quantiles)
    return psi(b, b.counts(rows))


def feature_rows(events: Iterable[ActionEvent], policy: Policy, *, prior_for=None, warmup: bool = True,
                 keep=None) -> np.ndarray:
    """Feature rows (log1p units, shape ``(n, n_features)``) of ``events``, computed the way
    ``flowbreaker train`` computes the rows its ``train_quantiles`` summarise: each agent's
    events in order through the engine's feature extractor, every action taken as normal.

    ``prior_for(agent_id, operator_id, tool)`` (a model's ``prior_for``) gives how the engine
    starts an agent: its hour-of-day profile and, for models that carry them, its novelty
    sketches from training. An agent that starts with empty sketches has its first
    ``min(20, n // 5)`` rows left out (``warmup``), as training does: everything is new then.
    ``keep(event)``, when given, chooses which events' rows are returned (every event still
    updates its agent's state), e.g. to leave out labelled incidents.
    """
    by_agent: dict[str, list[ActionEvent]] = defaultdict(list)
    for ev in events:
        by_agent[ev.agent_id].append(ev)
    blocks = []
    for agent in sorted(by_agent):
        evs = by_agent[agent]
        st = FeatureState()
        seeded = False
        if prior_for is not None:
            prior = prior_for(agent, evs[0].operator_id, evs[0].tool)
            st.hours = prior.hours
            sketches = getattr(prior, "sketches", None)
            if sketches is not None and hasattr(st, "seed_sketches"):
                st.seed_sketches(sketches)
                seeded = True
        xs = []
        for ev in evs:
            obs = extract(st, ev, policy)
            commit_novelty(st, obs)
            xs.append(obs.x)
        m = np.log1p(np.asarray(xs, dtype=np.float64))
        skip = min(20, len(m) // 5) if warmup and not seeded else 0
        if len(m) - skip < 5:
            skip = 0
        if keep is not None:
            mask = np.array([bool(keep(ev)) for ev in evs])
            mask[:skip] = False
            blocks.append(m[mask])
        else:
            blocks.append(m[skip:])
    if not blocks:
        return np.zeros((0, N_FEATURES))
    return np.concatenate(blocks)


def drift_table(values: np.ndarray, names: Sequence[str] = FEATURE_NAMES) -> list[dict]:
    """``[{"feature", "psi", "status"}]``, most drifted first; status ``stable``/``moderate``/``shifted``.

    >>> drift_table(np.array([0.02, 0.4, np.nan]), ["a", "b", "c"])
    [{'feature': 'b', 'psi': 0.4, 'status': 'shifted'}, {'feature': 'a', 'psi': 0.02, 'status': 'stable'}, {'feature': 'c', 'psi': None, 'status': 'no data'}]
    """
    out = []
    for name, v in zip(names, np.asarray(values, dtype=np.float64)):
        if not np.isfinite(v):
            out.append({"feature": name, "psi": None, "status": "no data"})
            continue
        status = "stable" if v < STABLE else ("moderate" if v < SHIFTED else "shifted")
        out.append({"feature": name, "psi": round(float(v), 4), "status": status})
    out.sort(key=lambda r: -1.0 if r["psi"] is None else r["psi"], reverse=True)
    return out
