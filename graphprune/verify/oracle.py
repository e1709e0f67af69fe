"""The mask-equivalence oracle.

For a plan that removes channels, the *masked* original sets every removed parameter entry to
zero (a divisor to one, so that a zeroed channel stays finite; a quantized weight to its zero
point, and scales and zero points unchanged, as the op rules' ``masked_values`` say). The pruned
model must compute what the masked original computes: ``|pruned - masked| <= rtol * max|masked|``
on every output.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import onnx
import onnx_ir as ir
from onnx import numpy_helper

from graphprune.ops import lookup
from graphprune.ops.base import is_constant
from graphprune.pipeline import Masks

Fills = dict[str, "np.ndarray | None"]


def _divisor_names(proto: onnx.ModelProto) -> set[str]:
    return {n.input[1] for n in proto.graph.node if n.op_type == "Div" and len(n.input) > 1}


def mask_fills(model: ir.Model) -> Fills:
    """Constant name -> what its removed entries become when not 0 (None: left unchanged)."""
    fills: Fills = {}
    for node in model.graph:
        rule = lookup(node)
        for index, fill in (rule.masked_values(node) if rule is not None else {}).items():
            value = node.inputs[index] if index < len(node.inputs) else None
            if is_constant(value):
                fills[value.name] = fill
    return fills


def masked_model(original: onnx.ModelProto, masks: Masks,
                 fills: Fills | None = None) -> onnx.ModelProto:
    """A copy of ``original``: entries outside the kept indices set to 0 (1 for divisors).

    ``fills`` (from :func:`mask_fills` of the original when None) overrides the 0 per constant.
    """
    fills = mask_fills(ir.from_proto(original)) if fills is None else fills
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
        fill = fills.get(name, 1 if name in divisors else 0)
        if fill is None:
            continue
        fill = np.broadcast_to(np.asarray(fill, array.dtype), array.shape)
        for axis, kept in cuts:
            drop = np.setdiff1d(np.arange(array.shape[axis]), kept)
            index = [slice(None)] * array.ndim
            index[axis] = drop
            array[tuple(index)] = fill[tuple(index)]
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
