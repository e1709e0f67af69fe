"""Cost counting: parameters and multiply-accumulates, per op type and in total.

Symbolic dims (a dynamic batch, say) count as 1.

``Conv``:          MACs = |Y| * (Ci/g) * prod(k)
``ConvTranspose``: MACs = |X| * (Co/g) * prod(k)
``Gemm``/``MatMul``: MACs = |Y| * K
"""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx_ir as ir

from graphprune.ops.base import attr, constant_array, is_constant


@dataclasses.dataclass(frozen=True)
class Costs:
    """Parameter and MAC totals of a model."""

    params: int
    macs: int
    macs_by_op: dict[str, int]

    def as_dict(self) -> dict:
        return {"params": self.params, "macs": self.macs, "macs_by_op": dict(self.macs_by_op)}


def _numel(value: ir.Value | None) -> int:
    if value is None or value.shape is None:
        return 0
    return int(np.prod([d if isinstance(d, int) else 1 for d in value.shape], dtype=np.int64))


def _dims(value: ir.Value) -> list[int]:
    return [d if isinstance(d, int) else 1 for d in value.shape]


def node_macs(node: ir.Node) -> int:
    """MACs of one node (0 for ops that are not counted)."""
    op = node.op_type
    try:
        if op in ("Conv", "ConvTranspose"):
            w = _dims(node.inputs[1])
            per_output = int(np.prod(w[1:], dtype=np.int64))
            base = node.outputs[0] if op == "Conv" else node.inputs[0]
            return _numel(base) * per_output
        if op == "Gemm":
            a = _dims(node.inputs[0])
            k = a[0] if attr(node, "transA", 0) else a[1]
            return _numel(node.outputs[0]) * k
        if op == "MatMul":
            return _numel(node.outputs[0]) * _dims(node.inputs[0])[-1]
    except (TypeError, IndexError):
        return 0
    return 0


def count_costs(model: ir.Model) -> Costs:
    """Counts float parameters (initializers and Constant nodes) and MACs of the main graph."""
    params = 0
    seen = set()
    for node in model.graph:
        for value in node.inputs:
            if value is None or id(value) in seen or not is_constant(value):
                continue
            seen.add(id(value))
            if value.const_value is not None:
                tensor = value.const_value
                if tensor.dtype.is_floating_point():
                    params += int(np.prod(tensor.shape.numpy(), dtype=np.int64))
            else:
                array = constant_array(value)
                if array is not None and np.issubdtype(array.dtype, np.floating):
                    params += int(array.size)
    by_op: dict[str, int] = {}
    for node in model.graph:
        macs = node_macs(node)
        if macs:
            by_op[node.op_type] = by_op.get(node.op_type, 0) + macs
    return Costs(params, sum(by_op.values()), by_op)
