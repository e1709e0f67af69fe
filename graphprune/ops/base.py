"""Rule base classes and the helpers rules share (constants, attributes, broadcasting).

A rule looks at one node and declares which tensor axes are *coupled*: element ``ia[i]`` of axis
``a`` and element ``ib[i]`` of axis ``b`` must be removed together. Every input or output axis a
rule does not mention is blocked by the analysis, so a rule only ever has to state what it knows.
The records a rule returns (:class:`Coupling`, :class:`Blocked`, ...) are the contract with the
analysis and live in :mod:`graphprune.core`; they are re-exported here for the rules.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import ClassVar

import numpy as np
import onnx_ir as ir

from graphprune.core import (  # re-exported: rules import the contract from here or core
    STATIC_VALUE_KEY,
    AxisRef,
    Blocked,
    BlockReason,
    BodyMacs,
    Choice,
    Coupling,
    Dims,
    PlanView,
    SplitChoice,
    constant_array,
    identity,
    is_constant,
    known_array,
    mapped,
    normalize_axis,
    opset_of,
    static_shape,
    symbolic_shape,
)

__all__ = [
    "STATIC_VALUE_KEY", "AxisRef", "Blocked", "BlockReason", "BodyMacs", "Choice", "Coupling",
    "Dims", "PlanView", "Rule", "SplitChoice", "attr", "broadcast_couplings", "constant_array",
    "fill_shape", "identity", "is_constant", "known_array", "mapped", "normalize_axis",
    "opset_of", "private_producer", "replace_constant_input", "set_constant", "static_shape",
    "symbolic_shape",
]


# --- constants -----------------------------------------------------------------------------


def set_constant(value: ir.Value, array: np.ndarray) -> None:
    """Replaces a constant's contents in place, keeping its name and kind (initializer/node)."""
    tensor = ir.Tensor(np.ascontiguousarray(array), name=value.name)
    if value.const_value is not None:
        value.const_value = tensor
    else:
        node = value.producer()
        assert node is not None
        for name in [n for n in node.attributes if n.startswith("value")]:
            del node.attributes[name]
        node.attributes["value"] = ir.AttrTensor("value", tensor)
    value.shape = ir.Shape(array.shape)


def replace_constant_input(node: ir.Node, index: int, array: np.ndarray) -> None:
    """Gives ``node`` its own constant for input ``index`` holding ``array``.

    A shape constant shared with other nodes is copied rather than edited, so the other users
    keep their values.
    """
    old = node.inputs[index]
    assert old is not None
    if is_constant(old) and len(old.uses()) == 1 and not old.is_graph_output():
        set_constant(old, array.astype(constant_array(old).dtype))
        return
    array = array.astype(known_array(old).dtype)
    graph = node.graph
    assert graph is not None
    name = _fresh_name(graph, f"{old.name}_{node.name or node.op_type}")
    new = ir.Value(name=name, const_value=ir.Tensor(np.ascontiguousarray(array), name=name))
    new.shape = ir.Shape(array.shape)
    new.dtype = new.const_value.dtype
    graph.register_initializer(new)
    node.replace_input_with(index, new)


def private_producer(node: ir.Node, index: int) -> ir.Node:
    """The producer of ``node``'s input ``index``, copied first when other nodes read its output.

    A shape built by a node (a ``Concat`` of dims) and shared by several consumers (the Q, K and
    V reshapes of an attention block) must not be edited for one of them: the copy, inserted
    just before ``node``, reads the same inputs and serves ``node`` alone.
    """
    value = node.inputs[index]
    producer = value.producer()
    assert producer is not None and node.graph is not None
    if len(value.uses()) == 1 and not value.is_graph_output():
        return producer
    graph = node.graph
    names = {v.name for n in graph for v in n.outputs} | set(graph.initializers)
    stem = f"{value.name}_{node.name or node.op_type}"
    name, k = stem, 0
    while name in names:
        k += 1
        name = f"{stem}_{k}"
    copy = ir.Node(producer.domain, producer.op_type, list(producer.inputs),
                   [a for a in producer.attributes.values()], num_outputs=len(producer.outputs),
                   version=producer.version, name=f"{producer.name or producer.op_type}_{name}")
    for old, new in zip(producer.outputs, copy.outputs, strict=True):
        new.name = name if old is value else f"{name}_{old.name}"
        new.shape, new.dtype, new.type = old.shape, old.dtype, old.type
    graph.insert_before(node, copy)
    node.replace_input_with(index, copy.outputs[producer.outputs.index(value)])
    return copy


def fill_shape(value: ir.Value | None, dims, dtype: ir.DataType | None) -> bool:
    """Gives ``value`` the shape ``dims`` where inference left it unknown; True when it changed.

    For ops ONNX has no schema for (contrib ops): no shape, or unknown dims, are replaced; a
    missing dtype becomes ``dtype``.
    """
    if value is None or not value.name or dims is None:
        return False
    if value.shape is not None and all(isinstance(d, int) for d in value.shape):
        return False
    value.shape = ir.Shape(list(dims))
    if value.dtype is None:
        value.dtype = dtype
    return True


def _fresh_name(graph: ir.Graph, stem: str) -> str:
    name, k = stem, 0
    while name in graph.initializers:
        k += 1
        name = f"{stem}_{k}"
    return name


# --- the context a rule reads from ------------------------------------------------------------


