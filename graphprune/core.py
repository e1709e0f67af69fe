"""The contract between op rules and the analysis: refusals, couplings, plans and value facts.

``graphprune.ops`` (what each operator does to channels) and ``graphprune.analysis`` (what the
couplings of a whole graph add up to) both import this module and never each other's internals:
rules return :class:`Coupling`, :class:`Choice`, :class:`SplitChoice` or :class:`Blocked`; the
analysis reads them and answers rules' rewrites through :class:`PlanView`. The analysis finds
rules only through the ``graphprune.ops`` package (``lookup``). The value facts both sides read
(static shapes, constants, static values, opsets) live here too. This module imports no other
graphprune module (tests/test_layering.py checks it).
"""

from __future__ import annotations

import dataclasses
import enum
import weakref
from collections.abc import Callable

import numpy as np
import onnx_ir as ir

AxisRef = tuple[ir.Value, int]
Dims = Callable[[ir.Value | None], "tuple[int, ...] | None"]
"""A value's concrete shape at the input shapes in use (None when unknown); see Rule.macs."""
BodyMacs = Callable[[ir.Graph], int]
STATIC_VALUE_KEY = "graphprune.static_value"  # value.meta: a small value known before running
_PROTO_DIMS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # proto tensor -> its dims
ONNX_DOMAINS = ("", "ai.onnx")


# --- refusals ----------------------------------------------------------------------------------


class BlockReason(enum.Enum):
    """Why a channel axis is left alone."""

    UNKNOWN_OP = "unknown_op"
    GRAPH_IO = "graph_io"
    EXCLUDED = "excluded"
    SUBGRAPH = "subgraph"
    UNKNOWN_SHAPE = "unknown_shape"
    DYNAMIC_SIZE = "dynamic_size"
    DYNAMIC_SHAPE_INPUT = "dynamic_shape_input"
    AXIS_NOT_PRESERVED = "axis_not_preserved"
    UNSUPPORTED_ATTRIBUTE = "unsupported_attribute"


@dataclasses.dataclass(frozen=True)
class Blocked:
    """A rule's refusal: every channel axis of ``node`` (or only ``axes``) stays untouched.

    Attributes:
        reason: The reason code; tests assert on it.
        node: Name of the node that refused ("" for graph inputs/outputs).
        op_type: The node's op type (or "graph").
        detail: One line for humans.
    """

    reason: BlockReason
    node: str
    op_type: str
    detail: str = ""

    def describe(self) -> str:
        where = f"{self.op_type} '{self.node}'" if self.node else self.op_type
        text = f"{self.reason.value} at {where}"
        return f"{text}: {self.detail}" if self.detail else text


# --- couplings ---------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class Coupling:
    """Element ``ia[i]`` of axis ``a`` is the same channel as element ``ib[i]`` of axis ``b``.

    ``ia``/``ib`` set to None means the identity map over two axes of equal length. ``blocks``
    marks a map that joins channels into whole blocks (attention heads): groups on its axes are
    counted in blocks.
    """

    a: AxisRef
    b: AxisRef
    ia: np.ndarray | None = None
    ib: np.ndarray | None = None
    blocks: bool = False


@dataclasses.dataclass(frozen=True)
class Choice:
    """Exactly one of ``options`` is declared: the first whose ``a`` axis has free channels.

    Merging axes into one (``[N,H,W,C] -> [N, H*W*C]``) can keep any one input axis's channels
    dense in the output, but only one: an output element cannot belong to two channels. The
    analysis picks the option whose input channels are not already blocked (the channel axis, not
    the spatial ones), the first option when none or several are.
    """

    options: tuple[Coupling, ...]


@dataclasses.dataclass(frozen=True)
class SplitChoice:
    """A split ``[.., m*n] -> [.., m, n]``: channel ``c`` goes to the major axis or the minor one.

    ``major`` maps ``c -> c // n`` (whole blocks of ``n`` channels, such as attention heads, are
    one channel of the major axis); ``minor`` maps ``c -> c % n`` (the same offset in every
    block, as a channel shuffle needs). The axis not taken stays whole. The analysis takes the
    major option when the blocks stay whole wherever they go: not blocked, and merged back (if at
    all) as the major axis of a merge, as attention's head merge does; otherwise the minor one.
    """

    major: Coupling  # its ``blocks`` is set: see :class:`Coupling`
    minor: Coupling


