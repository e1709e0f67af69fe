"""Random importance: a baseline and the oracle tests' source of arbitrary selections."""

from __future__ import annotations

import numpy as np

from graphprune.analysis import ChannelAnalysis
from graphprune.importance.context import ScoringContext


def random_importance(analysis: ChannelAnalysis, seed: int = 0) -> np.ndarray:
    """Independent uniform scores per class label."""
    return np.random.default_rng(seed).random(analysis.table.num_elements)


def random_score(context: ScoringContext) -> np.ndarray:
    """:func:`random_importance` with the context's seed."""
    return random_importance(context.analysis, seed=context.seed)
