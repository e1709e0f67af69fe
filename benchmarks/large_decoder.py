"""Time and peak memory of pruning heads and MLP neurons of a >= 1B-parameter Llama-style decoder.

Generates ``<dir>/decoder.onnx`` with ``decoder.onnx.data`` straight as ONNX (no torch): random
weights from a fixed-seed RNG, each tensor appended to the data file as it is made (block by
block) and referenced by ``external_data`` entries, so the generator never holds the model.
The graph is a prefill pass without KV cache, ``input_ids[1,S] int64 -> logits[1,S,V]``, written
out op by op as exporters write a Llama layer:

- RMSNorm: ``Pow 2 -> ReduceMean -> Add eps -> Sqrt -> Reciprocal -> Mul x -> Mul weight``;
- Q/K/V MatMuls, ``Reshape [1,S,H,Hd]`` (constant targets), ``Transpose`` to ``[1,H,S,Hd]``;
- rotary on Q and K: ``Slice`` halves, ``Neg``, ``Concat``, ``Mul`` constant cos/sin ``[S,Hd]``,
  ``Add``;
- grouped-query attention: each KV head repeated for its query heads as ``repeat_interleave``
  exports, ``Unsqueeze -> Expand -> Reshape``;
- ``Q K^T`` MatMul, scale ``Mul``, causal mask ``Add``, ``Softmax``, ``P V`` MatMul,
  ``Transpose``, merge ``Reshape [1,S,H*Hd]``, output MatMul, residual ``Add``;
- SwiGLU MLP: ``gate MatMul -> Sigmoid -> Mul`` (SiLU), ``up MatMul``, ``Mul``, ``down MatMul``,
  residual ``Add``;

with the embedding ``Gather`` first and the final RMSNorm and LM head last. The default sizes are
TinyLlama's (hidden 2048, 16 query heads x 128, 4 KV heads, MLP 5632, 22 layers, vocab 32000):
1.1B parameters, 4.4 GB of float32. ``--small`` makes a toy of the same structure (the test).

Then, each in a fresh subprocess whose wall time and peak RSS are measured
(``getrusage(RUSAGE_CHILDREN)`` around one child each):

1. ``cli``: ``python -m graphprune.cli MODEL --heads R --mlp R --no-bench -o OUT``, everything
   the CLI does, its save-time self-check (ONNX checker, onnxruntime runs of the input and the
   output, the mask-equivalence oracle) included;
2. ``phases``: the same steps in one child, timed one by one (load, analysis + rewrite, save
   without the check, ONNX checker, onnxruntime run), with the peak RSS after each.

and reports parameters, heads per layer and file sizes before and after. The generated files
are deleted afterwards unless ``--keep``.

Example:
    python benchmarks/large_decoder.py --dir /work/cache/decoder --heads 0.25 --mlp 0.25

Measured (2 cores shared with other jobs, load average 12-23, warm page cache, onnxruntime
1.32): 1.12B -> 0.88B parameters, heads 16 -> 12 a layer (KV 4 -> 3), MLP 5632 -> 4224. The
whole CLI job, default oracle included, peaks at 0.77 GiB RSS and uses 27.5 s of CPU (113-119 s
wall on the loaded machine); the CLI before this change, interleaved with it, peaked at
8.05-8.09 GiB with 36.6 s of CPU (118-163 s wall): onnxruntime prepacked a copy of every MatMul
weight of each model it ran and the oracle wrote and ran a whole masked copy. Now the checks run
models with more than 1 GiB of external data in segments of at most 512 MiB of weights, one
session at a time (``graphprune.verify.segments``). Pruning alone (phases): 0.38 GiB.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
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
OPSET = 17
ROOT = Path(__file__).resolve().parents[1]  # children import graphprune from this checkout
CONST = "const."  # prefix of constants that are not parameters (shapes, tables, mask, eps)


@dataclasses.dataclass(frozen=True)
class Sizes:
    """Sizes of one decoder (``kv_heads < heads``: grouped-query attention)."""

    hidden: int = 2048
    heads: int = 16
    kv_heads: int = 4
    head_dim: int = 128
    mlp: int = 5632
    layers: int = 22
    vocab: int = 32000
    seq: int = 16

    def parameters(self) -> int:
        """Parameters of the decoder: embedding, layers, final norm, LM head."""
        d, kv = self.hidden, self.kv_heads * self.head_dim
        q = self.heads * self.head_dim
        layer = 2 * d + d * q + 2 * d * kv + q * d + 3 * d * self.mlp
        return 2 * self.vocab * d + self.layers * layer + d


LARGE = Sizes()
SMALL = Sizes(hidden=64, heads=4, kv_heads=2, head_dim=16, mlp=96, layers=2, vocab=128, seq=8)


class Writer:
    """Collects nodes and initializers; parameters go to the data file as they are made."""

    def __init__(self, data, seed: int) -> None:
        self.data = data
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[TensorProto] = []
        self.parameters = 0

    def weight(self, name: str, shape: tuple[int, ...], scale: float, shift: float = 0.0) -> str:
        """Appends ``shift + scale * N(0, 1)`` of ``shape`` to the data file; returns ``name``."""
        self.data.seek(-self.data.tell() % ALIGN, 1)
        offset = self.data.tell()
        row = int(np.prod(shape[1:], dtype=np.int64))
        step = max(1, BLOCK_BYTES // (4 * row))
        for start in range(0, shape[0], step):
            block = self.rng.standard_normal((min(step, shape[0] - start), row), np.float32)
            block *= np.float32(scale)
            block += np.float32(shift)
            block.tofile(self.data)
        tensor = TensorProto(name=name, data_type=TensorProto.FLOAT, dims=shape,
                             data_location=TensorProto.EXTERNAL)
        for key, value in (("location", Path(self.data.name).name), ("offset", str(offset)),
                           ("length", str(self.data.tell() - offset))):
            tensor.external_data.add(key=key, value=value)
        self.initializers.append(tensor)
        self.parameters += int(np.prod(shape, dtype=np.int64))
        return name

    def const(self, name: str, array: np.ndarray) -> str:
        """A small constant stored in the model file; returns its name."""
        self.initializers.append(onnx.numpy_helper.from_array(np.asarray(array), CONST + name))
        return CONST + name

    def node(self, op: str, inputs: list[str], name: str, **attrs) -> str:
        """Adds ``op`` named ``name`` with one output (also ``name``); returns the output."""
        self.nodes.append(helper.make_node(op, inputs, [name], name=name, **attrs))
        return name


def _shared_constants(w: Writer, s: Sizes) -> dict[str, str]:
    """Constants every layer reads: shapes, rotary tables, causal mask, scalars."""
    half = s.head_dim // 2
    inv = 1.0 / 10000 ** (np.arange(0, s.head_dim, 2, dtype=np.float64) / s.head_dim)
    angles = np.outer(np.arange(s.seq, dtype=np.float64), inv)
    angles = np.concatenate([angles, angles], axis=-1)
    mask = np.triu(np.full((s.seq, s.seq), -10000.0, np.float32), k=1)[None, None]
    rep = s.heads // s.kv_heads

    def i64(values):
        return np.array(values, np.int64)

    return {
        "two": w.const("two", np.float32(2.0)),
        "eps": w.const("eps", np.float32(1e-6)),
        "scale": w.const("scale", np.float32(1 / np.sqrt(s.head_dim))),
        "cos": w.const("cos", np.cos(angles).astype(np.float32)),
        "sin": w.const("sin", np.sin(angles).astype(np.float32)),
        "mask": w.const("mask", mask),
        "q_shape": w.const("q_shape", i64([1, s.seq, s.heads, s.head_dim])),
        "kv_shape": w.const("kv_shape", i64([1, s.seq, s.kv_heads, s.head_dim])),
        "merge": w.const("merge", i64([1, s.seq, s.heads * s.head_dim])),
        "expand": w.const("expand", i64([1, s.kv_heads, rep, s.seq, s.head_dim])),
        "repeated": w.const("repeated", i64([1, s.heads, s.seq, s.head_dim])),
        "axis2": w.const("axis2", i64([2])),
        "axis3": w.const("axis3", i64([3])),
        "zero": w.const("zero", i64([0])),
        "half": w.const("half", i64([half])),
        "end": w.const("end", i64([s.head_dim])),
    }


def _rms_norm(w: Writer, c: dict, x: str, name: str, hidden: int) -> str:
    square = w.node("Pow", [x, c["two"]], f"{name}/pow")
    mean = w.node("ReduceMean", [square], f"{name}/mean", axes=[-1], keepdims=1)
    root = w.node("Sqrt", [w.node("Add", [mean, c["eps"]], f"{name}/add_eps")], f"{name}/sqrt")
    normed = w.node("Mul", [x, w.node("Reciprocal", [root], f"{name}/inv")], f"{name}/normed")
    weight = w.weight(f"{name}.weight", (hidden,), 0.1, shift=1.0)
    return w.node("Mul", [normed, weight], f"{name}/scaled")


def _linear(w: Writer, x: str, name: str, fan_in: int, fan_out: int) -> str:
    weight = w.weight(f"{name}.weight", (fan_in, fan_out), 1 / np.sqrt(fan_in))
    return w.node("MatMul", [x, weight], name)


def _rotary(w: Writer, c: dict, x: str, name: str) -> str:
    """``x * cos + rotate_half(x) * sin`` on ``[1,H,S,Hd]``."""
    first = w.node("Slice", [x, c["zero"], c["half"], c["axis3"]], f"{name}/first")
    second = w.node("Slice", [x, c["half"], c["end"], c["axis3"]], f"{name}/second")
    rotated = w.node("Concat", [w.node("Neg", [second], f"{name}/neg"), first], f"{name}/cat",
                     axis=-1)
    return w.node("Add", [w.node("Mul", [x, c["cos"]], f"{name}/cos"),
                          w.node("Mul", [rotated, c["sin"]], f"{name}/sin")], f"{name}/add")


def _heads(w: Writer, c: dict, x: str, shape: str, name: str) -> str:
    """``[1,S,H*Hd] -> [1,H,S,Hd]``."""
    split = w.node("Reshape", [x, c[shape]], f"{name}/split")
    return w.node("Transpose", [split], f"{name}/transpose", perm=[0, 2, 1, 3])


def _repeat_kv(w: Writer, c: dict, x: str, name: str, s: Sizes) -> str:
    """``repeat_interleave(x, heads / kv_heads, dim=1)`` as torch exports it."""
    if s.heads == s.kv_heads:
        return x
    wide = w.node("Unsqueeze", [x, c["axis2"]], f"{name}/unsqueeze")
    expanded = w.node("Expand", [wide, c["expand"]], f"{name}/expand")
    return w.node("Reshape", [expanded, c["repeated"]], f"{name}/repeat")


def _attention(w: Writer, c: dict, x: str, p: str, s: Sizes) -> str:
    d, q_width, kv_width = s.hidden, s.heads * s.head_dim, s.kv_heads * s.head_dim
    q = _heads(w, c, _linear(w, x, f"{p}.q", d, q_width), "q_shape", f"{p}/q")
    k = _heads(w, c, _linear(w, x, f"{p}.k", d, kv_width), "kv_shape", f"{p}/k")
    v = _heads(w, c, _linear(w, x, f"{p}.v", d, kv_width), "kv_shape", f"{p}/v")
    q, k = _rotary(w, c, q, f"{p}/q_rope"), _rotary(w, c, k, f"{p}/k_rope")
    k, v = _repeat_kv(w, c, k, f"{p}/k_rep", s), _repeat_kv(w, c, v, f"{p}/v_rep", s)
    k_t = w.node("Transpose", [k], f"{p}/k_t", perm=[0, 1, 3, 2])
    scores = w.node("Mul", [w.node("MatMul", [q, k_t], f"{p}/qk"), c["scale"]], f"{p}/scale")
    probs = w.node("Softmax", [w.node("Add", [scores, c["mask"]], f"{p}/mask")], f"{p}/softmax",
                   axis=-1)
    context = w.node("MatMul", [probs, v], f"{p}/pv")
    merged = w.node("Reshape", [w.node("Transpose", [context], f"{p}/ctx_t", perm=[0, 2, 1, 3]),
                                c["merge"]], f"{p}/merge")
    return _linear(w, merged, f"{p}.o", q_width, d)


def _mlp(w: Writer, x: str, p: str, s: Sizes) -> str:
    gate = _linear(w, x, f"{p}.gate", s.hidden, s.mlp)
    silu = w.node("Mul", [gate, w.node("Sigmoid", [gate], f"{p}/sigmoid")], f"{p}/silu")
    up = _linear(w, x, f"{p}.up", s.hidden, s.mlp)
    return _linear(w, w.node("Mul", [silu, up], f"{p}/glu"), f"{p}.down", s.mlp, s.hidden)


def _layer(w: Writer, c: dict, x: str, i: int, s: Sizes) -> str:
    p = f"layers.{i}"
    x = w.node("Add", [x, _attention(w, c, _rms_norm(w, c, x, f"{p}.ln1", s.hidden),
                                     f"{p}.attn", s)], f"{p}/attn_residual")
    return w.node("Add", [x, _mlp(w, _rms_norm(w, c, x, f"{p}.ln2", s.hidden), f"{p}.mlp", s)],
                  f"{p}/mlp_residual")


def generate(path: Path, sizes: Sizes = LARGE, seed: int = 0) -> int:
    """Writes the model and ``<name>.data`` beside it; returns its parameter count."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".data"), "wb") as data:
        w = Writer(data, seed)
        c = _shared_constants(w, sizes)
        embed = w.weight("embed.weight", (sizes.vocab, sizes.hidden), 1.0)
        x = w.node("Gather", [embed, "input_ids"], "embed")
        for i in range(sizes.layers):
            x = _layer(w, c, x, i, sizes)
        x = _rms_norm(w, c, x, "norm", sizes.hidden)
        head = w.weight("lm_head.weight", (sizes.hidden, sizes.vocab), 1 / np.sqrt(sizes.hidden))
        w.nodes.append(helper.make_node("MatMul", [x, head], ["logits"], name="lm_head"))
    graph = helper.make_graph(
        w.nodes, "llama_prefill",
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, [1, sizes.seq])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, sizes.seq, sizes.vocab])],
        w.initializers)
    model = helper.make_model(graph, ir_version=8, opset_imports=[helper.make_opsetid("", OPSET)])
    onnx.save(model, path)
    onnx.checker.check_model(str(path), full_check=True)
    assert w.parameters == sizes.parameters(), (w.parameters, sizes.parameters())
    return w.parameters


