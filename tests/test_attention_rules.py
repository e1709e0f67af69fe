"""onnxruntime's fused transformer ops on tiny ONNX-text models, checked with the oracle."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import pytest

import graphprune
from graphprune import BlockReason
from tests.oracle import assert_mask_equivalent, check_random_selections, prune_proto
from tests.test_rules import model

HEADER = '<ir_version: 8, opset_import: ["" : 17, "com.microsoft" : 1]>'
D, HEADS, MLP = 16, 4, 12


def _feeds(seed=0):
    return {"x": np.random.default_rng(seed).standard_normal((2, 5, D)).astype(np.float32)}


BIAS_GELU = "a = com.microsoft.BiasGelu (u, bu)"
SKIP_NORM = "y = com.microsoft.SkipLayerNormalization (d, s, g2, b2, bd)"


def _encoder(attention: str, act: str = BIAS_GELU, norm: str = SKIP_NORM,
             **extra) -> onnx.ModelProto:
    text = f"""{HEADER}
g (float[2,5,{D}] x) => (float[2,5,{D}] y) {{
  {attention}
  o = MatMul (att, wo)
  s = com.microsoft.SkipLayerNormalization (o, x, g1, b1, bo)
  u = MatMul (s, wu)
  {act}
  d = MatMul (a, wd)
  {norm}
}}"""
    inits = {"wo": (D, D), "g1": (D,), "b1": (D,), "bo": (D,), "wu": (D, MLP), "bu": (MLP,),
             "wd": (MLP, D), "g2": (D,), "b2": (D,), "bd": (D,), **extra}
    return model(text, **inits)


PACKED = _encoder(f"att = com.microsoft.Attention <num_heads={HEADS}> (x, wqkv, bqkv)",
                  wqkv=(D, 3 * D), bqkv=(3 * D,))
SEPARATE = _encoder(f"""q = MatMul (x, wq)
  k = MatMul (x, wk)
  v = MatMul (x, wv)
  att = com.microsoft.MultiHeadAttention <num_heads={HEADS}> (q, k, v)""",
                    wq=(D, D), wk=(D, D), wv=(D, D))


@pytest.mark.parametrize("proto", [PACKED, SEPARATE], ids=["Attention", "MultiHeadAttention"])
def test_heads_and_mlp_prune_exactly(proto):
    analysis = graphprune.analyze(ir.from_proto(proto))
    kinds = sorted((g.kind, len(g.classes)) for g in analysis.groups)
    assert kinds == [("channels", MLP), ("heads", HEADS)]
    check_random_selections(proto, seeds=(0, 1, 2, 3), feeds=_feeds())
    result = prune_proto(proto, ratio=0.5, round_to=1)
    assert_mask_equivalent(proto, result, _feeds(1))
    pruned = ir.to_proto(result.model)
    heads = [a.i for n in pruned.graph.node for a in n.attribute if a.name == "num_heads"]
    assert heads == [HEADS // 2]


def test_attention_with_kv_cache_output_blocks():
    text = f"""{HEADER}
g (float[2,5,{D}] x) => (float[2,5,{D}] y, float[2,2,{HEADS},5,4] present) {{
  att, present = com.microsoft.Attention <num_heads={HEADS}> (x, wqkv, bqkv)
  y = MatMul (att, wo)
}}"""
    proto = model(text, wqkv=(D, 3 * D), bqkv=(3 * D,), wo=(D, D))
    analysis = graphprune.analyze(ir.from_proto(proto))
    assert not analysis.groups
    assert any(b.reason is BlockReason.UNSUPPORTED_ATTRIBUTE and b.op_type == "Attention"
               for b in analysis.blocked)


@pytest.mark.parametrize(("act", "norm"), [
    ("a = com.microsoft.FastGelu (u, bu)", SKIP_NORM),
    ("a = com.microsoft.QuickGelu <alpha=1.702> (u)", SKIP_NORM),
    ("a = com.microsoft.Gelu (u)", SKIP_NORM),
    (BIAS_GELU, "y = com.microsoft.SkipSimplifiedLayerNormalization (d, s, g2)"),
], ids=["FastGelu", "QuickGelu", "Gelu", "SkipSimplifiedLayerNormalization"])
def test_fused_activations_and_norms_prune_exactly(act, norm):
    proto = _encoder(f"att = com.microsoft.Attention <num_heads={HEADS}> (x, wqkv, bqkv)",
                     act=act, norm=norm, wqkv=(D, 3 * D), bqkv=(3 * D,))
    analysis = graphprune.analyze(ir.from_proto(proto))
    assert sorted((g.kind, len(g.classes)) for g in analysis.groups) == [
        ("channels", MLP), ("heads", HEADS)]
    check_random_selections(proto, seeds=(0, 1, 2), feeds=_feeds())
    assert_mask_equivalent(proto, prune_proto(proto, ratio=0.5, round_to=1), _feeds(1))
