"""Ops that act on spatial axes only: pooling, reductions, Resize/Upsample and Pad.

Each keeps some axes as the identity (batch and channel for pools; the non-reduced axes for
reductions; the axes of unchanged size for Resize; the unpadded axes for Pad) and leaves the rest
undeclared, which the analysis blocks.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from graphprune.core import Blocked, BlockReason
from graphprune.ops.base import (
    Coupling,
    PlanView,
    Rule,
    attr,
    identity,
    known_array,
    normalize_axis,
    opset_of,
    private_producer,
    replace_constant_input,
    static_shape,
)
from graphprune.ops.layout import shape_pieces
from graphprune.ops.registry import register
from graphprune.ops.shape_of import dim_sources


@register
class PoolRule(Rule):
    """``Y[N,C,...] = pool(X[N,C,...])``: batch and channel axes pass through."""

    op_types = (
        "MaxPool", "AveragePool", "LpPool", "GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool",
    )  # fmt: skip

    def couplings(self, node: ir.Node) -> list[Coupling] | Blocked:
        x, y = node.inputs[0], node.outputs[0]
        indices = node.outputs[1] if len(node.outputs) > 1 else None
        if indices is not None and indices.name and (indices.uses() or indices.is_graph_output()):
            return self.blocked(node, BlockReason.UNSUPPORTED_ATTRIBUTE, "MaxPool indices used")
        return [identity((x, 0), (y, 0)), identity((x, 1), (y, 1))]


@register
class ReduceRule(Rule):
    """Reductions: the kept axes map to the output in order (``keepdims`` keeps their index)."""

    op_types = (
        "ReduceMean", "ReduceMax", "ReduceMin", "ReduceSum", "ReduceL1", "ReduceL2",
    )  # fmt: skip

    def couplings(self, node: ir.Node) -> list[Coupling] | Blocked:
        x, y = node.inputs[0], node.outputs[0]
        shape = static_shape(x)
        if shape is None:
            return self.blocked(node, BlockReason.UNKNOWN_SHAPE, "input rank unknown")
        axes = attr(node, "axes")
        if len(node.inputs) > 1 and node.inputs[1] is not None:
            axes = known_array(node.inputs[1])
            if axes is None:
                return self.blocked(node, BlockReason.DYNAMIC_SHAPE_INPUT, "axes not constant")
        if axes is None or len(axes) == 0:
            if attr(node, "noop_with_empty_axes", 0):
                return [identity((x, a), (y, a)) for a in range(len(shape))]
            return []
        reduced = {normalize_axis(int(a), len(shape)) for a in np.ravel(axes)}
        keepdims = attr(node, "keepdims", 1)
        found, out_axis = [], 0
        for axis in range(len(shape)):
            if axis not in reduced:
                found.append(identity((x, axis), (y, out_axis)))
            if keepdims or axis not in reduced:
                out_axis += 1
        return found


@register
class ResizeRule(Rule):
    """Resize/Upsample: an axis whose size does not change is the identity.

    1. Constant ``scales``/``sizes``: an axis of equal input and output size is the identity.
    2. ``sizes`` computed at run time: an entry that is the input's own dim at its own position
       (``concat(shape(x)[:2], hw)``, as exporters write ``interpolate(x, size=...)``), or a
       constant piece equal to that dim, keeps that axis the identity; other axes stay whole.
    3. The rewrite restates the constant entries of ``sizes`` (a constant, or constant pieces of
       a Concat) for pruned axes.
    """

    op_types = ("Resize", "Upsample")

    def couplings(self, node: ir.Node) -> list[Coupling] | Blocked:
        x, y = node.inputs[0], node.outputs[0]
        xs, ys = static_shape(x), static_shape(y)
        if xs is None or ys is None:
            return self.blocked(node, BlockReason.UNKNOWN_SHAPE, "resize shapes unknown")
        sizes = node.inputs[3] if node.op_type == "Resize" and len(node.inputs) > 3 else None
        if sizes is None or known_array(sizes) is not None:
            same = [a for a in range(len(xs)) if xs[a] is not None and xs[a] == ys[a]]
            return [identity((x, a), (y, a)) for a in same]
        sources = dim_sources(sizes) if attr(node, "axes") is None else None
        pieces = shape_pieces(node, 3)
        if not sources or pieces is None or len(sources) != len(xs):
            return self.blocked(node, BlockReason.DYNAMIC_SHAPE_INPUT, "sizes not constant")
        constant = [v for _, _, array, n in pieces
                    for v in (np.ravel(array).tolist() if array is not None else [None] * n)]
        same = [
            a for a, (source, value) in enumerate(zip(sources, constant, strict=False))
            if (source is not None and source[0] is x and source[1] == a)
            or (value is not None and xs[a] is not None and value == xs[a] == ys[a])
        ]
        if not same:
            return self.blocked(node, BlockReason.DYNAMIC_SHAPE_INPUT, "sizes not constant")
        return [identity((x, a), (y, a)) for a in same]

    def rewrite(self, node: ir.Node, plan: PlanView) -> None:
        if node.op_type != "Resize" or len(node.inputs) <= 3 or node.inputs[3] is None:
            return
        y = node.outputs[0]
        rank = len(static_shape(y))
        axes = [normalize_axis(a, rank) for a in (attr(node, "axes") or range(rank))]
        offset = 0
        for owner, index, array, length in shape_pieces(node, 3) or ():
            if array is not None:
                new = np.array(array, dtype=np.int64).copy()
                for k in range(length):
                    size = plan.new_size(y, axes[offset + k])
                    if plan.kept(y, axes[offset + k]) is not None and size is not None:
                        new[k] = size
                if not np.array_equal(new, array):
                    if owner is not node:  # edit this Resize's own copy of a shared Concat
                        owner = private_producer(node, 3)
                    replace_constant_input(owner, index, new.astype(array.dtype))
            offset += length


@register
class PadRule(Rule):
    """Pad: axes with no padding on either side are the identity; padded axes stay whole."""

    op_types = ("Pad",)

    def couplings(self, node: ir.Node) -> list[Coupling] | Blocked:
        x, y = node.inputs[0], node.outputs[0]
        shape = static_shape(x)
        if shape is None:
            return self.blocked(node, BlockReason.UNKNOWN_SHAPE, "input rank unknown")
        rank = len(shape)
        if opset_of(node) < 11:
            pads = attr(node, "pads")
        else:
            pads = known_array(node.inputs[1]) if len(node.inputs) > 1 else None
        if pads is None:
            return self.blocked(node, BlockReason.DYNAMIC_SHAPE_INPUT, "pads not constant")
        axes = list(range(rank))
        if len(node.inputs) > 3 and node.inputs[3] is not None:
            given = known_array(node.inputs[3])
            if given is None:
                return self.blocked(node, BlockReason.DYNAMIC_SHAPE_INPUT, "axes not constant")
            axes = [normalize_axis(int(a), rank) for a in given]
        pads = np.ravel(pads)
        padded = {a for k, a in enumerate(axes) if pads[k] != 0 or pads[k + len(axes)] != 0}
        return [identity((x, a), (y, a)) for a in range(rank) if a not in padded]
