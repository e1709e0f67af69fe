"""What the fidelity benchmark measures besides the task score: latency, and the simplifiers.

``onnxsim`` (onnx-simplifier) and ``onnxslim`` are what people reach for to make an ONNX model
"smaller". Their simplifiers remove no channel: they fold constants, fuse and drop redundant nodes
(Shape/Gather chains, Identity, BatchNormalization into Conv where the exporter left it, ...).
:func:`simplifier_row` runs one on the original model and measures what it gives, on the same
scale as the pruned rows: MACs and parameters (graphprune's cost model at the task's shapes),
onnxruntime CPU latency against the original (1 thread, interleaved) and the task score.

onnxsim 0.8 also has a structured pruner (``onnxsim.pruning.apply_structured_pruning``: L1
filter norms, a uniform sparsity): :func:`onnxsim_pruning_row` (baseline ``onnxsim-prune``)
searches its sparsity to each ``--macs`` level, like L1 uniform, and scores the result.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path

import onnx

from graphprune._io import load_model
from graphprune.bench.latency import cpu_latency
from graphprune.inputs import valid_feeds
from graphprune.report.costs import count_costs

SIMPLIFIERS = ("onnxsim", "onnxslim")
PRUNERS = ("onnxsim-prune",)  # baselines that prune: one row per --macs level
LATENCY_RUNS = 30


def simplify(tool: str, source: Path, out: Path) -> str:
    """Writes ``tool``'s simplification of ``source`` to ``out``; returns ``tool==version``."""
    if tool == "onnxsim":
        import onnxsim

        model, ok = onnxsim.simplify(onnx.load(str(source)))
        if not ok:
            raise RuntimeError("onnxsim: the simplified model failed its own check")
        onnx.save(model, str(out))
        return f"onnxsim=={onnxsim.__version__.lstrip('v')}"
    if tool == "onnxslim":
        import onnxslim

        onnxslim.slim(str(source), str(out))
        return f"onnxslim=={onnxslim.__version__}"
    raise ValueError(f"unknown simplifier {tool!r} (use {', '.join(SIMPLIFIERS)})")


def latency_ratio(original: Path, other: Path, shapes: Mapping[str, tuple[int, ...]],
                  runs: int = LATENCY_RUNS) -> dict:
    """Median CPU latency (1 thread, the two models interleaved) and its ratio to the original."""
    feeds = valid_feeds(original, shapes)
    stats = cpu_latency([original, other], feeds, runs=runs, threads=1)
    before, after = (s.median_ms for s in stats)
    return {"latency_ms": round(after, 3), "latency_ratio": round(after / before, 4)}


def cost_ratios(original: Path, other: Path, shapes: Mapping[str, tuple[int, ...]]) -> dict:
    """``macs_ratio`` and ``params_ratio`` of ``other`` against ``original`` at ``shapes``."""
    before = count_costs(load_model(original), shapes)
    after = count_costs(load_model(other), shapes)
    return {"macs_ratio": round(after.macs / before.macs, 4),
            "params_ratio": round(after.params / before.params, 4)}


def simplifier_row(tool: str, task, work: Path) -> dict:
    """One row: what ``tool`` does to ``task.model`` (costs, latency, task score)."""
    row = {"target": task.name, "criterion": tool, "compensate": "none",
           "allocation": "simplifier", "ratio": 0.0, "round_to": 1, "extra": {}}
    start = time.perf_counter()
    out = work / f"{task.name}.{tool}.onnx"
    try:
        row["tool"] = simplify(tool, task.model, out)
        row.update(cost_ratios(task.model, out, task.shapes))
        row.update(latency_ratio(task.model, out, task.shapes))
        row.update(task.score(out))
        row["nodes_ratio"] = round(len(onnx.load(str(out)).graph.node)
                                   / len(onnx.load(str(task.model)).graph.node), 4)
    except Exception as exc:  # a tool that fails on a model is a row, not a stop
        row["error"] = f"{type(exc).__name__}: {exc}".splitlines()[0][:160]
    row["seconds"] = round(time.perf_counter() - start, 1)
    out.unlink(missing_ok=True)
    return row


def onnxsim_pruning_row(task, work: Path, macs: float, steps: int = 10) -> dict:
    """One row: onnxsim's structured pruning at the sparsity whose MACs come closest to ``macs``.

    Bisection on the sparsity in [0, 0.95] (onnxsim leaves the layers it cannot prune whole, so
    a level below what it can reach is a row at its closest).
    """
    import onnxsim
    from onnxsim.pruning import apply_structured_pruning

    row = {"target": task.name, "criterion": "onnxsim-prune", "compensate": "none",
           "allocation": "uniform@macs", "ratio": 0.0, "round_to": 1, "extra": {},
           "macs_target": macs, "tool": f"onnxsim=={onnxsim.__version__.lstrip('v')}"}
    start = time.perf_counter()
    out = work / f"{task.name}.onnxsim-prune.onnx"
    low, high, best = 0.0, 0.95, None
    try:
        for _ in range(steps):
            sparsity = (low + high) / 2
            onnx.save(apply_structured_pruning(str(task.model), sparsity=sparsity,
                                               importance_norm="l1"), str(out))
            ratios = cost_ratios(task.model, out, task.shapes)
            if best is None or abs(ratios["macs_ratio"] - macs) < abs(best[1]["macs_ratio"]
                                                                      - macs):
                best = (sparsity, ratios)
            if abs(ratios["macs_ratio"] - macs) <= 0.005:
                break
            low, high = (sparsity, high) if ratios["macs_ratio"] > macs else (low, sparsity)
        sparsity, ratios = best
        onnx.save(apply_structured_pruning(str(task.model), sparsity=sparsity,
                                           importance_norm="l1"), str(out))
        row.update(ratio=round(sparsity, 4), **ratios)
        row.update(task.score(out))
    except Exception as exc:  # a tool that fails on a model is a row, not a stop
        row["error"] = f"{type(exc).__name__}: {exc}".splitlines()[0][:160]
    row["seconds"] = round(time.perf_counter() - start, 1)
    out.unlink(missing_ok=True)
    return row
