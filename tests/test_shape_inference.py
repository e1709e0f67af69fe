"""Shape inference on load: the proto read from the file gives what serializing the model gives.

``load_model`` infers shapes on the proto it deserialized the model from (big tensors' data left
out) instead of serializing the model again; every value of every real model must get the same
shape and type as through onnx-ir's serialization path.
"""

from __future__ import annotations

import onnx
import onnx_ir as ir
import pytest

from graphprune import _shape_inference
from graphprune._io import infer_shapes, load_model
from tests import corpus


def _shapes(model: ir.Model) -> dict[str, tuple]:
    return {name: (None if v.shape is None else tuple(str(d) for d in v.shape), v.dtype)
            for name, v in ir.convenience.create_value_mapping(model.graph).items()}


@pytest.mark.parametrize("entry", [pytest.param(e, id=e.id, marks=[pytest.mark.slow] if e.slow
                                                else []) for e in corpus.CORPUS])
def test_load_infers_the_shapes_serializing_would(entry, monkeypatch):
    path = corpus.fetch(entry)
    calls = []
    real = _shape_inference._stripped
    monkeypatch.setattr(_shape_inference, "_stripped", lambda p: calls.append(1) or real(p))
    fast = load_model(path)
    reference = infer_shapes(ir.load(path))  # no proto: the model is serialized
    assert _shapes(fast) == _shapes(reference)
    proto = onnx.load(str(path), load_external_data=False)
    flat = not any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
                   for n in proto.graph.node for a in n.attribute)
    assert len(calls) == (1 if flat and _sorted(proto.graph) else 0)


def _sorted(graph: onnx.GraphProto) -> bool:
    known = {v.name for v in graph.input} | {t.name for t in graph.initializer} | {""}
    for node in graph.node:
        if any(n not in known for n in node.input):
            return False
        known.update(node.output)
    return True


def test_an_unsorted_graph_is_inferred_after_sorting(tmp_path):
    """A file whose nodes are out of order: the stale proto is not used for inference."""
    graph = onnx.parser.parse_graph("""g (float[1,4] x) => (float[1,4] z) {
        z = Relu (y)
        y = Neg (x)
    }""")
    path = tmp_path / "m.onnx"
    onnx.save(onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)]),
              path)
    model = load_model(path)
    values = ir.convenience.create_value_mapping(model.graph)
    assert [n.op_type for n in model.graph] == ["Neg", "Relu"]
    assert values["y"].shape == ir.Shape([1, 4])
