"""Segmented runs (graphprune.verify.segments) compute what one session computes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
import pytest

import graphprune
from graphprune.verify import oracle, segments
from graphprune.verify.oracle import check_oracle, masked_model, run, run_model
from tests import corpus
from tests.test_rules import model

TEXT = """<ir_version: 8, opset_import: ["" : 17]>
g (float[2,6] x, float[3] bias) => (float[2,6] y, float[2,8] h2) {
  h = MatMul (x, w1)
  r = Relu (h)
  n = Div (r, d)
  h2 = MatMul (n, w2)
  t = Tanh (h2)
  c = Constant <value = float[8] {1,2,3,4,5,6,7,8}> ()
  tc = Mul (t, c)
  z = MatMul (tc, w3)
  three = Slice (z, s0, s3, ax)
  b = Add (three, bias)
  rest = Slice (z, s3, s6, ax)
  y = Concat <axis = 1> (b, rest)
}"""


def _saved(tmp_path: Path) -> tuple[Path, onnx.ModelProto]:
    proto = model(TEXT, w1=(6, 8), d=np.full(8, 2.0, np.float32), w2=(8, 8), w3=(8, 6),
                  s0=np.array([0]), s3=np.array([3]), s6=np.array([6]), ax=np.array([1]))
    path = tmp_path / "m.onnx"
    saved = onnx.ModelProto()
    saved.CopyFrom(proto)
    onnx.save(saved, path, save_as_external_data=True, all_tensors_to_one_file=True,
              location="m.onnx.data", size_threshold=100)  # weights, not shapes
    return path, proto


def _feeds(seed=0):
    rng = np.random.default_rng(seed)
    return [{"x": rng.standard_normal((2, 6)).astype(np.float32),
             "bias": rng.standard_normal(3).astype(np.float32)} for _ in range(2)]


@pytest.mark.parametrize("budget", [1, 300, 10**9])
def test_segments_compute_the_whole_models_outputs(tmp_path, budget):
    path, proto = _saved(tmp_path)
    feeds = _feeds()
    plan = segments.plan_segments(onnx.load(path, load_external_data=False).graph, budget, {"x"})
    assert len(plan) > 1 if budget < 10**9 else len(plan) == 1
    got = segments.run_in_segments(path, feeds, budget=budget)
    for want, have in zip([run(proto, f) for f in feeds], got, strict=True):
        assert [a.shape for a in have] == [(2, 6), (2, 8)]
        for a, b in zip(want, have, strict=True):
            np.testing.assert_array_equal(a, b)


def test_masked_segments_equal_the_masked_model(tmp_path):
    """Masked segment by segment: divisors become 1, Constant nodes are masked too."""
    path, proto = _saved(tmp_path)
    masks = {"w1": [(1, np.array([0, 2, 5]))], "d": [(0, np.array([0, 2, 5]))],
             "w2": [(0, np.array([0, 2, 5])), (1, np.array([1, 3]))],
             "c": [(0, np.array([1, 3]))], "w3": [(0, np.array([1, 3]))]}
    feeds = _feeds(1)
    want = [run(masked_model(proto, masks), f) for f in feeds]
    got = segments.run_in_segments(path, feeds, masks, budget=1)
    for a, b in zip(want, got, strict=True):
        for x, y in zip(a, b, strict=True):
            np.testing.assert_array_equal(x, y)
    assert np.count_nonzero(got[0][1]) == 2 * 2  # only the two kept columns of h2


def test_large_models_run_in_segments_through_the_checks(tmp_path, monkeypatch):
    """With the size limit lowered, the self-check and the oracle take the segmented path."""
    path, proto = _saved(tmp_path)
    calls = []
    real = segments.run_in_segments
    monkeypatch.setattr(segments, "WHOLE_RUN_BYTES", 0)
    monkeypatch.setattr(segments, "SEGMENT_BYTES", 1)
    monkeypatch.setattr(segments, "run_in_segments",
                        lambda *a, **k: calls.append(a[2] if len(a) > 2 else None) or real(*a, **k))
    feeds = _feeds()
    outputs = run_model(path, feeds)
    assert calls == [None]
    result = graphprune.prune(ir.load(path), 0.5, round_to=1)
    assert result.masks
    pruned = tmp_path / "p.onnx"
    ir.save(result.model, pruned, external_data="p.onnx.data")
    verdict = check_oracle(path, pruned, result.masks, feeds)
    assert verdict.passed and calls[1] is result.masks  # the masked original, segmented
    assert outputs[0][0].shape == (2, 6)
    options = oracle.session_options()
    assert options.get_session_config_entry("session.disable_prepacking") == "1"
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"


def test_wrong_pruned_model_still_fails_the_segmented_oracle(tmp_path, monkeypatch):
    path, proto = _saved(tmp_path)
    monkeypatch.setattr(segments, "WHOLE_RUN_BYTES", 0)
    monkeypatch.setattr(segments, "SEGMENT_BYTES", 1)
    result = graphprune.prune(ir.load(path), 0.5, round_to=1)
    pruned = tmp_path / "p.onnx"
    ir.save(result.model, pruned, external_data="p.onnx.data")
    (axis, kept), = result.masks["w1"]
    wrong = {**result.masks, "w1": [(axis, np.setdiff1d(np.arange(8), kept))]}
    from graphprune.errors import VerificationError

    with pytest.raises(VerificationError):
        check_oracle(path, pruned, wrong, _feeds())


def test_models_with_many_nodes_run_in_segments_of_few_nodes(tmp_path, monkeypatch):
    """Past WHOLE_RUN_NODES a model runs in SEGMENT_NODES-node segments, never as one session."""
    path, proto = _saved(tmp_path)
    monkeypatch.setattr(segments, "WHOLE_RUN_NODES", 4)
    monkeypatch.setattr(segments, "SEGMENT_NODES", 3)
    whole = []
    real_session = oracle.session
    monkeypatch.setattr(oracle, "session", lambda m, *a, **k: whole.append(m) or
                        real_session(m, *a, **k))
    plan = segments.plan_segments(proto.graph, 10**9, {"x", "bias"})
    assert [len(s.nodes) for s in plan] == [3, 3, 3, 3]
    assert segments.segmented_for(path) == "nodes"
    feeds = _feeds(2)
    got = run_model(path, feeds)
    assert whole == []
    for want, have in zip([run(proto, f) for f in feeds], got, strict=True):
        for a, b in zip(want, have, strict=True):
            np.testing.assert_array_equal(a, b)


def test_the_oracle_takes_the_fills_of_the_prune_result(tmp_path, monkeypatch):
    """PruneResult.fills are the input model's; given them, the oracle does not reload it."""
    path, proto = _saved(tmp_path)
    result = graphprune.prune(ir.load(path), 0.5, round_to=1)
    assert result.fills == oracle.fills_for(ir.load(path), result.masks)
    assert result.fills["d"] == 1 and result.fills["w1"] == 0  # a divisor, a weight
    pruned = tmp_path / "p.onnx"
    ir.save(result.model, pruned, external_data="p.onnx.data")
    monkeypatch.setattr(segments, "WHOLE_RUN_NODES", 4)
    monkeypatch.setattr(segments, "SEGMENT_NODES", 2)
    monkeypatch.setattr(ir, "load", lambda *a, **k: pytest.fail("the input was loaded again"))
    assert check_oracle(path, pruned, result.masks, _feeds(), fills=result.fills).passed


@pytest.mark.parametrize("entry", [pytest.param(e, id=e.id, marks=[pytest.mark.slow] if e.slow
                                                else []) for e in corpus.CORPUS])
def test_real_models_compute_the_same_in_segments_of_few_nodes(entry, monkeypatch):
    """Every corpus model in 40-node segments gives the whole session's outputs bit for bit.

    As a model past WHOLE_RUN_NODES is cut (or run whole, when Unsegmentable).
    """
    path = corpus.fetch(entry)
    proto = onnx.load(str(path), load_external_data=False)
    feeds = [corpus.feeds(entry, proto, seed) for seed in (0, 1)]
    whole = oracle.session(path)
    want = [whole.run(None, dict(f)) for f in feeds]
    del whole
    monkeypatch.setattr(segments, "WHOLE_RUN_NODES", 0)
    monkeypatch.setattr(segments, "SEGMENT_NODES", 40)
    try:
        got = segments.run_in_segments(path, feeds)
    except segments.Unsegmentable:
        got = run_model(path, feeds)  # what the checks do then: one session
    assert len(segments.plan_segments(proto.graph, segments.SEGMENT_BYTES, set(feeds[0]))) \
        >= len(proto.graph.node) // 40
    for a, b in zip(want, got, strict=True):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
