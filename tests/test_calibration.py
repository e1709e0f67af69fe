"""Calibration statistics, the data-driven criteria and the scoring interface around them."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from onnx import numpy_helper

import graphprune
from graphprune.calibration import ActivationStats, CalibrationProvider
from graphprune.cli import main
from graphprune.errors import InputError, UsageError
from graphprune.importance import SCORERS, ScoringContext, score, standardize
from graphprune.importance.consumers import consumer_pairs
from graphprune.inputs import load_inputs
from tests.oracle import assert_mask_equivalent, feeds_for, prune_proto
from tests.test_analysis import HEADER, concat_split, grouped, model, residual3

SHAPE = (2, 3, 5, 6)


def scaled() -> onnx.ModelProto:
    """``x * s -> Relu -> 1x1 conv``: the intermediate values are plain numpy."""
    return model(f"""{HEADER}
g (float[N,3,H,W] x) => (float[N,4,H,W] y) {{
  m = Mul (x, s)
  r = Relu (m)
  y = Conv (r, w, b)
}}""", s=np.array([1.0, -2.0, 0.5], np.float32).reshape(1, 3, 1, 1), w=(4, 3, 1, 1), b=(4,))


def batches(count: int = 3, seed: int = 0) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [{"x": rng.standard_normal((n, 3, 5, 6)).astype(np.float32) + 0.3}
            for n in (1, 2, 3)[:count]]


def _expected(arrays: list[np.ndarray], axis: int):
    x = np.concatenate([np.moveaxis(a.astype(np.float64), axis, 0).reshape(a.shape[axis], -1)
                        for a in arrays], axis=1)
    return x.sum(1), (x ** 2).sum(1), x.shape[1], x.mean(1), x.var(1)


@pytest.mark.parametrize("source", ["path", "external", "ir", "ir-external"])
def test_stats_equal_numpy_over_batches(tmp_path, monkeypatch, source):
    proto = scaled()
    feeds = batches()
    s = numpy_helper.to_array(proto.graph.initializer[0]).astype(np.float64)
    m = [f["x"] * s for f in feeds]
    r = [np.maximum(a, 0) for a in m]
    path = tmp_path / "m.onnx"
    onnx.save(proto, path, save_as_external_data=source.endswith("external"),
              location="m.data", size_threshold=0)
    target = ir.load(path) if source.startswith("ir") else path
    monkeypatch.chdir("/")  # external data is found beside the model, not in the cwd
    stats = ActivationStats.collect(target, iter(feeds), {"m": 1, "r": -3, "x": 1})
    for name, arrays in (("m", m), ("r", r), ("x", [f["x"] for f in feeds])):
        total, squares, count, mean, var = _expected(arrays, 1)
        got = stats[name]
        np.testing.assert_allclose(got.sum, total, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(got.sq_norm, squares, rtol=1e-6)
        np.testing.assert_allclose(got.mean, mean, rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(got.var, var, rtol=1e-5, atol=1e-7)
        assert got.count == count == 6 * 5 * 6


def test_gram_and_stream_equal_numpy():
    feeds = batches()
    s = numpy_helper.to_array(scaled().graph.initializer[0]).astype(np.float64)
    r = np.concatenate([np.maximum(f["x"] * s, 0).transpose(0, 2, 3, 1).reshape(-1, 3)
                        for f in feeds])
    provider = CalibrationProvider(ir.from_proto(scaled()), feeds)
    gram = provider.gram({"r": 1})["r"]
    np.testing.assert_allclose(gram.xtx, r.T @ r, rtol=1e-5)
    np.testing.assert_allclose(gram.sum, r.sum(0), rtol=1e-5)
    assert gram.count == len(r)
    shapes = [values["r"].shape for values in provider.stream(["r"])]
    assert shapes == [f["x"].shape for f in feeds]


def test_stats_refuse_unknown_values_and_no_batches():
    with pytest.raises(UsageError, match="no value 'nope'"):
        ActivationStats.collect(ir.from_proto(scaled()), batches(), {"nope": 1})
    with pytest.raises(UsageError, match="no batches"):
        ActivationStats.collect(ir.from_proto(scaled()), [], {"r": 1})
    wrong = [{"x": np.zeros((1, 5, 5, 6), np.float32)}]  # 5 channels where the model takes 3
    with pytest.raises(InputError, match="does not run on batch 0"):
        ActivationStats.collect(ir.from_proto(scaled()), wrong, {"r": 1})


def test_provider_collects_each_value_once():
    calls = []
    provider = CalibrationProvider(ir.from_proto(scaled()), make_batches=lambda: (
        calls.append(1), batches())[1])
    first = provider.stats({"r": 1})
    again = provider.stats({"r": 1})
    assert first["r"] is again["r"] and len(calls) == 1
    assert set(provider.stats({"r": 1, "m": 1})) == {"r", "m"}


def probe(seed: int = 1) -> onnx.ModelProto:
    """``conv1 (8) -> Relu -> conv2``: channel 3 is always 0, channel 5 always 2.

    Both have the largest conv2 columns, so magnitude ranks them first.
    """
    rng = np.random.default_rng(seed)
    w1 = (rng.standard_normal((8, 3, 3, 3)) * 0.3).astype(np.float32)
    b1 = (rng.standard_normal(8) * 0.1).astype(np.float32)
    w1[[3, 5]] = 0
    b1[3], b1[5] = -1.0, 2.0
    w2 = (rng.standard_normal((4, 8, 3, 3)) * 0.3).astype(np.float32)
    w2[:, 3] = w2[:, 5] = 3.0
    return model(f"""{HEADER}