def count_parameters(path: Path) -> int:
    """Elements of the float initializers of a saved model that are not ``const.`` constants."""
    proto = onnx.load(path, load_external_data=False)
    return sum(int(np.prod(t.dims, dtype=np.int64)) for t in proto.graph.initializer
               if t.data_type == TensorProto.FLOAT and not t.name.startswith(CONST))


def _tensor(path: Path, name: str) -> np.ndarray:
    """Initializer ``name`` of a saved model, memory-mapped from its external data."""
    proto = onnx.load(path, load_external_data=False)
    tensor = next(t for t in proto.graph.initializer if t.name == name)
    info = {e.key: e.value for e in tensor.external_data}
    return np.memmap(path.parent / info["location"], np.float32, "r", int(info.get("offset", 0)),
                     tuple(tensor.dims))


def check_slices(source: Path, output: Path, report: dict) -> int:
    """The pruned Q, O, gate, up and down weights are the kept columns/rows of the originals.

    Checked for every group whose root is a Q projection (kept query channels) or an MLP gate
    (kept neurons); returns the number of tensors compared.
    """
    compared = 0
    for group in report["groups"]:
        kept = np.array(group["kept"])
        base = group["name"].rsplit(".", 1)[0]
        if group["name"].endswith(".attn.q"):
            pairs = ((f"{base}.q.weight", 1), (f"{base}.o.weight", 0))
        elif group["name"].endswith(".mlp.gate"):
            pairs = ((f"{base}.gate.weight", 1), (f"{base}.up.weight", 1),
                     (f"{base}.down.weight", 0))
        else:
            continue
        for name, axis in pairs:
            expected = np.take(_tensor(source, name), kept, axis=axis)
            if not np.array_equal(_tensor(output, name), expected):
                raise SystemExit(f"{name}: the pruned tensor is not the kept slice")
            compared += 1
    return compared


