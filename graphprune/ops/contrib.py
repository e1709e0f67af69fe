"""onnxruntime contrib ops (``com.microsoft``) that its offline optimizer writes into CNNs.

``FusedConv``: ``Y = act(Conv(X, W, B) + Z)``, ``Z`` optional with Y's shape.
``FusedGemm``: ``Y = act(Gemm(A, B, C))``.

``act`` is one of Relu, Sigmoid, Tanh, LeakyRelu, Clip, HardSigmoid (``activation`` attribute):
elementwise, so the channels are those of the plain op, and ``Z`` is coupled axis by axis to Y.
ONNX has no schema for these ops, so output shapes are inferred as for the plain op.
"""

from __future__ import annotations

import onnx_ir as ir

from graphprune.core import Blocked, BlockReason
from graphprune.ops.base import Coupling, identity, static_shape
from graphprune.ops.conv import ConvRule
from graphprune.ops.linear import GemmRule
from graphprune.ops.registry import register

CONTRIB = "com.microsoft"
_ACTIVATIONS = frozenset({"Relu", "Sigmoid", "Tanh", "LeakyRelu", "Clip", "HardSigmoid", ""})
_FUSED_ATTRIBUTES = ("activation", "activation_params", "activation_alpha", "activation_beta",
                     "activation_gamma")


def _infer_as(node: ir.Node, op_type: str, num_inputs: int, opset: int) -> bool:
    """Fills the output's shape and type by ONNX inference of ``op_type`` on the same inputs."""
    import onnx

    y, x = node.outputs[0], node.inputs[0]
    inputs = [v for v in node.inputs[:num_inputs] if v is not None]
    if x is None or any(v.dtype is None or v.shape is None for v in inputs):
        return False
    if y.shape is not None and all(isinstance(d, int) for d in y.shape) and y.dtype is not None:
        return False
    proto = ir.serde.serialize_node(node)
    proto.op_type, proto.domain = op_type, ""
    del proto.input[num_inputs:]
    kept = [a for a in proto.attribute if a.name not in _FUSED_ATTRIBUTES]
    del proto.attribute[:]
    proto.attribute.extend(kept)
    types = {}
    for v in inputs:
        dims = [d if isinstance(d, int) else (d.value if isinstance(d, ir.SymbolicDim) else None)
                for d in v.shape]
        types[v.name] = onnx.helper.make_tensor_type_proto(int(v.dtype), dims)
    try:
        schema = onnx.defs.get_schema(op_type, opset, "")
        inferred = onnx.shape_inference.infer_node_outputs(schema, proto, types)
    except Exception:  # an inference error leaves the shape unknown (the rule then blocks)
        return False
    tensor_type = inferred.get(y.name)
    if tensor_type is None or not tensor_type.tensor_type.HasField("shape"):
        return False
    dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
            for d in tensor_type.tensor_type.shape.dim]
    y.shape, y.dtype = ir.Shape(dims), x.dtype
    return True


def _check_activation(rule, node: ir.Node) -> Blocked | None:
    activation = node.attributes.get("activation")
    name = "" if activation is None else activation.value
    if name not in _ACTIVATIONS:
        return rule.blocked(node, BlockReason.UNSUPPORTED_ATTRIBUTE, f"activation {name}")
    return None


@register
class FusedConvRule(ConvRule):
    """``com.microsoft::FusedConv``: a Conv whose sum input ``Z`` holds the output's channels."""

    op_types = ("FusedConv",)
    domain = CONTRIB

    def couplings(self, node: ir.Node) -> list[Coupling] | Blocked:
        refused = _check_activation(self, node)
        if refused is not None:
            return refused
        found = super().couplings(node)
        z = node.inputs[3] if len(node.inputs) > 3 else None
        if isinstance(found, Blocked) or z is None:
            return found
        y = node.outputs[0]
        zs, ys = static_shape(z), static_shape(y)
        if zs is None or len(zs) != len(ys):
            return self.blocked(node, BlockReason.UNKNOWN_SHAPE, "sum input shape unknown")
        return found + [identity((z, axis), (y, axis)) for axis in range(len(ys))]

    def refine_shapes(self, node: ir.Node) -> bool:
        return _infer_as(node, "Conv", 3, 11)


@register
class FusedGemmRule(GemmRule):
    """``com.microsoft::FusedGemm``: a Gemm followed by an elementwise activation."""

    op_types = ("FusedGemm",)
    domain = CONTRIB

    def couplings(self, node: ir.Node) -> list[Coupling] | Blocked:
        return _check_activation(self, node) or super().couplings(node)

    def refine_shapes(self, node: ir.Node) -> bool:
        return _infer_as(node, "Gemm", 3, 13)
