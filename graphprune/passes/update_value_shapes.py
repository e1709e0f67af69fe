"""UpdateValueShapesPass: states the pruned sizes on every activation's shape."""

from __future__ import annotations

import onnx_ir as ir

from graphprune.analysis import PrunePlan
from graphprune.passes.base import RewritePass


class UpdateValueShapesPass(RewritePass):
    """Sets ``value.shape[a]`` to the kept count for every pruned activation axis.

    Symbolic dims elsewhere in the shape are kept as they are.
    """

    after = ("RewriteShapeConstantsPass",)  # which read the shapes this pass changes

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

    def check_result(self, model: ir.Model) -> None:
        """Every pruned activation axis with a shape states its kept count."""
        for entry, kept in self.plan.changed_axes():
            shape = entry.value.shape
            if not entry.constant and shape is not None and shape[entry.axis] != len(kept):
                raise ir.passes.PostconditionError(
                    f"UpdateValueShapesPass: axis {entry.axis} of '{entry.value.name}' is "
                    f"{shape[entry.axis]}, the plan keeps {len(kept)}")
