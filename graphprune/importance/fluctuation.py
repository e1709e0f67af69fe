"""FLAP's fluctuation: variance of each input channel times its squared weight-column norm.

``score(c) = sum over consumer pairs (W, X) of c of sum_i Var(X_i) * ||W[..., i, ...]||_2^2``,
the variance taken over the calibration set (every sample and position). A channel that is
constant over the data scores 0: its mean can be folded into the consumer's bias (FLAP's
compensation), so removing it loses nothing. See :mod:`graphprune.importance.consumers`.
"""

from __future__ import annotations

import numpy as np

from graphprune.importance.context import ScoringContext
from graphprune.importance.weighted import weighted_scores


def fluctuation_score(context: ScoringContext) -> np.ndarray:
    """Per-class fluctuation score (indexed by class label; raw, not standardized)."""
    return weighted_scores(context, 2, lambda s: s.var)
