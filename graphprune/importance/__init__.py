"""Group importance: one scorer per file, looked up by name, behind one interface.

A scorer takes a :class:`ScoringContext` (analysis, model, lazy calibration provider, seed) and
returns raw scores per class label; :func:`score` checks the name, runs it and standardizes the
result per group (z-scores, :func:`standardize`) so scores compare across groups.
"""

from __future__ import annotations

import numpy as np

from graphprune.errors import UsageError
from graphprune.importance.activation import activation_score
from graphprune.importance.context import Scorer, ScoringContext, standardize
from graphprune.importance.fluctuation import fluctuation_score
from graphprune.importance.magnitude import l1_importance, l1_score, l2_importance, l2_score
from graphprune.importance.obspa import obspa_score
from graphprune.importance.output_aware import output_score
from graphprune.importance.random import random_importance, random_score

SCORERS: dict[str, Scorer] = {
    "l1": l1_score,
    "l2": l2_score,
    "random": random_score,
    "activation": activation_score,
    "fluctuation": fluctuation_score,
    "output": output_score,
    "obspa": obspa_score,
}
NEEDS_CALIBRATION = frozenset({"activation", "fluctuation", "output"})


def score(criterion: str, context: ScoringContext) -> np.ndarray:
    """Standardized per-class scores of ``criterion`` (UsageError for an unknown name)."""
    if criterion not in SCORERS:
        raise UsageError(f"unknown criterion '{criterion}' (choose from {', '.join(SCORERS)})")
    return standardize(context.analysis, SCORERS[criterion](context))


__all__ = [
    "NEEDS_CALIBRATION", "SCORERS", "Scorer", "ScoringContext", "l1_importance",
    "l2_importance", "random_importance", "score", "standardize",
]
