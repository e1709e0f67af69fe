"""CleanupPass: removes what the rewrite left dead, and nothing that was there before."""

from __future__ import annotations

import onnx_ir as ir

from graphprune.passes.base import RewritePass


def _is_dead(value: ir.Value) -> bool:
    return not value.uses() and not value.is_graph_output()


class CleanupPass(RewritePass):
    """Drops nodes and initializers that lost their last use during the rewrite.

    Rules:
    1. A node whose outputs have no uses (and are not graph outputs) is removed, repeatedly.
    2. An initializer with no uses is removed.
    3. Nodes and initializers already unused in the input model are kept: the user's model keeps
       what it had.
    """

    def __init__(self, model: ir.Model) -> None:
        super().__init__()
        graph = model.graph
        self._dead_nodes = {id(n) for n in graph if all(_is_dead(v) for v in n.outputs)}
        self._dead_inits = {
            name for name, v in graph.initializers.items() if _is_dead(v) and not v.is_graph_input()
        }

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        removed = 0
        changed = True
        while changed:
            changed = False
            for node in reversed(list(graph)):
                if id(node) not in self._dead_nodes and all(_is_dead(v) for v in node.outputs):
                    graph.remove(node, safe=True)
                    removed += 1
                    changed = True
        for name, value in list(graph.initializers.items()):
            if name not in self._dead_inits and _is_dead(value) and not value.is_graph_input():
                del graph.initializers[name]
                removed += 1
        return ir.passes.PassResult(model, bool(removed))

    def check_result(self, model: ir.Model) -> None:
        """Rules 1 and 2: nothing the rewrite left dead remains."""
        graph = model.graph
        for node in graph:
            if id(node) not in self._dead_nodes and all(_is_dead(v) for v in node.outputs):
                raise ir.passes.PostconditionError(f"CleanupPass: '{node.name}' is left dead")
        for name, value in graph.initializers.items():
            if name not in self._dead_inits and _is_dead(value) and not value.is_graph_input():
                raise ir.passes.PostconditionError(f"CleanupPass: initializer '{name}' is unused")