def attr(node: ir.Node, name: str, default=None):
    a = node.attributes.get(name)
    return default if a is None else a.value


def broadcast_couplings(node: ir.Node, inputs: Sequence[ir.Value]) -> list[Coupling] | Blocked:
    """Numpy broadcasting: an input axis equal to the output's is the identity; size 1 is free."""
    out = node.outputs[0]
    out_shape = static_shape(out)
    if out_shape is None:
        return Rule.blocked(node, BlockReason.UNKNOWN_SHAPE, "output rank unknown")
    couplings = []
    for value in inputs:
        shape = static_shape(value)
        if shape is None:
            return Rule.blocked(node, BlockReason.UNKNOWN_SHAPE, "input rank unknown")
        shift = len(out_shape) - len(shape)
        for axis, size in enumerate(shape):
            if size == 1 and out_shape[axis + shift] != 1:
                continue  # broadcast along this axis: any output element may be removed
            couplings.append(identity((value, axis), (out, axis + shift)))
    return couplings


# --- rules -------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Linear:
    """How a node computes ``Y = W * X + b`` channel-wise, for passes that edit the weights.

    Compensation reads this to rescale or refit a layer without knowing op names. Indices are
    input positions of the node; axes are axes of the weight ``W`` or of ``X``/``Y``.

    Attributes:
        data: Input index of ``X``.
        weight: Input index of the constant weight ``W``.
        in_axis: Axis of ``W`` contracted with ``X``'s channels (per group when grouped).
        out_axis: Axis of ``W`` along ``Y``'s channels.
        bias: Input index of the per-output-channel bias, present or not (None: the op has no
            bias input; a pass adds an ``Add`` after it instead).
        x_axis: Channel axis of ``X``.
        y_axis: Channel axis of ``Y``.
        groups: Channel groups (1: dense; ``W``'s ``in_axis`` then holds ``Ci / groups``).
    """

    data: int
    weight: int
    in_axis: int
    out_axis: int
    bias: int | None
    x_axis: int = 1
    y_axis: int = 1
    groups: int = 1


class Rule:
    """Channel knowledge of one op family.

    Subclasses set ``op_types`` (and ``domain``/opset bounds when needed), implement
    :meth:`couplings`, and override :meth:`rewrite` when attributes or shape constants depend on
    channel counts.
    """

    op_types: ClassVar[tuple[str, ...]] = ()
    domain: ClassVar[str] = ""
    since_version: ClassVar[int] = 1
    until_version: ClassVar[int | None] = None
    cost_only: ClassVar[bool] = False  # declares MACs only; every channel axis it touches blocks

    def couplings(self, node: ir.Node) -> list[Coupling | Choice] | Blocked:
        raise NotImplementedError

    def rewrite(self, node: ir.Node, plan: PlanView) -> None:
        """Updates attributes and shape constants after the channels in ``plan`` are removed."""
        del node, plan

    def refine_shapes(self, node: ir.Node) -> bool:
        """Fills output dims that ONNX shape inference left unknown; True when it changed any."""
        del node
        return False

    def linear(self, node: ir.Node) -> Linear | None:
        """``node`` as a linear layer over a constant weight (None: it is not one)."""
        del node
        return None

    def macs(self, node: ir.Node, dims: Dims) -> int:
        """Multiply-accumulates ``node`` computes at the concrete shapes ``dims`` gives (default 0).

        ``dims(value)`` is the value's shape with every dim an int, or None when it is unknown; a
        rule returns 0 when a shape it needs is None. Subgraph bodies are not counted here (see
        :meth:`body_repeats`).
        """
        del node, dims
        return 0

    def body_repeats(self, node: ir.Node, dims: Dims, body_macs: BodyMacs
                     ) -> tuple[dict[str, int], str]:
        """How many times each subgraph attribute of ``node`` runs, and a note ("" when exact).

        ``body_macs(graph)`` is the MACs of one run of a body. The default counts every body once
        and says so; control-flow rules (If, Loop, Scan) override it.
        """
        del dims, body_macs
        names = [n for n, a in node.attributes.items()
                 if a.type in (ir.AttributeType.GRAPH, ir.AttributeType.GRAPHS)]
        note = f"{node.op_type} '{node.name}': each subgraph counted once" if names else ""
        return dict.fromkeys(names, 1), note

    @staticmethod
    def numel(shape: Sequence[int] | None) -> int:
        """Element count of a concrete shape (0 when unknown)."""
        return 0 if shape is None else math.prod(int(d) for d in shape)  # exact, no overflow

    def int32_parameters(self, node: ir.Node) -> bool:
        """Whether the int32 constants ``node`` reads are weights (biases), not shapes or indices.

        The cost model counts them as parameters when this is True or ``node`` has MACs (the
        bias of QLinearConv); a dequantizer of stored weights overrides it (a QDQ int32 bias).
        """
        del node
        return False

    def masked_values(self, node: ir.Node) -> dict[int, np.ndarray | None]:
        """What removed entries of constant inputs become in the masked original, if not 0.

        Input index -> the value standing for zero, broadcastable to that input (a quantized
        weight's zero point), or None to leave the entries as they are (scales, zero points).
        """
        del node
        return {}

    @staticmethod
    def blocked(node: ir.Node, reason: BlockReason, detail: str = "") -> Blocked:
        return Blocked(reason, node.name or "", node.op_type, detail)
