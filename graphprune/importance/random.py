"""Random importance: a baseline and the oracle tests' source of arbitrary selections."""

from __future__ import annotations

import numpy as np

from graphprune.analysis import ChannelAnalysis


def random_importance(analysis: ChannelAnalysis, seed: int = 0) -> np.ndarray:
    """Independent uniform scores per class label."""
    return np.random.default_rng(seed).random(analysis.table.num_elements)
