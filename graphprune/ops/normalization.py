"""Normalizations: BatchNormalization, InstanceNormalization, LayerNormalization, Softmax.

``Y[N,C,...] = (X - mean[C]) / sqrt(var[C] + eps) * scale[C] + B[C]``

Every per-channel parameter is coupled to channel axis 1. BatchNormalization in inference form
keeps every other axis as the identity; InstanceNormalization normalizes over the spatial axes,
so only the batch and channel axes are kept. LayerNormalization and Softmax keep the axes they
do not normalize; the normalized ones stay whole (their statistics span every element).
"""

from __future__ import annotations

import onnx_ir as ir

from graphprune.analysis.blocked import Blocked, BlockReason
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


def _leading_axes(node: ir.Node, axis: int) -> list[Coupling] | Blocked:
    """Axes before ``axis`` are the identity from input 0 to every output; the rest stay whole.

    Statistics over the trailing axes would change if any of their elements were removed, so
    only the leading axes (batch, sequence, a channel axis the op does not normalize) pass.
    """
    x = node.inputs[0]
    shape = static_shape(x)
    if shape is None:
        return Rule.blocked(node, BlockReason.UNKNOWN_SHAPE, "input rank unknown")
    first = axis + len(shape) if axis < 0 else axis
    outs = [o for o in node.outputs if o is not None and o.name]
    return [identity((x, a), (out, a)) for out in outs for a in range(min(first, len(shape)))
            if len(static_shape(out) or ()) == len(shape)]


@register
class LayerNormRule(Rule):
    """``Y[..., D...] = (X - mean) / std * Scale[D...] + B[D...]`` over axes ``axis`` and after.

    ``Mean`` and ``InvStdDev`` keep the leading axes with size 1 after them. The normalized
    axes, and so Scale and B, stay whole.
    """

    op_types = ("LayerNormalization",)

    def couplings(self, node: ir.Node) -> list[Coupling] | Blocked:
        return _leading_axes(node, attr(node, "axis", -1))


@register
class SoftmaxRule(Rule):
    """Softmax, LogSoftmax, Hardmax: every axis but the normalized one is the identity.

    Before opset 13 the input is coerced to 2-D at ``axis``, so every axis from ``axis`` on is
    normalized together and only the leading axes pass.
    """

    op_types = ("Softmax", "LogSoftmax", "Hardmax")

    def couplings(self, node: ir.Node) -> list[Coupling] | Blocked:
        x, y = node.inputs[0], node.outputs[0]
        if opset_of(node) < 13:
            return _leading_axes(node, attr(node, "axis", 1))
        shape = static_shape(x)
        if shape is None:
            return self.blocked(node, BlockReason.UNKNOWN_SHAPE, "input rank unknown")
        axis = normalize_axis(attr(node, "axis", -1), len(shape))
        return [identity((x, a), (y, a)) for a in range(len(shape)) if a != axis]
