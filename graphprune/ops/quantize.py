"""Quantization: QDQ pairs, dynamic quantization and the integer Conv/MatMul families.

``DequantizeLinear``:     ``Y = (X - zp) * scale``
``QuantizeLinear``:       ``Y = saturate(round(X / scale) + zp)``
``DynamicQuantizeLinear``: ``Y = QuantizeLinear(X, s, zp)``, ``s = (max(0, X) - min(0, X)) / 255``
``ConvInteger``:  ``Y[N,Co,...] = (X - xzp) * (W[Co, Ci/g, k...] - wzp[Co])`` in int32
``QLinearConv``:  ``Y = requantize((X - xzp) * (W - wzp[Co]) + B[Co], xs * ws[Co] / ys, yzp)``
``MatMulInteger``: ``Y[...,M,N] = (A - azp) @ (B[...,K,N] - bzp[N])`` in int32
``QLinearMatMul``: ``Y = requantize((A - azp) @ (B - bzp[N]), as * bs[N] / ys, yzp)``

In the quantized domain the real zero is the zero point, and so is a removed entry of the masked
original (see :meth:`Rule.masked_values`): an integer weight's removed entries become its zero
point, scales and zero points keep their values. The integer sums are exact, so the pruned model
computes the same integers as the masked original.

1. QuantizeLinear/DequantizeLinear are elementwise; a 1-D scale and zero point along ``axis`` are
   sliced with that axis. Blocked quantization (``block_size``, opset 21) blocks.
2. DynamicQuantizeLinear is elementwise: its range always includes 0, so removed channels that
   are 0 in the masked original leave the scale and zero point unchanged (exact when the removed
   channels lie within the kept channels' range; zeros always do). It blocks when a chain of
   unary ops right before it maps 0 elsewhere (Sigmoid): the removed channels would widen the
   range of the masked original.
3. ConvInteger/QLinearConv are Conv with other input positions; a 1-D weight scale, weight zero
   point and int32 bias are sliced with the output channels. The input and output quantization
   parameters are per tensor.
4. MatMulInteger/QLinearMatMul are MatMul; a 1-D B scale and zero point (per column) are sliced
   with the output's last axis; the A and Y parameters are per tensor.

The QOperator contrib ops of onnxruntime are in ``ops/quantize_contrib.py``.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from graphprune.core import Blocked, BlockReason
from graphprune.ops.base import (
    Coupling,
    Rule,
    attr,
    constant_array,
    identity,
    normalize_axis,
    static_shape,
)
from graphprune.ops.conv import ConvRule
from graphprune.ops.elementwise import UnaryRule
from graphprune.ops.linear import MatMulRule
from graphprune.ops.registry import lookup, register


def optional_input(node: ir.Node, index: int) -> ir.Value | None:
    return node.inputs[index] if index < len(node.inputs) else None


def is_per_tensor(value: ir.Value | None) -> bool | None:
    """True for an absent, scalar or one-element parameter; None when its rank is unknown."""
    if value is None:
        return True
    shape = static_shape(value)
    return None if shape is None else shape in ((), (1,))


def _zero_point_along(node: ir.Node, zp_index: int, axis: int, rank: int) -> np.ndarray | None:
    """A constant zero point shaped to broadcast along ``axis`` of a rank-``rank`` tensor."""
    zp = constant_array(optional_input(node, zp_index))
    if zp is None or zp.size == 1:
        return None if zp is None else zp.reshape(())
    shape = [1] * rank
    shape[axis] = -1
    return zp.reshape(shape)


def zero_point_fills(node: ir.Node, data: int, zp: int, axis: int, keep: tuple[int, ...]) -> dict:
    """``masked_values`` of a quantized constant at ``data`` and parameters ``keep`` left as is."""
    found: dict[int, np.ndarray | None] = dict.fromkeys(keep)
    values = constant_array(optional_input(node, data))
    fill = None if values is None else _zero_point_along(node, zp, axis, values.ndim)
    if fill is not None:
        found[data] = fill
    return found


@register
class QuantizeDequantizeRule(Rule):
    """Elementwise, with per-channel scale and zero point coupled to the quantized axis."""

    op_types = ("DequantizeLinear", "QuantizeLinear")

    def couplings(self, node: ir.Node) -> list[Coupling] | Blocked:
        x, y = node.inputs[0], node.outputs[0]
        shape = static_shape(x)
        if shape is None:
            return self.blocked(node, BlockReason.UNKNOWN_SHAPE, "input rank unknown")
        if attr(node, "block_size", 0):
            return self.blocked(node, BlockReason.UNSUPPORTED_ATTRIBUTE, "blocked quantization")
        found = [identity((x, a), (y, a)) for a in range(len(shape))]
        params = [v for v in node.inputs[1:3] if v is not None]
        scale_shape = static_shape(params[0]) if params else ()
        if scale_shape is None:
            return self.blocked(node, BlockReason.UNKNOWN_SHAPE, "scale rank unknown")
        if len(scale_shape) == 0 or scale_shape == (1,):
            return found
        if len(scale_shape) != 1:
            return self.blocked(node, BlockReason.UNSUPPORTED_ATTRIBUTE, "scale is not 1-D")
        axis = normalize_axis(attr(node, "axis", 1), len(shape))
        if not 0 <= axis < len(shape):
            return self.blocked(node, BlockReason.UNSUPPORTED_ATTRIBUTE, f"axis {axis} unknown")
        return found + [identity((p, 0), (x, axis)) for p in params]

    def int32_parameters(self, node: ir.Node) -> bool:
        """A DequantizeLinear of an int32 constant reads a stored bias (QDQ: ``Conv(.., B)``)."""
        return node.op_type == "DequantizeLinear"

    def masked_values(self, node: ir.Node) -> dict[int, np.ndarray | None]:
        """A quantized X stands for 0 at its zero point; a scale (which may divide) stays."""
        rank = len(static_shape(node.inputs[0]) or ())
        axis = normalize_axis(attr(node, "axis", 1), rank) if rank else 0
        if node.op_type == "QuantizeLinear":
            return {1: None, 2: None}
        return zero_point_fills(node, 0, 2, axis, keep=(1, 2))


@register
class DynamicQuantizeLinearRule(Rule):
    """``(Y, scale, zp) = DynamicQuantizeLinear(X)``: every axis of X is the same axis of Y."""

    op_types = ("DynamicQuantizeLinear",)
    since_version = 11

    def couplings(self, node: ir.Node) -> list[Coupling] | Blocked:
        x, y = node.inputs[0], node.outputs[0]
        shape = static_shape(x)
        if shape is None:
            return self.blocked(node, BlockReason.UNKNOWN_SHAPE, "input rank unknown")
        moved = _zero_moved_by(x)
        if moved is not None:
            detail = (f"{moved.op_type} '{moved.name}' maps 0 elsewhere: removed channels "
                      "would change the quantization range")
            return self.blocked(node, BlockReason.AXIS_NOT_PRESERVED, detail)
        return [identity((x, a), (y, a)) for a in range(len(shape))]


def _zero_moved_by(value: ir.Value) -> ir.Node | None:
    """The first node of the chain of unary ops producing ``value`` with ``f(0) != 0``, if any."""
    node = value.producer()
    while node is not None and isinstance(lookup(node), UnaryRule):
        if not _maps_zero_to_zero(node):
            return node
        node = node.inputs[0].producer()
    return None


def _maps_zero_to_zero(node: ir.Node) -> bool:
    """Runs the unary ``node`` on a zero (other inputs must be constants) with onnx.reference."""
    from onnx.reference import ReferenceEvaluator

    proto = ir.serde.serialize_node(node)
    x = node.inputs[0]
    dtype = x.dtype.numpy() if x.dtype is not None else np.float32
    feeds = {proto.input[0]: np.zeros(1, dtype)}
    for value, name in zip(node.inputs[1:], proto.input[1:], strict=False):
        if name:
            array = constant_array(value)
            if array is None:
                return False
            feeds[name] = array
    try:
        outputs = ReferenceEvaluator(proto).run(None, feeds)
    except Exception:  # an op the reference cannot run is not known to keep 0
        return False
    return bool(np.all(np.asarray(outputs[0]) == 0))


class PerTensorInputs:
    """Blocks a node whose per-tensor quantization inputs are not scalars."""

    per_tensor_params: tuple[int, ...] = ()

    def per_tensor_block(self, node: ir.Node) -> Blocked | None:
        for index in self.per_tensor_params:
            per_tensor = is_per_tensor(optional_input(node, index))
            if per_tensor is None:
                return Rule.blocked(node, BlockReason.UNKNOWN_SHAPE, f"input {index} rank unknown")
            if not per_tensor:
                detail = f"input {index} is not per tensor"
                return Rule.blocked(node, BlockReason.UNSUPPORTED_ATTRIBUTE, detail)
        return None


class _IntegerConvRule(PerTensorInputs, ConvRule):
    """A Conv in the integer domain; input ``weight_zp_index`` is W's zero point (scalar or Co)."""

    weight_zp_index = 3

    def couplings(self, node: ir.Node) -> list[Coupling] | Blocked:
        return self.per_tensor_block(node) or super().couplings(node)

    def masked_values(self, node: ir.Node) -> dict[int, np.ndarray | None]:
        keep = tuple(i for i in self.per_output_channel_params if i != self.bias_index)
        return zero_point_fills(node, self.weight_index, self.weight_zp_index, 0, keep)


