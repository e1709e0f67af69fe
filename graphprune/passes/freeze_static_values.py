"""FreezeStaticValuesPass: statically known shape values become constants before pruning."""

from __future__ import annotations

import onnx_ir as ir

from graphprune.ops.base import STATIC_VALUE_KEY


class FreezeStaticValuesPass(ir.passes.InPlacePass):
    """Replaces each known value (``Shape -> Gather -> ...`` of static dims) by a constant.

    Rules:
    1. Only values read by a node whose outputs are not themselves known are frozen (the frontier);
       the ``Shape`` chains behind them become dead and are removed by cleanup.
    2. After this pass, no ``Shape`` of a pruned tensor reaches the computation, so pruning a dim
       that a ``Shape`` read cannot change what the model computes.
    """

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        frozen: dict[int, ir.Value] = {}
        for node in list(graph):
            if all(STATIC_VALUE_KEY in v.meta for v in node.outputs):
                continue
            for index, value in enumerate(node.inputs):
                if value is None or STATIC_VALUE_KEY not in value.meta or value.const_value is not None:
                    continue
                if id(value) not in frozen:
                    frozen[id(value)] = _constant_for(graph, value)
                node.replace_input_with(index, frozen[id(value)])
        return ir.passes.PassResult(model, bool(frozen))


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
