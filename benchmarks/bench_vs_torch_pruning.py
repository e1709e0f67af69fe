"""ResNet-50 at ratio 0.5: graphprune vs Torch-Pruning doing the whole job, side by side.

graphprune goes ONNX in -> pruned ONNX out; Torch-Pruning goes torch model in -> prune -> export
-> pruned ONNX out. Also onnxruntime CPU latency of the original and the graphprune output,
measured interleaved.

    pip install --no-deps torch-pruning==1.6.1
    python benchmarks/bench_vs_torch_pruning.py --repeats 3

Both jobs keep the classifier's 1000 outputs. Times are medians over ``--repeats`` alternating
runs (graphprune, Torch-Pruning, graphprune, ...), so drift on a shared machine hits both alike.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

import graphprune  # noqa: E402
from graphprune._io import save_model  # noqa: E402
from graphprune.bench.latency import interleaved_latency  # noqa: E402
from graphprune.report.costs import count_costs  # noqa: E402
from graphprune.verify.runtime import check_runs  # noqa: E402
from graphprune.verify.structural import check_file  # noqa: E402
from models.export import export  # noqa: E402
from models.zoo import ZOO  # noqa: E402


def graphprune_job(source: Path, target: Path, ratio: float) -> graphprune.PruneResult:
    """What `graphprune SOURCE --ratio R -o TARGET` does, in process."""
    result = graphprune.prune(source, ratio)
    save_model(result.model, target, check=lambda p: (check_file(p), check_runs(p)))
    return result


def torch_pruning_job(model: torch.nn.Module, target: Path, ratio: float,
                      shape: tuple[int, ...]) -> None:
    """Torch-Pruning's job from the torch model: dependency graph, L1 pruning, ONNX export."""
    import torch_pruning as tp

    example = torch.randn(shape)
    pruner = tp.pruner.MagnitudePruner(
        model, example, importance=tp.importance.MagnitudeImportance(p=1),
        pruning_ratio=ratio, ignored_layers=[model.fc],
    )
    pruner.step()
    with torch.no_grad():
        torch.onnx.export(model, example, str(target), dynamo=False, opset_version=17,
                          input_names=["input"], output_names=["output"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--ratio", type=float, default=0.5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--runs", type=int, default=30, help="latency runs per model")
    args = parser.parse_args()
    torch.set_num_threads(1)  # keep torch's own thread pool from competing with the timing
    shape = ZOO[args.model].input_shape
    work = Path(tempfile.mkdtemp(prefix="graphprune-bench-"))
    source = export(args.model, work / f"{args.model}.onnx")
    ours, theirs = work / "graphprune.onnx", work / "torch_pruning.onnx"
    times = {"graphprune": [], "torch_pruning": []}
    for _ in range(args.repeats):
        start = time.perf_counter()
        graphprune_job(source, ours, args.ratio)
        times["graphprune"].append(time.perf_counter() - start)
        model = ZOO[args.model].build(width=1.0, seed=0).eval()  # built outside the timing
        start = time.perf_counter()
        torch_pruning_job(model, theirs, args.ratio, shape)
        times["torch_pruning"].append(time.perf_counter() - start)
    costs = {k: count_costs(graphprune._io.load_model(p)) for k, p in
             (("original", source), ("graphprune", ours), ("torch_pruning", theirs))}
    latency = interleaved_latency([source, ours], runs=args.runs)
    base = costs["original"]
    summary = {
        "model": args.model,
        "ratio": args.ratio,
        "job_seconds_median": {k: round(statistics.median(v), 3) for k, v in times.items()},
        "job_seconds_all": {k: [round(x, 3) for x in v] for k, v in times.items()},
        "macs_ratio": {k: round(c.macs / base.macs, 4) for k, c in costs.items()},
        "params_ratio": {k: round(c.params / base.params, 4) for k, c in costs.items()},
        "ort_cpu_latency_ms": {
            name: {"median": round(t["median_ms"], 2), "p90": round(t["p90_ms"], 2)}
            for name, t in zip(("original", "graphprune"), latency, strict=True)
        } | {"threads": latency[0]["threads"]},
        "speedup_median": round(latency[0]["median_ms"] / latency[1]["median_ms"], 3),
    }
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
