"""Runtime check: the saved model loads and runs in onnxruntime."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from graphprune.errors import VerificationError, one_line

_ORT_TYPES = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(bool)": np.bool_,
}


def random_feeds(session, seed: int = 0, dim: int = 1) -> dict[str, np.ndarray]:
    """Random inputs for ``session``; symbolic dims become ``dim``."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for arg in session.get_inputs():
        shape = [d if isinstance(d, int) else dim for d in arg.shape]
        dtype = _ORT_TYPES.get(arg.type, np.float32)
        feeds[arg.name] = rng.standard_normal(shape).astype(dtype)
    return feeds


def check_runs(path: Path) -> None:
    """Loads ``path`` in onnxruntime (CPU) and runs it once on random inputs."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    # Unoptimized, onnxruntime maps external data instead of copying (and repacking) every
    # weight: a pruned model of several GB is checked in about its own size of memory.
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    try:
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        outputs = session.run(None, random_feeds(session))
    except Exception as exc:  # onnxruntime raises its own exception types
        first = one_line(exc)
        raise VerificationError(f"pruned model does not run in onnxruntime: {first}") from exc
    if any(not np.all(np.isfinite(o)) for o in outputs if np.issubdtype(o.dtype, np.floating)):
        raise VerificationError("pruned model produces non-finite outputs on random inputs")
