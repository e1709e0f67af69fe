"""Concrete shapes: graph-input sizes resolved, then propagated through a weightless copy.

A symbolic graph-input dim takes its size from ``--input-shape`` or the defaults the measurement
inputs use (graphprune.inputs). ONNX shape inference with data propagation then runs on a
proto of the model whose large initializers are typed inputs without data, and the result is read
back as shapes by value name, per graph (subgraphs paired with the model's by node order). Where
ONNX inference leaves a main-graph value unknown, the analysis' static-value sweep completes it.
"""

from __future__ import annotations

from collections.abc import Mapping

import onnx
import onnx_ir as ir

from graphprune.ops.base import static_shape

Shapes = Mapping[str, tuple[int, ...]]
_GRAPH_ATTRIBUTES = (ir.AttributeType.GRAPH, ir.AttributeType.GRAPHS)


def graph_bodies(node: ir.Node, name: str) -> list[ir.Graph]:
    """The graphs of ``node``'s attribute ``name`` (none when it holds no graph)."""
    attribute = node.attributes.get(name)
    if attribute is None or attribute.type not in _GRAPH_ATTRIBUTES:
        return []
    return [attribute.value] if attribute.type == ir.AttributeType.GRAPH else list(attribute.value)


def declared_inputs(model: ir.Model) -> list[tuple[str, tuple[int | str, ...] | None]]:
    """Graph inputs that are not initializers, with symbolic dims by name ("?" when unnamed).

    The dims are None when the rank is unknown.
    """
    found = []
    for value in model.graph.inputs:
        if value.const_value is not None or value.name in model.graph.initializers:
            continue
        dims = None if value.shape is None else tuple(  # some exporters write -1 for "dynamic"
            d if isinstance(d, int) and d >= 0 else (getattr(d, "value", None) or "?")
            for d in value.shape)
        found.append((value.name, dims))
    return found


def input_shapes(model: ir.Model, shapes: Shapes | None = None
                 ) -> tuple[dict[str, tuple[int, ...]], list[str]]:
    """Every graph input's concrete shape, and notes for inputs whose rank is unknown.

    Sizes come from ``shapes`` (``""`` names the only input), else the defaults of the one input
    module (:func:`graphprune.inputs.resolve_specs`, which also raises UsageError when ``shapes``
    names no input or disagrees with a static dim).
    """
    from graphprune.inputs import resolve_specs
    from graphprune.inputs.specs import interface_of

    declared = dict(declared_inputs(model))
    resolved, notes = {}, []
    for spec in resolve_specs(interface_of(model), shapes):
        if declared[spec.name] is None and not spec.shape:
            notes.append(f"input '{spec.name}': rank unknown (give --input-shape)")
            continue
        resolved[spec.name] = spec.shape
    return resolved, notes


_SMALL_BYTES = 1024  # initializers kept in the copy (shape constants); larger ones are typed inputs


def _stripped_proto(model: ir.Model) -> onnx.ModelProto:
    """The model as a proto whose large initializers are typed graph inputs without data.

    The model is changed only for the duration of the call (as onnx-ir's ShapeInferencePass
    does, but linear in the number of initializers).
    """
    graph = model.graph
    large = [v for v in graph.initializers.values()
             if v.const_value is None or v.const_value.nbytes > _SMALL_BYTES]
    saved = [(v, v.shape, v.dtype) for v in large]
    order = list(graph.initializers.values())
    inputs = list(graph.inputs)
    present = {id(v) for v in inputs}
    try:
        for value in large:
            if value.const_value is not None:
                value.shape = value.shape or value.const_value.shape
                value.dtype = value.dtype or value.const_value.dtype
            graph.initializers.pop(value.name)
            if id(value) not in present:
                graph.inputs.append(value)
        return ir.serde.serialize_model(model)
    finally:
        graph.inputs.clear()
        graph.inputs.extend(inputs)
        for value, shape, dtype in saved:
            value.shape, value.dtype = shape, dtype
        for value in order[len(order) - len(large):] if _tail(order, large) else order:
            graph.initializers.pop(value.name, None)
            graph.initializers.add(value)


def _tail(order: list[ir.Value], large: list[ir.Value]) -> bool:
    """The large initializers are the last ones: re-adding only them keeps the order."""
    return [id(v) for v in order[len(order) - len(large):]] == [id(v) for v in large]


ShapeMap = dict[str, "tuple[int | None, ...] | None"]


