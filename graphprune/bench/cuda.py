"""CUDA execution provider latency, with inputs and outputs bound on the GPU (IOBinding).

Needs ``onnxruntime-gpu`` and a CUDA GPU. Both onnxruntime wheels install the same package, so
after ``pip install 'graphprune[gpu]'`` run ``pip uninstall -y onnxruntime && pip install
--force-reinstall onnxruntime-gpu``. Without either,
:func:`cuda_unavailable` says why in one line and the caller carries on without CUDA numbers.
Inputs are copied to the GPU once per shape before timing and outputs stay on the GPU, so no
host copy is timed; every timed run waits for the GPU to finish its outputs.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path

import onnx
from rich.progress import Progress

from graphprune.bench.latency import (
    DEFAULT_BUDGET_S,
    DEFAULT_WARMUP,
    LatencyStats,
    Runner,
    interleave,
    measurement_options,
    shape_representatives,
)
from graphprune.errors import one_line
from graphprune.inputs import Batch

PROVIDER = "CUDAExecutionProvider"


def _probe_model() -> bytes:
    """A one-node model to see whether the CUDA provider really starts."""
    x = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])
    y = onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])
    graph = onnx.helper.make_graph([onnx.helper.make_node("Relu", ["x"], ["y"])], "probe", [x], [y])
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model.SerializeToString()


@functools.cache
def cuda_unavailable() -> str | None:
    """Why CUDA latency cannot be measured here, or None when it can."""
    import onnxruntime as ort

    if PROVIDER not in ort.get_available_providers():
        return "onnxruntime-gpu is not installed (pip install 'graphprune[gpu]')"
    options = ort.SessionOptions()
    options.log_severity_level = 4
    try:
        session = ort.InferenceSession(_probe_model(), options, providers=[PROVIDER])
    except Exception as exc:  # onnxruntime raises its own exception types
        first = one_line(exc)
        return f"the CUDA execution provider does not start ({first})"
    if PROVIDER not in session.get_providers():
        return "no usable CUDA GPU (the CUDA execution provider fell back to CPU)"
    return None


def cuda_session(path: str | Path):
    """A session on GPU 0 (CPU fallback only for ops that CUDA lacks)."""
    import onnxruntime as ort

    return ort.InferenceSession(str(path), measurement_options(),
                                providers=[(PROVIDER, {"device_id": 0}), "CPUExecutionProvider"])


def _bound_runner(session, feed: Batch) -> Runner:
    """Runs ``session`` on ``feed`` already on the GPU; outputs stay on the GPU."""
    import onnxruntime as ort

    binding = session.io_binding()
    on_device = [ort.OrtValue.ortvalue_from_numpy(array, "cuda", 0) for array in feed.values()]
    for name, value in zip(feed, on_device, strict=True):
        binding.bind_ortvalue_input(name, value)
    for output in session.get_outputs():
        binding.bind_output(output.name, "cuda", 0)

    def run() -> None:
        session.run_with_iobinding(binding)
        binding.synchronize_outputs()

    run.keep_alive = on_device  # the binding does not own the device copies
    return run


def cuda_latency(
    paths: Sequence[str | Path],
    batches: Sequence[Batch],
    runs: int | None = None,
    warmup: int = DEFAULT_WARMUP,
    budget_s: float = DEFAULT_BUDGET_S,
    progress: Progress | None = None,
) -> list[LatencyStats]:
    """CUDA latency of every model, warmed up on every distinct input shape, interleaved."""
    sessions = [cuda_session(p) for p in paths]
    feeds = shape_representatives(batches)
    runners = [[_bound_runner(s, f) for f in feeds] for s in sessions]
    times = interleave(runners, runs, warmup, budget_s, progress, "CUDA latency")
    return [LatencyStats("cuda", tuple(t), warmup) for t in times]
