"""Static shape values: small tensors (shapes, bounds, scales) computed from static dims.

Exporters write ``x.size(1) // 2`` as ``Shape -> Gather -> Div``. When the dims it reads are
static, the result is known before the model runs, and rules may read it as if it were a constant
(Slice bounds, Reshape targets). Known values are stored in ``value.meta`` and never change the
graph; a rule that rewrites such an input replaces it with a constant of its own.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from graphprune.core import (
    STATIC_VALUE_KEY,
    is_constant,
    is_onnx_domain,
    known_array,
    opset_of,
    static_shape,
)

_FOLDABLE = frozenset({
    "Shape", "Gather", "Slice", "Concat", "Unsqueeze", "Squeeze", "Add", "Sub", "Mul", "Div",
    "Floor", "Ceil", "Cast", "Identity", "Reshape", "Range", "Equal", "Where", "Max", "Min",
    "ConstantOfShape", "Transpose",
})  # fmt: skip
_MAX_ELEMENTS = 64


def _small_known(value: ir.Value | None) -> np.ndarray | None:
    """:func:`known_array`, but a large constant (a weight) is never read."""
    if value is None:
        return None
    if is_constant(value):
        shape = static_shape(value)
        if shape is None or int(np.prod(shape, dtype=np.int64)) > _MAX_ELEMENTS:
            return None
    return known_array(value)


def _range_size(inputs: list[np.ndarray]) -> int | None:
    """Elements of ``Range(start, limit, delta)``: ``max(ceil((limit - start) / delta), 0)``."""
    start, limit, delta = (float(np.ravel(a)[0]) if np.size(a) else 0.0 for a in inputs[:3])
    if delta == 0 or not np.isfinite([start, limit, delta]).all():
        return None
    return max(int(np.ceil((limit - start) / delta)), 0)


def _fill_size(inputs: list[np.ndarray]) -> int:
    """Elements of ``ConstantOfShape(shape)`` (Python ints: huge dims must not overflow)."""
    return int(np.prod([int(d) for d in np.ravel(inputs[0])], dtype=object))


# Ops whose few input elements can describe a huge output: its size is checked before folding.
_OUTPUT_SIZE = {"Range": _range_size, "ConstantOfShape": _fill_size}


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


def _sliced_dims(node: ir.Node) -> np.ndarray | None:
    """``Slice(Shape(x), start, end)`` (one axis, step 1): known when the dims it keeps are."""
    source = node.inputs[0].producer()
    if source is None or source.op_type != "Shape" or opset_of(node) < 10:
        return None
    bounds = [_small_known(v) for v in node.inputs[1:]]
    if any(b is None for b in bounds) or any(np.size(b) != 1 for b in bounds):
        return None
    if len(bounds) > 2 and int(np.ravel(bounds[2])[0]) not in (0, -1):
        return None
    if len(bounds) > 3 and int(np.ravel(bounds[3])[0]) != 1:
        return None
    shape = static_shape(source.inputs[0])
    if shape is None:
        return None
    start = source.attributes.get("start")
    end = source.attributes.get("end")
    dims = shape[slice(None if start is None else start.value, None if end is None else end.value)]
    picked = dims[slice(int(np.ravel(bounds[0])[0]), int(np.ravel(bounds[1])[0]))]
    if not picked or None in picked:
        return None
    return np.array(picked, dtype=np.int64)


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
        feeds = {name: array for name, array in zip(proto.input, inputs, strict=False) if name}
        return [np.asarray(o) for o in evaluator.run(None, feeds)]
    except Exception:  # an op the reference runtime rejects simply stays unknown
        return None


def _annotate_node(node: ir.Node) -> bool:
    """Stores the node's outputs in ``value.meta`` when they are small and known."""
    if not is_onnx_domain(node) or node.op_type not in _FOLDABLE:
        return False
    if node.op_type == "Shape":
        outputs = [_shape_value(node)]
    elif node.op_type == "Gather" and node.inputs[0].meta.get(STATIC_VALUE_KEY) is None:
        outputs = [_gathered_dims(node)]
    elif node.op_type == "Slice" and node.inputs[0].meta.get(STATIC_VALUE_KEY) is None:
        outputs = [_sliced_dims(node)]
    else:
        inputs = [_small_known(v) for v in node.inputs]
        if any(a is None and v is not None for a, v in zip(inputs, node.inputs, strict=False)):
            return False
        size = _OUTPUT_SIZE.get(node.op_type, lambda _: 0)(inputs)
        if size is None or size > _MAX_ELEMENTS:
            return False  # a large fill or range is no shape value: don't build it
        outputs = _evaluate(node, inputs)
    if outputs is None or any(o is None for o in outputs):
        return False
    found = False
    for value, array in zip(node.outputs, outputs, strict=False):
        numeric = np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)
        if array.size <= _MAX_ELEMENTS and numeric:
            value.meta[STATIC_VALUE_KEY] = array
            found = True
    return found