@register
class ConvIntegerRule(_IntegerConvRule):
    """``ConvInteger(x, w, x_zero_point, w_zero_point)``: no bias; int32 output."""

    op_types = ("ConvInteger",)
    since_version = 10
    bias_index = None
    per_output_channel_params = (3,)
    per_tensor_params = (2,)


@register
class QLinearConvRule(_IntegerConvRule):
    """``QLinearConv(x, xs, xzp, w, ws, wzp, ys, yzp, B)``: W at 3, int32 bias at 8."""

    op_types = ("QLinearConv",)
    since_version = 10
    weight_index = 3
    bias_index = 8
    weight_zp_index = 5
    per_output_channel_params = (4, 5)
    per_tensor_params = (1, 2, 6, 7)


class _IntegerMatMulRule(PerTensorInputs, MatMulRule):
    """A MatMul in the integer domain with per-column (1-D, along N) parameters of B."""

    per_column_params: tuple[int, ...] = ()
    b_zp_index = 3
    a_zp_index = 2

    def couplings(self, node: ir.Node) -> list[Coupling] | Blocked:
        found = self.per_tensor_block(node) or super().couplings(node)
        if isinstance(found, Blocked):
            return found
        b, y = node.inputs[self.b_index], node.outputs[0]
        columns = static_shape(b)[-1]
        for index in self.per_column_params:
            param = optional_input(node, index)
            per_tensor = is_per_tensor(param)
            if per_tensor is None:
                return self.blocked(node, BlockReason.UNKNOWN_SHAPE, f"input {index} rank unknown")
            if per_tensor and columns != 1:
                continue
            if static_shape(param) != (columns,):
                detail = f"input {index} is neither per tensor nor per column"
                return self.blocked(node, BlockReason.UNSUPPORTED_ATTRIBUTE, detail)
            found.append(identity((param, 0), (y, len(static_shape(y)) - 1)))
        return found

    def masked_values(self, node: ir.Node) -> dict[int, np.ndarray | None]:
        b_rank = len(static_shape(node.inputs[self.b_index]) or ())
        found = zero_point_fills(node, self.b_index, self.b_zp_index, b_rank - 1,
                                 self.per_column_params)
        a_zp = constant_array(optional_input(node, self.a_zp_index))
        if a_zp is not None and a_zp.size == 1:
            found[self.a_index] = a_zp.reshape(())
        return found


@register
class MatMulIntegerRule(_IntegerMatMulRule):
    """``MatMulInteger(A, B, a_zero_point, b_zero_point)``: int32 output."""

    op_types = ("MatMulInteger",)
    since_version = 10
    per_column_params = (3,)
    per_tensor_params = (2,)


@register
class QLinearMatMulRule(_IntegerMatMulRule):
    """``QLinearMatMul(a, as, azp, b, bs, bzp, ys, yzp)``: B at 3."""

    op_types = ("QLinearMatMul",)
    since_version = 10
    b_index = 3
    a_zp_index = 2
    b_zp_index = 5
    per_column_params = (4, 5)
    per_tensor_params = (1, 2, 6, 7)
