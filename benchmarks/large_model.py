"""Peak memory and time of pruning a model above 2 GB whose weights live in external data.

Generates ``<dir>/large.onnx`` with ``large.onnx.data`` (written block by block, never whole in
memory)::

    x[N,64,4,4] -> Conv(C) -> Relu -> Conv(C,C,3,3) -> Relu -> Conv(C,C,3,3) -> Relu
                -> GlobalAveragePool -> Flatten -> Gemm(1000)

(C = 6144: two 1.36 GB conv weights, 2.76 GB in all), runs ``graphprune`` on it in a subprocess
and reports the child's wall time and peak resident memory (``getrusage(RUSAGE_CHILDREN)``), the
sizes in and out, and checks that the output keeps external data and that the pruned weights are
the kept rows and columns of the original ones. The generated files are deleted afterwards
unless ``--keep``.

Example:
    python benchmarks/large_model.py --dir /tmp/graphprune-large --ratio 0.5
"""

from __future__ import annotations

import argparse
import contextlib
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

ALIGN = 4096
BLOCK_BYTES = 2**26


def _external(name: str, shape: tuple[int, ...], data, rng: np.random.Generator) -> TensorProto:
    """Appends random float32 values of ``shape`` to ``data`` block by block; returns the proto."""
    data.seek(-data.tell() % ALIGN, 1)
    offset = data.tell()
    row = int(np.prod(shape[1:]))
    fan_in = row if len(shape) > 1 else 1
    step = max(1, BLOCK_BYTES // (4 * row))
    for start in range(0, shape[0], step):
        rows = min(step, shape[0] - start)
        block = rng.standard_normal((rows, row), dtype=np.float32)
        block *= np.float32(1 / np.sqrt(fan_in))
        block.tofile(data)
    tensor = TensorProto(name=name, data_type=TensorProto.FLOAT, dims=shape,
                         data_location=TensorProto.EXTERNAL)
    for key, value in (("location", Path(data.name).name), ("offset", str(offset)),
                       ("length", str(data.tell() - offset))):
        tensor.external_data.add(key=key, value=value)
    return tensor


def generate(path: Path, channels: int, seed: int = 0) -> Path:
    """Writes the model and its data; returns the model path."""
    rng = np.random.default_rng(seed)
    shapes = {
        "w1": (channels, 64, 3, 3), "b1": (channels,),
        "w2": (channels, channels, 3, 3), "b2": (channels,),
        "w3": (channels, channels, 3, 3), "b3": (channels,),
        "wf": (1000, channels), "bf": (1000,),
    }
    with open(path.with_name(path.name + ".data"), "wb") as data:
        inits = [_external(name, shape, data, rng) for name, shape in shapes.items()]
    conv = {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", **conv),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], name="conv2", **conv),
        helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
        helper.make_node("Conv", ["r2", "w3", "b3"], ["c3"], name="conv3", **conv),
        helper.make_node("Relu", ["c3"], ["r3"], name="relu3"),
        helper.make_node("GlobalAveragePool", ["r3"], ["p"], name="pool"),
        helper.make_node("Flatten", ["p"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "wf", "bf"], ["y"], name="fc", transB=1),
    ]
    graph = helper.make_graph(
        nodes, "large", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 64, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 1000])], inits)
    model = helper.make_model(graph, ir_version=8, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, path)
    onnx.checker.check_model(str(path))
    return path


def _size(path: Path) -> int:
    data = path.with_name(path.name + ".data")
    return path.stat().st_size + (data.stat().st_size if data.exists() else 0)


def _rows(path: Path, name: str, rows: np.ndarray) -> np.ndarray:
    """Rows ``rows`` of initializer ``name`` of a model with external data, read by offset."""
    proto = onnx.load(path, load_external_data=False)
    tensor = next(t for t in proto.graph.initializer if t.name == name)
    info = {e.key: e.value for e in tensor.external_data}
    row = int(np.prod(tensor.dims[1:]))
    found = []
    with open(path.parent / info["location"], "rb") as handle:
        for r in rows:
            handle.seek(int(info.get("offset", 0)) + int(r) * row * 4)
            found.append(np.fromfile(handle, np.float32, row).reshape(tensor.dims[1:]))
    return np.stack(found)


def check_slices(source: Path, output: Path, report: dict) -> None:
    """The pruned ``w2`` holds ``w2[kept_out][:, kept_in]`` (checked on a few rows)."""
    kept = {g["name"]: np.array(g["kept"]) for g in report["groups"]}
    kept_in, kept_out = kept["conv1"], kept["conv2"]
    original = _rows(source, "w2", kept_out[:3])[:, kept_in]
    assert np.array_equal(_rows(output, "w2", np.arange(3)), original), "w2 slices differ"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", type=Path, default=Path("/tmp/graphprune-large"))
    parser.add_argument("--channels", type=int, default=6144)
    parser.add_argument("--ratio", type=float, default=0.5)
    parser.add_argument("--keep", action="store_true", help="keep the generated files")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    args.dir.mkdir(parents=True, exist_ok=True)
    source, output = args.dir / "large.onnx", args.dir / "large.pruned.onnx"
    try:
        start = time.perf_counter()
        generate(source, args.channels)
        generated = time.perf_counter() - start
        command = [sys.executable, "-m", "graphprune.cli", str(source), "--ratio",
                   str(args.ratio), "--no-bench", "-o", str(output)]
        start = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        seconds = time.perf_counter() - start
        if done.returncode != 0:
            raise SystemExit(f"graphprune failed ({done.returncode}): {done.stderr.strip()}")
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
        report = json.loads(output.with_name("large.pruned.report.json").read_text())
        stored = onnx.load(output, load_external_data=False)
        external = [t.name for t in stored.graph.initializer
                    if t.data_location == TensorProto.EXTERNAL]
        check_slices(source, output, report)
        results = {
            "command": " ".join(["graphprune", *command[3:]]),
            "input_bytes": _size(source),
            "output_bytes": _size(output),
            "output_external_tensors": len(external),
            "prune_seconds": round(seconds, 1),
            "peak_rss_bytes": peak,
            "peak_rss_over_input": round(peak / _size(source), 3),
            "generator_peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
            "generate_seconds": round(generated, 1),
        }
    finally:
        if not args.keep:
            for path in args.dir.glob("large*"):
                path.unlink()
            with contextlib.suppress(OSError):
                args.dir.rmdir()  # only when nothing else is in it
    gib = 2**30
    print(f"command:     {results['command']}")
    print(f"input:       {results['input_bytes'] / gib:.2f} GiB (external data)")
    print(f"output:      {results['output_bytes'] / gib:.2f} GiB, "
          f"{results['output_external_tensors']} tensors in external data")
    print(f"time:        {results['prune_seconds']} s")
    print(f"peak RSS:    {peak / gib:.2f} GiB ({results['peak_rss_over_input']:.0%} of the input)")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
