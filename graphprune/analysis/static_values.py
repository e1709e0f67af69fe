"""Static shape values: small tensors (shapes, bounds, scales) computed from static dims at run time.

Exporters write ``x.size(1) // 2`` as ``Shape -> Gather -> Div``. When the dims it reads are
static, the result is known before the model runs, and rules may read it as if it were a constant
(Slice bounds, Reshape targets). Known values are stored in ``value.meta`` and never change the
graph; a rule that rewrites such an input replaces it with a constant of its own.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from graphprune.ops.base import STATIC_VALUE_KEY, constant_array, is_constant, static_shape

_FOLDABLE = frozenset({
    "Shape", "Gather", "Slice", "Concat", "Unsqueeze", "Squeeze", "Add", "Sub", "Mul", "Div",
    "Floor", "Ceil", "Cast", "Identity", "Reshape", "Range", "Equal", "Where", "Max", "Min",
})  # fmt: skip
_MAX_ELEMENTS = 64


def _small_known(value: ir.Value | None) -> np.ndarray | None:
    if value is None:
        return None
    if is_constant(value):
        shape = static_shape(value)
        if shape is None or int(np.prod(shape, dtype=np.int64)) > _MAX_ELEMENTS:
            return None
        return constant_array(value)
    return value.meta.get(STATIC_VALUE_KEY)


def _shape_value(node: ir.Node) -> np.ndarray | None:
    shape = static_shape(node.inputs[0])
    if shape is None:
        return None
    rank = len(shape)
    start = node.attributes.get("start")
    end = node.attributes.get("end")
    lo = 0 if start is None else start.value
    hi = rank if end is None else end.value
    lo, hi = (lo + rank if lo < 0 else lo), (hi + rank if hi < 0 else hi)
    dims = shape[max(lo, 0) : min(hi, rank)]
    return None if None in dims else np.array(dims, dtype=np.int64)


def _gathered_dims(node: ir.Node) -> np.ndarray | None:
    """``Gather(Shape(x), i)``: dim ``i`` of ``x`` is known even when other dims are symbolic."""
    source = node.inputs[0].producer()
    indices = _small_known(node.inputs[1])
    if source is None or source.op_type != "Shape" or indices is None:
        return None
    shape = static_shape(source.inputs[0])
    if shape is None:
        return None
    start = source.attributes.get("start")
    lo = 0 if start is None else start.value
    lo = lo + len(shape) if lo < 0 else lo
    dims = shape[lo:]
    try:
        picked = [dims[int(i)] for i in np.ravel(indices)]
    except IndexError:
        return None
    if None in picked:
        return None
    return np.array(picked, dtype=np.int64).reshape(np.shape(indices))


def _evaluate(node: ir.Node, inputs: list[np.ndarray | None]) -> list[np.ndarray] | None:
    from onnx.reference import ReferenceEvaluator

    proto = ir.serde.serialize_node(node)
    try:
        evaluator = ReferenceEvaluator(proto)
        feeds = {name: array for name, array in zip(proto.input, inputs) if name}
        return [np.asarray(o) for o in evaluator.run(None, feeds)]
    except Exception:  # an op the reference runtime rejects simply stays unknown
        return None


def annotate_static_values(graph: ir.Graph) -> int:
    """Stores known small values in ``value.meta``; returns how many were found."""
    found = 0
    for node in graph:
        if node.domain not in ("", "ai.onnx") or node.op_type not in _FOLDABLE:
            continue
        if node.op_type == "Shape":
            outputs = [_shape_value(node)]
        elif node.op_type == "Gather" and node.inputs[0].meta.get(STATIC_VALUE_KEY) is None:
            outputs = [_gathered_dims(node)]
        else:
            inputs = [_small_known(v) for v in node.inputs]
            if any(a is None and v is not None for a, v in zip(inputs, node.inputs)):
                continue
            outputs = _evaluate(node, inputs)
        if outputs is None or any(o is None for o in outputs):
            continue
        for value, array in zip(node.outputs, outputs):
            if array.size <= _MAX_ELEMENTS and (
                np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)
            ):
                value.meta[STATIC_VALUE_KEY] = array
                found += 1
    return found


def infer_shapes(model: ir.Model, rounds: int = 64) -> ir.Model:
    """ONNX shape inference, re-run with known values frozen so that dependent shapes resolve.

    Exporters compute Slice bounds and Reshape targets from ``Shape``; ONNX inference cannot
    always follow them, so each round freezes the known values in a serialized copy (the model
    itself is only annotated) and copies the inferred shapes back.
    """
    from onnx_ir.passes.common._c_api_utils import call_onnx_api

    from graphprune.ops import lookup

    for _ in range(rounds):
        known = {}
        for node in model.graph:
            if len(node.outputs) == 1 and STATIC_VALUE_KEY in node.outputs[0].meta:
                known[node.outputs[0].name] = node.outputs[0].meta[STATIC_VALUE_KEY]
        inferred = call_onnx_api(lambda proto: _infer_frozen(proto, known), model)
        _merge_shapes(model, inferred)
        refined = False
        for node in model.graph:
            rule = lookup(node)
            refined = (rule is not None and rule.refine_shapes(node)) or refined
        if not refined and not annotate_static_values(model.graph) - len(known):
            break
    return model


def _infer_frozen(proto, known: dict[str, np.ndarray]):
    import onnx
    from onnx import helper, numpy_helper

    for node in proto.graph.node:
        if len(node.output) == 1 and node.output[0] in known:
            constant = helper.make_node(
                "Constant", [], [node.output[0]], value=numpy_helper.from_array(known[node.output[0]])
            )
            node.CopyFrom(constant)
    return onnx.shape_inference.infer_shapes(proto, check_type=False, strict_mode=False, data_prop=True)


def _merge_shapes(model: ir.Model, proto) -> None:
    shapes = {}
    for info in list(proto.graph.value_info) + list(proto.graph.output):
        dims = info.type.tensor_type.shape.dim
        if info.type.tensor_type.HasField("shape"):
            shapes[info.name] = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in dims]
    for node in model.graph:
        for value in node.outputs:
            dims = shapes.get(value.name)
            if dims is None:
                continue
            old = value.shape
            if old is None or len(old) != len(dims) or any(
                not isinstance(o, int) and isinstance(d, int) for o, d in zip(old, dims)
            ):
                value.shape = ir.Shape(dims)
