"""Which --round-to default is fastest in onnxruntime on CPU? Measured, not guessed.

Prunes one zoo model at several ratios with round_to 1, 4, 8, 16 and times every pruned model in
one interleaved session, so the ratios below are side by side on the same machine state.

    python benchmarks/round_to.py --model resnet50 --ratios 0.3,0.5,0.7
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import graphprune  # noqa: E402
from graphprune._io import save_model  # noqa: E402
from graphprune.bench.latency import interleaved_latency  # noqa: E402
from models.export import export  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--ratios", default="0.3,0.5,0.7")
    parser.add_argument("--round-to", default="1,4,8,16")
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    ratios = [float(r) for r in args.ratios.split(",")]
    steps = [int(r) for r in args.round_to.split(",")]
    work = Path(tempfile.mkdtemp(prefix="graphprune-roundto-"))
    source = export(args.model, work / f"{args.model}.onnx")
    rows = []
    for ratio in ratios:
        paths, macs = [], []
        for step in steps:
            result = graphprune.prune(source, ratio, round_to=step)
            path = work / f"r{ratio}_s{step}.onnx"
            save_model(result.model, path)
            paths.append(path)
            macs.append(result.after.macs / result.before.macs)
        # interleave() reverses the order every other round: no model is favoured by its place
        medians = [t["median_ms"] for t in interleaved_latency(paths, runs=args.runs)]
        base = medians[steps.index(1)] if 1 in steps else medians[0]
        for step, mac, median in zip(steps, macs, medians, strict=False):
            rows.append({"ratio": ratio, "round_to": step, "macs_ratio": round(mac, 4),
                         "median_ms": round(median, 3), "vs_round_to_1": round(median / base, 3)})
    print(f"{'ratio':>6} {'round_to':>9} {'MACs x':>8} {'median ms':>10} {'vs 1':>6}")
    for row in rows:
        print(f"{row['ratio']:>6} {row['round_to']:>9} {row['macs_ratio']:>8} "
              f"{row['median_ms']:>10} {row['vs_round_to_1']:>6}")
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