def _size(path: Path) -> int:
    """The model file and every external data file it names (whatever their names)."""
    if str(ROOT) not in sys.path:  # run as a script: graphprune from this checkout
        sys.path.insert(0, str(ROOT))
    from graphprune.report.costs import file_size

    return file_size(path)


def _child(command: list[str]) -> tuple[float, int, str]:
    """Runs ``command`` in a fresh subprocess; returns wall seconds, its peak RSS, its stdout."""
    start = time.perf_counter()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)}
    done = subprocess.run(command, capture_output=True, text=True, check=False, cwd=ROOT, env=env)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command[:4])} ... failed ({done.returncode}): "
                         f"{done.stderr.strip()[-2000:]}")
    return seconds, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024, done.stdout


def _peak() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def phases(source: Path, output: Path, heads: float, mlp: float) -> dict:
    """Runs the CLI's steps one by one (in this process); seconds and peak RSS after each."""
    import graphprune
    from graphprune._io import load_model, save_model
    from graphprune.verify.runtime import check_runs
    from graphprune.verify.structural import check_file

    found: dict[str, dict] = {}

    def timed(name, fn, *args, **kwargs):
        start = time.perf_counter()
        value = fn(*args, **kwargs)
        found[name] = {"seconds": round(time.perf_counter() - start, 2), "peak_rss": _peak()}
        return value

    model = timed("load", load_model, source)
    result = timed("prune", graphprune.prune, model, heads=heads, mlp=mlp)
    timed("save", save_model, result.model, output)
    timed("onnx_checker", check_file, output)
    timed("onnxruntime_run", check_runs, output)
    return found


