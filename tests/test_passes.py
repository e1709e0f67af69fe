"""The rewrite passes state their order and check their promises (requires / ensures)."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
import pytest

import graphprune
from graphprune.analysis import PrunePlan
from graphprune.passes import (
    CleanupPass,
    FreezeStaticValuesPass,
    RewriteShapeConstantsPass,
    SliceParametersPass,
    UpdateValueShapesPass,
)
from graphprune.passes.base import RUN_KEY, start_rewrite
from tests.test_names import conv_chain


def _plan():
    model = ir.from_proto(conv_chain(["a", "b"]))
    analysis = graphprune.analyze(model)
    group = analysis.groups[0]
    return model, PrunePlan(analysis, np.asarray(group.classes[:8], np.int64))


def test_passes_out_of_order_are_refused():
    model, plan = _plan()
    start_rewrite(model)
    with pytest.raises(ir.passes.PreconditionError, match="runs after FreezeStaticValuesPass"):
        RewriteShapeConstantsPass(plan)(model)
    with pytest.raises(ir.passes.PreconditionError, match="runs after RewriteShapeConstants"):
        UpdateValueShapesPass(plan)(model)
    FreezeStaticValuesPass()(model)
    RewriteShapeConstantsPass(plan)(model)
    UpdateValueShapesPass(plan)(model)
    with pytest.raises(ir.passes.PreconditionError, match="runs before UpdateValueShapesPass"):
        RewriteShapeConstantsPass(plan)(model)
    assert model.meta[RUN_KEY] == ("FreezeStaticValuesPass", "RewriteShapeConstantsPass",
                                   "UpdateValueShapesPass")
    start_rewrite(model)  # a new rewrite (the next of --steps) starts over
    assert RUN_KEY not in model.meta


class _SlicesNothing(SliceParametersPass):
    def call(self, model):
        return ir.passes.PassResult(model, False)


class _UpdatesNothing(UpdateValueShapesPass):
    def call(self, model):
        return ir.passes.PassResult(model, False)


def test_a_pass_that_breaks_its_promise_fails_after_it():
    model, plan = _plan()
    start_rewrite(model)
    with pytest.raises(ir.passes.PostconditionError) as caught:
        _SlicesNothing(plan)(model)
    assert "SliceParametersPass" in str(caught.value.__cause__ or caught.value)
    FreezeStaticValuesPass()(model)
    RewriteShapeConstantsPass(plan)(model)
    with pytest.raises(ir.passes.PostconditionError):
        _UpdatesNothing(plan)(model)
    SliceParametersPass(plan)(model)
    UpdateValueShapesPass(plan)(model)


def test_cleanup_checks_nothing_dead_is_left():
    model, plan = _plan()
    cleanup = CleanupPass(model)
    node = next(iter(model.graph))
    extra = ir.node("Relu", [node.outputs[0]], name="left_over")
    model.graph.append(extra)  # dead, added after the cleanup took stock of the model
    cleanup.call = lambda m: ir.passes.PassResult(m, False)
    with pytest.raises(ir.passes.PostconditionError):
        cleanup(model)
