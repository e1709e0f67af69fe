"""Activation-aware magnitude (Wanda-style, structured): ``|W| * ||X||`` per input channel.

``score(c) = sum over consumer pairs (W, X) of c of sum_i (sum |W[..., i, ...]|) * ||X_i||_2``,
where ``X_i`` is input channel ``i`` of the consumer over the whole calibration set (every
sample and position) and the weight slice is summed over every other axis. A channel whose
input is always zero scores 0 however large its weights. See
:mod:`graphprune.importance.consumers` for what a consumer pair is.
"""

from __future__ import annotations

import numpy as np

from graphprune.importance.context import ScoringContext
from graphprune.importance.weighted import weighted_scores


def activation_score(context: ScoringContext) -> np.ndarray:
    """Per-class Wanda-style score (indexed by class label; raw, not standardized)."""
    return weighted_scores(context, 1, lambda s: s.sq_norm, np.sqrt)
