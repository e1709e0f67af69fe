"""QDQ quantization: QuantizeLinear and DequantizeLinear.

``DequantizeLinear``: ``Y = (X - zp) * scale``
``QuantizeLinear``:   ``Y = saturate(round(X / scale) + zp)``

``scale`` and ``zp`` are scalars (per tensor) or 1-D along ``axis`` (per channel).

1. Every axis of X is the same axis of Y.
2. A per-channel scale and zero point belong to the channels of the quantized axis and are sliced
   with them (weights quantized per output channel; int32 biases with scale ``sx * sw[c]``).
   A removed channel's ``0 - 0`` times a zeroed scale is 0, as the oracle's masking needs.
3. Per-channel QuantizeLinear blocks: its scale divides, and a removed (zeroed) scale would make
   the masked original divide by zero.
4. Blocked quantization (``block_size``, opset 21) blocks.
"""

from __future__ import annotations

import onnx_ir as ir

from graphprune.analysis.blocked import Blocked, BlockReason
from graphprune.ops.base import Coupling, Rule, attr, identity, normalize_axis, static_shape
from graphprune.ops.registry import register


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
        if node.op_type == "QuantizeLinear":
            return self.blocked(node, BlockReason.UNSUPPORTED_ATTRIBUTE,
                                "per-channel QuantizeLinear (its scale divides)")
        if len(scale_shape) != 1:
            return self.blocked(node, BlockReason.UNSUPPORTED_ATTRIBUTE, "scale is not 1-D")
        axis = normalize_axis(attr(node, "axis", 1), len(shape))
        if not 0 <= axis < len(shape):
            return self.blocked(node, BlockReason.UNSUPPORTED_ATTRIBUTE, f"axis {axis} unknown")
        return found + [identity((p, 0), (x, axis)) for p in params]
