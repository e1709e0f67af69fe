"""Per-channel statistics recalibration (``--compensate stats``): what it restores, its schedule."""

from __future__ import annotations

import functools
import json

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from onnx import numpy_helper

import graphprune
from graphprune.calibration import collect_stats
from graphprune.cli import main
from graphprune.compensation import COMPENSATIONS, stats
from graphprune.compensation.layers import linear_layers
from tests.test_analysis import HEADER, model

WIDE = (1e-6, 1e6)  # a clip that never binds


def branches() -> onnx.ModelProto:
    """A chain, two parallel convs joined by Add, and a residual: several layers per level."""
    return model(f"""{HEADER}
g (float[N,3,H,W] x) => (float[N,4,H,W] y) {{
  c1 = Conv <pads=[1,1,1,1]> (x, w1, b1)
  r1 = Relu (c1)
  c2 = Conv <pads=[1,1,1,1]> (r1, w2, b2)
  c3 = Conv (r1, w3, b3)
  s = Add (c2, c3)
  r2 = Relu (s)
  c4 = Conv <pads=[1,1,1,1]> (r2, w4, b4)
  r4 = Relu (c4)
  c5 = Conv (r4, w5, b5)
  e = Add (c5, s)
  y = Conv (e, w6, b6)
}}""", w1=(8, 3, 3, 3), b1=(8,), w2=(8, 8, 3, 3), b2=(8,), w3=(8, 8, 1, 1), b3=(8,),
                 w4=(8, 8, 3, 3), b4=(8,), w5=(8, 8, 1, 1), b5=(8,), w6=(4, 8, 1, 1), b6=(4,))


def with_bn(epsilon: float = 1e-9) -> onnx.ModelProto:
    """``Conv -> Relu -> Conv -> BatchNormalization -> Relu -> Conv``: the BN is kept."""
    return model(f"""{HEADER}
g (float[N,3,H,W] x) => (float[N,4,H,W] y) {{
  c1 = Conv <pads=[1,1,1,1]> (x, w1, b1)
  r1 = Relu (c1)
  c2 = Conv <pads=[1,1,1,1]> (r1, w2, b2)
  bn = BatchNormalization <epsilon = {epsilon}> (c2, sc, sh, mean, var)
  r2 = Relu (bn)
  y = Conv (r2, w3, b3)
}}""", w1=(8, 3, 3, 3), b1=(8,), w2=(8, 8, 3, 3), b2=(8,), sc=(8,), sh=(8,), mean=(8,),
                 var=(8,), w3=(4, 8, 1, 1), b3=(4,))


def batches(count: int = 3, seed: int = 0) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [{"x": rng.standard_normal((2, 3, 6, 7)).astype(np.float32)} for _ in range(count)]


def prune(proto, compensate="stats", removed=None, **kwargs) -> graphprune.PruneResult:
    return graphprune.prune(ir.from_proto(proto), 0.5, round_to=1, compensate=compensate,
                            calibration=batches(), removed=removed, **kwargs)


def conv_outputs(proto) -> list[str]:
    return [n.output[0] for n in proto.graph.node if n.op_type == "Conv"]


def channel_stats(model_or_proto, names, feeds=None):
    model_or_proto = ir.from_proto(model_or_proto) if isinstance(
        model_or_proto, onnx.ModelProto) else model_or_proto
    return collect_stats(model_or_proto, feeds or batches(), dict.fromkeys(names, 1))


@pytest.fixture
def wide_clip(monkeypatch):
    monkeypatch.setitem(COMPENSATIONS, "stats",
                        functools.partial(stats.StatsRecalibrationPass, clip=WIDE))


def _kept_spy():
    """A pass that records the original channel of each pruned channel, per layer output."""
    seen = {}

    class Spy(stats.StatsRecalibrationPass):
        def call(self, model):
            for layer in linear_layers(model):
                kept = self.context.plan.kept(layer.y, 1)
                seen[layer.y.name] = (np.arange(layer.out_channels) if kept is None else kept)
            return super().call(model)

    return Spy, seen


