"""Inputs from one place: shapes (--input-shape, defaults), valid feeds, a truthful self-check."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

import graphprune
from graphprune._io import save_model
from graphprune.cli import main
from graphprune.errors import InputError, VerificationError
from graphprune.inputs import load_inputs, resolve_specs, valid_feeds, value_domains
from graphprune.verify.oracle import check_oracle
from graphprune.verify.runtime import check_runs

FAST_BENCH = ["--runs", "2", "--warmup", "1", "--samples", "2", "--providers", "cpu"]


def _build(text: str, weights: dict, seed: int = 0) -> onnx.ModelProto:
    """Parses ``text`` and turns the graph inputs named in ``weights`` into initializers.

    A weight given as a shape is filled with standard-normal floats.
    """
    proto = onnx.parser.parse_model(text)
    rng = np.random.default_rng(seed)
    keep = [v for v in proto.graph.input if v.name not in weights]
    del proto.graph.input[:]
    proto.graph.input.extend(keep)
    for name, array in weights.items():
        if not isinstance(array, np.ndarray):
            array = rng.standard_normal(array).astype(np.float32)
        proto.graph.initializer.append(onnx.numpy_helper.from_array(array, name))
    onnx.checker.check_model(proto, full_check=True)
    return proto


def _save(proto: onnx.ModelProto, folder, name: str):
    path = folder / name
    onnx.save(proto, path)
    return path


CONV_HW = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[N, 3, H, W] x, float[8, 3, 3, 3] w1, float[4, 8, 3, 3] w2) => (float[N, 4, A, B] y) {
  h = Conv(x, w1)
  r = Relu(h)
  y = Conv(r, w2)
}
"""

# x[N, S] needs S = 6: only --input-shape makes it runnable
MATMUL_S = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[N, S] x, float[6, 8] w1, float[8, 4] w2) => (float[N, 4] y) {
  h = MatMul(x, w1)
  r = Relu(h)
  y = MatMul(r, w2)
}
"""

TOKEN_TYPES = """
<ir_version: 8, opset_import: ["" : 17]>
g (int64[1, 64] ids, int64[1, 64] types, float[30, 8] words, float[2, 8] type_table,
   float[8, 16] w1, float[16, 4] w2) => (float[1, 64, 4] y) {
  a = Gather(words, ids)
  b = Gather(type_table, types)
  e = Add(a, b)
  h = MatMul(e, w1)
  r = Relu(h)
  y = MatMul(r, w2)
}
"""

# Gather at index 7 of a 3-wide activation: onnxruntime cannot run it on any input
UNRUNNABLE = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[1, 4] x, float[4, 8] w1, float[8, 3] w2, int64[1] k) => (float[1, 1] v) {
  h = MatMul(x, w1)
  r = Relu(h)
  y = MatMul(r, w2)
  v = Gather <axis = 1> (y, k)
}
"""

DOMAINS = """
<ir_version: 8, opset_import: ["" : 17]>
g (int64[B, S] ids, int64[B, S] attention, bool[1] flag, int64[B, S] count, float[10, 4] pos,
   float[1] one, float[1] big, int64[] rate)
  => (float[B, S, 1, 4] p, float[B, 1, S] m, bool[1] f, int64[B, S] c, bool[] e) {
  i32 = Cast <to = 6> (ids)
  axes = Constant <value = int64[1] {2}> ()
  u = Unsqueeze(i32, axes)
  two = Constant <value = int32[1] {2}> ()
  shifted = Add(u, two)
  p = Gather(pos, shifted)
  mf = Cast <to = 1> (attention)
  ax1 = Constant <value = int64[1] {1}> ()
  mu = Unsqueeze(mf, ax1)
  inv = Sub(one, mu)
  m = Mul(inv, big)
  f = Not(flag)
  c = Identity(count)
  hz = Constant <value = int64 {16000}> ()
  e = Equal(rate, hz)
}
"""


