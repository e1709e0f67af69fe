"""Time and peak memory of ``graphprune analyze`` and of a whole prune job against graph size.

Generates synthetic CNN-like models of about N nodes (``x[1,C,4,4]``, C = 16, 1x1 convolutions so
the weights stay small)::

    stem Conv -> Relu
    repeat: residual block   Conv -> Relu -> Conv -> Add(skip) -> Relu            (5 nodes)
            concat block     Conv -> Relu, Conv -> Relu (C/2 each) -> Concat      (5 nodes)
            split block      Split(C/2, C/2) -> Conv -> Relu (first half) -> Concat (4 nodes)
            bottleneck       Conv(C -> C/2) -> Relu -> Conv(C/2 -> C) -> Relu     (4 nodes)
    GlobalAveragePool -> Flatten -> Gemm(10)

and runs, for each N, in a fresh subprocess each (so peak RSS is the run's own,
``os.wait4``'s rusage of that child):

(a) ``python -m graphprune.cli analyze MODEL`` (the table goes to a file), and
(b) ``python -m graphprune.cli MODEL --ratio 0.5 --no-bench -o OUT`` (the whole job: load, ONNX
    checker, analysis, rewrite, save with the self-check in onnxruntime, JSON and HTML reports).

It prints wall time, CPU time (user + system of the child: the number to compare on a shared
machine) and peak RSS per N, and the CPU growth ratio to the previous N, normalized by the node
ratio (1.0 = exactly linear). ``--profile`` also writes a cProfile of each job run
(``<dir>/job-N.prof``) and prints its top functions by cumulative time; ``--stages`` times each
stage of the job; ``--sessions`` times one whole onnxruntime session of the model against the
segmented run the checks make of models over 10k nodes.

Example:
    python benchmarks/scale.py --sizes 5000,20000,100000 --dir /tmp/graphprune-scale
"""

from __future__ import annotations

import argparse
import os
import pstats
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

CHANNELS = 16
SPATIAL = 4
TAIL_NODES = 3  # GlobalAveragePool, Flatten, Gemm
REPO = Path(__file__).resolve().parent.parent  # the CLI runs from this checkout