def test_means_and_stds_match_the_original_where_the_clip_does_not_bind(monkeypatch):
    proto = branches()
    spy, kept = _kept_spy()
    monkeypatch.setitem(COMPENSATIONS, "stats", functools.partial(spy, clip=WIDE))
    result = prune(proto)
    names = conv_outputs(proto)
    original = channel_stats(proto, names)
    after = channel_stats(result.model, names)
    plain = channel_stats(prune(proto, compensate="none").model, names)
    report = result.compensation[0]
    assert report["name"] == "stats" and report["layers"] == len(names)
    mismatched = 0
    for name in names:
        k = kept[name]
        mu_o, sd_o = original[name].mean[k], np.sqrt(original[name].var[k])
        np.testing.assert_allclose(after[name].mean, mu_o, rtol=1e-3, atol=1e-4 * sd_o.max())
        np.testing.assert_allclose(np.sqrt(after[name].var), sd_o, rtol=1e-3)
        mismatched += not np.allclose(np.sqrt(plain[name].var), sd_o, rtol=1e-2)
    assert mismatched >= 3  # without the pass the statistics differ: the test can fail


def test_the_default_clip_bounds_the_scale():
    result = prune(branches())
    s, shift = stats.scale_and_shift(np.zeros(3), np.array([1.0, 10.0, 0.01]), np.zeros(3),
                                     np.ones(3))
    np.testing.assert_allclose(s, [1.0, 2.0, 0.5])
    np.testing.assert_allclose(shift, 0.0)
    assert result.compensation[0]["clip"] == [0.5, 2.0]