g (float[N,3,H,W] x) => (float[N,4,Ho,Wo] y) {{
  conv1 = Conv <pads=[1,1,1,1]> (x, w1, b1)
  r = Relu (conv1)
  y = Conv <pads=[1,1,1,1]> (r, w2, b2)
}}""", w1=w1, b1=b1, w2=w2, b2=(4,))


def _group_scores(proto, criterion: str) -> np.ndarray:
    analysis = graphprune.analyze(ir.from_proto(proto))
    feeds = [feeds_for(proto, {"x": SHAPE}, seed=s) for s in range(3)]
    context = ScoringContext(analysis, analysis.model,
                             CalibrationProvider(analysis.model, feeds), seed=0)
    (group,) = analysis.groups
    return score(criterion, context)[group.classes]


def test_activation_ranks_a_dead_channel_lowest():
    proto = probe()
    activation, l1 = _group_scores(proto, "activation"), _group_scores(proto, "l1")
    assert int(np.argmin(activation)) == 3
    assert activation[5] == activation.max()  # large and active
    assert int(np.argmax(l1)) in (3, 5) and l1[3] > np.median(l1)  # magnitude keeps it
    kept = prune_proto(proto, ratio=0.5, round_to=1, criterion="activation",
                       calibration=[feeds_for(proto, {"x": SHAPE})]).groups[0]["kept"]
    assert 3 not in kept and 5 in kept


def test_fluctuation_ranks_a_constant_channel_lowest():
    proto = probe()
    fluctuation = _group_scores(proto, "fluctuation")
    assert fluctuation[5] == fluctuation.min() and fluctuation[3] == fluctuation.min()
    assert (np.delete(fluctuation, [3, 5]) > fluctuation.min()).all()
    kept = prune_proto(proto, ratio=0.5, round_to=1, criterion="fluctuation").groups[0]["kept"]
    assert 3 not in kept and 5 not in kept


def test_scores_are_standardized_per_group():
    proto = concat_split()
    analysis = graphprune.analyze(ir.from_proto(proto))
    feeds = [feeds_for(proto, {"x": (2, 3, 4, 4)}, seed=s) for s in range(2)]
    context = ScoringContext(analysis, analysis.model, CalibrationProvider(analysis.model, feeds))
    for criterion in SCORERS:
        scores = score(criterion, context)
        for group in analysis.groups:
            values = scores[group.classes]
            assert abs(values.mean()) < 1e-9 and abs(values.std() - 1) < 1e-9, criterion
    raw = np.arange(analysis.table.num_elements, dtype=float)
    for group in analysis.groups:  # the order inside a group is kept
        z = standardize(analysis, raw)[group.classes]
        assert (np.argsort(z) == np.argsort(raw[group.classes])).all()


def test_consumer_pairs_are_the_contracted_input_axes():
    analysis = graphprune.analyze(ir.from_proto(residual3()))
    pairs = {(p.weight.name, p.activation.name) for p in consumer_pairs(analysis)}
    assert pairs == {("w2[1]", "r1[1]"), ("w3[1]", "r2[1]"), ("w4[1]", "e[1]")}


def mlp() -> onnx.ModelProto:
    return model(f"""{HEADER}
