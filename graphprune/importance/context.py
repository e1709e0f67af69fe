"""The scoring interface: a context in, one score per class label out.

``Scorer(context) -> np.ndarray`` indexed by class label (element id; see
:class:`graphprune.analysis.ChannelAnalysis`). Scorers return raw scores;
:func:`graphprune.importance.score` standardizes them per group (:func:`standardize`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np

from graphprune.analysis import ChannelAnalysis
from graphprune.calibration import CalibrationProvider


@dataclasses.dataclass
class ScoringContext:
    """What a scorer may read.

    Attributes:
        analysis: The channel analysis (groups, classes, the axis table, the model).
        model: The model the analysis was built on, or its path (what the provider runs).
        provider: Lazy calibration statistics (None: no data-driven scorer can run).
        seed: Seed of random scores.
    """

    analysis: ChannelAnalysis
    model: object = None
    provider: CalibrationProvider | None = None
    seed: int = 0

    def calibration(self) -> CalibrationProvider:
        if self.provider is None:
            from graphprune.errors import UsageError

            raise UsageError("this criterion needs calibration data (none was given)")
        return self.provider


Scorer = Callable[[ScoringContext], np.ndarray]


def standardize(analysis: ChannelAnalysis, scores: np.ndarray) -> np.ndarray:
    """Per-group z-scores: ``(s - mean) / std`` over each group's classes.

    Scores of different groups (layers of different widths and scales) then compare in one
    global ranking; the order inside a group is unchanged, so uniform allocation picks the same
    channels. A group whose scores are all equal gets zeros; labels outside every group get 0.
    """
    scores = np.asarray(scores, dtype=np.float64)
    out = np.zeros(analysis.table.num_elements, dtype=np.float64)
    for group in analysis.groups:
        values = scores[group.classes]
        spread = float(values.std())
        if spread > 0 and np.isfinite(spread):
            out[group.classes] = (values - values.mean()) / spread
    return out
