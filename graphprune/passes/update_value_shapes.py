"""UpdateValueShapesPass: states the pruned sizes on every activation's shape."""

from __future__ import annotations

import onnx_ir as ir

from graphprune.analysis import PrunePlan


class UpdateValueShapesPass(ir.passes.InPlacePass):
    """Sets ``value.shape[a]`` to the kept count for every pruned activation axis.

    Symbolic dims elsewhere in the shape are kept as they are.
    """

    def __init__(self, plan: PrunePlan) -> None:
        super().__init__()
        self.plan = plan

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        modified = False
        for entry, kept in self.plan.changed_axes():
            if entry.constant or entry.value.shape is None:
                continue
            dims = list(entry.value.shape)
            dims[entry.axis] = len(kept)
            entry.value.shape = ir.Shape(dims)
            modified = True
        return ir.passes.PassResult(model, modified)
