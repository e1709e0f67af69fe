"""SliceParametersPass: removes the planned channels from every constant, with one loop."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from graphprune.analysis import PrunePlan
from graphprune.ops.base import constant_array, set_constant


class SliceParametersPass(ir.passes.InPlacePass):
    """Slices each constant (initializer or ``Constant`` node) along every axis the plan prunes.

    Rules:
    1. ``W' = take(W, kept_a, axis=a)`` for every pruned axis ``a`` of ``W``; nothing else changes.
    2. The constant keeps its name and kind; untouched constants are never read.
    """

    def __init__(self, plan: PrunePlan) -> None:
        super().__init__()
        self.plan = plan

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        by_value: dict[int, tuple[ir.Value, list[tuple[int, np.ndarray]]]] = {}
        for entry, kept in self.plan.changed_axes():
            if entry.constant:
                by_value.setdefault(id(entry.value), (entry.value, []))[1].append((entry.axis, kept))
        for value, cuts in by_value.values():
            array = constant_array(value)
            for axis, kept in cuts:
                array = np.take(array, kept, axis=axis)
            set_constant(value, array)
        return ir.passes.PassResult(model, bool(by_value))
