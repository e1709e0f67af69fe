"""Connected components over integer ids, vectorized with numpy (hook and shortcut)."""

from __future__ import annotations

import numpy as np


def components(n: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Labels ``0..n-1`` so that ``a[i]`` and ``b[i]`` share a label; each label is its min id."""
    parent = np.arange(n, dtype=np.int64)
    if len(a) == 0:
        return parent
    a, b = np.asarray(a, np.int64), np.asarray(b, np.int64)
    while True:
        pa, pb = parent[a], parent[b]
        differ = pa != pb
        if not differ.any():
            return parent
        pa, pb = pa[differ], pb[differ]
        low, high = np.minimum(pa, pb), np.maximum(pa, pb)
        np.minimum.at(parent, high, low)
        while True:  # pointer jumping until every id points at a root
            jumped = parent[parent]
            if np.array_equal(jumped, parent):
                break
            parent = jumped