class _Builder:
    """Appends nodes and small random initializers; names are unique by a counter."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[TensorProto] = []
        self.count = 0

    def name(self, stem: str) -> str:
        self.count += 1
        return f"{stem}_{self.count}"

    def weight(self, *shape: int) -> str:
        name = self.name("w")
        array = (self.rng.standard_normal(shape) / np.sqrt(shape[1])).astype(np.float32)
        self.initializers.append(numpy_helper.from_array(array, name))
        return name

    def node(self, op: str, inputs: list[str], n_out: int = 1, **attrs) -> list[str]:
        outputs = [self.name("t") for _ in range(n_out)]
        self.nodes.append(helper.make_node(op, inputs, outputs, name=self.name(op), **attrs))
        return outputs

    def conv_relu(self, x: str, cin: int, cout: int) -> str:
        bias = self.name("b")
        self.initializers.append(numpy_helper.from_array(
            (0.1 * self.rng.standard_normal(cout)).astype(np.float32), bias))
        (y,) = self.node("Conv", [x, self.weight(cout, cin, 1, 1), bias])
        return self.node("Relu", [y])[0]


def _residual(b: _Builder, x: str) -> str:
    h = b.conv_relu(x, CHANNELS, CHANNELS)
    (y,) = b.node("Conv", [h, b.weight(CHANNELS, CHANNELS, 1, 1)])
    (s,) = b.node("Add", [y, x])
    return b.node("Relu", [s])[0]


def _concat(b: _Builder, x: str) -> str:
    half = CHANNELS // 2
    left, right = b.conv_relu(x, CHANNELS, half), b.conv_relu(x, CHANNELS, half)
    return b.node("Concat", [left, right], axis=1)[0]


def _split(b: _Builder, x: str) -> str:
    half = CHANNELS // 2
    sizes = b.name("split")
    b.initializers.append(numpy_helper.from_array(np.array([half, half], np.int64), sizes))
    first, second = b.node("Split", [x, sizes], n_out=2, axis=1)
    return b.node("Concat", [b.conv_relu(first, half, half), second], axis=1)[0]


def _bottleneck(b: _Builder, x: str) -> str:
    return b.conv_relu(b.conv_relu(x, CHANNELS, CHANNELS // 2), CHANNELS // 2, CHANNELS)


_BLOCKS = (_residual, _residual, _concat, _bottleneck, _residual, _split)


def build(nodes: int, seed: int = 0) -> onnx.ModelProto:
    """A model of about ``nodes`` nodes (within one block), opset 17."""
    b = _Builder(seed)
    x = b.conv_relu("x", 3, CHANNELS)
    k = 0
    while len(b.nodes) + TAIL_NODES < nodes:
        x = _BLOCKS[k % len(_BLOCKS)](b, x)
        k += 1
    (pooled,) = b.node("GlobalAveragePool", [x])
    (flat,) = b.node("Flatten", [pooled], axis=1)
    b.node("Gemm", [flat, b.weight(10, CHANNELS), _bias(b, 10)], transB=1)
    b.nodes[-1].output[0] = "y"
    graph = helper.make_graph(
        b.nodes, f"scale{nodes}",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, SPATIAL, SPATIAL])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])],
        b.initializers)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                             producer_name="graphprune-scale")


def _bias(b: _Builder, n: int) -> str:
    name = b.name("b")
    b.initializers.append(numpy_helper.from_array(np.zeros(n, np.float32), name))
    return name


def generate(path: Path, nodes: int) -> Path:
    if not path.exists():
        onnx.save(build(nodes), str(path))
    return path


def run_measured(args: list[str], log: Path) -> tuple[float, float, float, int]:
    """Runs ``args``; returns (wall s, CPU s, peak RSS in MB of that child, exit status).

    CPU seconds (user + system, every thread of the child) are what to compare on a shared
    machine: wall time there includes waiting for a core.
    """
    start = time.perf_counter()
    with open(log, "w") as out:
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        child = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env)
        _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    elapsed = time.perf_counter() - start
    cpu = usage.ru_utime + usage.ru_stime
    return elapsed, cpu, usage.ru_maxrss / 1024, child.returncode  # ru_maxrss: KiB on Linux


def _cli(profile: Path | None) -> list[str]:
    if profile is None:
        return [sys.executable, "-m", "graphprune.cli"]
    return [sys.executable, "-m", "cProfile", "-o", str(profile), "-m", "graphprune.cli"]


def measure(nodes: int, folder: Path, profile: bool) -> dict:
    model = generate(folder / f"scale{nodes}.onnx", nodes)
    count = len(onnx.load(str(model), load_external_data=False).graph.node)
    row = {"nodes": count}
    row["analyze_s"], row["analyze_cpu"], row["analyze_mb"], rc = run_measured(
        [*_cli(None), "analyze", str(model)], folder / f"analyze-{nodes}.log")
    _check(rc, folder / f"analyze-{nodes}.log")
    out = folder / f"scale{nodes}.pruned.onnx"
    prof = folder / f"job-{nodes}.prof" if profile else None
    row["job_s"], row["job_cpu"], row["job_mb"], rc = run_measured(
        [*_cli(prof), str(model), "--ratio", "0.5", "--no-bench", "-o", str(out)],
        folder / f"job-{nodes}.log")
    _check(rc, folder / f"job-{nodes}.log")
    if prof is not None:
        print(f"--- cProfile of the job at N={count} (top 25 by cumulative time)")
        pstats.Stats(str(prof)).sort_stats("cumulative").print_stats(25)
    return row


def _check(rc: int, log: Path) -> None:
    if rc != 0:
        sys.exit(f"run failed (exit {rc}), see {log}:\n{log.read_text()[-2000:]}")


def stage_times(model: Path) -> None:
    """Prints the seconds of each stage of the job on ``model``, run in this process.

    The stages by whose code runs: onnx-ir (load, serialize), onnx (checker, shape inference),
    onnxruntime (session and one run of the self-check) and graphprune's own.
    """
    sys.path.insert(0, str(REPO))  # this checkout's graphprune, not an installed one
    import onnx_ir as ir

    import graphprune
    import graphprune.pipeline
    from graphprune._io import check_input, infer_shapes, save_model
    from graphprune.report.json_report import build_report
    from graphprune.report.writers import write_prune_reports
    from graphprune.verify.runtime import check_runs
    from graphprune.verify.structural import check_file

    out = model.with_name(f"{model.stem}.stages.onnx")
    times: dict[str, float] = {}

    cpu: dict[str, float] = {}

    def timed(name, fn):
        start, start_cpu = time.perf_counter(), time.process_time()
        result = fn()
        times[name] = times.get(name, 0.0) + time.perf_counter() - start
        cpu[name] = cpu.get(name, 0.0) + time.process_time() - start_cpu
        return result

    loaded = timed("onnx-ir load", lambda: ir.load(model))
    timed("onnx checker (input)", lambda: check_input(model))
    timed("shape inference (onnx + onnx-ir)", lambda: infer_shapes(loaded))
    graphprune.pipeline.infer_shapes = lambda m: m  # shapes were inferred above, once
    result = timed("graphprune prune", lambda: graphprune.prune(loaded, 0.5))
    timed("onnx-ir save", lambda: save_model(result.model, out))
    timed("onnx checker (output)", lambda: check_file(out))
    timed("onnxruntime self-check", lambda: check_runs(out))
    report = timed("reports", lambda: build_report(result, source=model, output=out,
                                                   settings={}))
    timed("reports", lambda: write_prune_reports(report, out))
    total, total_cpu = sum(times.values()), sum(cpu.values())
    print(f"  {'stage':36s} {'wall':>10s} {'share':>7s} {'CPU':>10s}")
    for name, seconds in times.items():
        print(f"  {name:36s} {seconds:8.2f} s  {seconds / total:6.1%} {cpu[name]:8.2f} s")
    print(f"  {'total':36s} {total:8.2f} s  {'':6s} {total_cpu:8.2f} s")


def session_times(model: Path) -> None:
    """Seconds of one whole onnxruntime session of ``model`` against a segmented run.

    The session has the checks' options; the segmented run creates every segment's session and
    runs it.
    """
    sys.path.insert(0, str(REPO))
    import graphprune.verify.segments as segments
    from graphprune.inputs import valid_feeds
    from graphprune.verify.oracle import session

    feeds = valid_feeds(model, count=2)  # the checks' two batches
    start = time.perf_counter()
    whole = session(model)
    created = time.perf_counter() - start
    del whole
    start = time.perf_counter()
    segments.run_in_segments(model, feeds)
    segmented = time.perf_counter() - start
    print(f"  one session: {created:.2f} s; segmented run ({segments.SEGMENT_NODES} nodes a "
          f"segment, {len(feeds)} batches): {segmented:.2f} s")


def _print_rows(rows: list[dict]) -> None:
    print(f"{'nodes':>8} {'analyze s':>10} {'(CPU s)':>8} {'analyze MB':>11} {'job s':>8} "
          f"{'(CPU s)':>8} {'job MB':>8} {'growth (CPU/node ratio): analyze, job':>40}")
    previous = None
    for row in rows:
        growth = ""
        if previous is not None:
            scale = row["nodes"] / previous["nodes"]
            analyze = row["analyze_cpu"] / previous["analyze_cpu"] / scale
            job = row["job_cpu"] / previous["job_cpu"] / scale
            growth = f"x{scale:.1f} nodes: {analyze:.2f}, {job:.2f}"
        print(f"{row['nodes']:>8} {row['analyze_s']:>10.2f} {row['analyze_cpu']:>8.2f} "
              f"{row['analyze_mb']:>11.0f} {row['job_s']:>8.2f} {row['job_cpu']:>8.2f} "
              f"{row['job_mb']:>8.0f} {growth:>40}", flush=True)
        previous = row


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="5000,20000,100000", help="Node counts, comma list.")
    parser.add_argument("--dir", type=Path, default=Path("/tmp/graphprune-scale"))
    parser.add_argument("--profile", action="store_true", help="cProfile each job run.")
    parser.add_argument("--stages", action="store_true",
                        help="Also time each stage of the job (in a fresh process per size).")
    parser.add_argument("--stages-of", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--sessions", action="store_true",
                        help="Also time one whole onnxruntime session against a segmented run "
                             "(in a fresh process per size).")
    parser.add_argument("--sessions-of", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.stages_of is not None:
        stage_times(args.stages_of)
        return
    if args.sessions_of is not None:
        session_times(args.sessions_of)
        return
    args.dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for n in args.sizes.split(","):
        rows.append(measure(int(n), args.dir, args.profile))
        print(f"N={rows[-1]['nodes']}: {rows[-1]}", flush=True)
        for flag, wanted in (("--stages-of", args.stages), ("--sessions-of", args.sessions)):
            if wanted:
                print(f"{flag[2:-3]} at N={rows[-1]['nodes']}:", flush=True)
                subprocess.run([sys.executable, __file__, flag,
                                str(args.dir / f"scale{n}.onnx")], check=True,
                               env={**os.environ, "PYTHONPATH": str(REPO)})
    _print_rows(rows)


if __name__ == "__main__":
    main()
