"""Output-aware score (in the spirit of Beta-Rank): a filter's weight times the gain it adds.

Beta-Rank (Homayounfar et al., 2023) ranks filter ``k`` of a layer by ``sum |f_k|`` scaled by
how the data changes through it, the standard deviation of its output over that of its input.
Here, for every producer pair ``(F, X -> Y)`` of a class (its filters ``F``, the activation ``X``
they read, see :mod:`graphprune.importance.producers`):

    score(c) = sum over producers of c of  ||F_c||_1 * sigma_out(c) / sigma(X)

- ``||F_c||_1``: the L1 norm of the class's filter (every other weight axis summed);
- ``sigma_out(c)``: the standard deviation of channel ``c`` over the calibration set (every
  sample and position) *where its consumers read it* (the RMS over its consumer pairs' input
  channels, after any BatchNorm, activation or residual sum in between; the producer's own
  output when no consumer pair reads it): what the channel passes on;
- ``sigma(X)``: the standard deviation of the producer's whole input (all channels and
  positions pooled): what the filters receive, so that layers of different input scale compare.

A channel that is constant where it is consumed (dead after a ReLU, say) or has a zero filter
scores 0, however large its other weights. For a bias-free chain of positively homogeneous ops
(convs, ReLU), scaling the calibration inputs leaves every score unchanged. Groups with no
producer pair keep their squared L2 magnitude.
"""

from __future__ import annotations

import numpy as np

from graphprune.analysis import ChannelAnalysis
from graphprune.calibration import Stats
from graphprune.importance.consumers import consumer_pairs
from graphprune.importance.context import ScoringContext
from graphprune.importance.magnitude import axis_sums, l2_importance
from graphprune.importance.producers import ProducerPair, producer_pairs


def pooled_std(stats: Stats) -> float:
    """Standard deviation of a value over every channel and position together."""
    count = max(stats.count, 1) * max(len(stats.sum), 1)
    mean = float(stats.sum.sum()) / count
    return float(np.sqrt(max(float(stats.sq_sum.sum()) / count - mean ** 2, 0.0)))


def _channel_std(analysis: ChannelAnalysis, readers, stats: dict[str, Stats]) -> np.ndarray:
    """Per class label: the RMS standard deviation over the axes ``readers`` (NaN where none)."""
    total = np.zeros(analysis.table.num_elements)
    seen = np.zeros(analysis.table.num_elements)
    for entry in readers:
        found = stats.get(entry.value.name)
        if found is None or found.var.shape != (entry.size,):
            continue  # the runtime disagrees with the declared shape: no evidence from it
        labels = analysis.axis_labels(entry)
        np.add.at(total, labels, found.var)
        np.add.at(seen, labels, 1.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(seen > 0, np.sqrt(total / np.maximum(seen, 1.0)), np.nan)


def _requests(producers: list[ProducerPair], readers) -> dict[str, int]:
    wanted = {p.source.value.name: p.source.axis for p in producers}
    wanted.update({p.output.value.name: p.output.axis for p in producers})
    wanted.update({e.value.name: e.axis for e in readers})
    return wanted


def output_score(context: ScoringContext) -> np.ndarray:
    """Per-class output-aware score (indexed by class label; raw, not standardized)."""
    analysis = context.analysis
    producers = producer_pairs(analysis)
    readers = [p.activation for p in consumer_pairs(analysis) if p.positional]
    stats = context.calibration().stats(_requests(producers, readers)) if producers else {}
    consumed = _channel_std(analysis, readers, stats)
    produced = _channel_std(analysis, [p.output for p in producers], stats)
    sigma_out = np.where(np.isnan(consumed), produced, consumed)
    scores = np.zeros(analysis.table.num_elements, dtype=np.float64)
    covered = np.zeros(analysis.table.num_elements, dtype=bool)
    for pair in producers:
        source = stats.get(pair.source.value.name)
        sigma_in = pooled_std(source) if source is not None else 0.0
        labels = analysis.axis_labels(pair.weight)
        gain = np.nan_to_num(sigma_out[labels]) / (sigma_in if sigma_in > 0 else 1.0)
        l1 = axis_sums(pair.weight.value, {pair.weight.axis}, 1)[pair.weight.axis]
        np.add.at(scores, labels, l1 * gain)
        covered[labels] = True
    bare = [g for g in analysis.groups if not covered[g.classes].any()]
    if bare:
        magnitude = l2_importance(analysis)
        for group in bare:
            scores[group.classes] = magnitude[group.classes]
    return scores
