"""Per-agent baseline profiles: robust location and scale of each feature, in log1p units.

A profile starts from a prior (the agent's trained profile, or its peer group's
when the agent is new, or a wide generic prior when there is no model) and keeps
learning online (median and 95th percentile tracked by stochastic
approximation), so one outlier moves it no more than an ordinary action. Only actions judged normal are fed
to :meth:`Baseline.learn`.

>>> from detector.features import N_FEATURES
>>> b = Baseline.from_prior(Prior.generic())
>>> for _ in range(200):
...     b.learn([1.0] * N_FEATURES)
>>> round(b.loc[0], 2)   # log1p(1.0)
0.69
>>> z = b.deviations([1.0] * N_FEATURES)
>>> max(z) < 0.5
True
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass
from math import log1p

from detector.features import FEATURES, N_FEATURES

__all__ = ["Baseline", "Prior", "FLOORS", "Z95"]

FLOORS = tuple(f.floor for f in FEATURES)
_ALPHA_MIN = 0.002
#: the scale is the upper semi-spread (q95 - median) / Z95: a standard deviation for normal data
Z95 = 1.6448536


@dataclass(frozen=True)
class Prior:
    """Where a profile starts: location and scale per feature (log1p units), how many
    observations it is worth, and (optionally) an hour-of-day activity profile."""

    loc: tuple[float, ...]
    scale: tuple[float, ...]
    weight: float
    hours: tuple[float, ...] | None = None
    source: str = "generic"
    #: the agent's known tools, resource families, destinations, task steps and principals (Bloom filter
    #: bytes, as ``FeatureState.sketches`` gives them), so a known agent's usual ways are not novel
    sketches: tuple[bytes, ...] | None = None

    @classmethod
    def generic(cls) -> "Prior":
        """The prior with no model: centred low and wide, worth a few observations, so
        a new agent is learnt quickly and only gross deviations score meanwhile."""
        return cls(loc=(0.0,) * N_FEATURES, scale=tuple(max(2.0, 4 * f) for f in FLOORS), weight=10.0)


class Baseline:
    __slots__ = ("loc", "scale", "n")

    def __init__(self, loc: array, scale: array, n: float) -> None:
        self.loc = loc
        self.scale = scale
        self.n = n

    @classmethod
    def from_prior(cls, prior: Prior) -> "Baseline":
        return cls(array("d", prior.loc), array("d", prior.scale), prior.weight)

    def to_tuple(self) -> tuple:
        return (self.loc.tobytes(), self.scale.tobytes(), self.n)

    @classmethod
    def from_tuple(cls, t: tuple | list) -> "Baseline":
        return cls(array("d", t[0]), array("d", t[1]), t[2])

    def deviations(self, x: list[float]) -> list[float]:
        """Signed robust z of each feature value (natural units in, log1p applied here)."""
        return self.deviations_log(list(map(log1p, x)))

    def deviations_log(self, xl: list[float]) -> list[float]:
        """Signed robust z of each feature value already in log1p units."""
        return [(v - m) / (s if s > f else f) for v, m, s, f in zip(xl, self.loc, self.scale, FLOORS)]

    def learn(self, x: list[float]) -> None:
        """Move the profile towards ``x`` (an action judged normal; natural units)."""
        self.learn_log(list(map(log1p, x)))

    def learn_log(self, xl: list[float]) -> None:
        """Move the profile towards ``xl`` (log1p units).

        Location tracks the median and ``loc + Z95 * scale`` the 95th percentile, both by
        stochastic approximation with steps proportional to the scale: sign-based, so an
        outlier moves them no more than an ordinary value does, and rare-but-normal
        spikes (a weekly export) widen the scale instead of being ignored as a MAD would.
        """
        self.n += 1.0
        a = 1.0 / self.n
        if a < _ALPHA_MIN:
            a = _ALPHA_MIN
        a2 = 2.0 * a
        up, down = 0.95 * Z95, 0.05 * Z95
        locs, scales = [], []
        for v, m, s, f in zip(xl, self.loc, self.scale, FLOORS):
            step = a2 * (s if s > f else f)
            hi = m + Z95 * s
            if v > m:
                m += step
            elif v < m:
                m -= step
            if v > hi:
                hi += step * up
            else:
                hi -= step * down
            locs.append(m)
            scales.append((hi - m) / Z95 if hi > m else 0.0)
        self.loc = array("d", locs)
        self.scale = array("d", scales)
