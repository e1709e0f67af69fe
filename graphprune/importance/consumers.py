"""Where a class is consumed: a parameter axis contracted against an activation axis.

A *consumer pair* is a constant weight axis that the node's rule couples to an axis of one of
its (non-constant) inputs, where another axis of the same weight is coupled to one of the node's
outputs: the weight maps input channels to output channels and sums the input channel away (a
Conv's or MatMul's input channels, Gemm's ``B`` with ``transB``). A bias, BatchNorm scales, a
per-channel Mul or a depthwise conv have no such second axis and are no consumers. No op names:
only the couplings the op rules declare (:func:`graphprune.ops.lookup`).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx_ir as ir

from graphprune.analysis import ChannelAnalysis
from graphprune.analysis.axes import ChannelAxis
from graphprune.ops import lookup
from graphprune.ops.base import Coupling


@dataclasses.dataclass(frozen=True)
class ConsumerPair:
    """A weight axis and the input activation axis it contracts.

    Attributes:
        weight: The constant parameter axis (a Conv weight's axis 1, a MatMul ``B``'s axis 0).
        activation: The activation axis feeding the same node, with the same classes.
        positional: Element ``i`` of the weight axis meets element ``i`` of the activation axis
            (same size, same labels); otherwise only class totals correspond.
    """

    weight: ChannelAxis
    activation: ChannelAxis
    positional: bool


def _couplings(node: ir.Node) -> list[Coupling]:
    rule = lookup(node)
    found = rule.couplings(node) if rule is not None else ()
    return [c for c in found if isinstance(c, Coupling)] if isinstance(found, list) else []


def _node_pairs(analysis: ChannelAnalysis, node: ir.Node, touched: set[int]):
    """``(weight entry, activation entry, identity map)`` for every consumer pair of ``node``."""
    table = analysis.table
    inputs = {id(v) for v in node.inputs if v is not None}
    outputs = {id(v) for v in node.outputs if v is not None}
    couplings = _couplings(node)
    to_output = set()  # (id(weight), axis) coupled to an output axis
    for c in couplings:
        for p, q in ((c.a, c.b), (c.b, c.a)):
            if id(p[0]) in inputs and id(q[0]) in outputs:
                to_output.add((id(p[0]), p[1]))
    for c in couplings:
        for p, q in ((c.a, c.b), (c.b, c.a)):
            weight, activation = table.find(*p), table.find(*q)
            if weight is None or activation is None or not weight.constant:
                continue
            if activation.constant or id(q[0]) not in inputs or id(p[0]) not in inputs:
                continue
            if table.index_of(weight) not in touched or weight.opaque or activation.opaque:
                continue
            if any(v == id(p[0]) and a != p[1] for v, a in to_output):
                yield weight, activation


def consumer_pairs(analysis: ChannelAnalysis) -> list[ConsumerPair]:
    """Every consumer pair whose weight axis lies in a group."""
    touched = {int(a) for g in analysis.groups for a in g.axes}
    pairs, seen = [], set()
    for node in analysis.model.graph:
        for weight, activation in _node_pairs(analysis, node, touched):
            key = (id(weight), id(activation))
            if key in seen:
                continue
            seen.add(key)
            labels, other = analysis.axis_labels(weight), analysis.axis_labels(activation)
            positional = activation.size == weight.size and np.array_equal(other, labels)
            pairs.append(ConsumerPair(weight, activation, positional))
    return pairs


def requests(pairs: list[ConsumerPair]) -> dict[str, int]:
    """The activation values (name -> channel axis) the pairs read."""
    return {p.activation.value.name: p.activation.axis for p in pairs}


def pair_scores(analysis: ChannelAnalysis, pair: ConsumerPair, weight_part: np.ndarray,
                activation_part: np.ndarray, finish=None) -> np.ndarray:
    """``sum_i weight_part[i] * finish(activation_part[i])`` per class label.

    ``weight_part`` is per element of the weight axis, ``activation_part`` (an additive quantity:
    a sum of squares, a variance) per element of the activation axis, and ``finish`` maps it to
    the factor (``np.sqrt`` for a norm; identity when None). Without a positional match, each
    class's weight total meets ``finish`` of its activation total.
    """
    finish = finish or (lambda x: x)
    scores = np.zeros(analysis.table.num_elements, dtype=np.float64)
    w_labels = analysis.axis_labels(pair.weight)
    if pair.positional:
        np.add.at(scores, w_labels, weight_part * finish(activation_part))
        return scores
    a_total = np.zeros_like(scores)
    np.add.at(scores, w_labels, weight_part)
    np.add.at(a_total, analysis.axis_labels(pair.activation), activation_part)
    return scores * finish(a_total)
