"""Group importance: one scorer per file, looked up by name."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from graphprune.analysis import ChannelAnalysis
from graphprune.importance.magnitude import l1_importance, l2_importance
from graphprune.importance.random import random_importance

Scorer = Callable[[ChannelAnalysis], np.ndarray]

SCORERS: dict[str, Scorer] = {
    "l1": l1_importance,
    "l2": l2_importance,
    "random": random_importance,
}

__all__ = ["SCORERS", "Scorer"]
