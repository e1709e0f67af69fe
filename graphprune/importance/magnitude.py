"""Magnitude importance: a class's score sums its slice of every parameter in its group.

``score(c) = sum over parameter axes (W, a) reached by c of sum_i |W[..., i, ...]|^p`` taken over
the elements ``i`` of ``c`` on axis ``a`` (p = 1 for L1, p = 2 for L2).
"""

from __future__ import annotations

import numpy as np

from graphprune.analysis import ChannelAnalysis
from graphprune.ops.base import constant_array


def _magnitude(analysis: ChannelAnalysis, power: int) -> np.ndarray:
    scores = np.zeros(analysis.table.num_elements, dtype=np.float64)
    touched = {int(a) for g in analysis.groups for a in g.axes}
    arrays: dict[int, np.ndarray] = {}
    for index in sorted(touched):
        entry = analysis.table.axes[index]
        if not entry.constant or entry.opaque:
            continue
        key = id(entry.value)
        if key not in arrays:
            arrays[key] = np.abs(np.asarray(constant_array(entry.value), dtype=np.float64))
        weight = arrays[key] ** power
        other = tuple(a for a in range(weight.ndim) if a != entry.axis)
        np.add.at(scores, analysis.axis_labels(entry), weight.sum(axis=other))
    return scores


def l1_importance(analysis: ChannelAnalysis) -> np.ndarray:
    """Per-class L1 magnitude (indexed by class label)."""
    return _magnitude(analysis, 1)


def l2_importance(analysis: ChannelAnalysis) -> np.ndarray:
    """Per-class squared L2 magnitude (indexed by class label)."""
    return _magnitude(analysis, 2)
