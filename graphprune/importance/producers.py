"""Where a class is produced: a parameter axis that becomes an output channel axis.

A *producer pair* is a constant weight axis that the node's rule couples to one of its outputs'
axes, where another axis of the same weight is coupled to one of the node's (non-constant)
inputs: the weight maps the input's channels to this output channel (a Conv's filters on axis
0, a MatMul ``B``'s columns on axis 1). It is the mirror of a consumer pair
(:mod:`graphprune.importance.consumers`); a bias, BatchNorm scales or a depthwise conv have no
second axis and are no producers. No op names: only the couplings the op rules declare.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx_ir as ir

from graphprune.analysis import ChannelAnalysis
from graphprune.analysis.axes import ChannelAxis
from graphprune.ops import lookup
from graphprune.ops.base import Coupling, constant_array


@dataclasses.dataclass(frozen=True)
class ProducerPair:
    """A filter axis, the output axis it makes and the input axis its filters read.

    Attributes:
        weight: The constant axis whose element ``i`` is filter ``i`` (a Conv weight's axis 0).
        output: The output activation axis; element ``i`` is what filter ``i`` produces.
        source: The input activation axis the same weight contracts (what the filters receive).
        fan_in: The weight's axis coupled to ``source``.
    """

    weight: ChannelAxis
    output: ChannelAxis
    source: ChannelAxis
    fan_in: int

    @property
    def dense(self) -> bool:
        """Every filter reads every channel of ``source`` (not a grouped conv's filters)."""
        shape = self.weight.value.shape
        return shape is not None and shape[self.fan_in] == self.source.size


def _couplings(node: ir.Node) -> list[Coupling]:
    rule = lookup(node)
    found = rule.couplings(node) if rule is not None else ()
    return [c for c in found if isinstance(c, Coupling)] if isinstance(found, list) else []


def _oriented(couplings: list[Coupling]):
    for c in couplings:
        yield c.a, c.b
        yield c.b, c.a


def _node_pairs(analysis: ChannelAnalysis, node: ir.Node, touched: set[int]):
    table = analysis.table
    inputs = {id(v) for v in node.inputs if v is not None}
    outputs = {id(v) for v in node.outputs if v is not None}
    couplings = _couplings(node)
    sources = {}  # (id(weight), axis) -> the input activation axis it is coupled to
    for p, q in _oriented(couplings):
        if id(p[0]) in inputs and id(q[0]) in inputs and p[0] is not q[0]:
            entry = table.find(*q)
            if entry is not None and not entry.constant and not entry.opaque:
                sources[(id(p[0]), p[1])] = entry
    for p, q in _oriented(couplings):
        if id(p[0]) not in inputs or id(q[0]) not in outputs:
            continue
        weight, output = table.find(*p), table.find(*q)
        if weight is None or output is None or not weight.constant or weight.opaque:
            continue
        if output.opaque or output.size != weight.size or table.index_of(weight) not in touched:
            continue
        found = [(a, s) for (v, a), s in sources.items() if v == id(p[0]) and a != p[1]]
        if found:
            yield ProducerPair(weight, output, found[0][1], found[0][0])


def producer_pairs(analysis: ChannelAnalysis) -> list[ProducerPair]:
    """Every producer pair whose filter axis lies in a group, filters and output aligned.

    Only pairs whose weight and output axes carry the same class labels element by element are
    kept (filter ``i`` makes output channel ``i``).
    """
    touched = {int(a) for g in analysis.groups for a in g.axes}
    pairs, seen = [], set()
    for node in analysis.model.graph:
        for pair in _node_pairs(analysis, node, touched):
            key = (id(pair.weight), id(pair.output))
            aligned = np.array_equal(analysis.axis_labels(pair.weight),
                                     analysis.axis_labels(pair.output))
            if key not in seen and aligned:
                seen.add(key)
                pairs.append(pair)
    return pairs


def filters(pair: ProducerPair) -> np.ndarray | None:
    """The weight as ``[filters, fan-in]`` (float64), or None when it is not a plain constant."""
    array = constant_array(pair.weight.value)
    if array is None or array.dtype.kind not in "fiu":
        return None
    array = np.moveaxis(np.asarray(array, np.float64), pair.weight.axis, 0)
    return array.reshape(array.shape[0], -1)
