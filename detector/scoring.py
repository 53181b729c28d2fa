"""From feature deviations to a calibrated score with reasons.

**What a score means, said once:** ``score`` is in [0, 1]; higher is more
anomalous. It is ``-log10(p) / 6`` clipped to [0, 1], where ``p`` is the
estimated probability that a normal action of *any* agent deviates at least this
much from *its own* baseline. Because each agent is measured against its own
profile and the rarity scale is shared, equal scores mean equal rarity across
agents: 0.5 is a one-in-a-thousand action, 1.0 one in a million or rarer.

Thresholding into severities is a separate step (:class:`detector.policy.Thresholds`).

>>> cal = Calibration.laplace()
>>> round(score_of(cal.pvalue(0.0)), 3), round(score_of(cal.pvalue(8.0)), 2)
(0.0, 0.74)
"""

from __future__ import annotations

import logging
from array import array
from bisect import bisect_left
from dataclasses import dataclass
from math import exp, expm1, log, log10
from string import Formatter
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

from detector.features import FEATURES, N_FEATURES
from detector.native import kernels as _kernels

#: The compiled scoring (``detector/_score.c``: Calibration p-values here, evidence strength in
#: :mod:`detector.evidence`, the isolation forest in :mod:`models.store`), loaded where the compiled
#: feature loops are (``FLOWBREAKER_PURE_PYTHON=1`` or a failed build leave both out, detector/native.py);
#: ``None`` runs the pure-Python references, which tests/unit/test_score_kernel.py holds it to bit for bit.
_score = None
if _kernels is not None:
    try:
        from detector import _score  # type: ignore[no-redef]
    except ImportError as err:  # the package works without it, slower
        logging.getLogger("flowbreaker.native").warning(
            "the compiled kernel detector._score is not built (%s): running the pure-Python scoring "
            "(same decisions, slower); reinstall with a C compiler and Python headers (bash scripts/install.sh)", err)

__all__ = ["Calibration", "FeatureTails", "score_of", "explain", "round4", "P_FLOOR", "REASON_Z", "REASON_NEGLOG"]


def _py_round4(x: float) -> float:
    """A score as records carry it: ``round(x, 4)``. The reference of ``detector._score.round4`` (the same
    number without the decimal string Python's round() goes through)."""
    return round(x, 4)


round4 = _score.round4 if _score is not None else _py_round4

P_FLOOR = 1e-6
#: a feature is named as a reason when its robust z is at least this ...
REASON_Z = 2.5
#: ... and a normal action deviates this much at most once in a hundred (-log10 p >= 2)
REASON_NEGLOG = 2.0


def score_of(p: float) -> float:
    """Map a rarity ``p`` in (0, 1] to the score scale."""
    if p >= 1.0:
        return 0.0
    if p <= P_FLOOR:
        return 1.0
    return -log10(p) / 6.0


