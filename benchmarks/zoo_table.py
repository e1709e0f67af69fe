"""Every zoo model at ``--ratio``: MACs and params after/before and the mask-equivalence error.

    python benchmarks/zoo_table.py --ratio 0.5 [--width 1.0] [--keep-bn] [--models resnet50,...]

Each model is exported with the TorchScript exporter (BatchNorm folded, or kept with --keep-bn),
pruned with the default settings, and compared with its masked original on random inputs at
batch 2 (relative error = max|pruned - masked| / max|masked|).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import onnx  # noqa: E402
import onnx_ir as ir  # noqa: E402

import graphprune  # noqa: E402
from graphprune.verify.oracle import masked_model, relative_error, run  # noqa: E402
from models.export import export  # noqa: E402
from models.zoo import ZOO  # noqa: E402
from tests.oracle import feeds_for  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ratio", type=float, default=0.5)
    parser.add_argument("--width", type=float, default=1.0)
    parser.add_argument("--keep-bn", action="store_true")
    parser.add_argument("--models", default=",".join(ZOO))
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="graphprune-zoo-"))
    print(f"{'model':15} {'groups':>6} {'blocked':>7} {'MACs x':>7} {'params x':>8} "
          f"{'rel. error':>10} {'prune s':>7}")
    for name in args.models.split(","):
        shape = list(ZOO[name].input_shape)
        path = export(name, work / f"{name}.onnx", width=args.width, keep_bn=args.keep_bn,
                      dynamic_batch=True)
        proto = onnx.load(path)
        start = time.perf_counter()
        result = graphprune.prune(path, args.ratio)
        seconds = time.perf_counter() - start
        shape[0] = 2
        feeds = feeds_for(proto, {proto.graph.input[0].name: tuple(shape)})
        error = relative_error(run(masked_model(proto, result.masks), feeds),
                               run(ir.to_proto(result.model), feeds))
        blocked = sum(1 for _, b in result.analysis.blocked_sources
                      if b.reason is not graphprune.BlockReason.GRAPH_IO)
        print(f"{name:15} {len(result.groups):>6} {blocked:>7} "
              f"{result.after.macs / result.before.macs:>7.3f} "
              f"{result.after.params / result.before.params:>8.3f} {error:>10.2e} {seconds:>7.2f}")
        path.unlink()


if __name__ == "__main__":
    main()