def _has_unknown_dims(node: ir.Node) -> bool:
    """An output without a dtype, a shape, or a static dim.

    A dtype is what later nodes need to be inferred at all; after a contrib op ONNX inference
    knows neither.
    """
    return any(v.dtype is None or v.shape is None or any(not isinstance(d, int) for d in v.shape)
               for v in node.outputs if v is not None and v.name)


def _type_proto(value: ir.Value):
    from onnx import helper

    dims = None
    if value.shape is not None:
        dims = [d if isinstance(d, int) else (d.value if isinstance(d, ir.SymbolicDim) else None)
                for d in value.shape]
    return helper.make_tensor_type_proto(int(value.dtype), dims)


def _infer_node(node: ir.Node) -> None:
    """ONNX inference for one node, with known values as input data; fills unknown output dims."""
    import onnx
    from onnx import numpy_helper

    inputs = [v for v in node.inputs if v is not None and v.name]
    if any(v.dtype is None for v in inputs):
        return
    try:
        schema = onnx.defs.get_schema(node.op_type, opset_of(node), node.domain or "")
        data = {}
        for v in inputs:
            array = _small_known(v)
            if array is not None:
                data[v.name] = numpy_helper.from_array(np.asarray(array), v.name)
        types = {v.name: _type_proto(v) for v in inputs}
        inferred = onnx.shape_inference.infer_node_outputs(
            schema, ir.serde.serialize_node(node), types, data)
    except Exception:  # unknown schema or an inference error: keep what we have
        return
    for value in node.outputs:
        tensor_type = inferred.get(value.name)
        if tensor_type is None:
            continue
        if value.dtype is None and tensor_type.tensor_type.elem_type:
            value.dtype = ir.DataType(tensor_type.tensor_type.elem_type)
        if not tensor_type.tensor_type.HasField("shape"):
            continue
        dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
                for d in tensor_type.tensor_type.shape.dim]
        old = value.shape
        if old is None or len(old) != len(dims):
            value.shape = ir.Shape(dims)
        else:
            value.shape = ir.Shape([n if _better_dim(o, n) else o
                                    for o, n in zip(old, dims, strict=False)])


def _better_dim(old, new) -> bool:
    """A static dim beats a symbolic one; a named symbol beats one ONNX made up (``unk__3``)."""
    if isinstance(old, int):
        return False
    if isinstance(new, int):
        return True
    made_up = lambda d: d is None or str(d).startswith("unk__")  # noqa: E731
    return isinstance(new, str) and made_up(old) and not made_up(new)


def infer_shapes(model: ir.Model) -> ir.Model:
    """Completes ONNX shape inference where exporters compute shapes at run time.

    Exporters compute Slice bounds and Reshape targets from ``Shape``; ONNX inference cannot
    always follow them. One sweep in graph order annotates known values, re-infers nodes whose
    outputs still have unknown dims with those values as input data, and lets the node's rule
    fill what remains (a Reshape's ``-1`` next to a symbolic batch, say).
    """
    from graphprune.ops import lookup

    _forget_negative_dims(model.graph)
    for node in model.graph:
        if _has_unknown_dims(node):
            _infer_node(node)
            rule = lookup(node)
            if rule is not None:
                rule.refine_shapes(node)
        _annotate_node(node)
    return model


def _forget_negative_dims(graph: ir.Graph) -> None:
    """A negative dim (``dim_value: -1``, as paddle2onnx writes a dynamic batch) is unknown.

    Read as a size it would give an axis a negative length; onnxruntime treats it as dynamic.
    """
    values = [*graph.inputs, *(v for node in graph for v in node.outputs)]
    for value in values:
        shape = value.shape
        if shape is not None and any(isinstance(d, int) and d < 0 for d in shape):
            value.shape = ir.Shape([None if isinstance(d, int) and d < 0 else d for d in shape])
