"""Zoo models quantized by onnxruntime, pruned, and checked with the mask-equivalence oracle.

    python benchmarks/quantized_zoo.py --ratios 0.3 0.5 --models resnet18 mobilenet_v3

Each model is exported at width 0.25 and quantized four ways (``quantize_dynamic`` with uint8
and int8 weights: ConvInteger/MatMulInteger; ``quantize_static`` per channel as QDQ and as
QOperator: QLinearConv, QGemm, QLinearAdd, ...). The table shows groups, the MACs and params
ratios and the oracle's relative error on a random input. MACs are counted here, at the small
input shape, from the weight shapes and the output shapes onnxruntime produces (every Conv,
ConvInteger, QLinearConv, Gemm, QGemm, MatMul, MatMulInteger and QLinearMatMul); params are the
elements of every initializer, integer weights included.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import onnx  # noqa: E402
import onnx_ir as ir  # noqa: E402

import graphprune  # noqa: E402
from graphprune.verify.oracle import masked_model, relative_error, run  # noqa: E402
from models.zoo import ZOO  # noqa: E402
from tests.oracle import feeds_for  # noqa: E402
from tests.test_quant_rules import FORMATS, quantize_zoo_model  # noqa: E402

WEIGHT_INPUT = {"Conv": 1, "ConvInteger": 1, "QLinearConv": 3, "Gemm": 1, "QGemm": 3,
                "MatMul": 1, "MatMulInteger": 1, "QLinearMatMul": 3}


def costs(proto: onnx.ModelProto, feeds: dict) -> tuple[int, int]:
    """(MACs, params): MACs from the weight shapes and the output shapes of one run."""
    weights = {t.name: list(t.dims) for t in proto.graph.initializer}
    through_dq = {n.output[0]: n.input[0] for n in proto.graph.node
                  if n.op_type == "DequantizeLinear"}
    probe = onnx.ModelProto()
    probe.CopyFrom(proto)
    nodes = [n for n in probe.graph.node if n.op_type in WEIGHT_INPUT]
    del probe.graph.output[:]
    probe.graph.output.extend(onnx.ValueInfoProto(name=n.output[0]) for n in nodes)
    macs = 0
    for node, y in zip(nodes, run(probe, feeds), strict=True):
        name = node.input[WEIGHT_INPUT[node.op_type]]
        w = weights[name] if name in weights else weights[through_dq[name]]
        if "Conv" in node.op_type:
            macs += y.size * int(np.prod(w[1:]))
        else:
            trans_b = any(a.name == "transB" and a.i for a in node.attribute)
            macs += y.size * (w[-1] if trans_b else w[-2])
    return macs, sum(int(np.prod(d)) for d in weights.values())


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["resnet18", "mobilenet_v3"])
    p.add_argument("--ratios", nargs="+", type=float, default=[0.5])
    args = p.parse_args()
    print("| model | format | ratio | groups | MACs | params | oracle error |")
    print("|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as folder:
        for name in args.models:
            for fmt in FORMATS:
                proto = quantize_zoo_model(name, fmt, Path(folder))
                feeds = feeds_for(proto, {"input": ZOO[name].small_input_shape}, seed=3)
                for ratio in args.ratios:
                    result = graphprune.prune(ir.from_proto(proto), ratio=ratio)
                    pruned = ir.to_proto(result.model)
                    error = relative_error(run(masked_model(proto, result.masks), feeds),
                                           run(pruned, feeds))
                    (m0, p0), (m1, p1) = costs(proto, feeds), costs(pruned, feeds)
                    print(f"| {name} | {fmt} | {ratio} | {len(result.analysis.groups)} | "
                          f"{m1 / m0:.3f} | {p1 / p0:.3f} | {error:.2g} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