@dataclass(frozen=True)
class Calibration:
    """Tail probability of a raw anomaly statistic, learnt from normal history.

    ``thresholds`` are sorted raw values and ``tails`` the share of normal
    actions at or above each; beyond the last one the tail decays exponentially
    with ``beta`` (mean excess over the last threshold). With no history,
    :meth:`laplace` is a heavy-tailed default for the maximum robust z over a
    handful of effectively independent features.
    """

    thresholds: tuple[float, ...]
    tails: tuple[float, ...]
    beta: float

    def __post_init__(self) -> None:
        # the compiled p-value (detector._score.Curve: the logs of the tails taken once), for tuples of
        # floats that it takes; None keeps the reference (ints, lists that could change, tails <= 0, ...)
        curve = None
        if _score is not None and type(self.thresholds) is tuple and type(self.tails) is tuple:
            try:
                curve = _score.Curve(self.thresholds, self.tails, self.beta)
            except ValueError:
                pass
        object.__setattr__(self, "_curve", curve)

    @classmethod
    def laplace(cls, *, effective_features: float = 6.0) -> "Calibration":
        zs = tuple(float(z) for z in range(0, 13))
        tails = tuple(min(1.0, effective_features * 0.5 * exp(-z * 2 ** 0.5)) for z in zs)
        return cls(zs, tails, 1 / 2 ** 0.5)

    @classmethod
    def multiplicity(cls, m: float) -> "Calibration":
        """For a raw statistic that is ``-log10`` of the smallest of several tail probabilities:
        ``p = min(1, m * 10**-raw)`` (a Bonferroni correction for ``m`` effective tests)."""
        return cls((0.0, log10(max(m, 1.0)) + 1e-9), (1.0, 1.0), 1.0 / log(10.0))

    @classmethod
    def fit(cls, raw: "list[float]", *, min_tail: float = 1e-4, min_beta: float = 0.0,
            beta: float | None = None) -> "Calibration":
        """Fit from raw statistics of normal actions (at least a few hundred)."""
        xs = sorted(raw)
        n = len(xs)
        if n < 50:
            return cls.laplace()
        qs = [0.0, 0.5, 0.75, 0.9, 0.95, 0.98, 0.99, 0.995, 0.998, 0.999, 0.9995, 0.9998, 0.9999]
        thr, tails = [], []
        for q in qs:
            tail = 1.0 - q
            if tail * n < 5 and tail < 1.0:
                break
            v = xs[min(n - 1, int(q * n))]
            if thr and v <= thr[-1]:
                continue
            thr.append(float(v))
            tails.append(max(tail, min_tail))
        top = xs[int(0.99 * n):] if n >= 500 else xs[int(0.9 * n):]
        last = thr[-1]
        excess = [v - last for v in top if v > last]
        if beta is None:
            beta = max(sum(excess) / len(excess) if excess else 0.5, min_beta, 1e-3)
        return cls(tuple(thr), tuple(tails), float(beta))

    @property
    def compiled(self):
        """The compiled curve (``detector._score.Curve``) this calibration answers with, or ``None`` (not built,
        or numbers it does not take): for kernels that take p-values themselves."""
        return self._curve if _score is not None else None

    def pvalue(self, raw: float) -> float:
        """Share of normal actions whose raw statistic is at least ``raw``."""
        if self._curve is not None and _score is not None:
            p = self._curve.pvalue(raw)
            if p is not None:  # None: not a float, or NaN; the reference decides
                return p
        return self._py_pvalue(raw)

    def _py_pvalue(self, raw: float) -> float:
        """The reference of ``detector._score.Curve.pvalue``."""
        thr = self.thresholds
        if raw <= thr[0]:
            return 1.0
        if raw >= thr[-1]:
            return self.tails[-1] * exp(-(raw - thr[-1]) / self.beta)
        i = bisect_left(thr, raw)
        # log-linear interpolation between the two surrounding thresholds, kept within their tails: exp(log(t))
        # is t give or take a unit in the last place, and without the bounds a raw value at a threshold could
        # be given a p-value a unit below the one just above it (p-values never rise with the statistic)
        x0, x1 = thr[i - 1], thr[i]
        t0, t1 = self.tails[i - 1], self.tails[i]
        l0, l1 = log(t0), log(t1)
        p = exp(l0 + (l1 - l0) * (raw - x0) / (x1 - x0))
        if p < t1:
            return t1
        return t0 if p > t0 else p

    def inverse(self, p: float) -> float:
        """The raw statistic whose tail probability is ``p`` (bisection; pvalue is non-increasing)."""
        lo, hi = self.thresholds[0], self.thresholds[-1] + 50.0 * self.beta
        for _ in range(100):
            mid = (lo + hi) / 2
            if self.pvalue(mid) > p:
                lo = mid
            else:
                hi = mid
        return hi

    def pvalues(self, raw) -> "list[float]":
        """:meth:`pvalue` of many raw values."""
        return [self.pvalue(float(r)) for r in raw]

    def pvalues_into(self, raw, out) -> None:
        """``out[i] = pvalue(float(raw[i]))`` for float64 arrays (a batch's combination rarities at once)."""
        if self._curve is not None and _score is not None and self._curve.pvalues(raw, out):
            return
        for i, r in enumerate(raw):
            out[i] = self.pvalue(float(r))

    def to_dict(self) -> dict:
        return {"thresholds": list(self.thresholds), "tails": list(self.tails), "beta": self.beta}

    @classmethod
    def from_dict(cls, d: dict) -> "Calibration":
        thr, tails = tuple(map(float, d["thresholds"])), tuple(map(float, d["tails"]))
        if not thr or len(thr) != len(tails) or list(thr) != sorted(thr) or float(d["beta"]) <= 0:
            raise ValueError("calibration: thresholds must be sorted, as many as tails, beta > 0")
        return cls(thr, tails, float(d["beta"]))


