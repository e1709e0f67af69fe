"""The compensation interface: parsing ``--compensate``, the context passes read, the CLI flag."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import pytest

import graphprune
from graphprune import compensation
from graphprune.cli import main
from graphprune.compensation import COMPENSATIONS, parse_compensate
from graphprune.errors import UsageError
from tests.oracle import assert_mask_equivalent, feeds_for, prune_proto
from tests.test_analysis import HEADER, model


def chain() -> onnx.ModelProto:
    """``Conv -> Relu -> Conv``: the first conv's output channels are one group."""
    return model(f"""{HEADER}
g (float[N,3,H,W] x) => (float[N,4,H,W] y) {{
  a = Conv (x, w1, b1)
  r = Relu (a)
  y = Conv (r, w2, b2)
}}""", w1=(8, 3, 1, 1), b1=(8,), w2=(4, 8, 1, 1), b2=(4,))


def batches(count: int = 2) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    return [{"x": rng.standard_normal((2, 3, 5, 6)).astype(np.float32)} for _ in range(count)]


class _Recorder(ir.passes.InPlacePass):
    """A test method: records what the context gives, changes nothing."""

    seen: list = []

    def __init__(self, context) -> None:
        super().__init__()
        self.context = context
        self.report = {"layers": 0}

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        plan, graph = self.context.plan, model.graph
        a = next(n for n in graph if n.op_type == "Conv").outputs[0]  # the pruned activation
        pairs = list(self.context.paired([a.name], [a.name]))
        type(self).seen.append((plan.kept(a, 1), pairs))
        return ir.passes.PassResult(model, False)


def test_parse_compensate():
    assert parse_compensate(None) == ()
    assert parse_compensate("none") == ()
    with pytest.raises(UsageError, match="unknown compensation 'magic'"):
        parse_compensate("magic")
    with pytest.raises(UsageError, match="none excludes"):
        parse_compensate(["none", next(iter(COMPENSATIONS), "none")])


def test_none_still_passes_the_oracle():
    proto = chain()
    result = prune_proto(proto, ratio=0.5, round_to=1, compensate="none")
    assert result.compensation == []
    assert assert_mask_equivalent(proto, result, feeds_for(proto)) < 1e-5


def test_context_pairs_original_and_pruned_values(monkeypatch):
    monkeypatch.setitem(COMPENSATIONS, "bias", _Recorder)
    _Recorder.seen = []
    result = graphprune.prune(ir.from_proto(chain()), 0.5, round_to=1, compensate="bias",
                              calibration=batches())
    assert [r["name"] for r in result.compensation] == ["bias"]
    kept, pairs = _Recorder.seen[0]
    assert len(kept) == 4 and len(pairs) == 2
    for original, pruned in pairs:  # the pruned value is the original's kept channels
        name = next(iter(original))
        np.testing.assert_allclose(pruned[name], original[name][:, kept], rtol=1e-5, atol=1e-6)


def test_cli_refuses_unknown_method(tmp_path, capsys):
    path = tmp_path / "m.onnx"
    onnx.save(chain(), path)
    assert main([str(path), "--compensate", "magic", "--no-bench"]) == 2
    err = capsys.readouterr().err
    assert "unknown compensation 'magic'" in err and "Traceback" not in err
    assert not (tmp_path / "m.pruned.onnx").exists()


def test_registry_names_are_in_order():
    assert set(COMPENSATIONS) <= set(compensation.ORDER)


def test_linear_layers_are_described_by_their_rules():
    from graphprune.ops import lookup
    from graphprune.ops.base import Linear

    proto = model(f"""{HEADER}
g (float[N,3,H,W] x) => (float[N,5] y) {{
  a = Conv <group = 1> (x, w1)
  p = GlobalAveragePool (a)
  f = Flatten (p)
  m = MatMul (f, w2)
  y = Gemm <transB = 1> (m, w3, b3)
}}""", w1=(8, 3, 3, 3), w2=(8, 6), w3=(5, 6), b3=(5,))
    graph = ir.from_proto(proto).graph
    found = {n.op_type: lookup(n).linear(n) for n in graph if lookup(n) is not None}
    assert found["Conv"] == Linear(0, 1, 1, 0, 2)
    assert found["MatMul"] == Linear(0, 1, 0, 1, None, x_axis=-1, y_axis=-1)
    assert found["Gemm"] == Linear(0, 1, 1, 0, 2)
    assert found["Relu" if "Relu" in found else "Flatten"] is None


def _run(ir_model: ir.Model, feed: dict) -> list[np.ndarray]:
    import onnxruntime as ort

    proto = ir.to_proto(ir_model)
    onnx.checker.check_model(proto, full_check=True)
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feed)


@pytest.mark.parametrize("with_bias", [True, False])
def test_layer_bias_and_weight_edits_compute_the_affine_change(with_bias):
    """Scaling W's output channels by s and setting b' = s b + t gives s * y + t."""
    from graphprune.compensation.layers import linear_layers

    inputs = "(x, w1, b1)" if with_bias else "(x, w1)"
    proto = model(f"""{HEADER}
g (float[N,3,H,W] x) => (float[N,4,H,W] y, float[N,5] z) {{
  a = Conv {inputs}
  y = Relu (a)
  p = GlobalAveragePool (a)
  f = Flatten (p)
  z = MatMul (f, w2)
}}""", w1=(4, 3, 1, 1), w2=(4, 5), **({"b1": (4,)} if with_bias else {}))
    feed = {"x": np.random.default_rng(0).standard_normal((2, 3, 5, 6)).astype(np.float32)}
    before = _run(ir.from_proto(proto), feed)
    edited = ir.from_proto(proto)
    conv, matmul = linear_layers(edited)
    s, t = np.array([1.0, 2.0, 0.5, 3.0]), np.array([0.1, -0.2, 0.3, 0.0])
    conv.set_weight(conv.weight() * s.reshape(4, 1, 1, 1).astype(np.float32))
    conv.set_bias(conv.bias() * s + t)
    matmul.set_bias(np.arange(5.0))  # MatMul has no bias input: an Add after it
    matmul.set_bias(np.arange(5.0) * 2)  # edits the same Add
    after = _run(edited, feed)
    np.testing.assert_allclose(after[1] - np.arange(5.0) * 2, _pooled_affine(
        proto, feed, s, t), rtol=1e-4, atol=1e-4)
    assert before[1].shape == after[1].shape
    assert [o.name for o in edited.graph.outputs] == ["y", "z"]
    assert sum(n.op_type == "Add" for n in edited.graph) == 1


def _pooled_affine(proto, feed, s, t):
    """``MatMul(Flatten(GAP(s * a + t)), w2)`` computed in numpy from the original weights."""
    from onnx import numpy_helper

    inits = {i.name: numpy_helper.to_array(i) for i in proto.graph.initializer}
    w1, w2 = inits["w1"], inits["w2"]
    b1 = inits.get("b1", np.zeros(4, np.float32))
    a = np.einsum("oc,nchw->nohw", w1[:, :, 0, 0], feed["x"]) + b1.reshape(1, 4, 1, 1)
    a = a * s.reshape(1, 4, 1, 1) + t.reshape(1, 4, 1, 1)
    return a.mean(axis=(2, 3)) @ w2
