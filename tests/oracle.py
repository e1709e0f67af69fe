"""Test helpers around the mask-equivalence oracle."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir

import graphprune
from graphprune.verify.oracle import masked_model, relative_error, run

TOLERANCE = 1e-4


def random_selection(analysis, seed: int) -> np.ndarray:
    """Random class labels to remove: any share of each segment, always keeping one."""
    rng = np.random.default_rng(seed)
    removed = []
    for group in analysis.groups:
        for segment in group.segments:
            count = int(rng.integers(0, len(segment)))
            removed.append(rng.choice(segment, size=count, replace=False))
    return np.concatenate(removed) if removed else np.zeros(0, np.int64)


def feeds_for(proto: onnx.ModelProto, shapes: dict[str, tuple[int, ...]] | None = None,
              seed: int = 0):
    """Random inputs for every graph input (symbolic dims from ``shapes`` or 1)."""
    rng = np.random.default_rng(seed)
    initializers = {t.name for t in proto.graph.initializer}
    feeds = {}
    for value in proto.graph.input:
        if value.name in initializers:
            continue
        tensor_type = value.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else 1 for d in tensor_type.shape.dim]
        if shapes and value.name in shapes:
            dims = list(shapes[value.name])
        dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor_type.elem_type)
        feeds[value.name] = rng.standard_normal(dims).astype(dtype)
    return feeds


def prune_proto(proto: onnx.ModelProto, **kwargs) -> graphprune.PruneResult:
    return graphprune.prune(ir.from_proto(proto), **kwargs)


def assert_mask_equivalent(proto, result, feeds) -> float:
    """The pruned model computes what the masked original computes; returns the error."""
    pruned = ir.to_proto(result.model)
    onnx.checker.check_model(pruned, full_check=True)
    error = relative_error(run(masked_model(proto, result.masks), feeds), run(pruned, feeds))
    assert error <= TOLERANCE, f"mask equivalence broken: relative error {error:.3g}"
    return error


def check_random_selections(proto, seeds=(0, 1, 2), feeds=None) -> list[graphprune.PruneResult]:
    """Prunes ``proto`` with several random selections and checks each against the oracle."""
    feeds = feeds or feeds_for(proto)
    results = []
    for seed in seeds:
        analysis = graphprune.analyze(ir.from_proto(proto))
        result = prune_proto(proto, removed=random_selection(analysis, seed))
        assert_mask_equivalent(proto, result, feeds)
        results.append(result)
    return results
