"""onnxruntime's QOperator contrib ops (``com.microsoft``), as ``quantize_static`` writes them.

``QGemm``:       ``Y = requantize((A - azp) @ (B - bzp[N]) + C[N])`` (B at 3, int32 bias C at 6)
``QLinearAdd``:  ``C = quantize(dequantize(A) + dequantize(B))`` (A at 0, B at 3; QLinearMul)
``QLinearConcat``: ``Y = quantize(concat(dequantize(X_k)))`` (parts at 2, 5, 8, ...)
``QLinearSigmoid``/``QLinearLeakyRelu``, ``QLinearAveragePool``/``QLinearGlobalAveragePool``.

1. Each is its float op's rule at other input positions (see ops/quantize.py for the integer
   domain): the quantization parameters of activations are per tensor; QGemm's 1-D B scale and
   zero point are per column of Y.
2. A removed channel at its zero point (the real zero) stays at the output's zero point, and
   every output element is requantized on its own, so pruning is exact.
3. ONNX has no schema for these ops: each rule fills its output shape.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from graphprune.core import Blocked, BlockReason
from graphprune.ops.base import (
    Coupling,
    Rule,
    attr,
    broadcast_couplings,
    fill_shape,
    identity,
    normalize_axis,
    static_shape,
)
from graphprune.ops.layout import ConcatRule, _pieces_along
from graphprune.ops.linear import GemmRule
from graphprune.ops.quantize import (
    PerTensorInputs,
    is_per_tensor,
    optional_input,
    zero_point_fills,
)
from graphprune.ops.registry import register
from graphprune.ops.spatial import PoolRule

CONTRIB = "com.microsoft"


def _dims(value: ir.Value | None) -> list | None:
    if value is None or value.shape is None:
        return None
    return [d if isinstance(d, int) else (d.value if isinstance(d, ir.SymbolicDim) else None)
            for d in value.shape]


def _broadcast(a: list, b: list) -> list:
    rank = max(len(a), len(b))
    a, b = [1] * (rank - len(a)) + a, [1] * (rank - len(b)) + b
    return [y if x == 1 else x if y == 1 or x == y else None for x, y in zip(a, b, strict=True)]


def _output_dtype(node: ir.Node, zp_index: int) -> ir.DataType | None:
    zp = optional_input(node, zp_index)
    return zp.dtype if zp is not None and zp.dtype is not None else node.inputs[0].dtype


@register
class QGemmRule(PerTensorInputs, GemmRule):
    """``QGemm(A, as, azp, B, bs, bzp, C, ys, yzp)``: a 1-D ``bs``/``bzp`` is per column of Y."""

    op_types = ("QGemm",)
    domain = CONTRIB
    b_index = 3
    c_index = 6
    per_tensor_params = (1, 2, 7, 8)

    def couplings(self, node: ir.Node) -> list[Coupling] | Blocked:
        found = self.per_tensor_block(node) or super().couplings(node)
        if isinstance(found, Blocked):
            return found
        y = node.outputs[0]
        columns = static_shape(y)[1]
        for index in (4, 5):
            param = optional_input(node, index)
            if is_per_tensor(param) and columns != 1:
                continue
            if static_shape(param) != (columns,):
                detail = f"input {index} is neither per tensor nor per column"
                return self.blocked(node, BlockReason.UNSUPPORTED_ATTRIBUTE, detail)
            found.append(identity((param, 0), (y, 1)))
        return found

    def masked_values(self, node: ir.Node) -> dict[int, np.ndarray | None]:
        axis = 0 if attr(node, "transB", 0) else 1
        return zero_point_fills(node, self.b_index, 5, axis, keep=(4, 5))

    def refine_shapes(self, node: ir.Node) -> bool:
        a, b = _dims(node.inputs[0]), _dims(node.inputs[3])
        if a is None or b is None or len(a) != 2 or len(b) != 2:
            return False
        m = a[1] if attr(node, "transA", 0) else a[0]
        n = b[0] if attr(node, "transB", 0) else b[1]
        quantized = optional_input(node, 7) is not None
        dtype = _output_dtype(node, 8) if quantized else ir.DataType.FLOAT
        return fill_shape(node.outputs[0], [m, n], dtype)


@register
class QLinearBinaryRule(Rule):
    """``QLinearAdd/QLinearMul(A, as, azp, B, bs, bzp, cs, czp)``: numpy broadcasting of A, B."""

    op_types = ("QLinearAdd", "QLinearMul")
    domain = CONTRIB

    def couplings(self, node: ir.Node) -> list[Coupling] | Blocked:
        for index in (1, 2, 4, 5, 6, 7):
            if not is_per_tensor(optional_input(node, index)):
                return self.blocked(node, BlockReason.UNSUPPORTED_ATTRIBUTE,
                                    f"input {index} is not per tensor")
        return broadcast_couplings(node, [v for v in (node.inputs[0], node.inputs[3]) if v])

    def refine_shapes(self, node: ir.Node) -> bool:
        a, b = _dims(node.inputs[0]), _dims(node.inputs[3])
        if a is None or b is None:
            return False
        return fill_shape(node.outputs[0], _broadcast(a, b), _output_dtype(node, 7))


@register
class QLinearGlobalAveragePoolRule(Rule):
    """``QLinearGlobalAveragePool(X, xs, xzp, ys, yzp)``: N and C kept, spatial axes become 1."""

    op_types = ("QLinearGlobalAveragePool",)
    domain = CONTRIB

    def channel_axis(self, node: ir.Node, rank: int) -> int:
        return rank - 1 if attr(node, "channels_last", 0) else 1

    def couplings(self, node: ir.Node) -> list[Coupling] | Blocked:
        x, y = node.inputs[0], node.outputs[0]
        shape = static_shape(x)
        if shape is None or static_shape(y) is None or len(shape) < 3:
            return self.blocked(node, BlockReason.UNKNOWN_SHAPE, "pool shapes unknown")
        for index in range(1, 5):
            if not is_per_tensor(optional_input(node, index)):
                return self.blocked(node, BlockReason.UNSUPPORTED_ATTRIBUTE,
                                    f"input {index} is not per tensor")
        return [identity((x, a), (y, a)) for a in (0, self.channel_axis(node, len(shape)))]

    def refine_shapes(self, node: ir.Node) -> bool:
        dims = _dims(node.inputs[0])
        if dims is None or len(dims) < 3:
            return False
        c = self.channel_axis(node, len(dims))
        out = [d if axis in (0, c) else 1 for axis, d in enumerate(dims)]
        return fill_shape(node.outputs[0], out, _output_dtype(node, 4))


@register
class QLinearConcatRule(ConcatRule):
    """``QLinearConcat(ys, yzp, X0, xs0, xzp0, X1, ...)``: the parts are inputs 2, 5, 8, ..."""

    op_types = ("QLinearConcat",)
    domain = CONTRIB

    def couplings(self, node: ir.Node) -> list[Coupling] | Blocked:
        y = node.outputs[0]
        ys = static_shape(y)
        if ys is None:
            return self.blocked(node, BlockReason.UNKNOWN_SHAPE, "output rank unknown")
        for index in [0, 1] + [i for i in range(3, len(node.inputs)) if i % 3 != 2]:
            if not is_per_tensor(node.inputs[index]):
                return self.blocked(node, BlockReason.UNSUPPORTED_ATTRIBUTE,
                                    f"input {index} is not per tensor")
        axis = normalize_axis(attr(node, "axis"), len(ys))
        return _pieces_along(self, node, y, node.inputs[2::3], axis)

    def refine_shapes(self, node: ir.Node) -> bool:
        parts = [_dims(v) for v in node.inputs[2::3]]
        if not parts or any(p is None or len(p) != len(parts[0]) for p in parts):
            return False
        axis = normalize_axis(attr(node, "axis"), len(parts[0]))
        sizes = [p[axis] for p in parts]
        dims = list(parts[0])
        dims[axis] = sum(sizes) if all(isinstance(d, int) for d in sizes) else None
        return fill_shape(node.outputs[0], dims, _output_dtype(node, 1))


@register
class QLinearUnaryRule(Rule):
    """``QLinearSigmoid/QLinearLeakyRelu(X, xs, xzp, ys, yzp)``: every axis of X is Y's."""

    op_types = ("QLinearSigmoid", "QLinearLeakyRelu")
    domain = CONTRIB

    def couplings(self, node: ir.Node) -> list[Coupling] | Blocked:
        x, y = node.inputs[0], node.outputs[0]
        shape = static_shape(x)
        if shape is None:
            return self.blocked(node, BlockReason.UNKNOWN_SHAPE, "input rank unknown")
        for index in range(1, 5):
            if not is_per_tensor(optional_input(node, index)):
                return self.blocked(node, BlockReason.UNSUPPORTED_ATTRIBUTE,
                                    f"input {index} is not per tensor")
        return [identity((x, a), (y, a)) for a in range(len(shape))]

    def refine_shapes(self, node: ir.Node) -> bool:
        return fill_shape(node.outputs[0], _dims(node.inputs[0]), _output_dtype(node, 4))


