"""Value domains: which values each graph input may take for the model to be run validly.

An integer input is followed through the ops that pass its values on (Cast, Unsqueeze, Reshape,
Concat, ..., Add/Sub of a constant, which shifts them) to the ops that index a table with it:

- ``Gather(data, indices)``, ``GatherElements``: ``indices`` in ``[0, data.shape[axis])``;
- ``OneHot(indices, depth)``: ``[0, depth)``; ``GatherND``: ``[0, min(data.shape[:k]))``;
- ``com.microsoft`` ``EmbedLayerNormalization``: ids and segment ids in the rows of their tables.

Values are drawn in the intersection of the ranges of every table reached (the smallest table
wins: ``token_type_ids`` on a 2-row table are 0 or 1). An input named like a mask, or one reaching
a Where condition, a logical op, or a Mul/Sub after a Cast to float (an attention mask) is a
*mask* (0/1, mostly ones); a bool input is 0/1 too. An integer input compared for equality with
a constant (``Equal(sr, 16000)`` choosing a branch) takes that constant. Other integer inputs
get small non-negative values and float inputs standard-normal ones. Tables are read by shape
only: no tensor data is loaded, and shapes come from initializers, ``Constant`` nodes and ONNX
shape inference.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator

import numpy as np
import onnx
from onnx import numpy_helper

from graphprune.inputs.specs import declared_inputs

SMALL_INT_HIGH = 2  # integer inputs that index nothing: values in [0, 2)

# ops whose outputs carry the values of these inputs unchanged (None: every input)
_PASS_THROUGH: dict[str, tuple[int, ...] | None] = {
    "Cast": None, "CastLike": (0,), "Identity": None, "Unsqueeze": (0,), "Squeeze": (0,),
    "Reshape": (0,), "Flatten": (0,), "Expand": (0,), "Transpose": (0,), "Slice": (0,),
    "Tile": (0,), "Concat": None, "Split": (0,), "Gather": (0,), "GatherElements": (0,),
    "Max": None, "Min": None, "Abs": None, "Where": (1, 2),
}
_SHIFTS = {"Add": 1, "Sub": -1}  # x + c / x - c: the values before are those after, shifted
_LOGICAL = {"And", "Or", "Not", "Xor"}
_MASK_ARITHMETIC = {"Mul", "Sub"}


@dataclasses.dataclass(frozen=True)
class ValueDomain:
    """The values one input takes: ``kind`` is float, index, mask, choice, int or bool.

    ``low``/``high`` bound an index or int input (``high`` exclusive); ``table`` names the
    smallest table an index input reaches.
    """

    kind: str
    low: int = 0
    high: int | None = None
    table: str | None = None

    def as_dict(self) -> dict:
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}


class _Graph:
    """The nodes of a model (subgraphs included), their consumers and the static shapes."""

    def __init__(self, proto: onnx.ModelProto) -> None:
        try:
            proto = onnx.shape_inference.infer_shapes(proto)
        except Exception:  # a model shape inference cannot handle: shapes we read stay partial
            pass
        self.consumers: dict[str, list[tuple[onnx.NodeProto, int]]] = {}
        self.shapes: dict[str, tuple[int | None, ...]] = {}
        self.constants: dict[str, onnx.TensorProto] = {}
        graphs = list(_graphs(proto.graph))
        for graph in graphs:
            self._read_graph(graph)

    def _read_graph(self, graph: onnx.GraphProto) -> None:
        for tensor in graph.initializer:
            self.constants[tensor.name] = tensor
            self.shapes[tensor.name] = tuple(tensor.dims)
        for info in (*graph.input, *graph.value_info, *graph.output):
            dims = info.type.tensor_type.shape.dim
            if info.type.tensor_type.HasField("shape"):
                self.shapes.setdefault(info.name, tuple(
                    d.dim_value if d.HasField("dim_value") else None for d in dims))
        for node in graph.node:
            for index, name in enumerate(node.input):
                if name:
                    self.consumers.setdefault(name, []).append((node, index))
            if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
                self.constants[node.output[0]] = node.attribute[0].t
                self.shapes[node.output[0]] = tuple(node.attribute[0].t.dims)

    def dim(self, name: str, axis: int) -> int | None:
        shape = self.shapes.get(name)
        if shape is None or not -len(shape) <= axis < len(shape):
            return None
        return shape[axis]

    def scalar(self, name: str) -> int | None:
        """A small integer constant's value (shift amounts, OneHot depth), else None."""
        tensor = self.constants.get(name)
        if tensor is None or tensor.data_location == onnx.TensorProto.EXTERNAL:
            return None
        array = numpy_helper.to_array(tensor)
        if array.size != 1 or not np.issubdtype(array.dtype, np.number):
            return None
        value = array.reshape(()).item()
        return int(value) if float(value).is_integer() else None


def _graphs(graph: onnx.GraphProto) -> Iterator[onnx.GraphProto]:
    yield graph
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.type == onnx.AttributeProto.GRAPH:
                yield from _graphs(attribute.g)
            for sub in attribute.graphs:
                yield from _graphs(sub)


def _attr(node: onnx.NodeProto, name: str, default: int) -> int:
    for attribute in node.attribute:
        if attribute.name == name:
            return attribute.i
    return default


# Index consumers: (node, input index, graph) -> exclusive bound of the values there, or None.
def _gather(node, index, graph) -> int | None:
    return graph.dim(node.input[0], _attr(node, "axis", 0)) if index == 1 else None


