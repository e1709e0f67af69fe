"""FreezeStaticValuesPass: statically known shape values become constants before pruning."""

from __future__ import annotations

import onnx_ir as ir

from graphprune.ops.base import STATIC_VALUE_KEY
from graphprune.passes.base import RewritePass


class FreezeStaticValuesPass(RewritePass):
    """Replaces each known value (``Shape -> Gather -> ...`` of static dims) by a constant.

    Rules:
    1. Only values read by a node whose outputs are not themselves known are frozen (the frontier);
       the ``Shape`` chains behind them become dead and are removed by cleanup.
    2. After this pass, no ``Shape`` of a pruned tensor reaches the computation, so pruning a dim
       that a ``Shape`` read cannot change what the model computes.
    3. Values computed from constants alone (``Identity`` of a weight, say) are left as they are:
       they read no dims, and their constants may be sliced by the plan.
    """

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        frozen: dict[int, ir.Value] = {}
        reads_dims = _values_reading_dims(graph)
        for node in list(graph):
            if all(STATIC_VALUE_KEY in v.meta for v in node.outputs):
                continue
            for index, value in enumerate(node.inputs):
                if value is None or value.const_value is not None:
                    continue
                if STATIC_VALUE_KEY not in value.meta:
                    continue
                if id(value) not in reads_dims:
                    continue
                if id(value) not in frozen:
                    frozen[id(value)] = _constant_for(graph, value)
                node.replace_input_with(index, frozen[id(value)])
        return ir.passes.PassResult(model, bool(frozen))

    def check_result(self, model: ir.Model) -> None:
        """Rule 2: no node but a static one reads a known value computed from dims."""
        reads_dims = _values_reading_dims(model.graph)
        for node in model.graph:
            if all(STATIC_VALUE_KEY in v.meta for v in node.outputs):
                continue
            for value in node.inputs:
                if (value is not None and value.const_value is None
                        and STATIC_VALUE_KEY in value.meta and id(value) in reads_dims):
                    raise ir.passes.PostconditionError(
                        f"FreezeStaticValuesPass: '{node.name}' still reads the static value "
                        f"'{value.name}'")


def _values_reading_dims(graph: ir.Graph) -> set[int]:
    """Ids of the values computed (transitively) from a ``Shape`` or ``Size`` of a tensor."""
    found: set[int] = set()
    for node in graph:
        inputs = [v for v in node.inputs if v is not None]
        if node.op_type in ("Shape", "Size") or any(id(v) in found for v in inputs):
            found.update(id(v) for v in node.outputs)
    return found


def _constant_for(graph: ir.Graph, value: ir.Value) -> ir.Value:
    array = value.meta[STATIC_VALUE_KEY]
    name, k = f"{value.name}_static", 0
    while name in graph.initializers:
        k += 1
        name = f"{value.name}_static_{k}"
    const = ir.Value(name=name, const_value=ir.Tensor(array, name=name))
    const.shape, const.dtype = ir.Shape(array.shape), const.const_value.dtype
    graph.register_initializer(const)
    return const
