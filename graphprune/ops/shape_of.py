"""Shape: reads dims without touching the data.

A dim whose run-time value only reaches statically known values (which the rewrite freezes into
constants) may change freely. So may a dim that only comes back to a consumer of the same tensor
at its own position (``Resize(x, sizes=concat(shape(x)[:2], hw))``): after pruning it states the
pruned size. A dim that flows into anything else computed at run time would make the pruned
model compute something else, so that axis stays whole.

Dims are followed through the ops that move them without arithmetic (``Slice``/``Gather`` with
constant indices, ``Concat``, ``Unsqueeze``/``Squeeze``, ``Cast``, ``Identity``).
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from graphprune.core import Blocked, BlockReason
from graphprune.ops.base import (
    STATIC_VALUE_KEY,
    Coupling,
    Rule,
    attr,
    identity,
    known_array,
    opset_of,
    static_shape,
)
from graphprune.ops.registry import register

DimSource = tuple[ir.Value, int] | None  # (tensor, axis) whose run-time dim an entry holds
_MAX_DEPTH = 16


def _is_known(value: ir.Value | None) -> bool:
    return value is None or STATIC_VALUE_KEY in value.meta


def _shape_range(node: ir.Node, rank: int) -> tuple[int, int]:
    lo, hi = attr(node, "start", 0), attr(node, "end", rank)
    lo, hi = (lo + rank if lo < 0 else lo), (hi + rank if hi < 0 else hi)
    return max(0, min(lo, rank)), max(0, min(hi, rank))


def _slice_positions(node: ir.Node, length: int) -> range | None:
    """Positions a 1-D Slice (constant bounds, step 1) keeps out of ``length``."""
    if opset_of(node) < 10:
        starts, ends, axes = attr(node, "starts"), attr(node, "ends"), attr(node, "axes")
        steps = None
    else:
        inputs = list(node.inputs[1:5]) + [None] * (5 - len(node.inputs))
        arrays = [None if v is None else known_array(v) for v in inputs[:4]]
        if any(a is None and v is not None for a, v in zip(arrays, inputs, strict=False)):
            return None
        starts, ends, axes, steps = arrays
    if starts is None or ends is None or np.size(starts) != 1:
        return None
    if axes is not None and int(np.ravel(axes)[0]) not in (0, -1):
        return None
    if steps is not None and int(np.ravel(steps)[0]) != 1:
        return None
    return range(length)[slice(int(np.ravel(starts)[0]), int(np.ravel(ends)[0]))]


def _moved(node: ir.Node, index: int, dims: list) -> list | None:
    """Where the entries ``dims`` of input ``index`` land in ``node``'s output; None: computed."""
    op = node.op_type
    if op in ("Cast", "Identity", "Unsqueeze", "Squeeze") and index == 0:
        return dims
    if op == "Gather" and index == 0 and attr(node, "axis", 0) == 0:
        picked = known_array(node.inputs[1])
        if picked is None:
            return None
        return [dims[int(i) % len(dims)] for i in np.ravel(picked)] if dims else []
    if op == "Slice" and index == 0:
        kept = _slice_positions(node, len(dims))
        return None if kept is None else [dims[i] for i in kept]
    if op == "Concat":
        lengths = [static_shape(v) for v in node.inputs]
        if any(s is None or len(s) != 1 or s[0] is None for s in lengths):
            return None
        before = sum(s[0] for s in lengths[:index])
        after = sum(s[0] for s in lengths[index + 1 :])
        return [None] * before + dims + [None] * after
    return None


def dim_sources(value: ir.Value | None, depth: int = 0) -> list[DimSource] | None:
    """For a 1-D shape value: which ``(tensor, axis)`` dim each entry holds at run time.

    None for an entry computed otherwise (a constant, arithmetic); None overall when the length
    is unknown.
    """
    shape = static_shape(value)
    if value is None or shape is None or len(shape) > 1 or depth > _MAX_DEPTH:
        return None
    length = 1 if not shape else shape[0]
    node = value.producer()
    if length is None:
        return None
    if node is None or _is_known(value) or node.domain not in ("", "ai.onnx"):
        return [None] * length
    if node.op_type == "Shape":
        rank = len(static_shape(node.inputs[0]) or ())
        lo, hi = _shape_range(node, rank)
        return [(node.inputs[0], a) for a in range(lo, hi)] if hi - lo == length else None
    inputs = node.inputs if node.op_type == "Concat" else node.inputs[:1]
    found: list[DimSource] = [None] * length
    for index, source in enumerate(inputs):
        upstream = dim_sources(source, depth + 1)
        moved = None if upstream is None else _moved(node, index, upstream)
        if moved is not None and len(moved) == length:
            found = [m if m is not None else f for m, f in zip(moved, found, strict=True)]
    return found


def _restated(node: ir.Node, index: int, x: ir.Value) -> bool:
    """True when ``node`` takes the shape value at input ``index`` as ``x``'s own output sizes.

    Only ``Resize(x, ..., sizes)`` without ``axes``: an entry that is dim ``a`` of ``x`` at
    position ``a`` asks for that axis unchanged, whatever its size.
    """
    return (node.op_type == "Resize" and index == 3 and node.inputs[0] is x
            and attr(node, "axes") is None)


def _read_dims(value: ir.Value, dims: list[int | None], x: ir.Value, depth: int = 0) -> set[int]:
    """Axes of ``x`` among ``dims`` (``value``'s entries) that reach a run-time computation."""
    if _is_known(value):
        return set()
    carried = {d for d in dims if d is not None}
    if value.is_graph_output() or depth > _MAX_DEPTH:
        return carried
    read: set[int] = set()
    for use in value.uses():
        consumer = use.node
        if all(_is_known(v) for v in consumer.outputs):
            continue
        if _restated(consumer, use.idx, x):
            sources = dim_sources(consumer.inputs[3]) or []
            restated = {p for p, s in enumerate(sources) if s and s[0] is x and s[1] == p}
            read |= carried - restated
            continue
        moved = _moved(consumer, use.idx, dims) if consumer.domain in ("", "ai.onnx") else None
        if moved is None:
            read |= carried
        else:
            read |= _read_dims(consumer.outputs[0], moved, x, depth + 1)
    return read


@register
class ShapeRule(Rule):
    """``Y = shape(X)[start:end]``: axes read only into known values are left free."""

    op_types = ("Shape",)

    def couplings(self, node: ir.Node) -> list[Coupling] | Blocked:
        x = node.inputs[0]
        shape = static_shape(x)
        if shape is None:
            return self.blocked(node, BlockReason.UNKNOWN_SHAPE, "input rank unknown")
        lo, hi = _shape_range(node, len(shape))
        read = _read_dims(node.outputs[0], list(range(lo, hi)), x)
        return [identity((x, a), (x, a)) for a in range(len(shape)) if a not in read]
