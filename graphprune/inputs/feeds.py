"""Random feeds that a model can run on: arrays of each spec's shape drawn from its domain.

Floats are standard normal. Index inputs are uniform in their table's rows, other integer inputs
small and non-negative, bool inputs 0/1 at random. Masks are all ones in the first batch (the most
ordinary input) and padded in later ones: the last positions of the last axis are 0, never all of
them, so no row of an attention mask is empty.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from graphprune.inputs.domains import ValueDomain
from graphprune.inputs.specs import InputSpec

Batch = dict[str, np.ndarray]
_FLOAT = ValueDomain("float")


def _mask(shape: tuple[int, ...], dtype: np.dtype, padded: bool,
          rng: np.random.Generator) -> np.ndarray:
    mask = np.ones(shape, dtype=np.bool_)
    if padded and shape and shape[-1] > 1:
        keep = int(rng.integers(max(1, shape[-1] // 2), shape[-1] + 1))
        mask[..., keep:] = False
    return mask.astype(dtype)


def random_array(rng: np.random.Generator, spec: InputSpec, domain: ValueDomain | None = None,
                 index: int = 0) -> np.ndarray:
    """One array for ``spec`` drawn from ``domain`` (floats when None); ``index``: its batch."""
    domain = domain or _FLOAT
    shape, dtype = spec.shape, spec.dtype
    if domain.kind == "mask":
        return _mask(shape, dtype, index > 0, rng)
    if dtype == np.bool_ or domain.kind == "bool":
        return (rng.random(shape) < 0.5).astype(dtype)
    if dtype.kind in "OSU":
        return np.full(shape, "a", dtype=object)
    if np.issubdtype(dtype, np.floating) and domain.kind == "float":
        return rng.standard_normal(shape).astype(dtype)
    high = domain.high if domain.high is not None else domain.low + 2
    if np.issubdtype(dtype, np.integer):
        high = min(high, int(np.iinfo(dtype).max) + 1)
    return rng.integers(domain.low, max(high, domain.low + 1), size=shape).astype(dtype)


def random_batches(specs: Sequence[InputSpec], count: int, seed: int = 0,
                   domains: Mapping[str, ValueDomain] | None = None) -> list[Batch]:
    """``count`` batches for ``specs``, each input drawn from its domain (floats when absent)."""
    rng = np.random.default_rng(seed)
    domains = domains or {}
    return [{s.name: random_array(rng, s, domains.get(s.name), k) for s in specs}
            for k in range(count)]
