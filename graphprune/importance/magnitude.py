"""Magnitude importance: a class's score sums its slice of every parameter in its group.

``score(c) = sum over parameter axes (W, a) reached by c of sum_i |W[..., i, ...]|^p`` taken over
the elements ``i`` of ``c`` on axis ``a`` (p = 1 for L1, p = 2 for L2).
"""

from __future__ import annotations

import numpy as np

from graphprune._io import iter_blocks
from graphprune.analysis import ChannelAnalysis
from graphprune.importance.context import ScoringContext


def _magnitude(analysis: ChannelAnalysis, power: int) -> np.ndarray:
    scores = np.zeros(analysis.table.num_elements, dtype=np.float64)
    touched = {int(a) for g in analysis.groups for a in g.axes}
    by_value: dict[int, tuple] = {}
    for index in sorted(touched):
        entry = analysis.table.axes[index]
        if entry.constant and not entry.opaque:
            by_value.setdefault(id(entry.value), (entry.value, []))[1].append(entry)
    for value, entries in by_value.values():
        sums = axis_sums(value, {e.axis for e in entries}, power)
        for entry in entries:
            np.add.at(scores, analysis.axis_labels(entry), sums[entry.axis])
    return scores


def axis_sums(value, axes: set[int], power: int) -> dict[int, np.ndarray]:
    """``sum |W|^p`` over every axis but ``a``, for each ``a`` in ``axes``, one block at a time."""
    rows: list[np.ndarray] = []  # axis 0: one part per block
    sums: dict[int, np.ndarray] = {}
    for _, block in iter_blocks(value):
        weight = np.abs(block.astype(np.float64))
        if power != 1:
            weight **= power
        for axis in axes:
            part = weight.sum(axis=tuple(a for a in range(weight.ndim) if a != axis))
            if axis == 0:
                rows.append(part)
            else:
                sums[axis] = sums[axis] + part if axis in sums else part
    if rows:
        sums[0] = np.concatenate(rows)
    return sums


def l1_importance(analysis: ChannelAnalysis) -> np.ndarray:
    """Per-class L1 magnitude (indexed by class label)."""
    return _magnitude(analysis, 1)


def l2_importance(analysis: ChannelAnalysis) -> np.ndarray:
    """Per-class squared L2 magnitude (indexed by class label)."""
    return _magnitude(analysis, 2)


def l1_score(context: ScoringContext) -> np.ndarray:
    """:func:`l1_importance` behind the scoring interface."""
    return l1_importance(context.analysis)


def l2_score(context: ScoringContext) -> np.ndarray:
    """:func:`l2_importance` behind the scoring interface."""
    return l2_importance(context.analysis)
