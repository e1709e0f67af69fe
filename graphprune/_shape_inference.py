"""ONNX shape inference on an onnx-ir model, linear in the number of initializers.

This does what ``onnx_ir.passes.common.ShapeInferencePass`` does (onnx-ir 0.1/1.1): large
initializers are turned into graph inputs for the duration of the call so the serialized model
stays small, ``onnx.shape_inference.infer_shapes`` runs on the proto, and the inferred shapes and
types are merged back by value name. onnx-ir tests ``initializer not in graph.inputs`` for every
initializer, a scan of the growing input list each time: quadratic, minutes at 100k nodes. Here
that test is a set lookup; everything else (which tensors are stripped, the order initializers
come back in, the merge) is the same. For a graph without subgraphs the merge reads the inferred
value infos directly instead of deserializing the whole inferred model (same shapes and types,
about half the time), and deserializes each distinct type once.

A model just read from a file can skip the serialization: :func:`infer_onnx_shapes` takes the
proto it was deserialized from (when the graph was already in topological order and has no
subgraphs) and infers on a copy of it with the large tensors' data left out.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import onnx
import onnx_ir as ir

BIG_TENSOR_BYTES = 1000  # onnx-ir's _BIG_TENSOR_SIZE_LIMIT: larger values are left out
_R = TypeVar("_R")


def call_onnx_api(func: Callable[[onnx.ModelProto], _R], model: ir.Model) -> _R:
    """``func`` on the serialized model with initializers as inputs; ``model`` is left as it was.

    Args:
        func: Called with the model proto (initializers above ``BIG_TENSOR_BYTES`` have no data).
        model: The model; restored (values, initializers, inputs) whether ``func`` raises or not.
    """
    graph = model.graph
    initializers = tuple(graph.initializers.values())
    tensors = {v.name: v.const_value for v in initializers}
    original_inputs = len(graph.inputs)
    inputs = {id(v) for v in graph.inputs}
    for initializer in initializers:
        if initializer.const_value is not None:
            if initializer.shape is None:
                initializer.shape = initializer.const_value.shape
            if initializer.dtype is None:
                initializer.dtype = initializer.const_value.dtype
        if id(initializer) not in inputs:
            graph.inputs.append(initializer)
            inputs.add(id(initializer))
        if initializer.const_value is None:
            graph.initializers.pop(initializer.name)
        elif initializer.const_value.nbytes > BIG_TENSOR_BYTES:
            initializer.const_value = None
            graph.initializers.pop(initializer.name)
    try:
        return func(ir.serde.serialize_model(model))
    finally:
        for initializer in initializers:
            initializer.const_value = tensors[initializer.name]
            if initializer.const_value is not None:
                graph.register_initializer(initializer)
            else:
                graph.initializers.add(initializer)
        kept = graph.inputs[:original_inputs]
        graph.inputs.clear()
        graph.inputs.extend(kept)


def _has_subgraphs(graph: ir.Graph) -> bool:
    graph_types = (ir.AttributeType.GRAPH, ir.AttributeType.GRAPHS)
    return any(a.type in graph_types for node in graph for a in node.attributes.values())


def _merge_flat(model: ir.Model, inferred_proto: onnx.ModelProto) -> None:
    """The merge for a graph without subgraphs, reading the value infos alone.

    What deserializing the whole inferred model would give each value: graph inputs (every
    initializer is one here) take their input info, node outputs their ``value_info``, and graph
    outputs their output info last.
    """
    graph = inferred_proto.graph
    infos = {info.name: info for info in graph.value_info}
    infos.update((info.name, info) for info in graph.input)
    infos.update((info.name, info) for info in graph.output)
    types: dict[bytes, tuple] = {}  # a serialized TypeProto -> its shape and dtype
    for name, value in ir.convenience.create_value_mapping(model.graph).items():
        info = infos.get(name)
        if info is None:
            continue
        key = info.type.SerializeToString()
        if key not in types:
            kind = ir.serde.deserialize_type_proto_for_type(info.type)
            types[key] = (ir.serde.deserialize_type_proto_for_shape(info.type),
                          kind.dtype if kind is not None else None)
        shape, dtype = types[key]
        if shape is not None and value.shape != shape:
            value.shape = shape  # frozen, as onnx-ir deserializes shapes: one serves many
        if dtype is not None and value.dtype != dtype:
            value.dtype = dtype


def _merge_graphs(model: ir.Model, inferred_proto: onnx.ModelProto) -> None:
    """onnx-ir's merge: the inferred model deserialized, values matched by name per graph."""
    inferred = ir.serde.deserialize_model(inferred_proto)
    for original_graph, inferred_graph in zip(model.graphs(), inferred.graphs(), strict=False):
        found = ir.convenience.create_value_mapping(inferred_graph)
        for name, value in ir.convenience.create_value_mapping(original_graph).items():
            other = found.get(name)
            if other is None:
                continue
            if other.shape is not None and value.shape != other.shape:
                value.shape = other.shape
            if other.dtype is not None and value.dtype != other.dtype:
                value.dtype = other.dtype


def _copy_fields(source, target, skip: str) -> None:
    """Every set field of the message ``source`` into ``target`` but ``skip``."""
    for field, value in source.ListFields():
        if field.name == skip:
            continue
        if hasattr(value, "extend"):  # a repeated field
            getattr(target, field.name).extend(value)
        elif field.message_type is not None:
            getattr(target, field.name).CopyFrom(value)
        else:
            setattr(target, field.name, value)


def _stripped(proto: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``proto`` whose initializers above ``BIG_TENSOR_BYTES`` have no data."""
    copy = onnx.ModelProto()
    _copy_fields(proto, copy, skip="graph")
    _copy_fields(proto.graph, copy.graph, skip="initializer")
    for tensor in proto.graph.initializer:
        if len(tensor.raw_data) > BIG_TENSOR_BYTES:
            copy.graph.initializer.add(name=tensor.name, data_type=tensor.data_type,
                                       dims=tensor.dims)
        else:
            copy.graph.initializer.append(tensor)
    return copy


def infer_onnx_shapes(model: ir.Model, data_prop: bool = True,
                      proto: onnx.ModelProto | None = None) -> None:
    """Fills in value shapes and types from ``onnx.shape_inference`` (non-strict, no type check).

    ``proto``: the proto ``model`` was just deserialized from, node for node (used instead of
    serializing ``model`` when the graph has no subgraphs). When inference fails the model is
    left unchanged, as onnx-ir's pass does.
    """
    def infer(proto: onnx.ModelProto) -> onnx.ModelProto:
        return onnx.shape_inference.infer_shapes(proto, check_type=False, strict_mode=False,
                                                 data_prop=data_prop)

    flat = not _has_subgraphs(model.graph)
    source = _stripped(proto) if proto is not None and flat else None
    try:
        inferred = infer(source) if source is not None else call_onnx_api(infer, model)
    except Exception:  # noqa: BLE001 - onnx raises many kinds; partial shapes are tolerated
        return
    _merge_flat(model, inferred) if flat else _merge_graphs(model, inferred)
