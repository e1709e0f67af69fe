"""Gather: ``Y = take(data, indices, axis)``, as embeddings and position tables read rows.

``Y.shape = data.shape[:axis] + indices.shape + data.shape[axis+1:]``. Every axis of ``data``
but ``axis`` passes to its place in Y (an embedding table's feature axis is Y's last axis), and
every axis of run-time ``indices`` to its place; the gathered axis of ``data`` stays whole, and
so do the axes picked by constant indices (positions, not channels).
"""

from __future__ import annotations

import onnx_ir as ir

from graphprune.core import Blocked, BlockReason
from graphprune.ops.base import (
    Coupling,
    Rule,
    attr,
    identity,
    is_constant,
    normalize_axis,
    static_shape,
)
from graphprune.ops.registry import register


@register
class GatherRule(Rule):
    """Gather along one axis (see the module docstring)."""

    op_types = ("Gather",)

    def couplings(self, node: ir.Node) -> list[Coupling] | Blocked:
        data, indices, y = node.inputs[0], node.inputs[1], node.outputs[0]
        ds, ins, ys = static_shape(data), static_shape(indices), static_shape(y)
        if ds is None or ins is None or ys is None or len(ys) != len(ds) + len(ins) - 1:
            return self.blocked(node, BlockReason.UNKNOWN_SHAPE, "shapes unknown")
        axis = normalize_axis(attr(node, "axis", 0), len(ds))
        found = [identity((data, a), (y, a if a < axis else a + len(ins) - 1))
                 for a in range(len(ds)) if a != axis]
        if not is_constant(indices):  # constant indices pick positions: no channels of theirs
            found += [identity((indices, j), (y, axis + j)) for j in range(len(ins))]
        return found
