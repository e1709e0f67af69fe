"""Peers at one pruning ratio: graphprune vs Torch-Pruning vs onnxsim's structured pruning.

On every zoo model: the original ONNX export, graphprune's output (ONNX in, ONNX out),
Torch-Pruning's (the torch model pruned, then exported the same way) and onnxsim's
(``onnxsim.pruning.apply_structured_pruning`` on the original ONNX). Parameters and MACs are counted
by graphprune's counter for all four; CPU latency of the four is measured in one interleaved
onnxruntime session (``speedup`` is the original's median over the method's median, side by side);
output error is the relative L2 error, cosine similarity and top-1 agreement against the original on
the same random inputs. No method is fine-tuned: the error is what pruning alone costs.

Install the peers as optional benchmark dependencies (the ``bench`` extra of pyproject.toml), but
torch-pruning with ``--no-deps``: its unpinned torch requirement would pull a multi-GB CUDA torch
over the CPU wheel the zoo needs.

    pip install torch==2.13.0 && pip install -e ".[zoo]"
    pip install onnxsim==0.8.1 && pip install --no-deps torch-pruning==1.6.1
    python benchmarks/peers.py --models resnet50,mobilenet_v2 --ratio 0.5 --out peers.md

Settings that make the methods comparable: one ratio for every layer, L1 magnitude importance,
kept channels rounded to a multiple of 8 where the method can round (graphprune, Torch-Pruning;
onnxsim cannot), the layers that produce a model output left whole (graphprune always does;
Torch-Pruning is told so by ``ignored_layers``; onnxsim never prunes them). A peer that is not
installed or fails on a model gets a row saying so.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import onnx  # noqa: E402
import torch  # noqa: E402

import graphprune  # noqa: E402
from graphprune._io import load_model, save_model  # noqa: E402
from graphprune.bench.latency import cpu_latency  # noqa: E402
from graphprune.bench.measure import fidelity_to_first  # noqa: E402
from graphprune.bench.system import environment, physical_cores  # noqa: E402
from graphprune.inputs import load_inputs  # noqa: E402
from graphprune.report.costs import count_costs  # noqa: E402
from models.export import TORCHSCRIPT_OPSET, export, output_names  # noqa: E402
from models.zoo import ZOO  # noqa: E402

METHODS = ("original", "graphprune", "torch_pruning", "onnxsim")
ROUND_TO = 8


def run_graphprune(source: Path, target: Path, ratio: float) -> None:
    result = graphprune.prune(source, ratio, criterion="l1", round_to=ROUND_TO)
    save_model(result.model, target)


def _weight_behind(fn, owners: dict) -> torch.nn.Module | None:
    """The module whose weight ``fn`` reads through a chain of one-input ops (a transpose)."""
    while fn is not None:
        variable = getattr(fn, "variable", None)
        if variable is not None:
            return owners.get(id(variable))
        inputs = [n for n, _ in fn.next_functions if n is not None]
        if len(inputs) != 1:
            return None
        fn = inputs[0]
    return None


def output_layers(model: torch.nn.Module, example: torch.Tensor) -> list[torch.nn.Module]:
    """The modules whose weights compute a model output with no weighted op after them.

    Walks autograd back from every output through ops without a weight (activations, concat, add,
    reshapes, BatchNorm) and stops at the first op that reads a weight of rank >= 2.
    """
    owners = {id(m.weight): m for m in model.modules()
              if isinstance(getattr(m, "weight", None), torch.nn.Parameter) and m.weight.dim() >= 2}
    outputs = model(example)
    outputs = outputs if isinstance(outputs, tuple) else (outputs,)
    stack, seen, found = [o.grad_fn for o in outputs], set(), []
    while stack:
        fn = stack.pop()
        if fn is None or fn in seen:
            continue
        seen.add(fn)
        inputs = [n for n, _ in fn.next_functions if n is not None]
        weights = [w for w in (_weight_behind(n, owners) for n in inputs) if w is not None]
        found.extend(w for w in weights if w not in found)
        if not weights:
            stack.extend(inputs)
    return found


def run_torch_pruning(name: str, target: Path, ratio: float, shape: tuple[int, ...]) -> None:
    import torch_pruning as tp

    model = ZOO[name].build(width=1.0, seed=0).eval()
    example = torch.randn(shape)
    pruner = tp.pruner.MagnitudePruner(
        model, example, importance=tp.importance.MagnitudeImportance(p=1),
        pruning_ratio=ratio, round_to=ROUND_TO, ignored_layers=output_layers(model, example),
    )
    pruner.step()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the exporter models.export uses
        torch.onnx.export(model, example, str(target), dynamo=False,
                          opset_version=TORCHSCRIPT_OPSET, input_names=["input"],
                          output_names=output_names(ZOO[name].num_outputs))


def run_onnxsim(source: Path, target: Path, ratio: float) -> None:
    from onnxsim.pruning import apply_structured_pruning

    pruned = apply_structured_pruning(str(source), sparsity=ratio, importance_norm="l1")
    onnx.save(pruned, str(target))


def _attempt(job, *args) -> str | None:
    """Runs one pruning job; the first line of the error if it fails."""
    try:
        job(*args)
    except ImportError as exc:
        return f"not installed ({exc.name})"
    except Exception as exc:  # a peer failing on a model is a result, not a crash
        text = str(exc).strip().splitlines()
        return f"failed: {type(exc).__name__}: {text[0][:120] if text else ''}"
    return None


def compare_model(name: str, ratio: float, work: Path, runs: int | None,
                  samples: int) -> list[dict]:
    """One row per method for zoo model ``name``."""
    shape = ZOO[name].input_shape
    paths = {m: work / f"{name}.{m}.onnx" for m in METHODS}
    export(name, paths["original"], input_shape=shape)
    errors = {
        "original": None,
        "graphprune": _attempt(run_graphprune, paths["original"], paths["graphprune"], ratio),
        "torch_pruning": _attempt(run_torch_pruning, name, paths["torch_pruning"], ratio, shape),
        "onnxsim": _attempt(run_onnxsim, paths["original"], paths["onnxsim"], ratio),
    }
    done = [m for m in METHODS if errors[m] is None]
    inputs = load_inputs(paths["original"], samples=samples)
    done_paths = [paths[m] for m in done]
    latency = dict(zip(done, cpu_latency(done_paths, inputs.batches, runs=runs), strict=True))
    fidelity = dict(zip(done, fidelity_to_first(done_paths, [inputs] * len(done),
                                                latency["original"].threads), strict=True))
    base = count_costs(load_model(paths["original"]))
    rows = []
    for method in METHODS:
        row = {"model": name, "method": method, "error": errors[method]}
        if method in done:
            costs = count_costs(load_model(paths[method]))
            fid = fidelity[method] or {}
            row.update(params=costs.params, macs=costs.macs, params_x=costs.params / base.params,
                       macs_x=costs.macs / base.macs, median_ms=latency[method].median_ms,
                       p90_ms=latency[method].p90_ms,
                       speedup=latency["original"].median_ms / latency[method].median_ms,
                       rel_l2=fid.get("rel_l2"), cosine=fid.get("cosine"),
                       top1=fid.get("top1_agreement"), fidelity_error=fid.get("error"))
        rows.append(row)
    return rows


def _cell(row: dict, key: str, fmt: str) -> str:
    value = row.get(key)
    return "-" if value is None else format(value, fmt)


def markdown(rows: list[dict], header: str) -> str:
    """The table: one row per model and method."""
    lines = [header, "",
             "| model | method | params | params x | MMACs | MACs x | CPU median ms | p90 ms | "
             "speedup | rel. L2 | cosine | top-1 |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for row in rows:
        if row["error"]:
            lines.append(f"| {row['model']} | {row['method']} | {row['error']} |" + " |" * 10)
            continue
        lines.append(
            f"| {row['model']} | {row['method']} | {row['params'] / 1e6:.2f}M | "
            f"{_cell(row, 'params_x', '.3f')} | {row['macs'] / 1e6:.1f} | "
            f"{_cell(row, 'macs_x', '.3f')} | {_cell(row, 'median_ms', '.2f')} | "
            f"{_cell(row, 'p90_ms', '.2f')} | {_cell(row, 'speedup', '.2f')} | "
            f"{_cell(row, 'rel_l2', '.3f')} | {_cell(row, 'cosine', '.3f')} | "
            f"{_cell(row, 'top1', '.0%')} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(ZOO), help="comma-separated zoo names")
    parser.add_argument("--ratio", type=float, default=0.5)
    parser.add_argument("--runs", type=int, default=None, help="latency runs (default: ~5 s)")
    parser.add_argument("--samples", type=int, default=16, help="random inputs for the error")
    parser.add_argument("--out", type=Path, default=Path("peers.md"), help="markdown table")
    args = parser.parse_args()
    torch.set_num_threads(1)  # keep torch's thread pool from competing with the timing
    rows = []
    for name in args.models.split(","):
        start = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="graphprune-peers-") as work:
            rows.extend(compare_model(name.strip(), args.ratio, Path(work), args.runs,
                                      args.samples))
        print(f"{name}: {time.perf_counter() - start:.0f} s", file=sys.stderr)
    env = environment(physical_cores())
    header = (f"Ratio {args.ratio}; CPU {env['cpu']}, {env['intra_op_threads']} threads, "
              f"onnxruntime {env['onnxruntime']}, torch {torch.__version__}; command: "
              f"python benchmarks/peers.py {' '.join(sys.argv[1:])}")
    table = markdown(rows, header)
    args.out.write_text(table)
    args.out.with_suffix(".json").write_text(json.dumps({"environment": env, "rows": rows},
                                                        indent=1))
    print(table)


if __name__ == "__main__":
    main()
