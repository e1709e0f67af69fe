"""RewriteShapeConstantsPass: attributes and shape tensors that state channel counts."""

from __future__ import annotations

import onnx_ir as ir

from graphprune.analysis import PrunePlan
from graphprune.ops import lookup
from graphprune.passes.base import RewritePass


class RewriteShapeConstantsPass(RewritePass):
    """Asks each node's rule to restate its channel counts for the plan.

    Rules:
    1. Conv/ConvTranspose ``group`` becomes the new channel count for depthwise convs.
    2. Split sizes become the kept counts of each output (an implicit equal split is made explicit).
    3. Slice bounds on a pruned axis count kept channels before ``start``.
    4. Reshape targets (constant, or constant pieces of a Concat) state the new sizes.
    5. Resize ``sizes`` state the new channel count.
    Shape constants shared with other nodes are copied, never edited under them. Must run before
    value shapes are updated: rules read the original shapes.
    """

    after = ("FreezeStaticValuesPass",)  # shape chains are constants by now
    before = ("UpdateValueShapesPass",)  # the rules read the original shapes

    def __init__(self, plan: PrunePlan) -> None:
        super().__init__()
        self.plan = plan

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        touched = {id(entry.value) for entry, _ in self.plan.changed_axes()}
        modified = False
        for node in list(model.graph):
            values = [v for v in (*node.inputs, *node.outputs) if v is not None]
            if not any(id(v) in touched for v in values):
                continue
            rule = lookup(node)
            if rule is not None:
                rule.rewrite(node, self.plan)
                modified = True
        return ir.passes.PassResult(model, modified)