def _proto_shapes(graph: onnx.GraphProto) -> ShapeMap:
    found: ShapeMap = {}
    for info in (*graph.input, *graph.value_info, *graph.output):
        tensor = info.type.tensor_type
        found[info.name] = tuple(d.dim_value if d.HasField("dim_value") else None
                                 for d in tensor.shape.dim) if tensor.HasField("shape") else None
    return found


def _proto_maps(graph: ir.Graph, proto: onnx.GraphProto, maps: dict[int, ShapeMap]) -> None:
    """Pairs ``graph`` and its subgraphs with the same graphs of ``proto`` (same node order)."""
    maps[id(graph)] = _proto_shapes(proto)
    for node, pnode in zip(graph, proto.node, strict=False):
        for attribute in pnode.attribute:
            bodies = [attribute.g] if attribute.type == onnx.AttributeProto.GRAPH else list(
                attribute.graphs)
            for body, pbody in zip(graph_bodies(node, attribute.name), bodies, strict=False):
                _proto_maps(body, pbody, maps)


def _ir_maps(graph: ir.Graph, copy: ir.Graph, maps: dict[int, ShapeMap]) -> None:
    """As :func:`_proto_maps`, from an onnx-ir copy."""
    values = [*copy.inputs, *copy.initializers.values(),
              *(v for n in copy for v in n.outputs)]
    maps[id(graph)] = {v.name: None if v.shape is None else tuple(
        d if isinstance(d, int) else None for d in v.shape) for v in values}
    for node, other in zip(graph, copy, strict=False):
        for name in node.attributes:
            pairs = zip(graph_bodies(node, name), graph_bodies(other, name), strict=False)
            for body, body_copy in pairs:
                _ir_maps(body, body_copy, maps)


def _complete(maps: dict[int, ShapeMap], graph: ir.Graph) -> bool:
    """Every node output of the main graph has a concrete shape."""
    shapes = maps[id(graph)]
    return all(is_concrete(shapes.get(v.name)) for n in graph for v in n.outputs if v.name)


def concrete_maps(model: ir.Model, inputs: dict[str, tuple[int, ...]]) -> dict[int, ShapeMap]:
    """Shapes by name per graph of ``model`` when its graph inputs have ``inputs``' shapes.

    ONNX shape inference (with data propagation) runs on a weightless copy; where it leaves a
    main-graph value unknown, the static-value sweep of the analysis (with the rules'
    ``refine_shapes``) completes it on an onnx-ir copy.
    """
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
    proto = onnx.shape_inference.infer_shapes(proto, check_type=False, strict_mode=False,
                                              data_prop=True)
    maps: dict[int, ShapeMap] = {}
    _proto_maps(model.graph, proto.graph, maps)
    if not _complete(maps, model.graph):
        from graphprune.analysis.static_values import infer_shapes

        copy = infer_shapes(ir.serde.deserialize_model(proto))
        _ir_maps(model.graph, copy.graph, maps)
    return maps


def is_concrete(shape) -> bool:
    return shape is not None and all(isinstance(d, int) and d >= 0 for d in shape)


def input_symbols(model: ir.Model, inputs: dict[str, tuple[int, ...]]) -> dict[str, int]:
    """Symbolic dim name -> size, from the graph inputs' declared dims and their resolved sizes."""
    symbols = {}
    for name, dims in declared_inputs(model):
        for d, size in zip(dims or (), inputs.get(name, ()), strict=False):
            if isinstance(d, str) and d != "?":
                symbols[d] = size
    return symbols


def concrete_dims(value: ir.Value, scopes: tuple[ShapeMap, ...],
                  symbols: Mapping[str, int]) -> tuple[int, ...] | None:
    """The value's concrete shape: a constant's, the copy's, or its own with input symbols bound.

    Loop-carried values keep the body's declared shape in ONNX inference (a state may change
    shape between iterations); the body's symbols named as the graph inputs' then give the
    first iteration's shape.
    """
    if value.const_value is not None:
        return tuple(int(d) for d in value.const_value.shape)
    for scope in scopes:
        if value.name in scope:
            found = scope[value.name]
            if is_concrete(found):
                return tuple(found)
            break
    shape = static_shape(value)
    if shape is not None and None in shape and value.shape is not None:
        shape = tuple(d if isinstance(d, int) else symbols.get(getattr(d, "value", None))
                      for d in value.shape)
    return tuple(shape) if is_concrete(shape) else None
