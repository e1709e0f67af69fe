"""Graph inputs and outputs that changed shape (``--resize-io``): feeds and outputs, sliced.

The pruned model reads a KV cache with fewer heads. Fed the original's inputs sliced to the kept
indices, it must compute the original's outputs (the masked original's, for the oracle) sliced the
same way.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

Cuts = Mapping[str, list[tuple[int, np.ndarray]]]


def _take(array: np.ndarray, cuts: list[tuple[int, np.ndarray]]) -> np.ndarray:
    for axis, kept in cuts:
        array = np.take(array, kept, axis=axis)
    return array


def sliced_feeds(feeds: Mapping[str, np.ndarray], io: Cuts) -> dict[str, np.ndarray]:
    """The inputs of the pruned model: each resized input keeps its kept indices."""
    return {name: _take(array, io[name]) if name in io else array for name, array in feeds.items()}


def sliced_outputs(outputs: Sequence[np.ndarray], names: Sequence[str], io: Cuts
                   ) -> list[np.ndarray]:
    """The original's outputs as the pruned model shapes them (resized outputs sliced)."""
    return [_take(a, io[n]) if n in io else a for a, n in zip(outputs, names, strict=True)]


def resized_shapes(shapes: Mapping[str, tuple[int, ...]] | None, io: Cuts
                   ) -> dict[str, tuple[int, ...]] | None:
    """``--input-shape`` sizes as the pruned model's resized inputs have them."""
    if not shapes:
        return shapes
    found = dict(shapes)
    for name, cuts in io.items():
        if name in found:
            dims = list(found[name])
            for axis, kept in cuts:
                dims[axis] = len(kept)
            found[name] = tuple(dims)
    return found


def changed_shapes(io: Cuts, shapes: Mapping[str, Sequence]) -> list[dict]:
    """One entry per resized input/output: its name, axes, and declared shape before/after."""
    found = []
    for name, cuts in io.items():
        before = list(shapes.get(name, ()))
        after = list(before)
        for axis, kept in cuts:
            if axis < len(after):
                after[axis] = len(kept)
        found.append({"name": name, "axes": [a for a, _ in cuts], "before": before,
                      "after": after})
    return found


def resized_inputs(inputs, io: Cuts):
    """Measurement inputs (``graphprune.inputs.Inputs``) sliced for the pruned model."""
    import dataclasses

    return dataclasses.replace(inputs, batches=tuple(sliced_feeds(b, io) for b in inputs.batches))