def _weights_conv():
    return {"w1": (8, 3, 3, 3), "w2": (4, 8, 3, 3)}


def test_conv_with_symbolic_hw_self_checks_without_flags(tmp_path):
    source = _save(_build(CONV_HW, _weights_conv()), tmp_path, "conv.onnx")
    assert main([str(source), "--round-to", "2", "-o", str(tmp_path / "a.onnx"), *FAST_BENCH]) == 0
    assert main([str(source), "--round-to", "2", "-o", str(tmp_path / "b.onnx"), "--no-bench"]) == 0
    report = json.loads((tmp_path / "b.report.json").read_text())
    assert report["after"]["params"] < report["before"]["params"]  # something was pruned


def test_input_shape_is_honored_without_bench(tmp_path, capsys):
    source = _save(_build(MATMUL_S, {"w1": (6, 8), "w2": (8, 4)}), tmp_path, "mm.onnx")
    out = tmp_path / "mm.pruned.onnx"
    argv = [str(source), "--round-to", "2", "--no-bench", "-o", str(out)]
    assert main([*argv, "--input-shape", "x=1,6"]) == 0 and out.exists()
    assert resolve_specs(source, {"x": (3, 6)})[0].shape == (3, 6)
    out.unlink()
    capsys.readouterr()
    assert main(argv) == 2  # the default S=128 does not fit the 6-row weight: the input's fault
    err = capsys.readouterr().err
    assert "cannot run the input model" in err and "--input-shape" in err
    assert not out.exists()


def test_token_type_ids_stay_inside_their_two_row_table(tmp_path):
    weights = {"words": (30, 8), "type_table": (2, 8), "w1": (8, 16), "w2": (16, 4)}
    proto = _build(TOKEN_TYPES, weights)
    domains = value_domains(proto)
    assert (domains["types"].kind, domains["types"].high) == ("index", 2)
    assert domains["types"].table == "type_table" and domains["ids"].high == 30
    for feeds in valid_feeds(proto, count=3):
        assert set(np.unique(feeds["types"])) == {0, 1}
        assert 0 <= feeds["ids"].min() and feeds["ids"].max() < 30
    source = _save(proto, tmp_path, "tt.onnx")
    assert main([str(source), "--round-to", "2", "--no-bench"]) == 0
    report = json.loads((tmp_path / "tt.pruned.report.json").read_text())
    assert report["oracle"]["passed"] and report["after"]["params"] < report["before"]["params"]


def test_domains_follow_casts_shifts_and_masks():
    proto = onnx.parser.parse_model(DOMAINS)
    domains = value_domains(proto)
    # ids -> Cast -> Unsqueeze -> Add 2 -> Gather(10-row table): ids + 2 in [0, 10)
    assert (domains["ids"].kind, domains["ids"].low, domains["ids"].high) == ("index", 0, 8)
    assert domains["attention"].kind == "mask"  # Cast to float, then 1 - m
    assert domains["flag"].kind == "mask"  # Not: a logical op
    assert (domains["count"].kind, domains["count"].low, domains["count"].high) == ("int", 0, 2)
    first, second = valid_feeds(proto, {"ids": (2, 12)}, count=2)
    assert first["attention"].shape == (2, 12)  # S is shared with ids
    assert np.all(first["attention"] == 1)
    assert set(np.unique(second["attention"])) <= {0, 1}
    assert np.all(second["attention"][:, 0] == 1)  # padded, never empty
    assert first["ids"].max() < 8 and first["count"].max() < 2
    assert domains["rate"].kind == "choice" and first["rate"] == 16000  # Equal picks a branch


