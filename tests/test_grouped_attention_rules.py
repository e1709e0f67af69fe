"""GroupQueryAttention and RotaryEmbedding (com.microsoft) on tiny decoders, with the oracle.

onnxruntime 1.32 runs both on CPU (GroupQueryAttention's own rotary needs a head size that is a
multiple of 16, and a past cache with a prompt longer than one token needs batch 1).
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import pytest

import graphprune
from graphprune import BlockReason
from graphprune.verify.oracle import masked_model, relative_error, run
from graphprune.verify.resized_io import sliced_feeds, sliced_outputs
from tests.oracle import assert_mask_equivalent, check_random_selections, prune_proto
from tests.test_rules import model

HEADER = '<ir_version: 8, opset_import: ["" : 17, "com.microsoft" : 1]>'
B, S, D, N, KV, MLP = 1, 5, 32, 4, 2, 12
G = N // KV


def _tables(head_dim: int, batch: int = B, seq: int = S, past: int = 0) -> dict:
    """Rotary cos/sin caches ``[16, head_dim / 2]``, positions and GQA's sequence lengths."""
    inv = 1.0 / 10000 ** (np.arange(0, head_dim, 2) / head_dim)
    angles = np.outer(np.arange(16), inv)
    return {"cos": np.cos(angles).astype(np.float32), "sin": np.sin(angles).astype(np.float32),
            "pos": np.arange(past, past + seq, dtype=np.int64)[None].repeat(batch, 0),
            "seqlens": np.full(batch, past + seq - 1, np.int32),
            "total": np.array(past + seq, np.int32)}


def _mlp(x: str) -> str:
    return f"""gate = MatMul ({x}, wg)
  sg = Sigmoid (gate)
  silu = Mul (gate, sg)
  up = MatMul ({x}, wu)
  h = Mul (silu, up)
  down = MatMul (h, wd)
  y = Add (down, {x})"""


def _decoder(attention: str, head_dim: int, outputs: str = "", inputs: str = "",
             batch: int = B, past: int = 0, **extra) -> onnx.ModelProto:
    """``x -> [attention] -> O proj + residual -> SwiGLU MLP + residual -> y``."""
    q, kv = N * head_dim, KV * head_dim
    text = f"""{HEADER}
g (float[{batch},{S},{D}] x{inputs}) => (float[{batch},{S},{D}] y{outputs}) {{
  {attention}
  o = MatMul (att, wo)
  r = Add (o, x)
  {_mlp("r")}
}}"""
    inits = {"wo": (q, D), "wg": (D, MLP), "wu": (D, MLP), "wd": (MLP, D),
             "wq": (D, q), "wk": (D, kv), "wv": (D, kv), **extra}
    return model(text, **inits, **_tables(head_dim, batch, S, past))


PROJECT = """q = MatMul (x, wq)
  k = MatMul (x, wk)
  v = MatMul (x, wv)"""
GQA = f"com.microsoft.GroupQueryAttention <num_heads={N}, kv_num_heads={KV}>"
ROPE = f"""qr = com.microsoft.RotaryEmbedding <num_heads={N}> (q, pos, cos, sin)
  kr = com.microsoft.RotaryEmbedding (k, pos, cos, sin)"""  # num_heads 0: H from the cache

SEPARATE = _decoder(f"""{PROJECT}
  att, pk, pv = {GQA} (q, k, v, "", "", seqlens, total)""", 8)
ROTARY = _decoder(f"""{PROJECT}
  {ROPE}
  att, pk, pv = {GQA} (qr, kr, v, "", "", seqlens, total)""", 8)
INNER_ROTARY = _decoder(f"""{PROJECT}
  att, pk, pv = com.microsoft.GroupQueryAttention <num_heads={N}, kv_num_heads={KV}, do_rotary=1>
      (q, k, v, "", "", seqlens, total, cos, sin)""", 16)
