"""What the data-driven scorers share: weight slices of consumer pairs times activation stats."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from graphprune.analysis import ChannelAnalysis
from graphprune.calibration import Stats
from graphprune.importance.consumers import ConsumerPair, consumer_pairs, pair_scores, requests
from graphprune.importance.context import ScoringContext
from graphprune.importance.magnitude import axis_sums, l2_importance


def weighted_scores(context: ScoringContext, power: int,
                    activation: Callable[[Stats], np.ndarray],
                    finish: Callable[[np.ndarray], np.ndarray] | None = None) -> np.ndarray:
    """``sum over consumer pairs of sum_i |W_i|^power * finish(activation(stats)_i)`` per class.

    ``W_i`` is the weight slice at input channel ``i`` (summed over every other axis). Groups
    with no consumer pair (channels only read by parameter-free ops) keep their squared L2
    magnitude, so every group gets a score.
    """
    analysis = context.analysis
    pairs = consumer_pairs(analysis)
    stats = context.calibration().stats(requests(pairs)) if pairs else {}
    sums = _weight_sums(pairs, power)
    scores = np.zeros(analysis.table.num_elements, dtype=np.float64)
    for pair in pairs:
        part = activation(stats[pair.activation.value.name])
        if part.shape != (pair.activation.size,):
            continue  # the runtime disagrees with the declared shape: no evidence from it
        scores += pair_scores(analysis, pair, sums[id(pair.weight)], part, finish)
    return _with_fallback(analysis, scores, pairs)


def _weight_sums(pairs: list[ConsumerPair], power: int) -> dict[int, np.ndarray]:
    by_value: dict[int, list[ConsumerPair]] = {}
    for pair in pairs:
        by_value.setdefault(id(pair.weight.value), []).append(pair)
    sums = {}
    for group in by_value.values():
        value = group[0].weight.value
        per_axis = axis_sums(value, {p.weight.axis for p in group}, power)
        for pair in group:
            sums[id(pair.weight)] = per_axis[pair.weight.axis]
    return sums


def _with_fallback(analysis: ChannelAnalysis, scores: np.ndarray,
                   pairs: list[ConsumerPair]) -> np.ndarray:
    covered = np.zeros(analysis.table.num_elements, dtype=bool)
    for pair in pairs:
        covered[analysis.axis_labels(pair.weight)] = True
    return magnitude_fallback(analysis, scores, covered)


def magnitude_fallback(analysis: ChannelAnalysis, scores: np.ndarray,
                       covered: np.ndarray) -> np.ndarray:
    """``scores`` with L2 magnitude for every group none of whose classes ``covered`` marks.

    A data-driven or pair-based scorer sees no pair in some groups (a group read by no
    consumer); those rank by magnitude, still standardized per group afterwards.
    """
    bare = [g for g in analysis.groups if not covered[g.classes].any()]
    if bare:
        magnitude = l2_importance(analysis)
        for group in bare:
            scores[group.classes] = magnitude[group.classes]
    return scores
