"""The output-aware (Beta-Rank-style) and data-free OBS (OBSPA-style) criteria."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import pytest

import graphprune
from graphprune.calibration import CalibrationProvider
from graphprune.cli import main
from graphprune.errors import UsageError
from graphprune.importance import NEEDS_CALIBRATION, SCORERS, ScoringContext, score
from graphprune.importance.obspa import DAMPING, FLOOR, Moments, consumer_errors, obs_errors
from graphprune.importance.producers import producer_pairs
from graphprune.inputs import load_inputs
from tests.oracle import assert_mask_equivalent, feeds_for, prune_proto
from tests.test_analysis import HEADER, concat_split, grouped, model, residual3
from tests.test_calibration import mlp

SHAPE = (2, 3, 5, 6)


def chain(w1: np.ndarray, b1: np.ndarray, w2: np.ndarray) -> onnx.ModelProto:
    """``conv1 (8) -> Relu -> conv2``, bias-free second conv."""
    return model(f"""{HEADER}
g (float[N,3,H,W] x) => (float[N,4,Ho,Wo] y) {{
  conv1 = Conv <pads=[1,1,1,1]> (x, w1, b1)
  r = Relu (conv1)
  y = Conv <pads=[1,1,1,1]> (r, w2)
}}""", w1=w1.astype(np.float32), b1=b1.astype(np.float32), w2=w2.astype(np.float32))


def weights(seed: int = 3):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((8, 3, 3, 3)) * 0.3, rng.standard_normal(8) * 0.1,
            rng.standard_normal((4, 8, 3, 3)) * 0.3)


def feeds(count: int = 3, scale: float = 1.0):
    rng = np.random.default_rng(7)
    return [{"x": (rng.standard_normal(SHAPE) * scale).astype(np.float32)} for _ in range(count)]


def scores_of(proto, criterion: str, batches=None, raw: bool = False) -> np.ndarray:
    analysis = graphprune.analyze(ir.from_proto(proto))
    provider = None if batches is None else CalibrationProvider(analysis.model, batches)
    context = ScoringContext(analysis, analysis.model, provider, seed=0)
    (group,) = analysis.groups
    values = SCORERS[criterion](context) if raw else score(criterion, context)
    return values[group.classes]


def test_registered_and_calibration_needs():
    assert {"output", "obspa"} <= set(SCORERS)
    assert "output" in NEEDS_CALIBRATION and "obspa" not in NEEDS_CALIBRATION


def test_producer_pairs_are_filters_with_their_input():
    analysis = graphprune.analyze(ir.from_proto(residual3()))
    pairs = {(p.weight.name, p.output.name, p.source.name, p.dense)
             for p in producer_pairs(analysis)}
    assert pairs == {("w1[0]", "conv1[1]", "x[1]", True), ("w2[0]", "conv2[1]", "r1[1]", True),
                     ("w3[0]", "conv3[1]", "r2[1]", True)}
    analysis = graphprune.analyze(ir.from_proto(grouped()))
    dense = {p.weight.name: p.dense for p in producer_pairs(analysis)}
    assert dense == {"w1[0]": True, "wg[0]": False}
    analysis = graphprune.analyze(ir.from_proto(mlp()))
    assert [(p.weight.name, p.output.name, p.source.name) for p in producer_pairs(analysis)] == [
        ("w1[1]", "h[2]", "x[2]")]


# --- output (Beta-Rank-style) -----------------------------------------------------------------


def test_output_score_equals_its_formula():
    w1, b1, w2 = weights()
    proto = chain(w1, b1, w2)
    batches = feeds()
    got = scores_of(proto, "output", batches, raw=True)
    provider = CalibrationProvider(ir.from_proto(proto), batches)
    r = np.concatenate([v["r"] for v in provider.stream(["r"])])
    x = np.concatenate([b["x"] for b in batches]).astype(np.float64)
    rms = np.sqrt((r.astype(np.float64) ** 2).mean(axis=(0, 2, 3)))
    expected = rms / np.sqrt((x ** 2).mean())
    np.testing.assert_allclose(got, expected, rtol=1e-4)


def test_output_sums_over_producers_and_averages_over_consumers():
    """residual3: one class made by three convs (inputs x, r1, r2), read as r1, r2 and e."""
    proto = residual3()
    batches = feeds()
    got = scores_of(proto, "output", batches, raw=True)
    provider = CalibrationProvider(ir.from_proto(proto), batches)
    values = {n: [] for n in ("x", "r1", "r2", "e")}
    for found in provider.stream(list(values)):
        for name, array in found.items():
            values[name].append(array.astype(np.float64))
    square = {n: np.concatenate(v) ** 2 for n, v in values.items()}
    rms_out = np.sqrt(np.mean([square[n].mean(axis=(0, 2, 3)) for n in ("r1", "r2", "e")], 0))
    gains = sum(1 / np.sqrt(square[n].mean()) for n in ("x", "r1", "r2"))
    np.testing.assert_allclose(got, rms_out * gains, rtol=1e-4)


def test_output_ranks_dead_and_zero_filters_last():
    w1, b1, w2 = weights()
    w1[2] *= 3.0
    b1[2] = -100.0  # the largest filter, never positive: dead after the Relu
    w1[6], b1[6] = 0.0, 0.0
    w2[:, [2, 6]] *= 5.0  # read with the largest weights
    proto = chain(w1, b1, w2)
    output = scores_of(proto, "output", feeds(), raw=True)
    assert output[2] == output[6] == 0.0 and (np.delete(output, [2, 6]) > 0).all()
    assert int(np.argmax(scores_of(proto, "l1"))) == 2  # magnitude keeps the dead one first
    kept = prune_proto(proto, ratio=0.25, round_to=1, criterion="output",
                       calibration=feeds()).groups[0]["kept"]
    assert 2 not in kept and 6 not in kept


def test_output_is_invariant_to_the_input_scale_of_a_homogeneous_chain():
    w1, _, w2 = weights()
    proto = chain(w1, np.zeros(8), w2)  # bias-free conv -> Relu -> conv: positively homogeneous
    base = scores_of(proto, "output", feeds(), raw=True)
    np.testing.assert_allclose(scores_of(proto, "output", feeds(scale=30.0), raw=True), base,
                               rtol=1e-5)
    biased = chain(w1, np.full(8, 0.5), w2)  # a bias breaks it: the claim can fail
    shifted = scores_of(biased, "output", feeds(scale=30.0), raw=True)
    assert not np.allclose(shifted, scores_of(biased, "output", feeds(), raw=True), rtol=1e-3)


def test_output_needs_calibration():
    with pytest.raises(UsageError, match="calibration"):
        scores_of(residual3(), "output")


# --- obspa (data-free OBS) --------------------------------------------------------------------


def brute_force_obs(w: np.ndarray, h: np.ndarray) -> np.ndarray:
    """``min ||(W - W') H^(1/2)||^2`` with column ``i`` of ``W'`` zero, by least squares."""
    errors = []
    for i in range(h.shape[0]):
        rest = [j for j in range(h.shape[0]) if j != i]
        # best W'[:, rest]: solve H[rest, rest] u = H[rest, :] w for each row w
        update = np.linalg.solve(h[np.ix_(rest, rest)], h[rest] @ w.T).T
        delta = w.copy()
        delta[:, rest] -= update
        errors.append(np.einsum("oi,ij,oj->", delta, h, delta))
    return np.array(errors)


def test_obs_errors_equal_the_constrained_least_squares_optimum():
    rng = np.random.default_rng(0)
    f = rng.standard_normal((6, 4))
    moments = f @ f.T  # rank 4 < 6: singular without damping
    w = rng.standard_normal((5, 6))
    damped = moments + np.diag(DAMPING * moments.diagonal() + FLOOR * moments.diagonal().mean())
    np.testing.assert_allclose(obs_errors((w ** 2).sum(0), moments), brute_force_obs(w, damped),
                               rtol=1e-6)


def test_consumer_errors_invert_only_the_correlated_block():
    rng = np.random.default_rng(4)
    f = rng.standard_normal((3, 2))
    known = np.array([1, 3, 4])
    diagonal = np.full(7, 0.7)
    diagonal[known] = (f ** 2).sum(1)
    dense = np.diag(diagonal)
    dense[np.ix_(known, known)] = f @ f.T
    weight_sq = rng.random(7)
    np.testing.assert_allclose(consumer_errors(weight_sq, Moments(diagonal, known, f @ f.T)),
                               obs_errors(weight_sq, dense), rtol=1e-9)


def test_obspa_is_data_free_and_ranks_zero_channels_last():
    w1, b1, w2 = weights()
    w1[1] = 0.0  # no filter: nothing to lose (bias aside, which OBS ignores), damping floor only
    w2[:, 5] = 0.0  # nobody reads it
    w2[:, 1] *= 10.0
    obspa = scores_of(chain(w1, b1, w2), "obspa", raw=True)  # no provider at all
    assert obspa[5] == 0.0 and 0 < obspa[1] < 1e-4 * np.delete(obspa, [1, 5]).min()
    assert int(np.argmax(scores_of(chain(w1, b1, w2), "l2"))) == 1


def test_obspa_finds_redundant_channels_that_magnitude_keeps():
    w1, b1, w2 = weights()
    w1[4] = w1[2]  # channel 4 repeats channel 2: either can stand in for the other
    w2[:, [2, 4]] *= 3.0
    proto = chain(w1, b1, w2)
    obspa, l2 = scores_of(proto, "obspa"), scores_of(proto, "l2")
    assert set(np.argsort(l2)[-2:]) == {2, 4}
    assert set(np.argsort(obspa)[:2]) == {2, 4}
    w1[4] = w1[4] * 0.5 + np.random.default_rng(1).standard_normal(w1[4].shape) * 0.3
    assert set(np.argsort(scores_of(chain(w1, b1, w2), "obspa"))[:2]) != {2, 4}


def test_obspa_scores_do_not_change_with_weight_scale():
    w1, b1, w2 = weights()
    base = scores_of(chain(w1, b1, w2), "obspa")
    np.testing.assert_allclose(scores_of(chain(w1 * 0.1, b1, w2 * 7.0), "obspa"), base,
                               atol=1e-6)
    permutation = np.random.default_rng(2).permutation(8)
    moved = scores_of(chain(w1[permutation], b1[permutation], w2[:, permutation]), "obspa")
    np.testing.assert_allclose(moved, base[permutation], atol=1e-6)


def test_obspa_uses_h_identity_across_per_channel_parameters():
    """A per-channel scale between the filters and the consumer: OBS with ``H = I``."""
    w1, b1, w2 = weights()
    w1[4] = w1[2]  # redundant filters, but the scale in between hides it
    proto = model(f"""{HEADER}
g (float[N,3,H,W] x) => (float[N,4,Ho,Wo] y) {{
  conv1 = Conv <pads=[1,1,1,1]> (x, w1, b1)
  r = Relu (conv1)
  m = Mul (r, s)
  y = Conv <pads=[1,1,1,1]> (m, w2)
}}""", w1=w1.astype(np.float32), b1=b1.astype(np.float32), w2=w2.astype(np.float32),
        s=np.linspace(0.5, 2, 8).astype(np.float32).reshape(1, 8, 1, 1))
    raw = scores_of(proto, "obspa", raw=True)
    column = (w2.astype(np.float32).astype(np.float64) ** 2).sum(axis=(0, 2, 3))
    np.testing.assert_allclose(raw / column, np.full(8, raw[0] / column[0]), rtol=1e-6)


def test_obspa_scores_every_class_of_a_residual_group():
    """residual3: one group made by three convs; each of its channels gets one score."""
    analysis = graphprune.analyze(ir.from_proto(residual3()))
    raw = SCORERS["obspa"](ScoringContext(analysis, analysis.model))
    (group,) = analysis.groups
    assert len(group.classes) == 8 and (raw[group.classes] > 0).all()
    assert np.isfinite(raw).all()


# --- end to end -------------------------------------------------------------------------------


@pytest.mark.parametrize("criterion", ["output", "obspa"])
@pytest.mark.parametrize("name", ["residual3", "concat_split", "grouped", "mlp"])
def test_new_criteria_pass_the_oracle(criterion, name):
    proto = {"residual3": residual3, "concat_split": concat_split, "grouped": grouped,
             "mlp": mlp}[name]()
    shapes = {"concat_split": {"x": (2, 3, 4, 4)}, "mlp": {"x": (2, 5, 16)}}.get(
        name, {"x": SHAPE})
    inputs = load_inputs(proto, shapes, samples=4, seed=1) if criterion == "output" else None
    result = graphprune.prune(ir.from_proto(proto), 0.5, criterion=criterion, round_to=1,
                              calibration=inputs, input_shapes=shapes)
    assert result.after.params < result.before.params
    assert_mask_equivalent(proto, result, feeds_for(proto, shapes))


def test_cli_obspa_reads_no_data(model_path, tmp_path, capsys):
    out = tmp_path / "obspa.onnx"
    assert main([str(model_path), "--ratio", "0.3", "--round-to", "4", "--criterion", "obspa",
                 "-o", str(out), "--no-bench"]) == 0
    assert out.exists() and "calibration" not in capsys.readouterr().err
