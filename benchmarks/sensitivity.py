"""Sensitivity analysis on the PP-OCRv4 detector: wall time per executor, identical results.

The detector of ``rapidocr-onnxruntime`` (``tests/corpus.py`` id ``ppocr4_det``) is analysed on
calibration images rendered by ``benchmarks/ocr_pipeline.py`` (``calibration_inputs``, seeds
disjoint from the test images), at ``1x3x160x480``: every group pruned alone at each ratio, in
this process (1 worker), on 2 local worker processes and on a local Ray instance with 2 CPUs,
interleaved ``--repeats`` times. Prints the wall time of each run and whether every run's trial
records equal the first's; ``--json`` writes the table and the timings.

    GRAPHPRUNE_CORPUS_CACHE=/work/cache/corpus python benchmarks/sensitivity.py --images 8
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(_ROOT))

from benchmarks.ocr_pipeline import (  # noqa: E402
    CALIBRATION_SEEDS,
    calibration_inputs,
    render_set,
)
from graphprune.sensitivity import sensitivity  # noqa: E402
from tests import corpus  # noqa: E402

SHAPE = (1, 3, 160, 480)


def _batches(det: Path, images: int) -> list[dict]:
    stack = calibration_inputs(render_set(images, first=CALIBRATION_SEEDS), det)["det"]
    return [{"x": stack[k:k + 1]} for k in range(len(stack))]


def _ray_start() -> None:
    import ray

    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=200 * 2**20,
             log_to_driver=False, runtime_env={"env_vars": {"PYTHONPATH": str(_ROOT)}})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=8, help="calibration images")
    parser.add_argument("--ratios", default="0.25,0.5")
    parser.add_argument("--round-to", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--executors", default="1,2,ray", help="1, 2 (local workers), ray")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    det = corpus.fetch(corpus.BY_ID["ppocr4_det"])
    batches = _batches(det, args.images)
    ratios = [float(r) for r in args.ratios.split(",")]
    runs, first = [], None
    _ray_start() if "ray" in args.executors else None
    for repeat in range(args.repeats):
        for executor in args.executors.split(","):
            options = ({"ray": "auto", "workers": 2} if executor == "ray"
                       else {"workers": int(executor)})
            start = time.perf_counter()
            table = sensitivity(det, ratios, data=batches, round_to=args.round_to,
                                input_shapes={"x": SHAPE}, **options)
            seconds = time.perf_counter() - start
            first = first or table
            same = table["trials"] == first["trials"]
            runs.append({"executor": executor, "repeat": repeat, "seconds": seconds,
                         "trial_seconds": table["executor"]["seconds"], "identical": same})
            print(f"{executor:>4}: {seconds:6.1f} s total, {table['executor']['seconds']:6.1f} s "
                  f"trials, {len(table['trials'])} trials, identical to the first: {same}",
                  flush=True)
    if args.json is not None:
        args.json.write_text(json.dumps({"runs": runs, "images": args.images,
                                         "cpus": os.cpu_count(), "table": first}, indent=1))


if __name__ == "__main__":
    main()
