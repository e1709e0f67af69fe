"""Data-free second-order score (OBS-style, in the spirit of OBSPA): the consumer's output error.

For a consumer ``Y = W X`` (input channel ``i`` of ``X`` read by the weight slice ``W_i``: a
Conv's ``W[:, i, ...]``, a MatMul ``B``'s row ``i``), the layer-wise Optimal Brain Surgeon error
of removing input channel ``i`` and optimally re-fitting the other columns is

    err_i = ||W_i||^2 / [H^-1]_ii,    H = E[x x^T] over the consumer's input channels,

the single-block case of ``w_B^T (H^-1_BB)^-1 w_B`` with the kernel positions of a channel as one
block (positions taken as independent with the same channel covariance: ``H ⊗ I``). OBSPA
(Optimal Brain SPA, in "Structurally Prune Anything", Wang et al. 2024) applies OBS to coupled
channel groups and needs neither fine-tuning nor calibration data; its own Hessian estimate is
not reproduced here. This ``H`` comes from the weights alone:

- Where ``X`` is a producer's output ``F z`` (filters ``F`` as ``[channels, fan-in]``, see
  :mod:`graphprune.importance.producers`), possibly through parameter-free one-input ops
  (activations, scalar clips), a white unit input ``z`` gives ``E[x x^T] = F F^T``: channels
  whose filters are near-copies are strongly correlated, so removing one costs little once the
  other takes over its weight (OBS's compensation), which magnitude cannot see. Biases and the
  activation's clipping are not modelled.
- Anywhere else (a graph input, a grouped conv's filters, per-channel parameters or a join of
  several values in between: a depthwise conv, a BatchNorm, a residual sum, a gate) the
  channels get an uncorrelated diagonal (the mean of the known diagonal, or 1): the score is
  then the squared norm of the weight slice, OBS with ``H = I``. Using ``F F^T`` across a
  depthwise conv or a gate measured worse than ``H = I`` on the PP-OCRv4 detector.
- ``H`` is damped by ``0.01 * diag(H)`` (relative to each channel, so a channel whose filters are
  all zero keeps an error of 0; OBC and SparseGPT damp by a share of the mean diagonal), plus
  ``1e-9 * mean(diag H)`` to keep it invertible; above :data:`MAX_CHANNELS` correlated channels only
  the diagonal is kept (OBD).

A class scores the sum of ``err_i`` over every consumer pair it feeds; consumer pairs without an
element-wise match (a flatten into a classifier) contribute ``||W_class||^2``, and groups with
no consumer pair keep their squared L2 magnitude. The score is the error *after* compensation,
so it ranks best with a least-squares refit of the consumers. Scaling a consumer's or a
producer's weights scales every score of that consumer by the same factor (the per-group
z-scores do not change).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx_ir as ir

from graphprune.analysis import ChannelAnalysis
from graphprune.importance.consumers import ConsumerPair, consumer_pairs, pair_scores
from graphprune.importance.context import ScoringContext
from graphprune.importance.magnitude import axis_sums
from graphprune.importance.producers import ProducerPair, filters, producer_pairs
from graphprune.importance.weighted import magnitude_fallback
from graphprune.ops.base import is_constant, static_shape

MAX_CHANNELS = 4096  # a dense inverse above this many correlated channels is slow: diagonal only
DAMPING = 0.01  # share of each channel's own second moment added to the diagonal
FLOOR = 1e-9  # share of the mean diagonal added to every channel (invertibility)


class _Grams:
    """``F F^T`` of every producer pair (its diagonal alone for grouped filters), computed once."""

    def __init__(self, pairs: list[ProducerPair]) -> None:
        self.pairs = pairs
        self._cache: dict[int, np.ndarray | None] = {}

    def __call__(self, pair: ProducerPair) -> np.ndarray | None:
        key = id(pair)
        if key not in self._cache:
            rows = filters(pair)
            if rows is None:
                self._cache[key] = None
            elif pair.dense and len(rows) <= MAX_CHANNELS:
                self._cache[key] = rows @ rows.T
            else:
                self._cache[key] = np.diag(np.einsum("ij,ij->i", rows, rows))
        return self._cache[key]


def _unchanged_from(value: ir.Value) -> set[int]:
    """Values (ids) that ``value`` is computed from by parameter-free, one-input ops.

    Walks back while the producing node has one non-constant input and no constant input with
    more than one element (an activation, a clip with scalar bounds, a scalar scale): such ops
    keep which channels move together. It stops at per-channel parameters (a depthwise conv, a
    BatchNorm, a per-channel scale, an added bias) and at nodes joining several values (a
    residual sum, a gate), whose effect on the channels' moments the weights alone do not tell.
    """
    reached = {id(value)}
    while (node := value.producer()) is not None:
        live = [v for v in node.inputs if v is not None and not is_constant(v)]
        constants = [v for v in node.inputs if v is not None and is_constant(v)]
        if len(live) != 1 or any(_elements(v) != 1 for v in constants):
            break
        value = live[0]
        reached.add(id(value))
    return reached


def _elements(value: ir.Value) -> int | None:
    shape = static_shape(value)
    return None if shape is None or None in shape else int(np.prod(shape, dtype=np.int64))


@dataclasses.dataclass(frozen=True)
class Moments:
    """The ``E[x x^T]`` proxy of one consumer's input: a diagonal and one dense block.

    Attributes:
        diagonal: ``H_ii`` for every input channel.
        known: Channels whose producer filters are known (the dense block's rows, ascending).
        block: ``H`` over ``known`` (the other channels are uncorrelated with every channel).
    """

    diagonal: np.ndarray
    known: np.ndarray
    block: np.ndarray


def input_moments(analysis: ChannelAnalysis, pair: ConsumerPair, grams: _Grams) -> Moments:
    """The data-free ``E[x x^T]`` proxy over the consumer's input channels (undamped)."""
    labels = analysis.axis_labels(pair.activation)
    position = {int(label): i for i, label in enumerate(labels)}
    reached = _unchanged_from(pair.activation.value)
    found = []
    for producer in grams.pairs:
        if id(producer.output.value) not in reached:
            continue
        index = np.array([position.get(int(x), -1) for x in analysis.axis_labels(producer.output)])
        gram = grams(producer) if len(index) and index.min() >= 0 else None
        if gram is not None:
            found.append((index, gram))
    known = np.unique(np.concatenate([i for i, _ in found])) if found else np.zeros(0, np.int64)
    where = np.searchsorted(known, np.arange(len(labels)))
    block = np.zeros((len(known), len(known)))
    for index, gram in found:
        rows = where[index]
        block[np.ix_(rows, rows)] += gram
    diagonal = np.zeros(len(labels))
    diagonal[known] = block.diagonal()
    fill = float(diagonal[known].mean()) if len(known) else 1.0
    unknown = np.ones(len(labels), dtype=bool)
    unknown[known] = False
    diagonal[unknown] = fill if fill > 0 else 1.0
    return Moments(diagonal, known, block)


def consumer_errors(weight_sq: np.ndarray, moments: Moments) -> np.ndarray:
    """:func:`obs_errors` of one consumer; only the dense block is inverted."""
    scale = float(moments.diagonal.mean())
    if not np.isfinite(scale) or scale <= 0:
        return weight_sq.copy()
    errors = weight_sq * (moments.diagonal * (1 + DAMPING) + FLOOR * scale)  # uncorrelated
    if 0 < len(moments.known) <= MAX_CHANNELS:
        errors[moments.known] = obs_errors(weight_sq[moments.known], moments.block, scale)
    return errors


def obs_errors(weight_sq: np.ndarray, moments: np.ndarray, scale: float | None = None
               ) -> np.ndarray:
    """``weight_sq[i] / [H^-1]_ii`` with ``H = moments + damping``, per input channel.

    ``scale`` (default: the mean of ``moments``' diagonal) sets the damping floor.
    """
    scale = float(moments.diagonal().mean()) if scale is None else scale
    if not np.isfinite(scale) or scale <= 0:
        return weight_sq.copy()
    damped = moments + np.diag(DAMPING * moments.diagonal() + FLOOR * scale)
    inverse = np.linalg.inv(damped).diagonal()
    return weight_sq / np.maximum(inverse, np.finfo(np.float64).tiny)


def _weight_sq(pairs: list[ConsumerPair]) -> dict[int, np.ndarray]:
    by_value: dict[int, list[ConsumerPair]] = {}
    for pair in pairs:
        by_value.setdefault(id(pair.weight.value), []).append(pair)
    sums = {}
    for group in by_value.values():
        per_axis = axis_sums(group[0].weight.value, {p.weight.axis for p in group}, 2)
        for pair in group:
            sums[id(pair.weight)] = per_axis[pair.weight.axis]
    return sums


def obspa_score(context: ScoringContext) -> np.ndarray:
    """Per-class OBS error of removing the class (indexed by class label; raw, not standardized).

    Reads weights only: ``context.provider`` may be None.
    """
    analysis = context.analysis
    pairs = consumer_pairs(analysis)
    grams = _Grams(producer_pairs(analysis))
    sums = _weight_sq(pairs)
    scores = np.zeros(analysis.table.num_elements, dtype=np.float64)
    covered = np.zeros(analysis.table.num_elements, dtype=bool)
    for pair in pairs:
        weight_sq = sums[id(pair.weight)]
        covered[analysis.axis_labels(pair.weight)] = True
        if pair.positional:
            errors = consumer_errors(weight_sq, input_moments(analysis, pair, grams))
            np.add.at(scores, analysis.axis_labels(pair.weight), errors)
        else:
            ones = np.ones(pair.activation.size)
            scores += pair_scores(analysis, pair, weight_sq, ones)
    return magnitude_fallback(analysis, scores, covered)
