"""The transformer zoo: exports match torch, and what graphprune prunes in them is exact.

Encoders prune whole heads and MLP neurons; decoders keep their heads whole while the KV cache
is graph I/O. The oracle must hold with valid token ids, masks and KV caches as inputs.
"""

from __future__ import annotations

import functools

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
import pytest
import torch

import graphprune
from models.export_transformers import config_of, example_inputs, export, feeds, fuse, io_names
from models.transformers import TRANSFORMERS
from tests.oracle import assert_mask_equivalent, check_random_selections, prune_proto

CASES = [(name, exporter) for name in sorted(TRANSFORMERS)
         for exporter in ("torchscript", "dynamo")]


@functools.cache
def _exported(name: str, exporter: str, folder: str) -> onnx.ModelProto:
    return onnx.load(export(name, f"{folder}/{name}.{exporter}.onnx", exporter=exporter))


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("transformers"))


def _torch_outputs(name: str) -> list[np.ndarray]:
    cfg = config_of(name)
    with torch.no_grad():
        out = TRANSFORMERS[name](cfg)(*example_inputs(name, cfg))
    return [t.numpy() for t in (out if isinstance(out, tuple) else (out,))]


def _run(proto: onnx.ModelProto, name: str) -> list[np.ndarray]:
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feeds(name))


