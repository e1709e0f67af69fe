"""Matrix products: Gemm and MatMul.

``Gemm``:   ``Y[M,N] = A[M,K] @ B[K,N] + C`` (``transA``/``transB`` swap the stored axes)
``MatMul``: ``Y[...,M,N] = A[...,M,K] @ B[...,K,N]`` with broadcast batch axes.

The contracted axis ``K`` of A and B is one channel axis; the ``N`` axis of B is the output's
last axis; the ``M`` axis of A is the output's second-to-last axis.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from graphprune.core import Blocked, BlockReason
from graphprune.ops.base import (
    Coupling,
    Dims,
    Linear,
    Rule,
    attr,
    broadcast_couplings,
    constant_array,
    identity,
    is_constant,
    static_shape,
)
from graphprune.ops.registry import register


@register
class GemmRule(Rule):
    """Gemm with optional transposes and a broadcast bias C."""

    op_types = ("Gemm",)
    a_index = 0  # input positions of A, B and the bias C
    b_index = 1
    c_index = 2

    def couplings(self, node: ir.Node) -> list[Coupling] | Blocked:
        a, b = node.inputs[self.a_index], node.inputs[self.b_index]
        c = node.inputs[self.c_index] if len(node.inputs) > self.c_index else None
        y = node.outputs[0]
        if static_shape(a) is None or static_shape(b) is None or static_shape(y) is None:
            return self.blocked(node, BlockReason.UNKNOWN_SHAPE, "gemm shapes unknown")
        a_m, a_k = (1, 0) if attr(node, "transA", 0) else (0, 1)
        b_k, b_n = (1, 0) if attr(node, "transB", 0) else (0, 1)
        found = [
            identity((a, a_m), (y, 0)),
            identity((a, a_k), (b, b_k)),
            identity((b, b_n), (y, 1)),
        ]
        if c is not None:
            bias = broadcast_couplings(node, [c])
            if isinstance(bias, Blocked):
                return bias
            found.extend(bias)
        return found

    def linear(self, node: ir.Node) -> Linear | None:
        """Gemm over a constant ``B`` with ``transA = 0`` (``Y`` channels on axis 1)."""
        b = node.inputs[self.b_index]
        if type(self) is not GemmRule or b is None or not is_constant(b) \
                or attr(node, "transA", 0):
            return None
        b_k, b_n = (1, 0) if attr(node, "transB", 0) else (0, 1)
        return Linear(self.a_index, self.b_index, b_k, b_n, self.c_index)

    def macs(self, node: ir.Node, dims: Dims) -> int:
        """``M * N * K``: the output's elements times the contracted length."""
        a, y = dims(node.inputs[self.a_index]), dims(node.outputs[0])
        if a is None or y is None or len(a) != 2:
            return 0
        return self.numel(y) * a[0 if attr(node, "transA", 0) else 1]


@register
class MatMulRule(Rule):
    """MatMul of rank >= 2 operands (1-D operands block)."""

    op_types = ("MatMul",)
    a_index = 0  # input positions of A and B (QLinearMatMul stores B at 3)
    b_index = 1

    def couplings(self, node: ir.Node) -> list[Coupling] | Blocked:
        a, b = node.inputs[self.a_index], node.inputs[self.b_index]
        y = node.outputs[0]
        sa, sb, sy = static_shape(a), static_shape(b), static_shape(y)
        if sa is None or sb is None or sy is None:
            return self.blocked(node, BlockReason.UNKNOWN_SHAPE, "matmul shapes unknown")
        if len(sa) < 2 or len(sb) < 2:
            return self.blocked(node, BlockReason.AXIS_NOT_PRESERVED, "1-D matmul operand")
        ra, rb, ry = len(sa), len(sb), len(sy)
        found = [
            identity((a, ra - 2), (y, ry - 2)),
            identity((a, ra - 1), (b, rb - 2)),
            identity((b, rb - 1), (y, ry - 1)),
        ]
        for value, shape in ((a, sa), (b, sb)):
            shift = ry - len(shape)
            for axis in range(len(shape) - 2):
                if not (shape[axis] == 1 and sy[axis + shift] != 1):
                    found.append(identity((value, axis), (y, axis + shift)))
        return found

    def linear(self, node: ir.Node) -> Linear | None:
        """MatMul of an activation by a constant 2-D ``B`` (channels on the last axis)."""
        b = node.inputs[self.b_index]
        if type(self) is not MatMulRule or b is None or not is_constant(b) \
                or is_constant(node.inputs[self.a_index]):
            return None
        shape = b.const_value.shape if b.const_value is not None else constant_array(b).shape
        if len(shape) != 2:
            return None
        return Linear(self.a_index, self.b_index, 0, 1, None, x_axis=-1, y_axis=-1)

    def macs(self, node: ir.Node, dims: Dims) -> int:
        """``batch * M * N * K`` from the operands alone (a 1-D A has no M, a 1-D B no N).

        Read from the inputs, so contrib variants without an ONNX shape schema count too.
        """
        a, b = dims(node.inputs[self.a_index]), dims(node.inputs[self.b_index])
        if not a or not b:
            return 0
        a, b = (a if len(a) > 1 else (1, *a)), (b if len(b) > 1 else (*b, 1))
        if attr(node, "transA", 0):
            a = (*a[:-2], a[-1], a[-2])
        if attr(node, "transB", 0):
            b = (*b[:-2], b[-1], b[-2])
        try:
            batch = np.broadcast_shapes(a[:-2], b[:-2])
        except ValueError:
            return 0
        return self.numel(batch) * a[-2] * a[-1] * b[-1]
