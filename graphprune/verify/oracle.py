"""The mask-equivalence oracle.

For a plan that removes channels, the *masked* original sets every removed parameter entry to
zero (a divisor to one, so that a zeroed channel stays finite). The pruned model must compute what
the masked original computes: ``|pruned - masked| <= rtol * max|masked|`` on every output.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import onnx
from onnx import numpy_helper

from graphprune.pipeline import Masks


def _divisor_names(proto: onnx.ModelProto) -> set[str]:
    return {n.input[1] for n in proto.graph.node if n.op_type == "Div" and len(n.input) > 1}


def masked_model(original: onnx.ModelProto, masks: Masks) -> onnx.ModelProto:
    """A copy of ``original``: entries outside the kept indices set to 0 (1 for divisors)."""
    masked = onnx.ModelProto()
    masked.CopyFrom(original)
    divisors = _divisor_names(masked)
    tensors = {t.name: t for t in masked.graph.initializer}
    for node in masked.graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            tensors[node.output[0]] = node.attribute[0].t
    for name, cuts in masks.items():
        tensor = tensors[name]
        array = numpy_helper.to_array(tensor).copy()
        for axis, kept in cuts:
            drop = np.setdiff1d(np.arange(array.shape[axis]), kept)
            index = [slice(None)] * array.ndim
            index[axis] = drop
            array[tuple(index)] = 1 if name in divisors else 0
        tensor.CopyFrom(numpy_helper.from_array(array, tensor.name))
    return masked


def run(model: onnx.ModelProto, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
    """Runs ``model`` in onnxruntime on CPU with all graph optimizations off (exact arithmetic)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 3
    session = ort.InferenceSession(model.SerializeToString(), options,
                                   providers=["CPUExecutionProvider"])
    return session.run(None, dict(feeds))


def relative_error(reference: list[np.ndarray], actual: list[np.ndarray]) -> float:
    """Largest ``max|a - r| / max|r|`` over the outputs."""
    worst = 0.0
    for r, a in zip(reference, actual, strict=False):
        if r.shape != a.shape:
            return float("inf")
        scale = max(float(np.max(np.abs(r))), 1e-12)
        worst = max(worst, float(np.max(np.abs(a.astype(np.float64) - r))) / scale)
    return worst


def mask_equivalence_error(
    original: onnx.ModelProto,
    pruned: onnx.ModelProto,
    masks: Masks,
    feeds: Mapping[str, np.ndarray],
) -> float:
    """Relative error between the pruned model and the masked original on ``feeds``."""
    return relative_error(run(masked_model(original, masks), feeds), run(pruned, feeds))