def _head_groups(report: dict, head_dim: int) -> list[tuple[str, int, int, int, int]]:
    """Per head group: name, KV heads before/after, query heads before/after."""
    return [(g["name"], g["heads_before"], g["heads_after"], g["channels_before"] // head_dim,
             g["channels_after"] // head_dim) for g in report["groups"] if g["kind"] == "heads"]


def measure(source: Path, work: Path, heads: float, mlp: float, head_dim: int) -> dict:
    """Both children on ``source``; the results as a dict."""
    output = work / "decoder.pruned.onnx"
    command = [sys.executable, "-m", "graphprune.cli", str(source), "--heads", str(heads),
               "--mlp", str(mlp), "--no-bench", "-o", str(output)]
    seconds, peak, _ = _child(command)
    report = json.loads(output.with_name("decoder.pruned.report.json").read_text())
    results = {
        "command": " ".join(["python", *command[1:]]),
        "cli_seconds": round(seconds, 1),
        "cli_peak_rss_bytes": peak,
        "params_before": count_parameters(source),
        "params_after": count_parameters(output),
        "heads": _head_groups(report, head_dim),
        "mlp_groups": [(g["name"], g["channels_before"], g["channels_after"])
                       for g in report["groups"] if g["kind"] != "heads"],
        "tensors_checked": check_slices(source, output, report),
        "input_bytes": _size(source),
        "output_bytes": _size(output),
    }
    for path in work.glob("decoder.pruned*"):
        path.unlink()
    seconds, _, stdout = _child([sys.executable, __file__, "--phases", str(source), str(output),
                                 "--heads", str(heads), "--mlp", str(mlp)])
    results["phases"] = json.loads(stdout.strip().splitlines()[-1])
    results["phases_seconds"] = round(seconds, 1)
    return results


def _print(results: dict) -> None:
    gib = 2**30
    print(f"command:      {results['command']}")
    print(f"CLI:          {results['cli_seconds']} s, peak RSS "
          f"{results['cli_peak_rss_bytes'] / gib:.2f} GiB")
    for name, phase in results["phases"].items():
        print(f"  {name:16s} {phase['seconds']:7.2f} s   peak RSS so far "
              f"{phase['peak_rss'] / gib:.2f} GiB")
    print(f"parameters:   {results['params_before']:,} -> {results['params_after']:,}")
    kv = sorted({(b, a) for _, b, a, _, _ in results["heads"]})
    query = sorted({(b, a) for _, _, _, b, a in results["heads"]})
    print(f"head groups:  {len(results['heads'])} (one a layer); KV heads before -> after {kv}, "
          f"query heads {query}")
    mlp = sorted({(b, a) for _, b, a in results["mlp_groups"]})
    print(f"other groups: {len(results['mlp_groups'])}, channels before -> after: {mlp}")
    print(f"slices:       {results['tensors_checked']} pruned weights equal the kept slices")
    print(f"files:        {results['input_bytes'] / gib:.2f} GiB -> "
          f"{results['output_bytes'] / gib:.2f} GiB")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", type=Path, default=Path("/tmp/graphprune-decoder"))
    parser.add_argument("--small", action="store_true", help="the toy sizes of the test")
    parser.add_argument("--layers", type=int, default=None, help="override the layer count")
    parser.add_argument("--heads", type=float, default=0.25)
    parser.add_argument("--mlp", type=float, default=0.25)
    parser.add_argument("--generate-only", action="store_true")
    parser.add_argument("--keep", action="store_true", help="keep the generated files")
    parser.add_argument("--reuse", action="store_true",
                        help="measure the model already in --dir (from --generate-only)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--phases", nargs=2, type=Path, metavar=("MODEL", "OUT"),
                        help=argparse.SUPPRESS)  # the child of the phase measurement
    args = parser.parse_args(argv)
    if args.phases:
        print(json.dumps(phases(*args.phases, args.heads, args.mlp)))
        return 0
    args.dir = args.dir.resolve()
    sizes = SMALL if args.small else LARGE
    if args.layers is not None:
        sizes = dataclasses.replace(sizes, layers=args.layers)
    source = args.dir / "decoder.onnx"
    try:
        if not (args.reuse and source.exists()):
            start = time.perf_counter()
            count = generate(source, sizes)
            print(f"generated {source}: {count:,} parameters ({sizes}) in "
                  f"{time.perf_counter() - start:.1f} s, generator peak RSS "
                  f"{_peak() / 2**30:.2f} GiB", flush=True)
        if args.generate_only:
            return 0
        results = measure(source, args.dir, args.heads, args.mlp, sizes.head_dim)
    finally:
        if not args.keep and not args.generate_only:
            for path in args.dir.glob("decoder*"):  # the model, its data, pruned outputs
                path.unlink()
            with contextlib.suppress(OSError):
                args.dir.rmdir()
    _print(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
