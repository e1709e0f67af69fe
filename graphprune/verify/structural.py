"""Structural checks: the ONNX checker with strict shape inference."""

from __future__ import annotations

from pathlib import Path

import onnx
import onnx_ir as ir

from graphprune.errors import VerificationError, one_line


def _fail(exc: Exception) -> VerificationError:
    return VerificationError(f"pruned model fails the ONNX checker: {one_line(exc)}")


def check_file(path: Path) -> None:
    """``onnx.checker`` with full check on a saved model (external data and > 2 GB work)."""
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise _fail(exc) from exc


class StrictCheckPass(ir.passes.InPlacePass):
    """Debug aid: the ONNX checker with full shape inference on the in-memory model.

    Tensor data is left out of the check (shapes and types are what it verifies), so models with
    external data or above 2 GB are checked too.
    """

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        from onnx_ir.passes.common._c_api_utils import call_onnx_api

        def check(proto: onnx.ModelProto) -> None:
            onnx.checker.check_model(proto, full_check=True)

        try:
            call_onnx_api(check, model)
        except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
            raise _fail(exc) from exc
        return ir.passes.PassResult(model, False)
