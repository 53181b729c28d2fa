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
from detector.native import kernels as _kernels

__all__ = ["Baseline", "Prior", "KindProfiles", "FLOORS", "Z95", "KIND_MIN"]

FLOORS = tuple(f.floor for f in FEATURES)
_ALPHA_MIN = 0.002
#: the scale is the upper semi-spread (q95 - median) / Z95: a standard deviation for normal data
Z95 = 1.6448536
_FLOORS = array("d", FLOORS)
#: the steps of the 95th percentile up and down (per step of the median)
_UP, _DOWN = 0.95 * Z95, 0.05 * Z95


def _py_log_deviations(x, loc, scale, floors) -> tuple[list[float], list[float]]:
    """``log1p`` of a row, and the signed robust z of each value against ``loc`` and ``scale``
    (at least ``floors``). The reference of ``detector._native.log_deviations``."""
    xl = list(map(log1p, x))
    return xl, [(v - m) / (s if s > f else f) for v, m, s, f in zip(xl, loc, scale, floors)]


def _quantile_step(v: float, m: float, hi: float, step: float, up: float, down: float) -> tuple[float, float]:
    """The location ``m`` (tracking the median) and ``hi`` (the 95th percentile) one step towards ``v`` by
    stochastic approximation: sign-based, so an outlier moves them no more than an ordinary value does;
    ``hi`` up by ``step * up`` past it, else down by ``step * down``. The one step of both references below."""
    if v > m:
        m += step
    elif v < m:
        m -= step
    if v > hi:
        hi += step * up
    else:
        hi -= step * down
    return m, hi


def _py_learn(xl, loc, scale, floors, a2: float, z95: float, up: float, down: float) -> tuple[array, array]:
    """One learning step of :meth:`Baseline.learn_log` with step size ``a2`` (per unit of scale), as
    new arrays. The reference of ``detector._native.learn``."""
    locs, scales = [], []
    for v, m, s, f in zip(xl, loc, scale, floors):
        step = a2 * (s if s > f else f)
        m, hi = _quantile_step(v, m, m + z95 * s, step, up, down)
        locs.append(m)
        scales.append((hi - m) / z95 if hi > m else 0.0)
    return array("d", locs), array("d", scales)


def _py_learn_into(xl, loc: array, scale: array, floors, a2: float, z95: float, up: float, down: float) -> None:
    """:func:`_py_learn`'s step written into ``loc`` and ``scale`` themselves. The reference of
    ``detector._native.learn_into``."""
    loc[:], scale[:] = _py_learn(xl, loc, scale, floors, a2, z95, up, down)


# the compiled kernels when they are built (detector/native.py), else the references above
_log_deviations = _kernels.log_deviations if _kernels is not None else _py_log_deviations
_learn = _kernels.learn if _kernels is not None else _py_learn
_learn_into = getattr(_kernels, "learn_into", None) or _py_learn_into


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
    #: the agent's destination habits (:class:`detector.habits.Habits` bytes), or its peers' for a newcomer
    habits: bytes | None = None

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
        return _log_deviations(x, self.loc, self.scale, _FLOORS)[1]

    def log_deviations(self, x: list[float]) -> tuple[list[float], list[float]]:
        """The row in log1p units, and the signed robust z of each feature value (natural units in)."""
        return _log_deviations(x, self.loc, self.scale, _FLOORS)

    def deviate(self, x: list[float], kinds: "KindProfiles", kind: int) -> tuple[list[float], list[float], bool]:
        """:meth:`log_deviations`, then :meth:`KindProfiles.compare` with the action's ``kind``: the row in
        log1p units, its deviations, and whether the kind's profile took part (one kernel call)."""
        return _deviate(x, self.loc, self.scale, _FLOORS, kinds.a, float(kind), _KIND_FEATURES, KIND_MIN, Z95)

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
        self.loc, self.scale = _learn(xl, self.loc, self.scale, _FLOORS, 2.0 * a, Z95, _UP, _DOWN)

    def learn_log_in_place(self, xl: list[float]) -> None:
        """:meth:`learn_log` written into the profile's arrays (no new ones): for a caller that holds no
        reference to ``loc`` or ``scale`` it must keep as they were (the engine copies the location it keeps
        for an action's reasons)."""
        self.n += 1.0
        a = 1.0 / self.n
        if a < _ALPHA_MIN:
            a = _ALPHA_MIN
        _learn_into(xl, self.loc, self.scale, _FLOORS, 2.0 * a, Z95, _UP, _DOWN)


