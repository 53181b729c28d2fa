"""Live drift: how far the features of the traffic a worker scores have moved from the model's training data.

Keeps decayed per-feature bin counts of live feature rows (``Decision.x``, log1p
units like training) over the model's training deciles (``train_quantiles`` in
the model arrays) and turns them into a population stability index per feature
(:func:`models.drift.psi`). Cheap: one numpy pass per batch. Reset on a model switch.
"""

from __future__ import annotations

import numpy as np

from detector.features import FEATURE_NAMES
from models.drift import Binning, psi

__all__ = ["DriftMonitor"]


class DriftMonitor:
    def __init__(self, model, *, half_life_rows: float = 20_000.0) -> None:
        quantiles = getattr(model, "a", {}).get("train_quantiles") if model is not None else None
        self.binning = Binning.from_quantiles(np.asarray(quantiles)) if quantiles is not None else None
        self.counts = None
        self._decay_per_row = 0.5 ** (1.0 / half_life_rows)

    def add(self, rows: list[list[float]]) -> None:
        if self.binning is None or not rows:
            return
        c = self.binning.counts(np.log1p(np.asarray(rows, dtype=np.float64)))
        self.counts = c if self.counts is None else self.counts * self._decay_per_row ** len(rows) + c

    def psi(self) -> dict[str, float] | None:
        if self.binning is None or self.counts is None:
            return None
        return dict(zip(FEATURE_NAMES, map(float, psi(self.binning, self.counts))))
