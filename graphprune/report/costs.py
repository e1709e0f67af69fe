"""Cost counting: parameters and multiply-accumulates per node, per op type and in total.

Symbolic dims (a dynamic batch, say) count as 1.

``Conv``:          MACs = |Y| * (Ci/g) * prod(k)
``ConvTranspose``: MACs = |X| * (Co/g) * prod(k)
``Gemm``/``MatMul``: MACs = |Y| * K

A parameter (a float initializer or ``Constant``) counts once, for the first node that reads it.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir

from graphprune.ops.base import attr, constant_array, is_constant


@dataclasses.dataclass(frozen=True)
class NodeCost:
    """Parameters a node reads first and MACs it computes."""

    name: str
    op_type: str
    params: int
    macs: int


@dataclasses.dataclass(frozen=True)
class Costs:
    """Parameter and MAC totals of a model, by op type and by node (nodes with a cost only)."""

    params: int
    macs: int
    macs_by_op: dict[str, int]
    params_by_op: dict[str, int] = dataclasses.field(default_factory=dict)
    nodes: tuple[NodeCost, ...] = ()

    def as_dict(self) -> dict:
        return {
            "params": self.params,
            "macs": self.macs,
            "macs_by_op": dict(self.macs_by_op),
            "params_by_op": dict(self.params_by_op),
            "nodes": [dataclasses.asdict(n) for n in self.nodes],
        }


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


def _float_size(value: ir.Value) -> int:
    """Element count of a float constant, else 0."""
    if value.const_value is not None:
        tensor = value.const_value
        if not tensor.dtype.is_floating_point():
            return 0
        return int(np.prod(tensor.shape.numpy(), dtype=np.int64))
    array = constant_array(value)
    return int(array.size) if array is not None and np.issubdtype(array.dtype, np.floating) else 0


def _node_params(node: ir.Node, seen: set[int]) -> int:
    params = 0
    for value in node.inputs:
        if value is None or id(value) in seen or not is_constant(value):
            continue
        seen.add(id(value))
        params += _float_size(value)
    return params


def count_costs(model: ir.Model) -> Costs:
    """Counts float parameters (initializers and Constant nodes) and MACs of the main graph."""
    seen: set[int] = set()
    nodes = []
    for index, node in enumerate(model.graph):
        cost = NodeCost(node.name or f"{node.op_type}_{index}", node.op_type,
                        _node_params(node, seen), node_macs(node))
        if cost.params or cost.macs:
            nodes.append(cost)
    macs_by_op: dict[str, int] = {}
    params_by_op: dict[str, int] = {}
    for cost in nodes:
        if cost.macs:
            macs_by_op[cost.op_type] = macs_by_op.get(cost.op_type, 0) + cost.macs
        if cost.params:
            params_by_op[cost.op_type] = params_by_op.get(cost.op_type, 0) + cost.params
    return Costs(sum(n.params for n in nodes), sum(macs_by_op.values()), macs_by_op,
                 params_by_op, tuple(nodes))


def file_size(path: str | os.PathLike) -> int:
    """Bytes of the model file plus every external data file it names."""
    path = Path(path)
    graph = onnx.load(str(path), load_external_data=False).graph
    constants = (a.t for n in graph.node for a in n.attribute if a.HasField("t"))
    tensors = [*graph.initializer, *constants]
    locations = {
        entry.value
        for tensor in tensors
        if tensor.data_location == onnx.TensorProto.EXTERNAL
        for entry in tensor.external_data
        if entry.key == "location"
    }
    return path.stat().st_size + sum((path.parent / loc).stat().st_size for loc in locations
                                     if (path.parent / loc).is_file())