#: per-action magnitudes compared within the kind of action (issue 18): event_volume, event_fanout
_KIND_FEATURES = (FEATURES.index(next(f for f in FEATURES if f.name == "event_volume")),
                  FEATURES.index(next(f for f in FEATURES if f.name == "event_fanout")))
_KIND_SLOTS = 6
_KIND_W = 2 + 1 + 2 * len(_KIND_FEATURES)  # key, n, last t, then (loc, hi) per feature
#: a kind of action is compared with its own profile once it is worth this many actions
KIND_MIN = 5.0
_KIND_ALPHA_MIN = 0.01
_KIND_FLOORS = tuple((f, FLOORS[f]) for f in _KIND_FEATURES)


def _py_deviate(x, loc, scale, floors, kinds, kind: float, kind_features, kind_min: float, z95: float,
                xl_out: array | None = None, z_out: array | None = None) -> tuple[list[float] | array,
                                                                               list[float] | array, bool]:
    """:func:`_py_log_deviations` of a row, then its magnitudes' deviations lowered to those from the kind's
    profile in ``kinds`` (:meth:`KindProfiles.compare`), and whether the kind has one. ``xl_out``, ``z_out``
    (``array('d')`` as long as the row and its deviations): the row in log1p units and the deviations are
    written there and returned instead of lists (25 floats fewer to make, and to free, each). The reference of
    ``detector._native.deviate``."""
    xl, z = _py_log_deviations(x, loc, scale, floors)
    if xl_out is not None:
        if len(xl_out) != len(xl):
            raise ValueError("deviate: xl_out must be as long as the row")
        xl_out[:] = array("d", xl)
        xl = xl_out
    if z_out is not None:
        if len(z_out) != len(z):
            raise ValueError("deviate: z_out must be as long as the deviations")
        z_out[:] = array("d", z)
        z = z_out
    w = 3 + 2 * len(kind_features)
    keys = kinds[0::w]
    if kind not in keys:
        return xl, z, False
    b = w * keys.index(kind)
    if kinds[b + 1] < kind_min:
        return xl, z, False
    for j, f in enumerate(kind_features):
        m, hi = kinds[b + 3 + 2 * j], kinds[b + 4 + 2 * j]
        s = (hi - m) / z95
        fl = floors[f]
        zk = (xl[f] - m) / (s if s > fl else fl)
        if zk < z[f]:
            z[f] = zk
    return xl, z, True


def _py_kind_learn(kinds: array, kind: float, xl, t: float, kind_features, kind_floors, z95: float, up: float,
                   down: float, alpha_min: float, slots: int = 0) -> bool:
    """One learning step of the kind's profile in ``kinds`` (in place), as :meth:`KindProfiles.learn` takes
    it; a kind without a slot takes the least recently used kind's when all ``slots`` are taken, else the
    answer is ``False`` (nothing changed: the caller makes a slot). The reference of
    ``detector._native.kind_learn``."""
    w = 3 + 2 * len(kind_features)
    keys = kinds[0::w]
    a = kinds
    if kind in keys:
        b = w * keys.index(kind)
    elif slots <= 0 or len(a) != w * slots:
        return False
    else:  # all slots taken: the first least recently used kind makes room (a fresh profile: the action)
        b = min(range(0, len(a), w), key=lambda i: (a[i + 2], i))
        a[b], a[b + 1] = kind, 0.0
        for j, (f, fl) in enumerate(zip(kind_features, kind_floors)):
            a[b + 3 + 2 * j] = xl[f]
            a[b + 4 + 2 * j] = xl[f] + z95 * fl
    n = a[b + 1] + 1.0
    a[b + 1] = n
    if t > a[b + 2]:
        a[b + 2] = t
    if n == 1.0:
        return True
    alpha = 1.0 / n
    if alpha < alpha_min:
        alpha = alpha_min
    i = b + 3
    for f, fl in zip(kind_features, kind_floors):
        v, m, hi = xl[f], a[i], a[i + 1]
        s = (hi - m) / z95
        step = 2.0 * alpha * (s if s > fl else fl)
        m, hi = _quantile_step(v, m, hi, step, up, down)
        a[i] = m
        a[i + 1] = hi if hi > m else m
        i += 2
    return True


