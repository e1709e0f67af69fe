"""Convolutions: Conv and ConvTranspose, 1D/2D/3D, dense, grouped and depthwise.

``Conv``:          ``Y[N,Co,...] = X[N,Ci,...] * W[Co, Ci/g, k...] + B[Co]``
``ConvTranspose``: ``Y[N,Co,...] = X[N,Ci,...] *T W[Ci, Co/g, k...] + B[Co]``

The weight has one *full* axis (all channels of one side) and one *per-group* axis (channels of
the other side within a group). The two families differ only in which side is which.

1. ``g == 1``: each side is the identity of its weight axis.
2. One channel per group on the per-group side (depthwise, channel multiplier ``m``): per-group
   side channel ``c`` owns full-side channels ``c*m .. c*m+m-1``; ``group`` becomes the new count.
3. Otherwise (ResNeXt): per-group channel ``c`` is weight element ``c % k``, so every group loses
   the same offsets; full-side channel ``o`` is coupled to ``o % (C_full/g)`` for the same reason,
   and ``group`` is unchanged.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from graphprune.analysis.blocked import Blocked, BlockReason
from graphprune.ops.base import (
    Coupling,
    Dims,
    Linear,
    PlanView,
    Rule,
    attr,
    identity,
    is_constant,
    mapped,
    static_shape,
)
from graphprune.ops.registry import register


@register
class ConvRule(Rule):
    """Conv: the output side is the weight's full axis 0, the input side its per-group axis 1."""

    op_types = ("Conv",)
    full_axis = 0  # weight axis holding all channels of the full side
    full_is_output = True
    data_index = 0  # input positions of X, W and the per-output-channel bias (None: no bias)
    weight_index = 1
    bias_index: int | None = 2
    per_output_channel_params: tuple[int, ...] = ()  # 1-D inputs along Co (else per tensor)

    def couplings(self, node: ir.Node) -> list[Coupling] | Blocked:
        x, w = node.inputs[self.data_index], node.inputs[self.weight_index]
        b = self._input(node, self.bias_index)
        y = node.outputs[0]
        xs, ws, ys = static_shape(x), static_shape(w), static_shape(y)
        if xs is None or ws is None or ys is None:
            return self.blocked(node, BlockReason.UNKNOWN_SHAPE, "conv shapes unknown")
        groups = attr(node, "group", 1)
        pg_axis = 1 - self.full_axis
        full_side, pg_side = ((y, x) if self.full_is_output else (x, y))
        full_count, pg_per_group = ws[self.full_axis], ws[pg_axis]
        if full_count is None or pg_per_group is None or full_count % groups:
            return self.blocked(node, BlockReason.DYNAMIC_SIZE, "weight channel counts unknown")
        found = [identity((x, 0), (y, 0)), identity((w, self.full_axis), (full_side, 1))]
        if b is not None:
            found.append(identity((b, 0), (y, 1)))
        if groups == 1:
            found.append(identity((w, pg_axis), (pg_side, 1)))
        elif pg_per_group == 1:
            mult = full_count // groups
            full = np.arange(full_count)
            found.append(mapped((pg_side, 1), (full_side, 1), full // mult, full))
        else:
            pg = np.arange(groups * pg_per_group)
            found.append(mapped((pg_side, 1), (w, pg_axis), pg, pg % pg_per_group))
            full = np.arange(full_count)
            per_group = full_count // groups
            found.append(mapped((full_side, 1), (full_side, 1), full, full % per_group))
        return self._with_channel_params(node, found, y, ys[1])

    @staticmethod
    def _input(node: ir.Node, index: int | None) -> ir.Value | None:
        return node.inputs[index] if index is not None and index < len(node.inputs) else None

    def _with_channel_params(self, node: ir.Node, found: list[Coupling], y: ir.Value,
                             count: int | None) -> list[Coupling] | Blocked:
        """Couples each 1-D per-output-channel parameter of ``count`` entries to Y's axis 1."""
        for index in self.per_output_channel_params:
            param = self._input(node, index)
            shape = static_shape(param) if param is not None else ()
            if shape is None:
                return self.blocked(node, BlockReason.UNKNOWN_SHAPE, "parameter rank unknown")
            if shape in ((), (1,)) and count != 1:
                continue  # per tensor: shared by every channel
            if shape != (count,):
                detail = f"input {index} is neither per tensor nor per output channel"
                return self.blocked(node, BlockReason.UNSUPPORTED_ATTRIBUTE, detail)
            found.append(identity((param, 0), (y, 1)))
        return found

    def linear(self, node: ir.Node) -> Linear | None:
        """Conv and ConvTranspose over a constant weight (not their integer/quantized kin)."""
        if type(self) not in (ConvRule, ConvTransposeRule):
            return None
        w = node.inputs[self.weight_index]
        if not is_constant(w):  # an initializer or a Constant node's output
            return None
        out_axis = self.full_axis if self.full_is_output else 1 - self.full_axis
        return Linear(self.data_index, self.weight_index, 1 - out_axis, out_axis,
                      self.bias_index, groups=attr(node, "group", 1))

    def macs(self, node: ir.Node, dims: Dims) -> int:
        """``|Y| * (Ci/g) * prod(k)`` for Conv, ``|X| * (Co/g) * prod(k)`` for ConvTranspose.

        Both are the full side's element count times the weight's elements per full channel.
        """
        w = dims(node.inputs[self.weight_index])
        full = dims(node.outputs[0] if self.full_is_output else node.inputs[self.data_index])
        if w is None or full is None:
            return 0
        return self.numel(full) * self.numel(w[1:])

    def rewrite(self, node: ir.Node, plan: PlanView) -> None:
        groups = attr(node, "group", 1)
        if groups == 1:
            return
        pg_side = node.inputs[self.data_index] if self.full_is_output else node.outputs[0]
        w = node.inputs[self.weight_index]
        side = plan.new_size(pg_side, 1)
        per_group = plan.new_size(w, 1 - self.full_axis)
        new_groups = side // per_group
        if new_groups != groups:
            node.attributes["group"] = ir.AttrInt64("group", new_groups)


@register
class ConvTransposeRule(ConvRule):
    """ConvTranspose: the input side is the weight's full axis 0, the output side axis 1."""

    op_types = ("ConvTranspose",)
    full_is_output = False
