"""Bias compensation and least-squares refit: exact where the maths says so, better on data.

These passes break mask equivalence on purpose; they are checked against the original model's
outputs instead.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import pytest

import graphprune
from graphprune.cli import main
from graphprune.compensation.refit import LeastSquaresRefitPass
from graphprune.verify.oracle import relative_error, run
from tests.test_analysis import HEADER, model


def constant_channel() -> onnx.ModelProto:
    """Channel 2 of ``r`` is the constant 1.5 (zero weights, bias 1.5).

    A 3x3 valid Conv and, pooled, a MatMul read it: removing it only shifts both outputs.
    """
    rng = np.random.default_rng(0)
    w1 = rng.standard_normal((4, 3, 1, 1)).astype(np.float32)
    w1[2] = 0.0
    b1 = np.array([0.1, -0.2, 1.5, 0.3], np.float32)
    return model(f"""{HEADER}
g (float[N,3,H,W] x) => (float[N,5,M,K] y, float[N,6] z) {{
  a = Conv (x, w1, b1)
  r = Relu (a)
  y = Conv (r, w2, b2)
  p = GlobalAveragePool (r)
  f = Flatten (p)
  z = MatMul (f, w3)
}}""", w1=w1, b1=b1, w2=(5, 4, 3, 3), b2=(5,), w3=(4, 6))


def image_batches(count: int = 3, seed: int = 1) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [{"x": rng.standard_normal((2, 3, 7, 8)).astype(np.float32)} for _ in range(count)]


def _prune(proto, compensate, calibration, **kwargs):
    return graphprune.prune(ir.from_proto(proto), compensate=compensate,
                            calibration=calibration, **kwargs)


def _error(proto, result, feeds) -> float:
    pruned = ir.to_proto(result.model)
    onnx.checker.check_model(pruned, full_check=True)
    return relative_error(run(proto, feeds), run(pruned, feeds))


def _kept_r(result) -> list[int]:
    (group,) = [g for g in result.groups if g["channels_after"] < g["channels_before"]]
    return group["kept"]


def _channel_2(proto) -> np.ndarray:
    """The class label of channel 2 of ``r`` (explicit removal)."""
    (group,) = graphprune.analyze(ir.from_proto(proto)).groups
    return np.array([group.classes[2]])


def test_bias_makes_removing_a_constant_channel_exact():
    proto = constant_channel()
    feeds = image_batches(1, seed=7)[0]
    plain = _prune(proto, "none", image_batches(), removed=_channel_2(proto))
    assert _kept_r(plain) == [0, 1, 3]
    assert _error(proto, plain, feeds) > 1e-2  # without compensation the outputs move
    result = _prune(proto, "bias", image_batches(), removed=_channel_2(proto))
    assert _kept_r(result) == [0, 1, 3]
    assert _error(proto, result, feeds) < 1e-5
    (report,) = result.compensation
    assert report["name"] == "bias" and report["layers"] == 2
    assert sum(n.op_type == "Add" for n in result.model.graph) == 1  # the MatMul's new bias


def test_bias_of_a_transposed_conv_restores_each_channels_mean():
    """ConvTranspose k=2 s=2 reads one tap of a removed channel per output position.

    The bias carries the mean over positions: the taps' sum / 4.
    """
    rng = np.random.default_rng(0)
    w1 = rng.standard_normal((4, 3, 1, 1)).astype(np.float32)
    w1[2] = 0.0
    b1 = np.array([0.1, -0.2, 1.5, 0.3], np.float32)
    proto = model(f"""{HEADER}
g (float[N,3,H,W] x) => (float[N,3,M,K] y) {{
  a = Conv (x, w1, b1)
  r = Relu (a)
  y = ConvTranspose <kernel_shape = [2, 2], strides = [2, 2]> (r, w2, b2)
}}""", w1=w1, b1=b1, w2=(4, 3, 2, 2), b2=(3,))
    feeds = image_batches(1, seed=7)[0]
    result = _prune(proto, "bias", image_batches(), removed=_channel_2(proto))
    assert result.compensation[0]["scatter_layers"] == 1
    means = [out.mean(axis=(0, 2, 3)) for out in (run(proto, feeds)[0], run(
        ir.to_proto(result.model), feeds)[0])]
    np.testing.assert_allclose(means[1], means[0], rtol=1e-5, atol=1e-5)
    assert _error(proto, result, feeds) > 1e-3  # per phase it is not exact, and says so


def as_constant_nodes(proto: onnx.ModelProto, names: tuple[str, ...]) -> onnx.ModelProto:
    """``proto`` with the initializers ``names`` in ``Constant`` nodes (as paddle2onnx does)."""
    out = onnx.ModelProto()
    out.CopyFrom(proto)
    graph = out.graph
    moved = [t for t in graph.initializer if t.name in names]
    kept = [t for t in graph.initializer if t.name not in names]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    nodes = [onnx.helper.make_node("Constant", [], [t.name], name=f"const_{t.name}", value=t)
             for t in moved]
    rest = list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes + rest)
    onnx.checker.check_model(out)
    return out


def test_bias_reads_weights_from_constant_nodes():
    proto = as_constant_nodes(constant_channel(), ("w2", "b2", "w3"))
    result = _prune(proto, "bias", image_batches(), removed=_channel_2(proto))
    assert result.compensation[0]["layers"] == 2
    assert _error(proto, result, image_batches(1, seed=7)[0]) < 1e-5


def redundant_linear() -> onnx.ModelProto:
    """``h = x W1`` has 6 channels of rank 4: any 4 of them determine the other two."""
    return model(f"""{HEADER}
