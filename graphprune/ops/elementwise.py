"""Elementwise ops: every axis of the output is the same axis of the inputs (with broadcasting)."""

from __future__ import annotations

import onnx_ir as ir

from graphprune.core import Blocked, BlockReason
from graphprune.ops.base import Coupling, Rule, broadcast_couplings, identity, static_shape
from graphprune.ops.registry import register


@register
class UnaryRule(Rule):
    """``Y[i...] = f(X[i...])``: each output axis is the identity of the same input axis.

    Extra scalar inputs (Clip bounds, Dropout ratio) have no axes. A Dropout mask output has the
    shape of X and is coupled the same way.
    """

    op_types = (
        "Relu", "LeakyRelu", "Clip", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "Elu", "Selu",
        "Celu", "Softplus", "Softsign", "Erf", "Gelu", "Mish", "ThresholdedRelu", "Identity",
        "Dropout", "Cast", "Neg", "Abs", "Exp", "Sqrt", "Floor", "Ceil", "Round", "Sign",
        "Reciprocal", "Log", "Sin", "Cos", "Not", "IsNaN", "IsInf",
    )  # fmt: skip

    def couplings(self, node: ir.Node) -> list[Coupling] | Blocked:
        x = node.inputs[0]
        shape = static_shape(x)
        if shape is None:
            return self.blocked(node, BlockReason.UNKNOWN_SHAPE, "input rank unknown")
        return [
            identity((x, axis), (out, axis))
            for out in node.outputs
            if out is not None and out.name
            for axis in range(len(shape))
        ]


@register
class BroadcastRule(Rule):
    """``Y = f(A, B, ...)`` with numpy broadcasting (Add, Sub, Mul, Div, PRelu, Sum, Max, ...).

    An input axis equal to the output axis is coupled by identity: a per-channel constant
    ``[C,1,1]`` is sliced with the tensor it meets, and an SE gate ``[N,C,1,1]`` keeps the channels
    of the tensor it scales. A size-1 input axis broadcasts and is left free. Comparisons, logic
    ops and ``Where`` (attention masks) broadcast the same way.
    """

    op_types = ("Add", "Sub", "Mul", "Div", "PRelu", "Sum", "Max", "Min", "Mean", "Pow", "Where",
                "Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual", "And", "Or", "Xor")

    def couplings(self, node: ir.Node) -> list[Coupling] | Blocked:
        return broadcast_couplings(node, [v for v in node.inputs if v is not None])


@register
class ConstantRule(Rule):
    """``Constant``: a parameter like an initializer (paddle2onnx keeps weights here).

    Its axes are free: whatever couples to them slices the tensor.
    """

    op_types = ("Constant",)

    def couplings(self, node: ir.Node) -> list[Coupling] | Blocked:
        out = node.outputs[0]
        shape = static_shape(out)
        return [identity((out, a), (out, a)) for a in range(len(shape or ()))]
