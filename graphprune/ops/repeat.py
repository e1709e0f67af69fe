"""Ops that repeat elements: Expand (broadcast to a shape) and Tile.

``Expand``: ``Y = X`` broadcast to ``shape``. An axis X already has (size > 1) is the identity;
a size-1 axis that is expanded holds copies of one element and stays whole. After pruning, a
shape entry of a pruned axis is restated with the new size (an entry of 1 stays: it broadcasts).

``Tile``: ``Y[.., e, ..] = X[.., e % n, ..]`` along an axis of size ``n`` repeated ``r`` times,
so each channel is coupled to its ``r`` copies; the pruned model tiles the kept channels (as
grouped-query attention repeats KV heads, ``Unsqueeze -> Tile -> Reshape``).
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from graphprune.core import Blocked, BlockReason
from graphprune.ops.base import (
    Coupling,
    PlanView,
    Rule,
    identity,
    known_array,
    mapped,
    private_producer,
    replace_constant_input,
    static_shape,
)
from graphprune.ops.layout import shape_pieces
from graphprune.ops.registry import register

_ABSENT = ()  # an output axis the shape does not reach: it comes from X alone


def _entries(node: ir.Node, rank: int) -> list | None:
    """For each output axis, ``(owner, input index, constant, position)`` of its shape entry.

    ``_ABSENT`` where the shape is shorter than Y, None where the entry is computed at run time;
    None altogether when the shape's length is unknown.
    """
    pieces = shape_pieces(node)
    if pieces is None:
        return None
    offset = rank - sum(n for _, _, _, n in pieces)
    found: list = [_ABSENT] * max(offset, 0)
    for owner, index, array, n in pieces:
        found += [None if array is None else (owner, index, array, k) for k in range(n)]
    return found[-rank:] if rank else []


@register
class ExpandRule(Rule):
    """Expand (opset >= 8): see the module docstring."""

    op_types = ("Expand",)
    since_version = 8

    def couplings(self, node: ir.Node) -> list[Coupling] | Blocked:
        x, y = node.inputs[0], node.outputs[0]
        xs, ys = static_shape(x), static_shape(y)
        if xs is None or ys is None:
            return self.blocked(node, BlockReason.UNKNOWN_SHAPE, "shapes unknown")
        shift, entries = len(ys) - len(xs), _entries(node, len(ys))
        if entries is None:
            return self.blocked(node, BlockReason.DYNAMIC_SHAPE_INPUT, "shape length unknown")
        found = []
        for axis, size in enumerate(xs):
            out = axis + shift
            if size == 1 and ys[out] != 1:
                continue  # copies of one element
            if entries[out] is None:
                continue  # computed at run time: it could not be restated
            found.append(identity((x, axis), (y, out)))
        return found

    def rewrite(self, node: ir.Node, plan: PlanView) -> None:
        y = node.outputs[0]
        ys = static_shape(y)
        updates: dict[tuple[int, int], dict[int, int]] = {}
        owners: dict[tuple[int, int], tuple[ir.Node, int, np.ndarray]] = {}
        for axis, entry in enumerate(_entries(node, len(ys)) or []):
            new = plan.new_size(y, axis)
            if not entry or new is None or new == ys[axis]:
                continue
            owner, index, array, k = entry
            if int(np.ravel(array)[k]) != 1:
                updates.setdefault((id(owner), index), {})[k] = new
                owners[(id(owner), index)] = (owner, index, array)
        for key, changes in updates.items():
            owner, index, array = owners[key]
            if owner is not node:  # a Concat-built shape: edit this Expand's own copy
                owner = private_producer(node, 1)
            new_array = np.array(array, dtype=np.int64).reshape(-1).copy()
            for k, size in changes.items():
                new_array[k] = size
            replace_constant_input(owner, index, new_array.astype(array.dtype))


@register
class TileRule(Rule):
    """Tile (opset >= 6, constant repeats): see the module docstring."""

    op_types = ("Tile",)
    since_version = 6

    def couplings(self, node: ir.Node) -> list[Coupling] | Blocked:
        x, y = node.inputs[0], node.outputs[0]
        xs, repeats = static_shape(x), known_array(node.inputs[1])
        if xs is None:
            return self.blocked(node, BlockReason.UNKNOWN_SHAPE, "input rank unknown")
        if repeats is None:
            return self.blocked(node, BlockReason.DYNAMIC_SHAPE_INPUT, "repeats not constant")
        found = []
        for axis, (size, r) in enumerate(zip(xs, np.ravel(repeats).tolist(), strict=False)):
            if r == 1:
                found.append(identity((x, axis), (y, axis)))
            elif size is not None:
                e = np.arange(size * r)
                found.append(mapped((x, axis), (y, axis), e % size, e))
        return found