class FeatureTails:
    """How rare each feature's robust deviation is among normal actions, as ``-log10 p``.

    One table per feature: entry ``i >= 1`` holds ``-log10 P(Z >= (i-1)/STEPS_PER_Z)``
    for ``z`` up to ``Z_MAX`` (entry 0 is for ``z <= 0``, never rare), and beyond it an exponential tail with the
    feature's own slope. Per-feature tails keep one feature's heavy tail (an HR
    agent's occasional all-hands post) from blunting the others. ``raw`` is the
    largest ``-log10 p`` over the features; :class:`Calibration` turns it into the
    rarity of the action (a multiplicity correction learnt from normal history).

    >>> t = FeatureTails.generic(3)
    >>> round(t.neglog(0, 8.0), 2), t.neglog(0, -1.0)
    (4.91, 0.0)
    """

    STEPS_PER_Z = 20
    Z_MAX = 40.0

    def __init__(self, tables: "list[list[float]]", slopes: "list[float]") -> None:
        n = int(self.Z_MAX * self.STEPS_PER_Z) + 2
        if len(tables) != len(slopes) or any(len(t) != n for t in tables):
            raise ValueError(f"feature tails: need one table of {n} values and one slope per feature")
        self.tables = [list(map(float, t)) for t in tables]
        self.slopes = [float(s) for s in slopes]
        self._n = n
        # the same tables laid end to end for the compiled kernel (detector/native.py)
        self._flat = array("d", [v for t in self.tables for v in t])
        self._slopes = array("d", self.slopes)

    @classmethod
    def generic(cls, n_features: int) -> "FeatureTails":
        """No history: a Laplace tail per feature, ``p = exp(-z * sqrt(2))``."""
        k = 2 ** 0.5 / log(10.0)
        n = int(cls.Z_MAX * cls.STEPS_PER_Z) + 2
        table = [0.0] + [k * ((i - 1) / cls.STEPS_PER_Z) for i in range(1, n)]
        return cls([table] * n_features, [k] * n_features)

    def neglog(self, f: int, z: float) -> float:
        if z <= 0.0:
            return 0.0
        i = int(z * self.STEPS_PER_Z) + 1
        t = self.tables[f]
        if i < self._n:
            return t[i]
        return t[-1] + (z - self.Z_MAX) * self.slopes[f]

    @classmethod
    def fit(cls, z: "np.ndarray", *, min_count: int = 10) -> "FeatureTails":
        """Empirical tails of out-of-sample deviations (rows = normal actions, columns = features).

        Where fewer than ``min_count`` normal actions deviate at least this much, the tail
        continues exponentially with the mean excess of those last ones (at least a Laplace
        slope's worth of caution: never thinner than 0.3 z per factor e, never heavier than 3).
        A feature that never deviated upwards in history gets ``p = 1/(n+1)`` at ``0+``.
        """
        import numpy as np

        n_rows, n_feat = z.shape
        n = int(cls.Z_MAX * cls.STEPS_PER_Z) + 2
        grid = np.arange(n - 1) / cls.STEPS_PER_Z  # z values of entries 1..n-1
        tables, slopes = [], []
        for f in range(n_feat):
            col = np.sort(z[:, f])
            pos = col[col > 0.0]
            counts = len(col) - np.searchsorted(col, grid, side="left")
            counts[0] = len(pos)  # entry 1 means "just above 0"
            if len(pos) >= min_count:
                tail_vals = pos[-min_count:]
                z0 = float(tail_vals[0])
                beta = float(np.clip(np.mean(tail_vals - z0), 0.3, 3.0))
                p0 = min_count / (n_rows + 1)
            else:
                z0, beta = 0.0, 1 / 2 ** 0.5
                p0 = max(len(pos), 1) / (n_rows + 1)
            emp = np.maximum(counts, 0) / (n_rows + 1)
            ext = p0 * np.exp(-(grid - z0) / beta)
            p = np.where(counts >= min_count, emp, ext)
            p = np.minimum(np.minimum.accumulate(np.clip(p, 1e-300, 1.0)), 1.0)
            tables.append([0.0] + (-np.log10(p)).tolist())
            slopes.append(1.0 / (beta * log(10.0)))
        return cls(tables, slopes)

    def neglogs(self, z: "list[float]") -> "list[float]":
        """``-log10 p`` of every feature (0 for deviations at or below the baseline)."""
        if _kernels is not None:
            return _kernels.neglogs(z, self._flat, self._slopes, self._n, float(self.STEPS_PER_Z), self.Z_MAX)
        return self._py_neglogs(z)

    def _py_neglogs(self, z: "list[float]") -> "list[float]":
        """The reference of ``detector._native.neglogs``."""
        spz, n, zmax = self.STEPS_PER_Z, self._n, self.Z_MAX
        out = []
        for v, t, s in zip(z, self.tables, self.slopes):
            if v <= 0.0:
                out.append(0.0)
                continue
            i = int(v * spz) + 1
            out.append(t[i] if i < n else t[-1] + (v - zmax) * s)
        return out

    def to_arrays(self) -> "tuple[list[list[float]], list[float]]":
        return self.tables, self.slopes