@register
class QLinearAveragePoolRule(PoolRule):
    """``QLinearAveragePool(X, xs, xzp, ys, yzp)`` in NCHW: an AveragePool on quantized values."""

    op_types = ("QLinearAveragePool",)
    domain = CONTRIB

    def couplings(self, node: ir.Node) -> list[Coupling] | Blocked:
        if attr(node, "channels_last", 0):
            return self.blocked(node, BlockReason.UNSUPPORTED_ATTRIBUTE, "channels_last")
        for index in range(1, 5):
            if not is_per_tensor(optional_input(node, index)):
                return self.blocked(node, BlockReason.UNSUPPORTED_ATTRIBUTE,
                                    f"input {index} is not per tensor")
        return super().couplings(node)

    def refine_shapes(self, node: ir.Node) -> bool:
        import onnx

        x, dims = node.inputs[0], _dims(node.inputs[0])
        if dims is None or x.dtype is None or attr(node, "channels_last", 0):
            return False
        proto = ir.serde.serialize_node(node)
        proto.op_type, proto.domain = "AveragePool", ""
        del proto.input[1:]
        kept = [a for a in proto.attribute if a.name != "channels_last"]
        del proto.attribute[:]
        proto.attribute.extend(kept)
        float_type = onnx.TensorProto.FLOAT  # AveragePool's schema takes float types only
        types = {x.name: onnx.helper.make_tensor_type_proto(float_type, dims)}
        try:
            schema = onnx.defs.get_schema("AveragePool", 19, "")
            inferred = onnx.shape_inference.infer_node_outputs(schema, proto, types)
        except Exception:  # an inference error leaves the shape unknown (the rule then blocks)
            return False
        found = inferred.get(node.outputs[0].name)
        if found is None or not found.tensor_type.HasField("shape"):
            return False
        out = [d.dim_value if d.HasField("dim_value") else None
               for d in found.tensor_type.shape.dim]
        return fill_shape(node.outputs[0], out, _output_dtype(node, 4))
