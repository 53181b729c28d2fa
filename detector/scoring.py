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

from bisect import bisect_left
from dataclasses import dataclass
from math import exp, expm1, log, log10

from detector.features import FEATURES, N_FEATURES

__all__ = ["Calibration", "score_of", "explain", "P_FLOOR", "REASON_Z"]

P_FLOOR = 1e-6
#: a feature is named as a reason when its robust z is at least this
REASON_Z = 2.5


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

    @classmethod
    def laplace(cls, *, effective_features: float = 6.0) -> "Calibration":
        zs = tuple(float(z) for z in range(0, 13))
        tails = tuple(min(1.0, effective_features * 0.5 * exp(-z * 2 ** 0.5)) for z in zs)
        return cls(zs, tails, 1 / 2 ** 0.5)

    @classmethod
    def fit(cls, raw: "list[float]", *, min_tail: float = 1e-4, min_beta: float = 0.0) -> "Calibration":
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
        beta = max(sum(excess) / len(excess) if excess else 0.5, min_beta, 1e-3)
        return cls(tuple(thr), tuple(tails), float(beta))

    def pvalue(self, raw: float) -> float:
        thr = self.thresholds
        if raw <= thr[0]:
            return 1.0
        if raw >= thr[-1]:
            return self.tails[-1] * exp(-(raw - thr[-1]) / self.beta)
        i = bisect_left(thr, raw)
        # log-linear interpolation between the two surrounding thresholds
        x0, x1 = thr[i - 1], thr[i]
        l0, l1 = log(self.tails[i - 1]), log(self.tails[i])
        return exp(l0 + (l1 - l0) * (raw - x0) / (x1 - x0))

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

    def to_dict(self) -> dict:
        return {"thresholds": list(self.thresholds), "tails": list(self.tails), "beta": self.beta}

    @classmethod
    def from_dict(cls, d: dict) -> "Calibration":
        thr, tails = tuple(map(float, d["thresholds"])), tuple(map(float, d["tails"]))
        if not thr or len(thr) != len(tails) or list(thr) != sorted(thr) or float(d["beta"]) <= 0:
            raise ValueError("calibration: thresholds must be sorted, as many as tails, beta > 0")
        return cls(thr, tails, float(d["beta"]))


def _fmt(v: float) -> str:
    if v >= 100:
        return f"{v:,.0f}"
    if v >= 10:
        return f"{v:.1f}"
    return f"{v:.2g}" if v else "0"


def explain(z: list[float], x: list[float], loc, *, extra: list[dict] | None = None, limit: int = 5) -> list[dict]:
    """Reasons, most important first: features whose robust z is at least :data:`REASON_Z`."""
    if loc is None:
        idx = []
    else:
        idx = [i for i in range(N_FEATURES) if z[i] >= REASON_Z]
    idx.sort(key=lambda i: -z[i])
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