def identity(a: AxisRef, b: AxisRef) -> Coupling:
    return Coupling(a, b)


def mapped(a: AxisRef, b: AxisRef, ia: np.ndarray, ib: np.ndarray) -> Coupling:
    return Coupling(a, b, np.asarray(ia, dtype=np.int64), np.asarray(ib, dtype=np.int64))


class PlanView:
    """What a rule's rewrite may ask of a pruning plan (implemented in analysis.plan)."""

    def kept(self, value: ir.Value, axis: int) -> np.ndarray | None:
        """Sorted kept indices of ``value``'s ``axis``, or None when nothing is removed there."""
        raise NotImplementedError

    def new_size(self, value: ir.Value, axis: int) -> int | None:
        """The axis's size after pruning (None when unknown); equal to the old size if untouched."""
        raise NotImplementedError


# --- value facts -------------------------------------------------------------------------------


def is_onnx_domain(node: ir.Node) -> bool:
    return node.domain in ONNX_DOMAINS


def _constant_node(value: ir.Value) -> ir.Node | None:
    node = value.producer()
    if node is None or node.op_type != "Constant" or node.domain not in ONNX_DOMAINS:
        return None
    return node


def constant_array(value: ir.Value | None) -> np.ndarray | None:
    """The value's constant contents (initializer or ``Constant`` node output), else None."""
    if value is None or value.is_graph_input():
        return None
    if value.const_value is not None:
        return value.const_value.numpy()
    node = _constant_node(value)
    if node is None:
        return None
    for name, attr in node.attributes.items():
        if name == "value":
            return attr.as_tensor().numpy()
        if name in ("value_ints", "value_floats"):
            return np.asarray(list(attr.value))
        if name in ("value_int", "value_float"):
            return np.asarray(attr.value)
    return None


def known_array(value: ir.Value | None) -> np.ndarray | None:
    """A constant's contents, or a value known from static dims (see analysis.static_values)."""
    array = constant_array(value)
    if array is None and value is not None:
        array = value.meta.get(STATIC_VALUE_KEY)
    return array


def is_constant(value: ir.Value | None) -> bool:
    if value is None or value.is_graph_input():
        return False
    if value.const_value is not None:
        return True
    return _constant_node(value) is not None


def static_shape(value: ir.Value | None) -> tuple[int | None, ...] | None:
    """The value's shape with symbolic dims as None, or None when the rank is unknown."""
    if value is None:
        return None
    tensor = value.const_value
    if tensor is not None:
        return _tensor_shape(tensor)
    shape = value.shape
    if shape is None:
        array = constant_array(value)
        return None if array is None else tuple(array.shape)
    return tuple([d if d.__class__ is int else None for d in shape.dims])


def _tensor_shape(tensor) -> tuple[int, ...]:
    """A constant's dims, kept for as long as the tensor lives.

    A tensor read from a proto builds a new shape object on every access.
    """
    if not isinstance(tensor, ir.serde.TensorProtoTensor):
        return tuple(int(d) for d in tensor.shape)
    dims = _PROTO_DIMS.get(tensor)
    if dims is None:
        dims = _PROTO_DIMS[tensor] = tuple([int(d) for d in tensor.shape.dims])
    return dims


def symbolic_shape(value: ir.Value | None) -> tuple[int | str | None, ...] | None:
    """Like :func:`static_shape`, but symbolic dims keep their name."""
    shape = static_shape(value)
    if shape is None or value.shape is None or value.const_value is not None:
        return shape
    dims = []
    for d in value.shape:
        name = d.value if isinstance(d, ir.SymbolicDim) else None
        dims.append(d if isinstance(d, int) else (name or None))
    return tuple(dims)


def normalize_axis(axis: int, rank: int) -> int:
    return axis + rank if axis < 0 else axis


def opset_of(node: ir.Node) -> int:
    """The opset of ``node``'s domain: its own version, else the enclosing graph's import."""
    if node.version is not None:
        return node.version
    graph = node.graph
    while graph is not None and not isinstance(graph, ir.Graph):
        graph = graph.graph
    domain = "" if node.domain == "ai.onnx" else node.domain
    return graph.opset_imports.get(domain, 1) if graph is not None else 1
