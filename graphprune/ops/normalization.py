"""Per-channel normalizations: BatchNormalization and InstanceNormalization.

``Y[N,C,...] = (X - mean[C]) / sqrt(var[C] + eps) * scale[C] + B[C]``

Every per-channel parameter is coupled to channel axis 1. BatchNormalization in inference form
keeps every other axis as the identity; InstanceNormalization normalizes over the spatial axes,
so only the batch and channel axes are kept.
"""

from __future__ import annotations

import onnx_ir as ir

from graphprune.analysis.blocked import Blocked, BlockReason
from graphprune.ops.base import Coupling, Rule, identity, static_shape
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
