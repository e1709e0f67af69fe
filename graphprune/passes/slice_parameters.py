"""SliceParametersPass: removes the planned channels from every constant, with one loop."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from graphprune._io import iter_blocks
from graphprune.analysis import PrunePlan
from graphprune.ops.base import constant_array, set_constant, static_shape
from graphprune.passes.base import RewritePass


class SliceParametersPass(RewritePass):
    """Slices each constant (initializer or ``Constant`` node) along every axis the plan prunes.

    Rules:
    1. ``W' = take(W, kept_a, axis=a)`` for every pruned axis ``a`` of ``W``; nothing else changes.
    2. The constant keeps its name and kind; untouched constants are never read.
    3. ``W'`` is built block by block along axis 0 (one allocation of the result), so slicing a
       tensor in external data never holds the whole tensor in memory.
    4. A tensor in external data is sliced lazily: ``W'`` is read from the source file when it
       is written out (or read), one tensor at a time, so pruning a model of several GB holds
       none of its sliced weights at once. The source file must stay in place until then.
    """

    def __init__(self, plan: PrunePlan) -> None:
        super().__init__()
        self.plan = plan

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        by_value: dict[int, tuple[ir.Value, list[tuple[int, np.ndarray]]]] = {}
        for entry, kept in self.plan.changed_axes():
            if entry.constant:
                cuts = by_value.setdefault(id(entry.value), (entry.value, []))[1]
                cuts.append((entry.axis, kept))
        for value, cuts in by_value.values():
            if isinstance(value.const_value, ir.ExternalTensor):
                _set_lazy(value, dict(cuts))
            else:
                set_constant(value, _sliced(value, dict(cuts)))
        return ir.passes.PassResult(model, bool(by_value))

    def check_result(self, model: ir.Model) -> None:
        """Rule 1: every sliced constant has the kept count on every pruned axis."""
        for entry, kept in self.plan.changed_axes():
            if not entry.constant:
                continue
            shape = static_shape(entry.value)
            if shape is None or shape[entry.axis] != len(kept):
                raise ir.passes.PostconditionError(
                    f"SliceParametersPass: '{entry.value.name}' has shape {shape}, the plan "
                    f"keeps {len(kept)} on axis {entry.axis}")


def _kept_shape(value: ir.Value, cuts: dict[int, np.ndarray]) -> list[int]:
    shape = list(static_shape(value))
    for axis, kept in cuts.items():
        shape[axis] = len(kept)
    return shape


def _set_lazy(value: ir.Value, cuts: dict[int, np.ndarray]) -> None:
    """Rule 4: the initializer becomes a LazyTensor slicing the external tensor on demand."""
    tensor = value.const_value
    shape = _kept_shape(value, cuts)
    source = ir.Value(name=value.name, shape=tensor.shape, type=value.type, const_value=tensor)
    value.const_value = ir.LazyTensor(lambda: ir.Tensor(_sliced(source, cuts), name=value.name),
                                      dtype=tensor.dtype, shape=ir.Shape(shape), name=value.name)
    value.shape = ir.Shape(shape)


def _sliced(value: ir.Value, cuts: dict[int, np.ndarray]) -> np.ndarray:
    """The constant with only the kept indices of every cut axis, filled in block by block."""
    shape = _kept_shape(value, cuts)
    out, filled = None, 0
    for start, block in iter_blocks(value):
        if 0 in cuts:
            rows = cuts[0]
            block = block[rows[(rows >= start) & (rows < start + len(block))] - start]
        for axis, kept in cuts.items():
            if axis:
                block = np.take(block, kept, axis=axis)
        if out is None:
            out = np.empty(shape, dtype=block.dtype)
        out[filled : filled + len(block)] = block
        filled += len(block)
    return out if out is not None else np.empty(shape, np.asarray(constant_array(value)).dtype)
