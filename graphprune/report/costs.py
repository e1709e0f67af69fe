"""Cost counting: parameters and multiply-accumulates per node, per op type and in total.

MACs come from each op's rule (:meth:`graphprune.ops.base.Rule.macs`), evaluated at concrete
shapes: a symbolic graph-input dim takes its size from ``shapes`` (``--input-shape``) or the
defaults the measurement inputs use (batch 1, image H and W 224), and ONNX shape inference
propagates them through a weightless copy of the graph. Subgraph bodies count as often as their
node's rule says (:meth:`~graphprune.ops.base.Rule.body_repeats`): If its larger branch, Loop its
static trip count, Scan its scan length; what is not exact is said in :attr:`Costs.notes`.

Parameters are the elements of every constant tensor (initializers, also those listed as graph
inputs, and ``Constant`` nodes, in subgraphs too) of a float type or an integer type of at most
16 bits (int8/uint8 weights and their zero points; scales are floats), plus int32 tensors that a
node with MACs reads (the bias of QLinearConv). int64/int32 shape and index tensors, bools and
strings are not parameters. Each tensor counts once, for the first node that reads it.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator, Mapping
from pathlib import Path

import onnx
import onnx_ir as ir

from graphprune.errors import UsageError
from graphprune.ops import lookup
from graphprune.ops.base import Dims, PlanView, Rule, static_shape

_NO_RULE = Rule()  # an op without a rule: no MACs, each subgraph counted once
_GRAPH_ATTRIBUTES = (ir.AttributeType.GRAPH, ir.AttributeType.GRAPHS)
Shapes = Mapping[str, tuple[int, ...]]


@dataclasses.dataclass(frozen=True)
class NodeCost:
    """Parameters a node reads first and MACs it computes (its subgraphs' included)."""

    name: str
    op_type: str
    params: int
    macs: int


@dataclasses.dataclass(frozen=True)
class Costs:
    """Parameter and MAC totals of a model, by op type and by main-graph node (with a cost).

    ``shapes`` holds the concrete graph-input shapes the MACs were counted at; ``notes`` says
    where a count is not exact (a Loop without a static trip count, an unknown input dim, ...).
    """

    params: int
    macs: int
    macs_by_op: dict[str, int]
    params_by_op: dict[str, int] = dataclasses.field(default_factory=dict)
    nodes: tuple[NodeCost, ...] = ()
    shapes: dict[str, list[int]] = dataclasses.field(default_factory=dict)
    notes: tuple[str, ...] = ()

    def as_dict(self) -> dict:
        return {
            "params": self.params,
            "macs": self.macs,
            "macs_by_op": dict(self.macs_by_op),
            "params_by_op": dict(self.params_by_op),
            "nodes": [dataclasses.asdict(n) for n in self.nodes],
            "shapes": {k: list(v) for k, v in self.shapes.items()},
            "notes": list(self.notes),
        }


# --- concrete shapes -------------------------------------------------------------------------


def _declared_inputs(model: ir.Model) -> list[tuple[str, tuple[int | str, ...]]]:
    """Graph inputs that are not initializers, with symbolic dims by name ("?" when unnamed)."""
    found = []
    for value in model.graph.inputs:
        if value.const_value is not None or value.name in model.graph.initializers:
            continue
        dims = () if value.shape is None else tuple(  # some exporters write -1 for "dynamic"
            d if isinstance(d, int) and d >= 0 else (getattr(d, "value", None) or "?")
            for d in value.shape)
        found.append((value.name, dims))
    return found


def input_shapes(model: ir.Model, shapes: Shapes | None = None
                 ) -> tuple[dict[str, tuple[int, ...]], list[str]]:
    """Every graph input's concrete shape, and notes for symbolic dims counted as 1.

    Sizes come from ``shapes`` (``""`` names the only input), else the measurement defaults; a
    symbolic dim those do not cover counts as 1, with a note. Raises UsageError when ``shapes``
    names no input or disagrees with a static dim.
    """
    from graphprune.bench.inputs import _default_dim, _resolve  # moving to graphprune/inputs

    declared = _declared_inputs(model)
    given = dict(shapes or {})
    if "" in given:
        if len(declared) != 1:
            raise UsageError("--input-shape without NAME= needs a model with exactly one input "
                             f"(this one has {', '.join(n for n, _ in declared)})")
        given[declared[0][0]] = given.pop("")
    unknown = set(given) - {name for name, _ in declared}
    if unknown:
        raise UsageError(f"--input-shape names no input of the model: {', '.join(sorted(unknown))}"
                         f" (inputs: {', '.join(n for n, _ in declared)})")
    resolved, notes = {}, []
    for name, dims in declared:
        if name in given:
            resolved[name] = _resolve(name, dims, given[name])
            continue
        concrete = []
        for axis, d in enumerate(dims):
            try:
                concrete.append(d if isinstance(d, int) else _default_dim(name, dims, axis))
            except UsageError:
                concrete.append(1)
                notes.append(f"input '{name}': dim '{d}' counted as 1 (give --input-shape)")
        resolved[name] = tuple(concrete)
    return resolved, notes


def _stripped_proto(model: ir.Model) -> onnx.ModelProto:
    """The model as a proto without large initializer data (they become typed graph inputs)."""
    from onnx_ir.passes.common import _c_api_utils  # what onnx-ir's ShapeInferencePass uses

    return _c_api_utils.call_onnx_api(lambda proto: proto, model)


def _concrete_copy(model: ir.Model, inputs: dict[str, tuple[int, ...]]) -> ir.Model:
    """A weightless copy of ``model`` whose graph inputs have ``inputs``' shapes, re-inferred."""
    from graphprune._io import infer_shapes

    proto = _stripped_proto(model)
    declared = {v.name for v in model.graph.inputs}
    kept = {t.name for t in proto.graph.initializer}  # small ones: constants, not inputs
    inputs_proto = [v for v in proto.graph.input if v.name in declared or v.name not in kept]
    del proto.graph.input[:]
    proto.graph.input.extend(inputs_proto)
    for value in proto.graph.input:
        if value.name in inputs:
            shape = value.type.tensor_type.shape
            del shape.dim[:]
            for size in inputs[value.name]:
                shape.dim.add().dim_value = size
    del proto.graph.value_info[:]  # inferred at the symbolic shapes; inferred again below
    return infer_shapes(ir.serde.deserialize_model(proto))


def _is_concrete(shape) -> bool:
    return shape is not None and all(isinstance(d, int) and d >= 0 for d in shape)


def _value_maps(model: ir.Model, copy: ir.Model | None) -> dict[int, dict[str, ir.Value]]:
    """Graph id in ``model`` -> the same graph's values in ``copy``, by name."""
    if copy is None:
        return {}
    return {id(g): ir.convenience.create_value_mapping(h)
            for g, h in zip(model.graphs(), copy.graphs(), strict=False)}


def _concrete_dims(value: ir.Value, scopes: tuple[dict[str, ir.Value], ...]
                   ) -> tuple[int, ...] | None:
    if value.const_value is not None:
        return tuple(int(d) for d in value.const_value.shape)
    for scope in scopes:
        found = scope.get(value.name)
        if found is not None:
            if _is_concrete(found.shape):
                return tuple(found.shape)
            break
    shape = static_shape(value)
    return tuple(shape) if _is_concrete(shape) else None


def _dims_in(scopes: tuple[dict[str, ir.Value], ...], plan: PlanView | None = None) -> Dims:
    """``dims`` for a graph whose copy's values (innermost scope first) are ``scopes``.

    With a ``plan``, every axis that loses channels has its kept count instead.
    """

    def dims(value: ir.Value | None) -> tuple[int, ...] | None:
        shape = None if value is None else _concrete_dims(value, scopes)
        if shape is None or plan is None:
            return shape
        kept = [plan.kept(value, axis) for axis in range(len(shape))]
        return tuple(d if k is None else len(k) for d, k in zip(shape, kept, strict=True))

    return dims


# --- counting --------------------------------------------------------------------------------


def _bodies(node: ir.Node, name: str) -> list[ir.Graph]:
    attribute = node.attributes.get(name)
    if attribute is None or attribute.type not in _GRAPH_ATTRIBUTES:
        return []
    return [attribute.value] if attribute.type == ir.AttributeType.GRAPH else list(attribute.value)


def _subgraphs(node: ir.Node) -> Iterator[ir.Graph]:
    for name in node.attributes:
        yield from _bodies(node, name)


def _constant_info(value: ir.Value) -> tuple[ir.DataType, int] | None:
    """(dtype, element count) of an initializer or ``Constant`` output, else None."""
    tensor = value.const_value
    if tensor is None:
        node = value.producer()
        if node is None or node.op_type != "Constant" or node.domain not in ("", "ai.onnx"):
            return None
        for name, attribute in node.attributes.items():
            if name == "value":
                tensor = attribute.as_tensor()
            elif name in ("value_float", "value_floats"):
                return ir.DataType.FLOAT, len(attribute.value) if name.endswith("s") else 1
        if tensor is None:
            return None  # value_int(s), value_string(s), sparse: not parameters
    return tensor.dtype, Rule.numel(tuple(int(d) for d in tensor.shape))


def _param_size(value: ir.Value, reader_computes: bool, dims: Dims) -> int:
    info = _constant_info(value)
    if info is None:
        return 0
    dtype, size = info
    shape = dims(value)
    size = size if shape is None else Rule.numel(shape)
    if dtype.is_floating_point() or (dtype.is_integer() and dtype.bitwidth <= 16):
        return size
    return size if dtype == ir.DataType.INT32 and reader_computes else 0


class _Counter:
    """Walks a model once for parameters; MACs per graph are cached (If compares branches)."""

    def __init__(self, maps: dict[int, dict[str, ir.Value]], plan: PlanView | None) -> None:
        self.maps = maps
        self.plan = plan
        self.seen: set[int] = set()
        self.notes: dict[str, None] = {}
        self.graph_macs: dict[int, dict[str, int]] = {}
        self.unknown: dict[str, int] = {}  # op type -> nodes whose rule lacked a shape

    def unknown_note(self) -> tuple[str, ...]:
        if not self.unknown:
            return ()
        ops = ", ".join(f"{n} {op}" for op, n in sorted(self.unknown.items()))
        return (f"shapes unknown at these input sizes, counted 0 MACs: {ops}",)

    def scopes(self, graph: ir.Graph, outer: tuple) -> tuple:
        own = self.maps.get(id(graph))
        return ((own,) if own is not None else ()) + outer

    def node_macs(self, node: ir.Node, scopes: tuple) -> dict[str, int]:
        """MACs by op type of one node, its subgraphs times their repeats included."""
        rule = lookup(node) or _NO_RULE
        dims = _dims_in(scopes, self.plan)
        by_op = {node.op_type: rule.macs(node, dims)}
        if not by_op[node.op_type] and type(rule).macs is not Rule.macs:
            self.unknown[node.op_type] = self.unknown.get(node.op_type, 0) + 1
        if any(a.type in _GRAPH_ATTRIBUTES for a in node.attributes.values()):
            def body_macs(graph: ir.Graph) -> int:
                return sum(self.macs_by_op(graph, scopes).values())

            repeats, note = rule.body_repeats(node, dims, body_macs)
            if note:
                self.notes[note] = None
            for name, count in repeats.items():
                for graph in _bodies(node, name):
                    for op, macs in self.macs_by_op(graph, scopes).items():
                        by_op[op] = by_op.get(op, 0) + macs * count
        return by_op

    def macs_by_op(self, graph: ir.Graph, outer: tuple) -> dict[str, int]:
        if id(graph) not in self.graph_macs:
            scopes, by_op = self.scopes(graph, outer), {}
            for node in graph:
                for op, macs in self.node_macs(node, scopes).items():
                    by_op[op] = by_op.get(op, 0) + macs
            self.graph_macs[id(graph)] = by_op
        return self.graph_macs[id(graph)]

    def node_params(self, node: ir.Node, scopes: tuple, by_op: dict[str, int]) -> int:
        """Parameters first read by ``node`` or inside its subgraphs (by reader op in ``by_op``)."""
        dims = _dims_in(scopes, self.plan)
        computes = (lookup(node) or _NO_RULE).macs(node, dims) > 0
        total = 0
        for value in node.inputs:
            if value is None or id(value) in self.seen:
                continue
            self.seen.add(id(value))
            size = _param_size(value, computes, dims)
            if size:
                by_op[node.op_type] = by_op.get(node.op_type, 0) + size
                total += size
        for graph in _subgraphs(node):
            inner = self.scopes(graph, scopes)
            total += sum(self.node_params(n, inner, by_op) for n in graph)
        return total


def count_costs(model: ir.Model, shapes: Shapes | None = None,
                plan: PlanView | None = None) -> Costs:
    """Counts parameters and MACs of ``model`` at concrete input shapes (see module docstring).

    Args:
        model: The model (not changed).
        shapes: Sizes of graph inputs by name, as ``--input-shape`` gives them.
        plan: A candidate pruning plan of ``model``: the costs the model would have with the
            plan's channels removed, without rewriting it.
    """
    inputs, notes = input_shapes(model, shapes)
    copy = None
    declared = {name: dims for name, dims in _declared_inputs(model)}
    if any(declared[n] != s for n, s in inputs.items()):
        try:
            copy = _concrete_copy(model, inputs)
        except Exception as exc:  # inference failures leave the model's own shapes in use
            notes.append(f"shape inference at the input shapes failed ({type(exc).__name__})")
    counter = _Counter(_value_maps(model, copy), plan)
    scopes = counter.scopes(model.graph, ())
    nodes, macs_by_op, params_by_op = [], {}, {}
    for index, node in enumerate(model.graph):
        by_op = counter.node_macs(node, scopes)
        params = counter.node_params(node, scopes, params_by_op)
        for op, macs in by_op.items():
            if macs:
                macs_by_op[op] = macs_by_op.get(op, 0) + macs
        cost = NodeCost(node.name or f"{node.op_type}_{index}", node.op_type, params,
                        sum(by_op.values()))
        if cost.params or cost.macs:
            nodes.append(cost)
    return Costs(sum(n.params for n in nodes), sum(macs_by_op.values()), macs_by_op, params_by_op,
                 tuple(nodes), {k: list(v) for k, v in inputs.items()},
                 tuple(notes) + tuple(counter.notes) + counter.unknown_note())


def file_size(path: str | os.PathLike) -> int:
    """Bytes of the model file plus every external data file it names."""
    path = Path(path)
    graph = onnx.load(str(path), load_external_data=False).graph
    constants = (a.t for n in graph.node for a in n.attribute if a.HasField("t"))
    tensors = [*graph.initializer, *constants]
    locations = {
        entry.value
        for tensor in tensors
        if tensor.data_location == onnx.TensorProto.EXTERNAL
        for entry in tensor.external_data
        if entry.key == "location"
    }
    return path.stat().st_size + sum((path.parent / loc).stat().st_size for loc in locations
                                     if (path.parent / loc).is_file())