def _gather_nd(node, index, graph) -> int | None:
    if index != 1:
        return None
    batch = _attr(node, "batch_dims", 0)
    shape = graph.shapes.get(node.input[0])
    if not shape or len(shape) <= batch or any(d is None for d in shape[batch:]):
        return None
    return min(shape[batch:])  # the index tuple's length is not known here: the tightest bound


def _one_hot(node, index, graph) -> int | None:
    return graph.scalar(node.input[1]) if index == 0 and len(node.input) > 1 else None


_EMBED_TABLES = {0: 2, 1: 4, 8: 3}  # EmbedLayerNormalization: ids -> word, segment, position


def _embed_layer_norm(node, index, graph) -> int | None:
    table = _EMBED_TABLES.get(index)
    if table is None or len(node.input) <= table or not node.input[table]:
        return None
    return graph.dim(node.input[table], 0)


_INDEXERS: dict[tuple[str, str], Callable] = {
    ("", "Gather"): _gather,
    ("", "GatherElements"): _gather,
    ("", "GatherND"): _gather_nd,
    ("", "OneHot"): _one_hot,
    ("com.microsoft", "EmbedLayerNormalization"): _embed_layer_norm,
}
_MASK_INPUTS = {("com.microsoft", "EmbedLayerNormalization"): 7, ("com.microsoft", "Attention"): 3}


def _domain(node: onnx.NodeProto) -> str:
    return "" if node.domain in ("", "ai.onnx") else node.domain


@dataclasses.dataclass
class _Reach:
    low: int = 0
    high: int | None = None
    table: str | None = None
    mask: bool = False
    choices: list[int] = dataclasses.field(default_factory=list)

    def bound(self, high: int, shift: int, table: str) -> None:
        """Values ``v + shift`` must lie in ``[0, high)``."""
        self.low = max(self.low, -shift)
        if self.high is None or high - shift < self.high:
            self.high, self.table = high - shift, table


def _follow(graph: _Graph, name: str) -> _Reach:
    """Walks the uses of ``name`` forward through value-preserving ops (see module docstring)."""
    reach = _Reach()
    todo, seen = [(name, 0, False)], set()
    while todo:
        value, shift, cast = todo.pop()
        if (value, shift, cast) in seen or len(seen) > 10_000:
            continue
        seen.add((value, shift, cast))
        for node, index in graph.consumers.get(value, ()):
            _visit(graph, node, index, shift, cast, reach, todo)
    return reach


def _visit(graph: _Graph, node, index: int, shift: int, cast: bool, reach: _Reach, todo) -> None:
    key = (_domain(node), node.op_type)
    indexer = _INDEXERS.get(key)
    high = indexer(node, index, graph) if indexer else None
    if high is not None and high > 0:
        reach.bound(high, shift, node.input[0] if node.op_type != "OneHot" else node.name)
    if _MASK_INPUTS.get(key) == index or key[1] in _LOGICAL:
        reach.mask = True
    if key == ("", "Where") and index == 0:
        reach.mask = True
    if key[1] in _MASK_ARITHMETIC and cast and not key[0]:
        reach.mask = True
    if key == ("", "Equal") and len(node.input) == 2:
        other = graph.scalar(node.input[1 - index])
        if other is not None:
            reach.choices.append(other - shift)
    if key[0]:
        return
    passes = _PASS_THROUGH.get(node.op_type, ())
    if node.op_type in _SHIFTS and len(node.input) == 2:
        amount = graph.scalar(node.input[1 - index])
        if amount is not None and (index == 0 or node.op_type == "Add"):
            passes = None
            shift += _SHIFTS[node.op_type] * amount
    if passes is None or index in passes:
        now_cast = cast or node.op_type == "Cast" and _to_float(node)
        todo.extend((out, shift, now_cast) for out in node.output if out)


def _to_float(node: onnx.NodeProto) -> bool:
    to = _attr(node, "to", 0)
    return bool(to) and np.issubdtype(onnx.helper.tensor_dtype_to_np_dtype(to), np.floating)


def value_domains(proto: onnx.ModelProto, names: list[str] | None = None
                  ) -> dict[str, ValueDomain]:
    """The domain of every graph input of ``proto`` (or of ``names``); see the module docstring."""
    graph = None
    domains = {}
    for name, _, dtype in declared_inputs(proto):
        if names is not None and name not in names:
            continue
        is_float = np.issubdtype(dtype, np.floating)
        if is_float and "mask" not in name.lower():
            domains[name] = ValueDomain("float")
            continue
        graph = graph or _Graph(proto)
        domains[name] = _classify(name, dtype, _follow(graph, name))
    return domains


def _classify(name: str, dtype: np.dtype, reach: _Reach) -> ValueDomain:
    if reach.high is not None and not np.issubdtype(dtype, np.floating) and dtype != np.bool_:
        return ValueDomain("index", reach.low, max(reach.high, reach.low + 1), reach.table)
    if reach.mask or "mask" in name.lower():
        return ValueDomain("mask", 0, 2)
    if reach.choices and np.issubdtype(dtype, np.integer):
        return ValueDomain("choice", reach.choices[0], reach.choices[0] + 1)
    if dtype == np.bool_:
        return ValueDomain("bool", 0, 2)
    if np.issubdtype(dtype, np.floating):
        return ValueDomain("float")
    return ValueDomain("int", reach.low, reach.low + SMALL_INT_HIGH)