PACKED = _decoder(f"""qkv = MatMul (x, wqkv)
  att, pk, pv = {GQA} (qkv, "", "", "", "", seqlens, total)""", 8, wqkv=(D, (N + 2 * KV) * 8))
CASES = {"separate": SEPARATE, "rotary": ROTARY, "do_rotary": INNER_ROTARY, "packed": PACKED}


def _feeds(batch: int = B, seed: int = 0) -> dict:
    return {"x": np.random.default_rng(seed).standard_normal((batch, S, D)).astype(np.float32)}


def _attributes(proto: onnx.ModelProto, op_type: str) -> list[dict]:
    return [{a.name: a.i for a in n.attribute if a.type == onnx.AttributeProto.INT}
            for n in proto.graph.node if n.op_type == op_type]


@pytest.mark.parametrize("name", list(CASES))
def test_kv_head_and_its_query_heads_prune_exactly(name):
    proto = CASES[name]
    analysis = graphprune.analyze(ir.from_proto(proto))
    assert sorted((g.kind, len(g.classes)) for g in analysis.groups) == [
        ("channels", MLP), ("heads", KV)]
    check_random_selections(proto, seeds=(0, 1, 2, 3), feeds=_feeds())
    result = prune_proto(proto, ratio=0.5, round_to=1)
    assert_mask_equivalent(proto, result, _feeds(seed=1))
    pruned = ir.to_proto(result.model)
    gqa = _attributes(pruned, "GroupQueryAttention")
    assert [(a["num_heads"], a["kv_num_heads"]) for a in gqa] == [(N // 2, KV // 2)]
    rope = [a.get("num_heads", 0) for a in _attributes(pruned, "RotaryEmbedding")]
    assert rope == ([N // 2, 0] if name == "rotary" else [])
    heads = [g for g in result.groups if g["kind"] == "heads"]
    assert [(g["heads_before"], g["heads_after"], g["query_heads_before"],
             g["query_heads_after"]) for g in heads] == [(KV, KV // 2, N, N // 2)]


def test_masked_kv_head_silences_its_query_heads_only():
    """Removing KV head 0 removes query heads 0..G-1 (their output columns), not the others."""
    analysis = graphprune.analyze(ir.from_proto(SEPARATE))
    group = next(g for g in analysis.groups if g.kind == "heads")
    result = prune_proto(SEPARATE, removed=group.classes[:1])
    assert_mask_equivalent(SEPARATE, result, _feeds())
    hd = 8
    kept = dict(result.masks)
    assert [k.tolist() for _, k in kept["wq"]] == [list(range(G * hd, N * hd))]
    assert [k.tolist() for _, k in kept["wk"]] == [list(range(hd, KV * hd))]
    assert [k.tolist() for _, k in kept["wo"]] == [list(range(G * hd, N * hd))]


def test_gqa_macs_scale_with_kept_heads():
    hd = 8
    before = graphprune.prune(ir.from_proto(SEPARATE), 0.5, round_to=1)
    assert before.before.macs_by_op["GroupQueryAttention"] == 2 * B * S * S * N * hd
    assert before.after.macs_by_op["GroupQueryAttention"] == 2 * B * S * S * (N // 2) * hd


def test_kv_cache_io_blocks_by_default_and_resizes_when_asked():
    past = 3
    cache = f"float[1,{KV},{past},8]"
    proto = _decoder(f"""{PROJECT}
  att, present_key, present_value = {GQA} (q, k, v, past_key, past_value, seqlens, total)""", 8,
                     outputs=", float[1,2,8,8] present_key, float[1,2,8,8] present_value",
                     inputs=f", {cache} past_key, {cache} past_value", past=past)
    rng = np.random.default_rng(2)
    feeds = {**_feeds(), **{n: rng.standard_normal((1, KV, past, 8)).astype(np.float32)
                            for n in ("past_key", "past_value")}}
    blocked = graphprune.analyze(ir.from_proto(proto))
    assert [g.kind for g in blocked.groups] == ["channels"]
    assert any(b.reason is BlockReason.GRAPH_IO and b.node.startswith(("past", "present"))
               for b in blocked.blocked)
    result = graphprune.prune(ir.from_proto(proto), 0.5, round_to=1,
                              resize_io=["past_*", "present_*"])
    assert sorted(result.io) == ["past_key", "past_value", "present_key", "present_value"]
    pruned = ir.to_proto(result.model)
    onnx.checker.check_model(pruned, full_check=True)
    outputs = [o.name for o in proto.graph.output]
    want = sliced_outputs(run(masked_model(proto, result.masks), feeds), outputs, result.io)
    got = run(pruned, sliced_feeds(feeds, result.io))
    assert [a.shape for a in got] == [(1, S, D), (1, KV // 2, past + S, 8), (1, KV // 2, 8, 8)]
    assert relative_error(want, got) <= 1e-4


@pytest.mark.parametrize(("text", "detail"), [
    (f"att, pk, pv = {GQA} (q, k, v, \"\", \"\", seqlens, total, \"\", \"\", \"\", bias)",
     "attention_bias"),
    (f"att, pk, pv, qk = {GQA} (q, k, v, \"\", \"\", seqlens, total)", "output_qk"),
])
def test_unsupported_gqa_inputs_block(text, detail):
    outputs = f", float[1,{N},{S},{S}] qk" if "qk" in text.split("=")[0] else ""
    proto = _decoder(f"{PROJECT}\n  {text}", 8, outputs=outputs, bias=(1, 1, S, S))
    analysis = graphprune.analyze(ir.from_proto(proto))
    assert [g.kind for g in analysis.groups] == ["channels"]
    assert any(b.op_type == "GroupQueryAttention" and detail in b.detail
               for b in analysis.blocked)


def test_rotary_on_split_heads_prunes_whole_heads():
    """4-D ``[B,N,S,H]`` input after a head split: the head axis passes."""
    hd = 8
    text = f"""{HEADER}
g (float[{B},{S},{D}] x) => (float[{B},{S},{D}] y) {{
  q = MatMul (x, wq)
  split = Reshape (q, shape)
  heads = Transpose <perm=[0, 2, 1, 3]> (split)
  rot = com.microsoft.RotaryEmbedding (heads, pos, cos, sin)
  back = Transpose <perm=[0, 2, 1, 3]> (rot)
  att = Reshape (back, merge)
  o = MatMul (att, wo)
  r = Add (o, x)
  {_mlp("r")}
}}"""
    proto = model(text, wq=(D, N * hd), wo=(N * hd, D), wg=(D, MLP), wu=(D, MLP), wd=(MLP, D),
                  shape=np.array([B, S, N, hd]), merge=np.array([B, S, N * hd]),
                  **{k: v for k, v in _tables(hd).items() if k in ("cos", "sin", "pos")})
    analysis = graphprune.analyze(ir.from_proto(proto))
    assert sorted((g.kind, len(g.classes)) for g in analysis.groups) == [
        ("channels", MLP), ("heads", N)]
    check_random_selections(proto, seeds=(0, 1, 2), feeds=_feeds())
    assert_mask_equivalent(proto, prune_proto(proto, ratio=0.5, round_to=1), _feeds(seed=1))


def test_rotary_head_dim_axis_stays_whole():
    """Rotation mixes channel pairs of the head-dim axis: a projection onto it cannot shrink."""
    hd = 8
    text = f"""{HEADER}
g (float[{B},{N},{S},{D}] x) => (float[{B},{N},{S},{D}] y) {{
  h = MatMul (x, w1)
  r = com.microsoft.RotaryEmbedding (h, pos, cos, sin)
  y = MatMul (r, w2)
}}"""
    tables = {k: v for k, v in _tables(hd).items() if k in ("cos", "sin", "pos")}
    proto = model(text, w1=(D, hd), w2=(hd, D), **tables)
    analysis = graphprune.analyze(ir.from_proto(proto))
    assert not analysis.groups
    assert any(b.op_type == "RotaryEmbedding" and b.reason is BlockReason.AXIS_NOT_PRESERVED
               for b in analysis.blocked)


@pytest.mark.parametrize("heads", [N, 0], ids=["num_heads", "from_cache"])
def test_rotary_on_packed_heads_prunes_whole_heads(heads):
    """3-D ``[B,S,N*H]`` input: a head goes whole (its channel pairs rotate together)."""
    hd = 8
    text = f"""{HEADER}
g (float[{B},{S},{D}] x) => (float[{B},{S},{D}] y) {{
  q = MatMul (x, wq)
  r = com.microsoft.RotaryEmbedding <num_heads={heads}> (q, pos, cos, sin)
  y = MatMul (r, wo)
}}"""
    tables = {k: v for k, v in _tables(hd).items() if k in ("cos", "sin", "pos")}
    proto = model(text, wq=(D, N * hd), wo=(N * hd, D), **tables)
    analysis = graphprune.analyze(ir.from_proto(proto))
    assert [(g.kind, len(g.classes)) for g in analysis.groups] == [("heads", N)]
    check_random_selections(proto, seeds=(0, 1, 2), feeds=_feeds())
    result = prune_proto(proto, ratio=0.5, round_to=1)
    assert_mask_equivalent(proto, result, _feeds(seed=1))
    rope = _attributes(ir.to_proto(result.model), "RotaryEmbedding")
    assert [a["num_heads"] for a in rope] == [heads // 2]


def test_default_domain_simplified_layer_norm_is_refused_by_name(tmp_path, capsys):
    """Refused in one line that names the op: ONNX has no SimplifiedLayerNormalization.

    onnxruntime's transformer optimizer writes it in the default domain and onnxruntime runs it,
    but the input fails the ONNX checker, as the output would fail the self-check.
    """
    from graphprune.cli import main

    text = f"""<ir_version: 8, opset_import: ["" : 17]>
g (float[{B},{S},{D}] x) => (float[{B},{S},{D}] y) {{
  h = MatMul (x, w1)
  n = SimplifiedLayerNormalization <axis = -1, epsilon = 0.00001> (h, g1)
  y = MatMul (n, w2)
}}"""
    proto = onnx.parser.parse_model(text)
    rng = np.random.default_rng(0)
    for name, shape in (("w1", (D, MLP)), ("g1", (MLP,)), ("w2", (MLP, D))):
        proto.graph.initializer.append(
            onnx.numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name))
    source, out = tmp_path / "sln.onnx", tmp_path / "sln.pruned.onnx"
    onnx.save(proto, source)
    run(proto, {"x": np.ones((B, S, D), np.float32)})  # onnxruntime runs it
    assert main([str(source), "--no-bench", "-o", str(out)]) == 2
    error = capsys.readouterr().err.strip()
    assert "SimplifiedLayerNormalization" in error and "ONNX checker" in error
    assert len(error.splitlines()) == 1 and not out.exists()


def test_cli_reports_kv_and_query_heads(tmp_path, capsys):
    import json

    from graphprune.cli import main

    source, out = tmp_path / "gqa.onnx", tmp_path / "gqa.pruned.onnx"
    onnx.save(ROTARY, source)
    assert main([str(source), "--heads", "0.5", "--mlp", "0", "--round-to", "1", "--no-bench",
                 "-o", str(out)]) == 0
    report = json.loads((tmp_path / "gqa.pruned.report.json").read_text())
    heads = [g for g in report["groups"] if g["kind"] == "heads"]
    assert [(g["heads_before"], g["heads_after"], g["query_heads_before"],
             g["query_heads_after"]) for g in heads] == [(KV, KV // 2, N, N // 2)]
    assert report["oracle"]["passed"]
    assert f"({KV} -> {KV // 2} heads KV, {N} -> {N // 2} query)" in capsys.readouterr().out