def _fmt(v: float) -> str:
    if v >= 100:
        return f"{v:,.0f}"
    if v >= 10:
        return f"{v:.1f}"
    return f"{v:.2g}" if v else "0"


def _py_explain(z: list[float], r: list[float], x: list[float], loc, *, extra: list[dict] | None = None,
                limit: int = 5) -> list[dict]:
    """Reasons, rarest first: features at least :data:`REASON_Z` robust deviations above the
    agent's baseline that normal actions reach less than once in a hundred. The reference of
    ``detector._score.explain`` (:data:`explain`)."""
    if loc is None:
        idx = []
    else:
        idx = [i for i in range(N_FEATURES) if z[i] >= REASON_Z and r[i] >= REASON_NEGLOG]
    idx.sort(key=lambda i: (-r[i], -z[i]))
    out = []
    for i in idx[:limit]:
        f = FEATURES[i]
        value = x[i]
        base = expm1(loc[i]) if loc[i] > 0 else 0.0
        out.append({
            "feature": f.name,
            "value": round(value, 3),
            "baseline": round(base, 3),
            "detail": f.detail.format(value=_fmt(value), baseline=_fmt(base)) + f" ({z[i]:.1f} robust deviations above).",
        })
    if extra:
        out.extend(extra)
    return out


def _template_parts(detail: str) -> tuple | None:
    """A feature's detail template as ``detector._score.explain`` fills it in: its literals (str) and fields (0 for
    ``{value}``, 1 for ``{baseline}``), or ``None`` for a template that is more than that (a format spec, a
    conversion, another field)."""
    parts: list = []
    for literal, field, spec, conversion in Formatter().parse(detail):
        if literal:
            parts.append(literal)
        if field is None:
            continue
        if field not in ("value", "baseline") or spec or conversion is not None:
            return None
        parts.append(0 if field == "value" else 1)
    return tuple(parts)


def _explain_kernel():
    """``detector._score.explain`` set up with the features' names and templates (None when it cannot be: no
    kernel, or a template it does not fill in)."""
    if _score is None or not hasattr(_score, "explain"):
        return None
    parts = tuple(_template_parts(f.detail) for f in FEATURES)
    if any(p is None for p in parts):
        return None
    _score.explain_setup(_py_explain, tuple(f.name for f in FEATURES), parts, REASON_Z, REASON_NEGLOG, round)
    return _score.explain


#: :func:`_py_explain`, compiled (``detector/_score.c``: the same dicts, strings and floats; any input it does not
#: take, the reference's), or the reference itself
explain = _explain_kernel() or _py_explain
