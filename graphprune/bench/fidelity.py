"""How closely a model's outputs follow a reference model's on the same inputs.

Per output, over all batches (a *sample* is one index of the leading axis):

- relative L2 error ``||y - r||_2 / ||r||_2`` over every element;
- cosine similarity of ``y_i`` and ``r_i``, averaged over samples (and its minimum);
- top-1 agreement for classifier-shaped outputs ``[N, C]`` (C > 1): the share of samples whose
  arg-max class is the same;
- the largest absolute difference.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

Outputs = list[list[np.ndarray]]  # per batch, per output


def _rows(array: np.ndarray) -> np.ndarray:
    array = np.asarray(array, dtype=np.float64)
    return array.reshape(1, -1) if array.ndim == 0 else array.reshape(array.shape[0], -1)


def _cosines(ref: np.ndarray, out: np.ndarray) -> np.ndarray:
    dot = np.sum(ref * out, axis=1)
    norms = np.linalg.norm(ref, axis=1) * np.linalg.norm(out, axis=1)
    both_zero = norms == 0
    cos = np.where(both_zero, 1.0, dot / np.where(both_zero, 1.0, norms))
    return np.clip(cos, -1.0, 1.0)


def _relative(err2: float, ref2: float) -> float | None:
    """``sqrt(err2 / ref2)``; 0 when both are 0, None (undefined) when only the reference is."""
    if ref2 > 0:
        return float(np.sqrt(err2 / ref2))
    return 0.0 if err2 == 0 else None


def compare_output(reference: Sequence[np.ndarray], actual: Sequence[np.ndarray]) -> dict:
    """Metrics of one output given its arrays per batch (see the module docstring)."""
    if any(r.shape != a.shape for r, a in zip(reference, actual, strict=True)):
        return {"error": f"shape {list(actual[0].shape)} differs from {list(reference[0].shape)}"}
    err2 = ref2 = 0.0
    max_abs = 0.0
    cosines, agree = [], []
    for ref, out in zip(reference, actual, strict=True):
        r, a = _rows(ref), _rows(out)
        err2 += float(np.sum((a - r) ** 2))
        ref2 += float(np.sum(r ** 2))
        max_abs = max(max_abs, float(np.max(np.abs(a - r)))) if r.size else max_abs
        cosines.append(_cosines(r, a))
        if ref.ndim == 2 and ref.shape[1] > 1:
            agree.append(np.argmax(ref, axis=1) == np.argmax(out, axis=1))
    cos = np.concatenate(cosines)
    return {
        "rel_l2": _relative(err2, ref2),
        "cosine": float(cos.mean()),
        "cosine_min": float(cos.min()),
        "top1_agreement": float(np.concatenate(agree).mean()) if agree else None,
        "max_abs": max_abs,
        "samples": int(cos.size),
    }


def compare_outputs(names: Sequence[str], reference: Outputs, actual: Outputs) -> dict:
    """Metrics per output name, and the worst of each over the outputs."""
    if len(actual[0]) != len(names):
        return {"rel_l2": None, "cosine": None, "top1_agreement": None,
                "error": f"{len(actual[0])} outputs, the reference has {len(names)}"}
    per_output = {
        name: compare_output([b[k] for b in reference], [b[k] for b in actual])
        for k, name in enumerate(names)
    }
    return {
        "rel_l2": _worst(per_output.values(), "rel_l2", max),
        "cosine": _worst(per_output.values(), "cosine", min),
        "top1_agreement": _worst(per_output.values(), "top1_agreement", min),
        "outputs": per_output,
    }


def _worst(metrics, key: str, pick) -> float | None:
    """``pick`` over the outputs that have ``key``; None if any output failed or none has it."""
    metrics = list(metrics)
    if any("error" in m for m in metrics):
        return None
    values = [m[key] for m in metrics if m[key] is not None]
    return pick(values) if values else None
