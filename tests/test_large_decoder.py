"""The Llama-style decoder generator of ``benchmarks/large_decoder.py``, at its ``--small`` sizes.

The generated graph computes a Llama prefill (checked against a numpy forward pass written from
the weights), and pruning it keeps whole heads with their KV heads and is mask-equivalent.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

import graphprune
from benchmarks.large_decoder import LARGE, SMALL, count_parameters, generate
from graphprune._io import save_model
from graphprune.verify.oracle import masked_model, relative_error, run
from tests.oracle import TOLERANCE, assert_mask_equivalent, prune_proto


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    path = tmp_path_factory.mktemp("decoder") / "decoder.onnx"
    count = generate(path, SMALL, seed=3)
    return path, count


def _feeds(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"input_ids": rng.integers(0, SMALL.vocab, (1, SMALL.seq), dtype=np.int64)}


def _rms(x, weight):
    return x / np.sqrt(np.mean(x**2, axis=-1, keepdims=True) + 1e-6) * weight


def _rope(x):
    s, hd = SMALL.seq, SMALL.head_dim
    inv = 1.0 / 10000 ** (np.arange(0, hd, 2) / hd)
    angles = np.outer(np.arange(s), inv)
    angles = np.concatenate([angles, angles], -1)
    rotated = np.concatenate([-x[..., hd // 2:], x[..., : hd // 2]], -1)
    return x * np.cos(angles) + rotated * np.sin(angles)


def _reference(w: dict[str, np.ndarray], ids: np.ndarray) -> np.ndarray:
    """Llama prefill in float64 numpy: GQA, rotary, causal softmax, SwiGLU."""
    s, hd, rep = SMALL.seq, SMALL.head_dim, SMALL.heads // SMALL.kv_heads
    x = w["embed.weight"][ids[0]].astype(np.float64)
    causal = np.triu(np.full((s, s), -np.inf), k=1)
    for i in range(SMALL.layers):
        p = f"layers.{i}"
        h = _rms(x, w[f"{p}.ln1.weight"])
        q = (h @ w[f"{p}.attn.q.weight"]).reshape(s, -1, hd).transpose(1, 0, 2)
        k = (h @ w[f"{p}.attn.k.weight"]).reshape(s, -1, hd).transpose(1, 0, 2)
        v = (h @ w[f"{p}.attn.v.weight"]).reshape(s, -1, hd).transpose(1, 0, 2)
        q, k = _rope(q), np.repeat(_rope(k), rep, axis=0)
        scores = q @ k.transpose(0, 2, 1) / np.sqrt(hd) + causal
        probs = np.exp(scores - scores.max(-1, keepdims=True))
        probs /= probs.sum(-1, keepdims=True)
        context = (probs @ np.repeat(v, rep, axis=0)).transpose(1, 0, 2).reshape(s, -1)
        x = x + context @ w[f"{p}.attn.o.weight"]
        h = _rms(x, w[f"{p}.ln2.weight"])
        gate = h @ w[f"{p}.mlp.gate.weight"]
        x = x + (gate / (1 + np.exp(-gate)) * (h @ w[f"{p}.mlp.up.weight"])) @ w[
            f"{p}.mlp.down.weight"]
    return (_rms(x, w["norm.weight"]) @ w["lm_head.weight"])[None]


def test_large_sizes_have_a_billion_parameters():
    assert LARGE.parameters() >= 1_000_000_000
    assert LARGE.kv_heads < LARGE.heads


def test_generated_model_is_a_llama_prefill(small):
    path, count = small
    assert count == SMALL.parameters() == count_parameters(path)
    stored = onnx.load(path, load_external_data=False).graph.initializer
    assert all(t.data_location == onnx.TensorProto.EXTERNAL for t in stored
               if t.name.endswith(".weight"))
    proto = onnx.load(path)
    weights = {t.name: numpy_helper.to_array(t).astype(np.float64)
               for t in proto.graph.initializer if t.name.endswith(".weight")}
    feeds = _feeds()
    (logits,) = run(proto, feeds)
    expected = _reference(weights, feeds["input_ids"])
    assert logits.shape == (1, SMALL.seq, SMALL.vocab)
    assert np.abs(logits - expected).max() <= 1e-4 * np.abs(expected).max()


def test_pruning_heads_and_mlp_is_mask_equivalent(small):
    path, _ = small
    proto = onnx.load(path)
    result = prune_proto(proto, heads=0.5, mlp=0.25, round_to=1)
    heads = [g for g in result.groups if g["kind"] == "heads"]
    assert len(heads) == SMALL.layers  # one group per layer: its KV heads with their queries
    assert all((g["heads_before"], g["heads_after"]) == (SMALL.kv_heads, SMALL.kv_heads // 2)
               for g in heads)
    assert all((g["query_heads_before"], g["query_heads_after"]) == (SMALL.heads, SMALL.heads // 2)
               for g in heads)
    pruned = {v.name: v.const_value.shape for v in result.model.graph.initializers.values()}
    half = SMALL.heads * SMALL.head_dim // 2
    assert all(tuple(pruned[f"layers.{i}.attn.q.weight"]) == (SMALL.hidden, half)
               for i in range(SMALL.layers))
    assert all(tuple(pruned[f"layers.{i}.mlp.up.weight"]) == (SMALL.hidden, SMALL.mlp * 3 // 4)
               for i in range(SMALL.layers))
    for seed in (0, 1):
        assert_mask_equivalent(proto, result, _feeds(seed))


def test_pruned_from_external_data_and_saved_is_mask_equivalent(small, tmp_path):
    """Weights in external data are sliced when written: the saved file holds the kept ones."""
    path, _ = small
    result = graphprune.prune(path, heads=0.5, mlp=0.25, round_to=1)
    output = tmp_path / "pruned.onnx"
    save_model(result.model, output)
    stored = onnx.load(output, load_external_data=False).graph.initializer
    assert any(t.data_location == onnx.TensorProto.EXTERNAL for t in stored)
    pruned, feeds = onnx.load(output), _feeds(2)
    error = relative_error(run(masked_model(onnx.load(path), result.masks), feeds),
                           run(pruned, feeds))
    assert error <= TOLERANCE
    assert count_parameters(output) < count_parameters(path)