@pytest.mark.parametrize(("name", "exporter"), CASES)
def test_export_matches_torch(folder, name, exporter):
    proto = _exported(name, exporter, folder)
    for got, want in zip(_run(proto, name), _torch_outputs(name), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_fused_encoder_has_contrib_ops_and_matches(folder, tmp_path):
    plain = _exported("bert", "torchscript", folder)
    onnx.save(plain, tmp_path / "bert.onnx")
    fused = onnx.load(fuse(tmp_path / "bert.onnx", tmp_path / "bert.fused.onnx"))
    ops = {n.op_type for n in fused.graph.node}
    assert {"Attention", "SkipLayerNormalization"} <= ops
    np.testing.assert_allclose(_run(fused, "bert")[0], _run(plain, "bert")[0], atol=1e-4)


@pytest.mark.parametrize(("name", "exporter"), CASES)
def test_prunable_groups_are_mask_equivalent(folder, name, exporter):
    proto = _exported(name, exporter, folder)
    results = check_random_selections(proto, seeds=(0, 1), feeds=feeds(name))
    assert any(r.after.params < r.before.params for r in results)
    result = prune_proto(proto, ratio=0.5, round_to=1)
    assert_mask_equivalent(proto, result, feeds(name))
    mlp = config_of(name).mlp
    assert any(g["channels_before"] == mlp and g["channels_after"] < mlp for g in result.groups)


def test_kv_cache_graph_io_stays_whole(folder):
    proto = _exported("gpt2", "torchscript", folder)
    result = graphprune.prune(ir.from_proto(proto), 0.5, round_to=1)
    pruned = ir.to_proto(result.model)
    shapes = {v.name: [d.dim_value or d.dim_param for d in v.type.tensor_type.shape.dim]
              for v in [*pruned.graph.input, *pruned.graph.output]}
    cfg = config_of("gpt2")
    assert shapes["past_key_0"][1] == cfg.kv_heads and shapes["past_key_0"][3] == cfg.head_dim
    assert shapes["present_value_1"][3] == cfg.head_dim


@pytest.mark.parametrize(("name", "exporter"), [(n, e) for n, e in CASES if n in ("bert", "vit")])
def test_whole_heads_form_one_group_per_layer(folder, name, exporter):
    """Q, K, V columns and output-projection rows of a head are one class of head_dim channels."""
    proto = _exported(name, exporter, folder)
    cfg = config_of(name)
    analysis = graphprune.analyze(ir.from_proto(proto))
    heads = [g for g in analysis.groups if g.root.size == cfg.hidden]
    assert len(heads) == cfg.layers
    assert all(len(g.classes) == cfg.heads for g in heads)
    result = prune_proto(proto, ratio=0.5, round_to=1)
    assert_mask_equivalent(proto, result, feeds(name))
    kept = [g["channels_after"] // cfg.head_dim for g in result.groups
            if g["channels_before"] == cfg.hidden]
    assert kept == [cfg.heads // 2] * cfg.layers


def test_cli_heads_and_mlp_ratios(folder, tmp_path):
    from graphprune.cli import main

    source = tmp_path / "bert.onnx"
    onnx.save(_exported("bert", "torchscript", folder), source)
    out = tmp_path / "bert.pruned.onnx"
    shapes = [a for n in ("input_ids", "attention_mask", "token_type_ids")
              for a in ("--input-shape", f"{n}=1,16")]  # the tiny table has 64 positions
    assert main([str(source), "--heads", "0.25", "--mlp", "0.5", "--no-bench", "-o", str(out),
                 *shapes]) == 0
    import json

    report = json.loads((tmp_path / "bert.pruned.report.json").read_text())
    cfg = config_of("bert")
    heads = [g for g in report["groups"] if g["kind"] == "heads"]
    assert [(g["heads_before"], g["heads_after"]) for g in heads] == [(4, 3)] * cfg.layers
    mlp = [g["channels_after"] for g in report["groups"] if g["kind"] == "channels"]
    assert mlp == [cfg.mlp // 2] * cfg.layers
    assert main([str(source), "--heads", "1.5", "--no-bench", "-o", str(out)]) == 2


def test_fused_encoder_prunes_whole_heads(folder, tmp_path):
    """ORT's Attention keeps packed Q/K/V columns per head; num_heads is rewritten."""
    onnx.save(_exported("bert", "torchscript", folder), tmp_path / "bert.onnx")
    fused = onnx.load(fuse(tmp_path / "bert.onnx", tmp_path / "bert.fused.onnx"))
    cfg = config_of("bert")
    check_random_selections(fused, seeds=(0, 1, 2), feeds=feeds("bert"))
    result = prune_proto(fused, ratio=0.5, round_to=1)
    assert_mask_equivalent(fused, result, feeds("bert"))
    heads = [g for g in result.groups if g["kind"] == "heads"]
    assert [(g["heads_before"], g["heads_after"]) for g in heads] == [(4, 2)] * cfg.layers
    pruned = ir.to_proto(result.model)
    assert [a.i for n in pruned.graph.node if n.op_type == "Attention" for a in n.attribute
            if a.name == "num_heads"] == [2] * cfg.layers
    mlp = [g for g in result.groups if g["kind"] == "channels"]
    assert [g["channels_after"] for g in mlp] == [cfg.mlp // 2] * cfg.layers


@pytest.mark.parametrize(("name", "exporter"), [(n, e) for n, e in CASES if n in ("gpt2", "llama")])
def test_resized_kv_cache_prunes_heads_exactly(folder, name, exporter):
    """With the cache allowed to change shape, heads prune (GQA: a KV head with its queries)."""
    from graphprune.verify.oracle import masked_model, relative_error, run
    from graphprune.verify.resized_io import sliced_feeds, sliced_outputs

    proto = _exported(name, exporter, folder)
    cfg = config_of(name)
    result = graphprune.prune(ir.from_proto(proto), 0.5, round_to=1,
                              resize_io=["past_*", "present_*"])
    heads = [g for g in result.groups if g["kind"] == "heads"]
    assert [(g["heads_before"], g["heads_after"]) for g in heads] == \
        [(cfg.kv_heads, cfg.kv_heads // 2)] * cfg.layers
    assert sorted(result.io) == sorted(n for n in [*io_names(name, cfg)[0], *io_names(name, cfg)[1]]
                                       if n.startswith(("past", "present")))
    pruned = ir.to_proto(result.model)
    onnx.checker.check_model(pruned, full_check=True)
    outputs = [o.name for o in proto.graph.output]
    want = sliced_outputs(run(masked_model(proto, result.masks), feeds(name)), outputs, result.io)
    got = run(pruned, sliced_feeds(feeds(name), result.io))
    assert relative_error(want, got) <= 1e-4
    dims = {v.name: v.type.tensor_type.shape.dim[1].dim_value for v in pruned.graph.input}
    assert dims["past_key_0"] == cfg.kv_heads // 2


def test_cli_resize_io_reports_every_changed_cache_shape(folder, tmp_path):
    import json

    from graphprune.cli import main

    source = tmp_path / "gpt2.onnx"
    onnx.save(_exported("gpt2", "torchscript", folder), source)
    out = tmp_path / "gpt2.pruned.onnx"
    cfg = config_of("gpt2")
    shapes = [f"past_{kind}_{i}=1,{cfg.kv_heads},4,{cfg.head_dim}" for i in range(cfg.layers)
              for kind in ("key", "value")]
    args = [str(source), "--heads", "0.5", "--mlp", "0", "-o", str(out), "--resize-io", "past_*",
            "--resize-io", "present_*", "--runs", "3", "--warmup", "1", "--samples", "2",
            "--input-shape", "input_ids=1,8", *[a for s in shapes for a in ("--input-shape", s)]]
    assert main(args) == 0
    report = json.loads((tmp_path / "gpt2.pruned.report.json").read_text())
    changed = {c["name"]: (c["before"][1], c["after"][1]) for c in report["resized_io"]}
    assert len(changed) == 4 * cfg.layers
    assert set(changed.values()) == {(cfg.kv_heads, cfg.kv_heads // 2)}
    assert report["after"]["latency"]["cpu"]["median_ms"] > 0