g (float[N,4] x) => (float[N,3] y) {{
  h = MatMul (x, w1)
  y = Gemm <transB = 1> (h, w2, b2)
}}""", w1=(4, 6), w2=(3, 6), b2=(3,))


def vector_batches(count: int = 4, seed: int = 1) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [{"x": rng.standard_normal((16, 4)).astype(np.float32)} for _ in range(count)]


def test_refit_reproduces_a_redundant_linear_model():
    proto = redundant_linear()
    feeds = vector_batches(1, seed=9)[0]
    plain = _prune(proto, "none", vector_batches(), ratio=0.34, round_to=1)
    assert _error(proto, plain, feeds) > 1e-2
    result = _prune(proto, "refit", vector_batches(), ratio=0.34, round_to=1)
    (report,) = result.compensation
    assert report["layers"] == 1 and report["fitted"][0]["inputs"] == 4
    assert _error(proto, result, feeds) < 1e-4


@pytest.mark.parametrize("sequential", [True, False])
def test_refit_modes_agree_when_nothing_upstream_changes(monkeypatch, sequential):
    monkeypatch.setattr(LeastSquaresRefitPass, "sequential", sequential)
    proto = redundant_linear()
    result = _prune(proto, "refit", vector_batches(), ratio=0.34, round_to=1)
    assert result.compensation[0]["sequential"] is sequential
    assert result.compensation[0]["fitted"][0]["residual_after"] < 1e-5


def redundant_conv(kernel: int) -> onnx.ModelProto:
    """A 1x1 Conv makes 4 channels of rank 2; a strided (padded) ``kernel`` Conv reads them."""
    pads = kernel // 2
    return model(f"""{HEADER}
g (float[N,2,H,W] x) => (float[N,3,M,K] y) {{
  h = Conv (x, w1)
  y = Conv <pads = [{pads}, {pads}, {pads}, {pads}], strides = [2, 2]> (h, w2, b2)
}}""", w1=(4, 2, 1, 1), w2=(3, 4, kernel, kernel), b2=(3,))


def conv_batches(count: int = 4, seed: int = 1) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [{"x": rng.standard_normal((2, 2, 9, 10)).astype(np.float32)} for _ in range(count)]


@pytest.mark.parametrize("kernel", [3, 1])
def test_refit_of_a_kernel_regresses_on_the_layers_own_patches(kernel):
    """Patches of the removed channels are combinations of the kept ones, padding included."""
    proto = redundant_conv(kernel)
    feeds = conv_batches(1, seed=9)[0]
    plain = _prune(proto, "none", conv_batches(), ratio=0.5, round_to=1)
    assert _error(proto, plain, feeds) > 1e-2
    result = _prune(proto, "refit", conv_batches(), ratio=0.5, round_to=1)
    (report,) = result.compensation
    assert report["fitted"][0]["inputs"] == 2 * kernel ** 2 and report["skipped"] == []
    assert _error(proto, result, feeds) < 1e-4


def test_refit_skips_a_kernel_over_the_cap_with_a_reason(monkeypatch):
    monkeypatch.setattr(LeastSquaresRefitPass, "max_unknowns", 10)
    result = _prune(constant_channel(), "refit", image_batches(), removed=_channel_2(
        constant_channel()))
    (report,) = result.compensation
    assert [s["reason"] for s in report["skipped"]] == [
        "28 unknowns (3 kept inputs x 9 taps + 1) exceed max_unknowns 10"]
    assert report["layers"] == 1  # the MatMul


def test_cli_bias_and_refit(tmp_path, capsys):
    path = tmp_path / "m.onnx"
    onnx.save(constant_channel(), path)
    out = tmp_path / "p.onnx"
    code = main([str(path), "-o", str(out), "--ratio", "0.25", "--round-to", "1",
                 "--compensate", "bias,refit", "--no-bench"])
    assert code == 0, capsys.readouterr().err
    assert out.exists()
    onnx.checker.check_model(onnx.load(out), full_check=True)


@pytest.mark.slow
def test_fidelity_on_data_improves_on_a_zoo_model(tmp_path):
    from models.export import export

    path = export("resnet18", tmp_path / "r.onnx", width=0.25, keep_bn=False,
                  input_shape=(1, 3, 32, 32), dynamic_batch=True)
    proto = onnx.load(path)
    rng = np.random.default_rng(0)
    name = proto.graph.input[0].name
    calibration = [{name: rng.standard_normal((4, 3, 32, 32)).astype(np.float32)}
                   for _ in range(4)]
    held_out = {name: rng.standard_normal((8, 3, 32, 32)).astype(np.float32)}
    errors = {}
    for method in ("none", "bias", "refit", "bias,refit"):
        result = _prune(proto, method, calibration, ratio=0.5, round_to=1,
                        criterion="fluctuation")
        errors[method] = _error(proto, result, held_out)
    assert errors["bias"] < errors["none"], errors
    assert errors["refit"] < errors["none"], errors
    assert errors["bias,refit"] < errors["none"], errors