def test_default_shapes_never_shrink_images_or_sequences():
    proto = onnx.parser.parse_model("""
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[N, H, W, 3] nhwc, float[N, 1, H2, W2] nchw, int64[N, S] tokens, float[N, T, 80] mel)
      => (float[N, H, W, 3] a, float[N, 1, H2, W2] b, int64[N, S] c, float[N, T, 80] d) {
      a = Identity(nhwc)
      b = Identity(nchw)
      c = Identity(tokens)
      d = Identity(mel)
    }""")
    specs = {s.name: s for s in resolve_specs(proto)}
    assert specs["nhwc"].shape == (1, 224, 224, 3) and specs["nhwc"].channel_axis == 3
    assert specs["nchw"].shape == (1, 1, 224, 224) and specs["nchw"].channel_axis == 1
    assert specs["tokens"].shape == (1, 128)
    assert specs["mel"].shape[1] > 1


def test_nhwc_image_folder(tmp_path):
    from PIL import Image

    proto = onnx.parser.parse_model("""
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[N, H, W, 3] x) => (float[N, H, W, 3] y) { y = Identity(x) }""")
    for k in range(2):
        pixels = np.random.default_rng(k).integers(0, 255, (40, 50, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(tmp_path / f"img{k}.png")
    inputs = load_inputs(proto, {"x": (1, 16, 20, 3)}, data=tmp_path)
    assert [b["x"].shape for b in inputs.batches] == [(1, 16, 20, 3)] * 2


def test_unrunnable_original_is_an_input_error(tmp_path, capsys):
    proto = _build(UNRUNNABLE, {"w1": (4, 8), "w2": (8, 3), "k": np.array([7], np.int64)})
    source = _save(proto, tmp_path, "bad.onnx")
    assert main([str(source), "--round-to", "2", "--no-bench"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "cannot run the input model" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.onnx"]


def test_self_check_blames_only_the_model_that_fails(tmp_path):
    good = _save(_build(MATMUL_S.replace("S]", "6]"), {"w1": (6, 8), "w2": (8, 4)}),
                 tmp_path, "good.onnx")
    bad = _save(_build(UNRUNNABLE.replace("[1, 4] x", "[1, 6] x").replace("[4, 8]", "[6, 8]"),
                       {"w1": (6, 8), "w2": (8, 3), "k": np.array([7], np.int64)}),
                tmp_path, "bad.onnx")
    feeds = valid_feeds(good)
    with pytest.raises(VerificationError, match="pruned model does not run"):
        check_runs(bad, feeds, original=good)
    with pytest.raises(InputError, match="cannot run the input model"):
        check_runs(bad, feeds, original=bad)


def test_oracle_catches_a_model_that_is_not_the_masked_original(tmp_path):
    source = _save(_build(MATMUL_S, {"w1": (6, 8), "w2": (8, 4)}), tmp_path, "mm.onnx")
    result = graphprune.prune(source, 0.5, round_to=2)
    pruned = tmp_path / "mm.pruned.onnx"
    save_model(result.model, pruned)
    feeds = valid_feeds(source, {"x": (2, 6)}, count=2)
    good = check_oracle(source, pruned, result.masks, feeds)
    assert good.passed and good.relative_error <= 1e-4 and good.batches == 2
    with pytest.raises(VerificationError, match="masked original"):
        check_oracle(source, pruned, {}, feeds)  # unmasked: the removed channels still count


def test_oracle_scale_is_the_originals_where_the_masked_output_cancels():
    from graphprune.verify.oracle import compare

    masked, pruned = [[np.array([6e-8, 0.0], np.float32)]], [[np.array([9e-8, 0.0], np.float32)]]
    assert not compare(["y"], masked, pruned).passed  # judged at its own, ~0 scale
    original = [[np.array([0.02, 0.01], np.float32)]]
    assert compare(["y"], masked, pruned, original=original).passed
    wrong = [[np.array([0.01, 0.0], np.float32)]]
    assert not compare(["y"], masked, wrong, original=original).passed
    ints = compare(["q"], [[np.array([10, 200], np.uint8)]], [[np.array([11, 200], np.uint8)]])
    assert ints.passed and ints.tolerance == pytest.approx(1 / 200)  # one quantization step
