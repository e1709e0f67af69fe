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
node with MACs reads (the bias of QLinearConv) or whose rule says they are weights
(:meth:`~graphprune.ops.base.Rule.int32_parameters`: the int32 bias a QDQ DequantizeLinear
reads). int64/int32 shape and index tensors, bools and strings are not parameters. Each tensor
counts once, for the first node that reads it.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from pathlib import Path

import onnx
import onnx_ir as ir

from graphprune.ops import lookup
from graphprune.ops.base import Dims, PlanView, Rule, static_shape
from graphprune.report.concrete_shapes import (
    ShapeMap,
    Shapes,
    concrete_dims,
    concrete_maps,
    declared_inputs,
    graph_bodies,
    input_shapes,
    input_symbols,
)

_NO_RULE = Rule()  # an op without a rule: no MACs, each subgraph counted once
_GRAPH_ATTRIBUTES = (ir.AttributeType.GRAPH, ir.AttributeType.GRAPHS)


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


# --- counting --------------------------------------------------------------------------------


def _subgraphs(node: ir.Node) -> Iterator[ir.Graph]:
    for name in node.attributes:
        yield from graph_bodies(node, name)


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
    if value.const_value is tensor:  # its dims are cached per tensor
        return tensor.dtype, Rule.numel(static_shape(value))
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

    def __init__(self, maps: dict[int, ShapeMap], symbols: dict[str, int],
                 plan: PlanView | None, shapes: dict[int, tuple[int, ...] | None]) -> None:
        self.maps = maps
        self.symbols = symbols
        self.plan = plan
        self.seen: set[int] = set()
        self.notes: dict[str, None] = {}
        self.graph_macs: dict[int, dict[str, int]] = {}
        self.unknown: dict[str, int] = {}  # op type -> nodes whose rule lacked a shape
        self.own_macs: dict[int, int] = {}  # node id -> its own MACs (subgraphs excluded)
        self.shapes = shapes  # value id -> concrete shape (shared by the plans of one model)
        self._dims: dict[int, tuple[tuple, Dims]] = {}  # id(scopes) -> (scopes, its dims)
        self._rules: dict[int, Rule] = {}  # node id -> its rule

    def rule(self, node: ir.Node) -> Rule:
        found = self._rules.get(id(node))
        if found is None:
            found = self._rules[id(node)] = lookup(node) or _NO_RULE
        return found

    def dims_in(self, scopes: tuple[ShapeMap, ...]) -> Dims:
        """``dims`` for a graph whose copy's shapes (innermost scope first) are ``scopes``.

        With a plan, every axis that loses channels has its kept count instead. One function
        per ``scopes`` object (every node of a graph shares it).
        """
        found = self._dims.get(id(scopes))
        if found is None or found[0] is not scopes:
            found = self._dims[id(scopes)] = (scopes, self._make_dims(scopes))
        return found[1]

    def _make_dims(self, scopes: tuple[ShapeMap, ...]) -> Dims:
        plan, cache = self.plan, self.shapes

        def dims(value: ir.Value | None) -> tuple[int, ...] | None:
            if value is None:
                return None
            if id(value) not in cache:
                cache[id(value)] = concrete_dims(value, scopes, self.symbols)
            shape = cache[id(value)]
            if shape is None or plan is None:
                return shape
            kept = [plan.kept(value, axis) for axis in range(len(shape))]
            return tuple(d if k is None else len(k) for d, k in zip(shape, kept, strict=True))

        return dims

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
        rule = self.rule(node)
        dims = self.dims_in(scopes)
        by_op = {node.op_type: rule.macs(node, dims)}
        self.own_macs[id(node)] = by_op[node.op_type]
        if not by_op[node.op_type] and type(rule).macs is not Rule.macs:
            self.unknown[node.op_type] = self.unknown.get(node.op_type, 0) + 1
        if any(a.type in _GRAPH_ATTRIBUTES for a in node.attributes.values()):
            def body_macs(graph: ir.Graph) -> int:
                return sum(self.macs_by_op(graph, scopes).values())

            repeats, note = rule.body_repeats(node, dims, body_macs)
            if note:
                self.notes[note] = None
            for name, count in repeats.items():
                for graph in graph_bodies(node, name):
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
        dims = self.dims_in(scopes)
        rule = self.rule(node)
        if id(node) not in self.own_macs:
            self.own_macs[id(node)] = rule.macs(node, dims)
        computes = self.own_macs[id(node)] > 0 or rule.int32_parameters(node)
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


class CostModel:
    """A model's concrete shapes, inferred once; its costs, or those of candidate plans.

    Valid while the model is not rewritten (a plan is evaluated on the original graph).

    Args:
        model: The model (not changed).
        shapes: Sizes of graph inputs by name, as ``--input-shape`` gives them.
    """

    def __init__(self, model: ir.Model, shapes: Shapes | None = None) -> None:
        self.model = model
        self.inputs, notes = input_shapes(model, shapes)
        self.maps: dict[int, ShapeMap] = {}
        declared = dict(declared_inputs(model))
        if any(declared[n] != shape for n, shape in self.inputs.items()):
            try:
                self.maps = concrete_maps(model, self.inputs)
            except Exception as exc:  # inference failures leave the model's own shapes in use
                notes.append(f"shape inference at the input shapes failed ({type(exc).__name__})")
        self.notes = tuple(notes)
        self.symbols = input_symbols(model, self.inputs)
        self._shapes: dict[int, tuple[int, ...] | None] = {}

    def dims(self, plan: PlanView | None = None) -> Dims:
        """Concrete shapes of main-graph values, with ``plan``'s kept counts where it prunes."""
        counter = _Counter(self.maps, self.symbols, plan, self._shapes)
        return counter.dims_in(counter.scopes(self.model.graph, ()))

    def costs(self, plan: PlanView | None = None) -> Costs:
        """Costs of the model, or of the model with ``plan``'s channels removed."""
        counter = _Counter(self.maps, self.symbols, plan, self._shapes)
        scopes = counter.scopes(self.model.graph, ())
        nodes, macs_by_op, params_by_op = [], {}, {}
        for index, node in enumerate(self.model.graph):
            by_op = counter.node_macs(node, scopes)
            params = counter.node_params(node, scopes, params_by_op)
            for op, macs in by_op.items():
                if macs:
                    macs_by_op[op] = macs_by_op.get(op, 0) + macs
            cost = NodeCost(node.name or f"{node.op_type}_{index}", node.op_type, params,
                            sum(by_op.values()))
            if cost.params or cost.macs:
                nodes.append(cost)
        return Costs(sum(n.params for n in nodes), sum(macs_by_op.values()), macs_by_op,
                     params_by_op, tuple(nodes), {k: list(v) for k, v in self.inputs.items()},
                     self.notes + tuple(counter.notes) + counter.unknown_note())


def count_costs(model: ir.Model, shapes: Shapes | None = None,
                plan: PlanView | None = None) -> Costs:
    """Counts parameters and MACs of ``model`` at concrete input shapes (see module docstring).

    Args:
        model: The model (not changed).
        shapes: Sizes of graph inputs by name, as ``--input-shape`` gives them.
        plan: A candidate pruning plan of ``model``: the costs the model would have with the
            plan's channels removed, without rewriting it (see :class:`CostModel` to evaluate
            many plans with one shape inference).
    """
    return CostModel(model, shapes).costs(plan)


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
