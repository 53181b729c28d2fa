"""The small interface a trained model offers the engine (implemented in ``models/``).

The engine asks a model three things: where a profile starts for an agent (its own
trained profile, else its peer group's), how rare the largest feature deviation
is (per-feature tails and a :class:`~detector.scoring.Calibration` learnt from normal history), and,
for a batch of deviation vectors, how rare each *combination* is (e.g. an
isolation forest evaluated with numpy). ``None`` as the model means online
baselines only.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from detector.baseline import Prior
from detector.scoring import Calibration, FeatureTails

__all__ = ["Model"]


class Model(Protocol):
    version: str
    #: per-feature tails of robust deviations (``-log10 p``)
    feature_tails: FeatureTails
    #: rarity of the largest per-feature ``-log10 p`` (a multiplicity correction)
    stat_calibration: Calibration
    #: rarity of the summed evidence of harm (:func:`detector.scoring.evidence_sum`), or None
    evidence_calibration: Calibration | None

    def prior_for(self, agent_id: str, operator_id: str, tool: str) -> Prior:
        """The starting profile for an agent first seen acting with ``tool``."""

    def combination_pvalues(self, z: np.ndarray) -> np.ndarray:
        """Rarity in (0, 1] of each row of deviations (shape ``(n, N_FEATURES)``); 1 = common."""
