"""Normalizations: BatchNormalization, InstanceNormalization, LayerNormalization, Softmax.

``Y[N,C,...] = (X - mean[C]) / sqrt(var[C] + eps) * scale[C] + B[C]``

Every per-channel parameter is coupled to channel axis 1. BatchNormalization in inference form
keeps every other axis as the identity; InstanceNormalization normalizes over the spatial axes,
so only the batch and channel axes are kept. LayerNormalization and the Softmax family mix every
element of the axes they normalize: those stay whole, the others are the identity.
"""

from __future__ import annotations

import onnx_ir as ir

from graphprune.core import Blocked, BlockReason
from graphprune.ops.base import (
    Coupling,
    Rule,
    attr,
    identity,
    normalize_axis,
    opset_of,
    static_shape,
)
from graphprune.ops.registry import register


@register
class BatchNormRule(Rule):
    """BatchNormalization in inference form (training outputs in use block)."""

    op_types = ("BatchNormalization",)
    elementwise = True  # every axis of X is the same axis of Y

    def couplings(self, node: ir.Node) -> list[Coupling] | Blocked:
        x, y = node.inputs[0], node.outputs[0]
        shape = static_shape(x)
        if shape is None or len(shape) < 2:
            return self.blocked(node, BlockReason.UNKNOWN_SHAPE, "input rank unknown")
        for extra in node.outputs[1:]:
            if extra is not None and extra.name and (extra.uses() or extra.is_graph_output()):
                detail = "training outputs used"
                return self.blocked(node, BlockReason.UNSUPPORTED_ATTRIBUTE, detail)
        axes = range(len(shape)) if self.elementwise else range(2)
        found = [identity((x, axis), (y, axis)) for axis in axes]
        found += [identity((p, 0), (y, 1)) for p in node.inputs[1:] if p is not None]
        return found


@register
class InstanceNormRule(BatchNormRule):
    """InstanceNormalization: statistics span the spatial axes, which therefore stay whole."""

    op_types = ("InstanceNormalization",)
    elementwise = False


def _axes_before(node: ir.Node, rule: Rule, first: int) -> list[Coupling] | Blocked:
    """Axes ``[0, first)`` of input 0 are the identity to every output; the rest stay whole."""
    x = node.inputs[0]
    shape = static_shape(x)
    if shape is None:
        return rule.blocked(node, BlockReason.UNKNOWN_SHAPE, "input rank unknown")
    for extra in node.outputs[1:]:
        if extra is not None and extra.name and (extra.uses() or extra.is_graph_output()):
            return rule.blocked(node, BlockReason.UNSUPPORTED_ATTRIBUTE, "statistics used")
    first = normalize_axis(first, len(shape))
    outs = [o for o in node.outputs if o is not None and o.name
            and len(static_shape(o) or ()) == len(shape)]  # LayerNorm's Mean/InvStdDev too
    return [identity((x, a), (out, a)) for out in outs for a in range(min(first, len(shape)))]


@register
class SoftmaxRule(Rule):
    """Softmax/LogSoftmax/Hardmax along ``axis``: every other axis is the identity.

    ``Y[..., i, ...] = exp(X[..., i, ...]) / sum_j exp(X[..., j, ...])`` mixes every element of
    the normalized axis, so it stays whole. Before opset 13 the input is coerced to 2-D at
    ``axis`` (default 1): every axis from ``axis`` on is normalized together.
    """

    op_types = ("Softmax", "LogSoftmax", "Hardmax")

    def couplings(self, node: ir.Node) -> list[Coupling] | Blocked:
        shape = static_shape(node.inputs[0])
        if shape is None:
            return self.blocked(node, BlockReason.UNKNOWN_SHAPE, "input rank unknown")
        if opset_of(node) < 13:
            return _axes_before(node, self, attr(node, "axis", 1))
        axis = normalize_axis(attr(node, "axis", -1), len(shape))
        x, y = node.inputs[0], node.outputs[0]
        return [identity((x, a), (y, a)) for a in range(len(shape)) if a != axis]


@register
class LayerNormRule(Rule):
    """LayerNormalization: axes ``[axis, rank)`` are normalized together and stay whole.

    ``Y = (X - mean) / sqrt(var + eps) * scale + B`` with statistics over the normalized axes;
    the axes before ``axis`` are the identity. Scale and bias span the normalized axes only.
    """

    op_types = ("LayerNormalization",)
    since_version = 17

    def couplings(self, node: ir.Node) -> list[Coupling] | Blocked:
        return _axes_before(node, self, attr(node, "axis", -1))
