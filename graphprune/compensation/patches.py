"""Im2col patches of a convolution, computed by the convolution itself.

A layer ``Y = W * X + b`` whose weight has kernel taps reads, at each output position, a patch
of ``C x K`` input values (``K`` taps). The patches are what a least-squares refit regresses
``Y`` on. Rather than re-deriving the op's strides, pads, dilations and auto-padding, the node is
copied into a one-node model with the same attributes, no bias, and the identity weight
``E[c*K + t, c, taps] = [taps == t]``: its output at every position is the patch there, channel
``c*K + t``, in the order of ``W.reshape(Co, C*K)``. No op names: the rule's
:class:`~graphprune.ops.base.Linear` says which inputs are data, weight and bias.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
from onnx import helper, numpy_helper

from graphprune.compensation.layers import Layer


def identity_kernel(channels: int, taps: tuple[int, ...]) -> np.ndarray:
    """``E[c*K + t, c, taps...] = 1`` where ``taps...`` is tap ``t`` (``K = prod(taps)``)."""
    count = int(np.prod(taps))
    kernel = np.zeros((channels * count, channels, count), np.float32)
    for c in range(channels):
        kernel[c * count + np.arange(count), c, np.arange(count)] = 1.0
    return kernel.reshape(channels * count, channels, *taps)


def patch_model(layer: Layer, channels: int, taps: tuple[int, ...],
                opsets: dict[str, int]) -> onnx.ModelProto:
    """A one-node model ``x [N, channels, ...] -> patches [N, channels * K, ...]`` of ``layer``.

    The layer must be a dense (one group) layer reading its channels on axis 1 with its weight
    laid out ``[out, in, taps...]``.
    """
    linear = layer.linear
    node = ir.serde.serialize_node(layer.node)
    inputs = list(node.input)
    inputs[linear.data], inputs[linear.weight] = "x", "identity"
    if linear.bias is not None and linear.bias < len(inputs):
        inputs[linear.bias] = ""
    while inputs and not inputs[-1]:
        inputs.pop()
    del node.input[:]
    node.input.extend(inputs)
    del node.output[:]
    node.output.append("patches")
    rank = 2 + len(taps)
    graph = helper.make_graph(
        [node], "patches",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [None] * rank)],
        [helper.make_tensor_value_info("patches", onnx.TensorProto.FLOAT, [None] * rank)],
        [numpy_helper.from_array(identity_kernel(channels, taps), "identity")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v)
                                                   for d, v in opsets.items()])


class Patches:
    """Runs :func:`patch_model` of one layer on its inputs (onnxruntime, CPU)."""

    def __init__(self, layer: Layer, channels: int, taps: tuple[int, ...],
                 opsets: dict[str, int]) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 4
        proto = patch_model(layer, channels, taps, opsets)
        self.session = ort.InferenceSession(proto.SerializeToString(), options,
                                            providers=["CPUExecutionProvider"])

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(None, {"x": np.ascontiguousarray(x, np.float32)})[0]