g (float[N,T,16] x) => (float[N,T,16] y) {{
  h = MatMul (x, w1)
  a = Add (h, b1)
  r = Relu (a)
  g2 = MatMul (r, w2)
  y = Add (g2, b2)
}}""", w1=(16, 32), b1=(32,), w2=(32, 16), b2=(16,))


@pytest.mark.parametrize("criterion", ["activation", "fluctuation"])
@pytest.mark.parametrize("name", ["residual3", "concat_split", "grouped", "mlp"])
def test_data_driven_criteria_pass_the_oracle(criterion, name):
    proto = {"residual3": residual3, "concat_split": concat_split, "grouped": grouped,
             "mlp": mlp}[name]()
    shapes = {"concat_split": {"x": (2, 3, 4, 4)}, "mlp": {"x": (2, 5, 16)}}.get(
        name, {"x": SHAPE})
    inputs = load_inputs(proto, shapes, samples=4, seed=1)
    result = prune_proto(proto, ratio=0.5, round_to=1, criterion=criterion,
                         calibration=inputs, input_shapes=shapes)
    assert result.after.params < result.before.params
    assert_mask_equivalent(proto, result, feeds_for(proto, shapes))


def test_data_driven_criterion_on_a_model_with_external_data(tmp_path):
    proto = residual3()
    path = tmp_path / "net.onnx"
    onnx.save(proto, path, save_as_external_data=True, location="net.data", size_threshold=0)
    result = graphprune.prune(path, 0.5, criterion="activation", round_to=1,
                              input_shapes={"x": SHAPE})
    assert result.after.params < result.before.params


def test_cli_activation_criterion(model_path, tmp_path, capsys):
    out = tmp_path / "act.onnx"
    args = [str(model_path), "--ratio", "0.3", "--round-to", "4", "--criterion", "activation",
            "--calib-samples", "2", "-o", str(out), "--no-bench"]
    assert main(args) == 0
    assert out.exists() and "not real calibration data" in capsys.readouterr().err
    data = tmp_path / "calib.npy"
    np.save(data, np.random.default_rng(0).standard_normal((3, 3, 32, 32)).astype(np.float32))
    out2 = tmp_path / "fluct.onnx"
    assert main([*args[:6], "fluctuation", "--data", str(data), "-o", str(out2),
                 "--no-bench"]) == 0
    assert out2.exists() and "not real calibration" not in capsys.readouterr().err
    report = json.loads((tmp_path / "fluct.report.json").read_text())
    assert report["settings"]["calibration"] == {"origin": str(data), "batches": 3}


def test_calibration_given_as_a_data_path(tmp_path):
    """``prune(calibration=path)`` reads the file as ``--data`` does; the oracle still holds."""
    proto = residual3()
    data = tmp_path / "calib.npy"
    np.save(data, np.random.default_rng(0).standard_normal((4, *SHAPE[1:])).astype(np.float32))
    from_path = prune_proto(proto, ratio=0.5, round_to=1, criterion="activation",
                            calibration=str(data), input_shapes={"x": SHAPE})
    inputs = load_inputs(proto, {"x": SHAPE}, data)
    from_inputs = prune_proto(proto, ratio=0.5, round_to=1, criterion="activation",
                              calibration=inputs, input_shapes={"x": SHAPE})
    assert from_path.masks.keys() == from_inputs.masks.keys()
    for name, cuts in from_path.masks.items():
        for (axis, kept), (axis2, kept2) in zip(cuts, from_inputs.masks[name], strict=True):
            assert axis == axis2 and np.array_equal(kept, kept2)
    assert_mask_equivalent(proto, from_path, feeds_for(proto, {"x": SHAPE}))
