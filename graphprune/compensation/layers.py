"""The linear layers of a model as numpy weights and biases that passes can edit.

A layer is a node whose rule describes it as ``Y = W * X + b`` (:meth:`Rule.linear
<graphprune.ops.base.Rule.linear>`): Conv, ConvTranspose, Gemm, MatMul by a constant. No op
names here: the rule says which input is the weight, which axes are channels and where a bias
goes. Edits copy a weight shared with another node first (:func:`replace_constant_input`), and
a bias is added where the layer had none (as the op's bias input, or an ``Add`` after it when
the op has no bias input).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx_ir as ir

from graphprune.ops import lookup
from graphprune.ops.base import Linear, constant_array, replace_constant_input


@dataclasses.dataclass
class Layer:
    """One linear node and how to read and write its weight and bias.

    Attributes:
        node: The node.
        linear: What its rule says (weight index, channel axes, bias slot, groups).
    """

    node: ir.Node
    linear: Linear

    @property
    def x(self) -> ir.Value:
        return self.node.inputs[self.linear.data]

    @property
    def y(self) -> ir.Value:
        return self.node.outputs[0]

    @property
    def out_channels(self) -> int:
        return int(self.weight().shape[self.linear.out_axis]) * (
            self.linear.groups if self.linear.out_axis == 1 else 1)

    def weight(self) -> np.ndarray:
        """``W`` as stored (float, the rule's layout)."""
        return constant_array(self.node.inputs[self.linear.weight])

    def set_weight(self, array: np.ndarray) -> None:
        """Replaces ``W`` (same shape; a weight shared with other nodes is copied first)."""
        replace_constant_input(self.node, self.linear.weight, np.asarray(array))

    def bias(self) -> np.ndarray:
        """The bias per output channel (zeros when the layer has none), float64."""
        value = self._bias_value()
        count = self.out_channels
        if value is None:
            return np.zeros(count)
        return np.broadcast_to(constant_array(value).astype(np.float64).reshape(-1),
                               (count,)).copy()

    def set_bias(self, array: np.ndarray) -> None:
        """Sets the bias per output channel, adding one where the layer has none."""
        array = np.asarray(array, dtype=self.weight().dtype).reshape(-1)
        index = self.linear.bias
        if index is None:
            self._add_after(array)
            return
        value = self._bias_value()
        if value is not None and constant_array(value).shape == array.shape:
            replace_constant_input(self.node, index, array)
            return
        graph = self.node.graph
        name = _fresh(graph, f"{self.node.name or self.y.name}.bias")
        new = _initializer(name, array)
        graph.register_initializer(new)
        if len(self.node.inputs) <= index:
            self.node.resize_inputs(index + 1)
        self.node.replace_input_with(index, new)

    def _bias_value(self) -> ir.Value | None:
        index = self.linear.bias
        if index is None:
            return self._add_bias_value()
        inputs = self.node.inputs
        return inputs[index] if index < len(inputs) else None

    def _add_bias_value(self) -> ir.Value | None:
        """The constant of an ``Add`` this module put after the layer, if any."""
        for user, _ in self.y.uses():
            if user.meta.get(_ADDED) is self.node:
                return user.inputs[1]
        return None

    def _add_after(self, array: np.ndarray) -> None:
        existing = self._add_bias_value()
        if existing is not None:
            user = next(u for u, _ in self.y.uses() if u.meta.get(_ADDED) is self.node)
            replace_constant_input(user, 1, array.reshape(_channel_shape(self, array)))
            return
        graph = self.node.graph
        y = self.y
        b = _initializer(_fresh(graph, f"{y.name}.bias"),
                         array.reshape(_channel_shape(self, array)))
        graph.register_initializer(b)
        users = list(y.uses())  # before the Add becomes one
        out = ir.Value(name=_fresh(graph, f"{y.name}.biased"), shape=y.shape, type=y.type)
        add = ir.Node("", "Add", [y, b], outputs=[out], name=_fresh_node(graph, y.name))
        add.meta[_ADDED] = self.node
        graph.insert_after(self.node, add)
        for user, i in users:
            user.replace_input_with(i, out)
        if y.is_graph_output():  # the graph's output keeps its name; the layer's is renamed
            outputs = graph.outputs
            position = next(k for k, v in enumerate(outputs) if v is y)
            name = y.name
            y.name = _fresh(graph, f"{name}.unbiased")
            y.meta[_SOURCE] = name
            out.name = name
            outputs[position] = out


_ADDED = "graphprune.compensation.bias_of"
_SOURCE = "graphprune.compensation.source_name"


def source_name(value: ir.Value) -> str:
    """The name ``value`` had in the original model, through biases added after layers.

    An ``Add`` put after a layer computes what the layer's output was (compensated): its output
    stands for that value; a layer output renamed to give a graph output's name to the ``Add``
    keeps its old name here.
    """
    if _SOURCE in value.meta:
        return value.meta[_SOURCE]
    producer = value.producer()
    if producer is not None and producer.meta.get(_ADDED) is not None:
        return source_name(producer.inputs[0])
    return value.name


def _channel_shape(layer: Layer, array: np.ndarray) -> tuple[int, ...]:
    """A per-channel vector's shape broadcasting against ``Y`` on its channel axis."""
    rank = len(layer.y.shape) if layer.y.shape is not None else 1
    return (len(array), *[1] * (rank - 1 - layer.linear.y_axis % rank))


def _initializer(name: str, array: np.ndarray) -> ir.Value:
    array = np.ascontiguousarray(array)
    value = ir.Value(name=name, const_value=ir.Tensor(array, name=name))
    value.shape, value.dtype = ir.Shape(array.shape), value.const_value.dtype
    return value


def _fresh(graph: ir.Graph, base: str) -> str:
    names = {v.name for v in graph.initializers.values()} | {
        o.name for n in graph for o in n.outputs} | {v.name for v in graph.inputs}
    name, k = base, 1
    while name in names:
        name, k = f"{base}.{k}", k + 1
    return name


def _fresh_node(graph: ir.Graph, base: str) -> str:
    names = {n.name for n in graph}
    name, k = f"{base}.bias", 1
    while name in names:
        name, k = f"{base}.bias.{k}", k + 1
    return name


def linear_layers(model: ir.Model) -> list[Layer]:
    """Every linear layer of the main graph, in graph (topological) order."""
    layers = []
    for node in model.graph:
        rule = lookup(node)
        linear = rule.linear(node) if rule is not None else None
        if linear is not None:
            layers.append(Layer(node, linear))
    return layers