def test_level_schedule_equals_strictly_sequential(monkeypatch, wide_clip):
    proto = branches()
    levels = stats.schedule(linear_layers(ir.from_proto(proto)))
    assert [len(level) for level in levels] == [1, 2, 1, 1, 1]  # c2 and c3 share a level
    by_level = prune(proto)
    monkeypatch.setattr(stats, "schedule", lambda layers: [[layer] for layer in layers])
    sequential = prune(proto)
    assert sequential.compensation[0]["data_passes"] == 7  # the original's pass + 6 layers
    assert by_level.compensation[0]["data_passes"] == 6
    for a, b in zip(linear_layers(by_level.model), linear_layers(sequential.model), strict=True):
        np.testing.assert_allclose(a.weight(), b.weight(), rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(a.bias(), b.bias(), rtol=1e-6, atol=1e-7)


def test_schedule_levels_have_no_path_between_their_layers():
    levels = stats.schedule(linear_layers(ir.from_proto(branches())))
    flat = [layer.y.name for level in levels for layer in level]
    assert flat[0] == "c1" and set(flat[1:3]) == {"c2", "c3"} and flat[3:] == ["c4", "c5", "y"]


def _bn_reestimated(proto: onnx.ModelProto) -> onnx.ModelProto:
    """``proto`` with the BN's running statistics set to its input's on the calibration data."""
    found = channel_stats(proto, ["c2"])["c2"]
    proto = onnx.ModelProto.FromString(proto.SerializeToString())
    for init in proto.graph.initializer:
        if init.name in ("mean", "var"):
            array = found.mean if init.name == "mean" else found.var
            init.CopyFrom(numpy_helper.from_array(array.astype(np.float32), init.name))
    return proto


def test_with_a_kept_batchnorm_it_is_batchnorm_reestimation():
    """With a kept BN the pass restores the BN output: it is BN re-estimation.

    The original's BN statistics are its calibration statistics (re-estimation is a no-op
    on the original); after the pass the pruned BN output equals the output of the pruned
    model whose BN was re-estimated on the pruned model's own data: mean beta, spread |gamma|.
    """
    proto = _bn_reestimated(with_bn())
    compensated = prune(proto)
    plain = prune(proto, compensate="none")
    assert any(n.op_type == "BatchNormalization" for n in compensated.model.graph)
    pruned_proto = ir.to_proto(plain.model)
    reestimated = _bn_reestimated(pruned_proto)
    bn_c = channel_stats(compensated.model, ["bn"])["bn"]
    bn_r = channel_stats(reestimated, ["bn"])["bn"]
    bn_p = channel_stats(pruned_proto, ["bn"])["bn"]
    kept = _bn_kept(proto, plain)
    sc, sh = (numpy_helper.to_array(i) for i in proto.graph.initializer if i.name in ("sc", "sh"))
    np.testing.assert_allclose(bn_c.mean, bn_r.mean, atol=1e-4)
    np.testing.assert_allclose(bn_c.var, bn_r.var, rtol=1e-3)
    np.testing.assert_allclose(bn_r.mean, sh[kept], atol=1e-4)
    np.testing.assert_allclose(np.sqrt(bn_r.var), np.abs(sc[kept]), rtol=1e-3)
    assert not np.allclose(np.sqrt(bn_p.var), np.abs(sc[kept]), rtol=1e-2)  # before: it differs


def _bn_kept(proto, result) -> np.ndarray:
    """The original channels the pruned BN kept (from its sliced shift vector)."""
    sh = next(numpy_helper.to_array(i) for i in proto.graph.initializer if i.name == "sh")
    bn = next(n for n in result.model.graph if n.op_type == "BatchNormalization")
    pruned = bn.inputs[2].const_value.numpy()
    return np.array([int(np.flatnonzero(sh == v)[0]) for v in pruned])


def test_constant_channels_only_move_their_mean():
    """A channel whose weights are 0 is constant (its bias): no division by its zero spread."""
    proto = branches()
    for init in proto.graph.initializer:
        if init.name == "w4":
            array = numpy_helper.to_array(init).copy()
            array[:] = 0.0
            init.CopyFrom(numpy_helper.from_array(array, "w4"))
    result = prune(proto)
    for layer in linear_layers(result.model):
        assert np.all(np.isfinite(layer.weight())) and np.all(np.isfinite(layer.bias()))
    c4 = next(la for la in linear_layers(result.model) if la.y.name == "c4")
    assert np.all(c4.weight() == 0.0)
    outputs = channel_stats(result.model, ["y"])["y"]
    assert np.all(np.isfinite(outputs.mean))


def test_scale_and_shift_on_constant_channels():
    s, bias = stats.scale_and_shift(np.array([1.0, 2.0]), np.array([0.0, 1.0]),
                                    np.array([3.0, 0.5]), np.array([0.0, 2.0]))
    np.testing.assert_allclose(s, [1.0, 0.5])
    np.testing.assert_allclose(bias, [1.0 - 3.0, 2.0 - 0.25])


def test_cli_compensate_stats_lists_the_pass(tmp_path, capsys):
    path = tmp_path / "m.onnx"
    onnx.save(branches(), path)
    code = main([str(path), "--ratio", "0.5", "--round-to", "1", "--compensate", "stats",
                 "--no-bench", "--calib-samples", "2"])
    out = capsys.readouterr().out
    assert code == 0
    assert "oracle: skipped (compensated: stats)" in out and "compensation stats:" in out
    report = json.loads((tmp_path / "m.pruned.report.json").read_text())
    assert [c["name"] for c in report["compensation"]] == ["stats"]
    assert report["compensation"][0]["layers"] == 6 and report["oracle"] is None


def _relative_error(reference: list[np.ndarray], other: list[np.ndarray]) -> float:
    return float(np.sqrt(sum(np.sum((a - b) ** 2) for a, b in zip(reference, other, strict=True))
                         / sum(np.sum(a ** 2) for a in reference)))


@pytest.mark.slow
def test_fidelity_on_data_improves_on_a_zoo_resnet(tmp_path):
    """The pass brings a pruned zoo resnet18 closer to the original on held-out images.

    Width 0.25, half of every group's channels removed by L1, 3 calibration batches of fixed
    smooth random images, 2 held-out batches.
    """
    import onnxruntime as ort

    from models.export import export

    path = export("resnet18", tmp_path / "r.onnx", width=0.25, input_shape=(1, 3, 64, 64),
                  dynamic_batch=True)
    rng = np.random.default_rng(7)
    smooth = [np.cumsum(np.cumsum(rng.standard_normal((4, 3, 64, 64)), 2), 3) for _ in range(5)]
    images = [(a / a.std()).astype(np.float32) for a in smooth]  # fixed, image-like (smooth)
    name = onnx.load(path).graph.input[0].name
    calib, test = [{name: x} for x in images[:3]], [{name: x} for x in images[3:]]

    def outputs(proto_or_model):
        proto = proto_or_model if isinstance(proto_or_model, onnx.ModelProto) \
            else ir.to_proto(proto_or_model)
        session = ort.InferenceSession(proto.SerializeToString(),
                                       providers=["CPUExecutionProvider"])
        return [session.run(None, feed)[0] for feed in test]

    reference = outputs(onnx.load(path))
    errors = {}
    for method in ("none", "stats"):
        result = graphprune.prune(path, 0.5, round_to=1, compensate=method, calibration=calib)
        errors[method] = _relative_error(reference, outputs(result.model))
    assert errors["stats"] < 0.8 * errors["none"], errors


def test_matmul_layers_get_a_bias_add_and_their_statistics_back(monkeypatch):
    """MatMul by a constant (channels last, no bias input): the pass adds an ``Add``."""
    proto = model(f"""{HEADER}
g (float[N,T,6] x) => (float[N,T,4] y) {{
  h = MatMul (x, w1)
  r = Relu (h)
  y = MatMul (r, w2)
}}""", w1=(6, 8), w2=(8, 4))
    rng = np.random.default_rng(3)
    feeds = [{"x": rng.standard_normal((2, 5, 6)).astype(np.float32)} for _ in range(3)]
    monkeypatch.setitem(COMPENSATIONS, "stats",
                        functools.partial(stats.StatsRecalibrationPass, clip=WIDE))
    result = graphprune.prune(ir.from_proto(proto), 0.5, round_to=1, compensate="stats",
                              calibration=feeds)
    assert sum(n.op_type == "Add" for n in result.model.graph) >= 1
    assert [o.name for o in result.model.graph.outputs] == ["y"]

    def last_axis(m):
        return collect_stats(m, feeds, {"y": 2})["y"]

    original, after = last_axis(ir.from_proto(proto)), last_axis(result.model)
    np.testing.assert_allclose(after.mean, original.mean, rtol=1e-3, atol=1e-5)
    np.testing.assert_allclose(np.sqrt(after.var), np.sqrt(original.var), rtol=1e-3)
    plain = graphprune.prune(ir.from_proto(proto), 0.5, round_to=1, calibration=feeds)
    assert not np.allclose(np.sqrt(last_axis(plain.model).var), np.sqrt(original.var),
                           rtol=1e-2)


@pytest.mark.parametrize("op, w_shape", [("Conv", (6, 2, 3, 3)), ("ConvTranspose", (4, 3, 3, 3))])
def test_apply_scales_each_output_channel_of_grouped_layers(op, w_shape):
    """``apply(layer, s, b)`` turns ``y`` into ``s * (y - b_old) + b`` per output channel."""
    import onnxruntime as ort

    proto = model(f"""{HEADER}
g (float[N,4,H,W] x) => (float[N,6,Ho,Wo] y) {{
  y = {op} <group = 2> (x, w, b)
}}""", w=w_shape, b=(6,))
    feed = {"x": np.random.default_rng(1).standard_normal((2, 4, 5, 5)).astype(np.float32)}

    def run(p):
        return ort.InferenceSession(p.SerializeToString(),
                                    providers=["CPUExecutionProvider"]).run(None, feed)[0]

    before = run(proto)
    edited = ir.from_proto(proto)
    (layer,) = linear_layers(edited)
    old = layer.bias()
    s, b = np.arange(1.0, 7.0), np.linspace(-1, 1, 6)
    stats.apply(layer, s, b)
    expected = (before - old.reshape(1, 6, 1, 1)) * s.reshape(1, 6, 1, 1) + b.reshape(1, 6, 1, 1)
    np.testing.assert_allclose(run(ir.to_proto(edited)), expected, rtol=1e-4, atol=1e-4)


def test_weights_in_constant_nodes_are_layers_too():
    """PP-OCR's exports hold every weight in a ``Constant`` node, not an initializer."""
    proto = branches()
    inits = {i.name: i for i in proto.graph.initializer}
    nodes = [onnx.helper.make_node("Constant", [], [name], value=inits[name], name=name)
             for name in ("w1", "w4")]
    kept = [i for i in proto.graph.initializer if i.name not in ("w1", "w4")]
    del proto.graph.initializer[:]
    proto.graph.initializer.extend(kept)
    body = list(proto.graph.node)
    del proto.graph.node[:]
    proto.graph.node.extend(nodes + body)
    assert len(linear_layers(ir.from_proto(proto))) == 6
    result = prune(proto)
    assert result.compensation[0]["layers"] == 6