_deviate = getattr(_kernels, "deviate", None) or _py_deviate
_kind_learn = getattr(_kernels, "kind_learn", None) or _py_kind_learn
_KIND_FLOOR_VALUES = tuple(fl for _, fl in _KIND_FLOORS)


class KindProfiles:
    """Per-action magnitudes (sensitivity-weighted records and fan-out of one action) profiled per kind of
    action (verb and tool family, a hash), for the :data:`_KIND_SLOTS` kinds an agent used most recently:
    when posts are 2 % of an agent's actions, a post is compared with its posts, not with everything it
    does. Fixed size (a flat array); the least recently used kind makes room for a new one.

    >>> k = KindProfiles()
    >>> xl = [0.0] * N_FEATURES
    >>> xl[_KIND_FEATURES[1]] = log1p(500.0)
    >>> for i in range(6):
    ...     k.learn(7, xl, float(i))
    >>> z = [9.0] * N_FEATURES
    >>> k.compare(7, xl, z) and abs(z[_KIND_FEATURES[1]]) < 1.0, z[0]
    (True, 9.0)
    """

    __slots__ = ("a",)

    def __init__(self, raw: bytes = b"") -> None:
        self.a = array("d", raw)
        if len(self.a) % _KIND_W or len(self.a) > _KIND_W * _KIND_SLOTS:
            raise ValueError("kind profiles have the wrong shape")

    def to_bytes(self) -> bytes:
        return self.a.tobytes()

    def _slot(self, kind: int) -> int:
        keys = self.a[0::_KIND_W]
        fk = float(kind)
        return _KIND_W * keys.index(fk) if fk in keys else -1

    def compare(self, kind: int, xl: list[float], z: list[float]) -> bool:
        """Where this kind's profile is established (worth :data:`KIND_MIN` actions), lower the magnitudes'
        deviations in ``z`` to their deviations from it (when those are smaller); ``True`` when it is. Only
        ever lower: the per-feature tails were calibrated on deviations from the agent's whole profile, and a
        young kind profile is narrow, so it may say "usual for this kind of action", never "unusual"."""
        b = self._slot(kind)
        a = self.a
        if b < 0 or a[b + 1] < KIND_MIN:
            return False
        for j, f in enumerate(_KIND_FEATURES):
            m, hi = a[b + 3 + 2 * j], a[b + 4 + 2 * j]
            s = (hi - m) / Z95
            fl = FLOORS[f]
            zk = (xl[f] - m) / (s if s > fl else fl)
            if zk < z[f]:
                z[f] = zk
        return True

    def learn(self, kind: int, xl: list[float], t: float) -> None:
        """Move this kind's profile towards the action's magnitudes (as :meth:`Baseline.learn_log` does)."""
        a = self.a
        done = _kind_learn(a, float(kind), xl, t, _KIND_FEATURES, _KIND_FLOOR_VALUES, Z95, _UP, _DOWN, _KIND_ALPHA_MIN,
                           _KIND_SLOTS)
        if done is None:  # a row the kernel leaves to the reference
            done = _py_kind_learn(a, float(kind), xl, t, _KIND_FEATURES, _KIND_FLOOR_VALUES, Z95, _UP, _DOWN,
                                  _KIND_ALPHA_MIN, _KIND_SLOTS)
        if done:  # a step, or a new kind in the least recently used one's slot
            return
        b = len(a)  # a free slot
        a.extend([0.0] * _KIND_W)
        a[b], a[b + 1] = float(kind), 0.0
        for j, f in enumerate(_KIND_FEATURES):
            a[b + 3 + 2 * j] = xl[f]
            a[b + 4 + 2 * j] = xl[f] + Z95 * FLOORS[f]
        # a new kind's first action: counted, its profile is the action itself (no step to take)
        a[b + 1] = 1.0
        if t > a[b + 2]:
            a[b + 2] = t
