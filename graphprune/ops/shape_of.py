"""Shape: reads dims without touching the data.

A dim whose run-time value only reaches statically known values (which the rewrite freezes into
constants) may change freely. A dim that flows into anything computed at run time would make the
pruned model compute something else, so that axis stays whole.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from graphprune.analysis.blocked import Blocked, BlockReason
from graphprune.ops.base import (
    STATIC_VALUE_KEY,
    Coupling,
    Rule,
    attr,
    identity,
    known_array,
    static_shape,
)
from graphprune.ops.registry import register


def _is_known(value: ir.Value | None) -> bool:
    return value is None or STATIC_VALUE_KEY in value.meta


def _read_at_run_time(node: ir.Node, lo: int, hi: int) -> set[int]:
    """Input axes in ``[lo, hi)`` whose run-time dims reach a value that is not known statically."""
    out = node.outputs[0]
    if _is_known(out):
        return set()
    if out.is_graph_output():
        return set(range(lo, hi))
    read: set[int] = set()
    for use in out.uses():
        consumer = use.node
        if all(_is_known(v) for v in consumer.outputs):
            continue
        indices = known_array(consumer.inputs[1]) if len(consumer.inputs) > 1 else None
        sliced = _sliced_range(consumer, hi - lo) if use.idx == 0 else None
        if consumer.op_type == "Gather" and use.idx == 0 and indices is not None:
            read |= {lo + (int(i) % (hi - lo)) for i in np.ravel(indices)}
        elif sliced is not None:
            read |= {lo + i for i in sliced}
        else:
            read |= set(range(lo, hi))
    return read


def _sliced_range(node: ir.Node, length: int) -> range | None:
    """The entries a ``Slice`` with constant bounds and step 1 reads of a shape vector."""
    if node.op_type != "Slice":
        return None
    if len(node.inputs) > 1:  # opset >= 10: bounds are inputs
        bounds = [known_array(v) if v is not None else None for v in node.inputs[1:5]]
        bounds += [None] * (4 - len(bounds))
        starts, ends, axes, steps = bounds
        if starts is None or ends is None or (len(node.inputs) > 3 and node.inputs[3] is not None
                                              and axes is None):
            return None
    else:
        starts, ends, axes = attr(node, "starts"), attr(node, "ends"), attr(node, "axes")
        steps = None
    if starts is None or ends is None or np.size(starts) != 1:
        return None
    if (axes is not None and int(np.ravel(axes)[0]) not in (0, -1)) or \
            (steps is not None and int(np.ravel(steps)[0]) != 1):
        return None
    start, end = int(np.ravel(starts)[0]), int(np.ravel(ends)[0])
    return range(*slice(start, end).indices(length))


@register
class ShapeRule(Rule):
    """``Y = shape(X)[start:end]``: axes read only into known values are left free."""

    op_types = ("Shape",)

    def couplings(self, node: ir.Node) -> list[Coupling] | Blocked:
        x = node.inputs[0]
        shape = static_shape(x)
        if shape is None:
            return self.blocked(node, BlockReason.UNKNOWN_SHAPE, "input rank unknown")
        rank = len(shape)
        lo, hi = attr(node, "start", 0), attr(node, "end", rank)
        lo, hi = (lo + rank if lo < 0 else lo), (hi + rank if hi < 0 else hi)
        lo, hi = max(0, min(lo, rank)), max(0, min(hi, rank))
        read = _read_at_run_time(node, lo, hi)
        return [identity((x, a), (x, a)) for a in range(rank) if a not in read]
