"""Fidelity of pruned real models on a task metric: PP-OCRv4 det + rec, OCR character similarity.

The detector and recognizer of ``rapidocr-onnxruntime==1.4.4`` (fetched by ``tests/corpus.py``)
read text rendered with PIL (``benchmarks/ocr_pipeline.py``); the score is the mean of
``1 - levenshtein / max(len)`` between the recognized and the rendered text. The original pair
is measured first, then each pruned model with the *other* model left original: every
``(criterion, ratio, round_to)`` setting is passed to ``graphprune.prune(**kwargs)``, and the MACs
ratio is counted at the shape the pipeline runs (detector ``1x3x160x480``, recognizer
``1x3x48x320``). A criterion graphprune does not know (yet) gets a row with its error, so the
criteria of other work plug in by name, and any other ``graphprune.prune`` keyword (a
compensation, calibration data) by ``--prune-arg KEY=VALUE``; the value ``@calib`` is the path of
a ``.npy`` of calibration inputs of the model being pruned (``[N, 3, H, W]``, rendered from seeds
disjoint from the test images; ``--calib N`` images):

    python benchmarks/fidelity.py                       # the default grid, a table
    python benchmarks/fidelity.py --criteria l1,l2,activation --ratios 0.1,0.3 --json out.json
    python benchmarks/fidelity.py --criteria fluctuation --prune-arg data=@calib \
        --prune-arg compensate=stats
    python benchmarks/fidelity.py --images 8 --targets det   # quicker
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(_ROOT))

import numpy as np  # noqa: E402

import graphprune  # noqa: E402
from benchmarks.ocr_pipeline import (  # noqa: E402
    CALIBRATION_SEEDS,
    IMAGE_HW,
    REC_HEIGHT,
    REC_MIN_WIDTH,
    calibration_inputs,
    evaluate,  # noqa: F401  (re-exported: evaluate(det_path, rec_path, images, characters))
    recognizer_characters,
    render_set,
    run,
    step_agreement,
    text_mask_iou,
)
from graphprune._io import save_model  # noqa: E402
from tests import corpus  # noqa: E402

SHAPES = {"det": {"x": (1, 3, *IMAGE_HW)}, "rec": {"x": (1, 3, REC_HEIGHT, REC_MIN_WIDTH)}}
CORPUS_IDS = {"det": "ppocr4_det", "rec": "ppocr4_rec"}
DEFAULT_RATIOS = {"det": (0.1, 0.2, 0.3, 0.5), "rec": (0.1, 0.3)}


@dataclasses.dataclass(frozen=True)
class Setting:
    """One pruning of one model: the keyword arguments of ``graphprune.prune``."""

    target: str  # "det" or "rec"
    criterion: str
    ratio: float
    round_to: int
    extra: tuple[tuple[str, Any], ...] = ()  # further prune() keywords (--prune-arg)

    def kwargs(self, calib: Mapping[str, Path] | None = None) -> dict:
        """The keywords of ``graphprune.prune``; ``@calib`` values become ``calib[target]``."""
        extra = {key: (str(calib[self.target]) if value == CALIB and calib else value)
                 for key, value in self.extra}
        return {"criterion": self.criterion, "ratio": self.ratio, "round_to": self.round_to,
                "input_shapes": SHAPES[self.target], **extra}


CALIB = "@calib"


def settings(targets: Sequence[str], criteria: Sequence[str], round_tos: Sequence[int],
             ratios: Mapping[str, Sequence[float]],
             extra: Sequence[tuple[str, Any]] = ()) -> Iterator[Setting]:
    """The grid, target by target."""
    for target in targets:
        for criterion in criteria:
            for round_to in round_tos:
                for ratio in ratios[target]:
                    yield Setting(target, criterion, ratio, round_to, tuple(extra))


def parse_prune_arg(text: str) -> tuple[str, Any]:
    """``KEY=VALUE``; the value read as JSON when it parses (numbers, lists), else a string."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise SystemExit(f"error: --prune-arg wants KEY=VALUE, got {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def write_calibration(models: Mapping[str, Path], count: int, folder: Path,
                      threads: int) -> dict[str, Path]:
    """``det_calib.npy`` and ``rec_calib.npy`` in ``folder``: the paths by target."""
    arrays = calibration_inputs(render_set(count, first=CALIBRATION_SEEDS), models["det"],
                                threads)
    paths = {}
    for target, array in arrays.items():
        paths[target] = folder / f"{target}_calib.npy"
        np.save(paths[target], array)
    return paths


def run_setting(setting: Setting, models: dict[str, Path], samples, characters, work: Path,
                threads: int, reference=None, calib: Mapping[str, Path] | None = None) -> dict:
    """Prunes ``setting.target``, evaluates it with the other model original: one table row.

    With ``reference`` (the original pipeline's :class:`ocr_pipeline.Run`) the row also has
    graded output fidelity: ``det_iou`` (text-mask IoU) for the detector, ``rec_agree``
    (arg-max agreement per time step) for the recognizer.
    """
    row = dataclasses.asdict(setting)
    row["extra"] = dict(setting.extra)
    start = time.perf_counter()
    try:
        result = graphprune.prune(models[setting.target], **setting.kwargs(calib))
    except Exception as exc:  # an unknown criterion, a model the tool refuses: a row, not a stop
        row.update(error=f"{type(exc).__name__}: {exc}".splitlines()[0][:160])
        return row
    path = work / f"{setting.target}_{setting.criterion}_{setting.ratio}_{setting.round_to}.onnx"
    save_model(result.model, path)
    pair = {**models, setting.target: path}
    pruned = run(pair["det"], pair["rec"], samples, characters, threads)
    row.update(macs_ratio=round(result.after.macs / result.before.macs, 4),
               params_ratio=round(result.after.params / result.before.params, 4),
               similarity=round(pruned.similarity, 4))
    if reference is not None and setting.target == "det":
        row["det_iou"] = round(text_mask_iou(reference, pruned), 4)
    if reference is not None and setting.target == "rec":
        agree = step_agreement(reference, pruned)
        row["rec_agree"] = None if agree is None else round(agree, 4)
    row["seconds"] = round(time.perf_counter() - start, 1)
    path.unlink()
    return row


def table(rows: Sequence[dict]) -> str:
    """The rows as a fixed-width text table."""
    lines = [f"{'model':<5} {'criterion':<11} {'ratio':>5} {'round_to':>8} {'MACs x':>7} "
             f"{'params x':>8} {'OCR sim':>7} {'det IoU':>7} {'rec agr':>7}"]
    for r in rows:
        if "error" in r:
            lines.append(f"{r['target']:<5} {r['criterion']:<11} {r['ratio']:>5} "
                         f"{r['round_to']:>8}  error: {r['error']}")
            continue
        lines.append(f"{r['target']:<5} {r['criterion']:<11} {r['ratio']:>5} {r['round_to']:>8} "
                     f"{r['macs_ratio']:>7.3f} {r['params_ratio']:>8.3f} {r['similarity']:>7.3f} "
                     f"{_cell(r.get('det_iou'))} {_cell(r.get('rec_agree'))}")
    return "\n".join(lines)


def plot(rows: Sequence[dict], path: Path) -> None:
    """OCR similarity against MACs ratio, one panel per pruned model, a line per setting."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    original = rows[0]["similarity"]
    targets = sorted({r["target"] for r in rows[1:] if "error" not in r})
    fig, axes = plt.subplots(1, max(1, len(targets)), figsize=(6 * max(1, len(targets)), 4.5),
                             squeeze=False)
    for ax, target in zip(axes[0], targets, strict=False):
        curves: dict[str, list[tuple[float, float]]] = {}
        for r in rows[1:]:
            if r["target"] == target and "error" not in r:
                label = f"{r['criterion']} round_to={r['round_to']} {_extra(r)}".strip()
                curves.setdefault(label, []).append((r["macs_ratio"], r["similarity"]))
        for label, points in curves.items():
            xs, ys = zip(*sorted(points, reverse=True), strict=True)
            ax.plot([1.0, *xs], [original, *ys], marker="o", label=label)
        ax.set(title=f"PP-OCRv4 {target} pruned", xlabel="MACs (x original)",
               ylabel="OCR character similarity", ylim=(-0.03, 1.03))
        ax.invert_xaxis()
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _extra(row: dict) -> str:
    return " ".join(f"{k}={v}" for k, v in row.get("extra", {}).items())


def _cell(value: float | None) -> str:
    return f"{'-':>7}" if value is None else f"{value:>7.3f}"


def _floats(text: str) -> tuple[float, ...]:
    return tuple(float(v) for v in text.split(",") if v)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=20, help="rendered test images")
    parser.add_argument("--criteria", default="l1,l2", help="comma-separated criterion names")
    parser.add_argument("--round-to", default="1,16", help="comma-separated round_to values")
    parser.add_argument("--ratios", default=None,
                        help="comma-separated ratios for every target "
                             "(default: det 0.1,0.2,0.3,0.5; rec 0.1,0.3)")
    parser.add_argument("--targets", default="det,rec", help="which models to prune: det,rec")
    parser.add_argument("--prune-arg", action="append", default=[], metavar="KEY=VALUE",
                        help="a further graphprune.prune keyword (repeatable); "
                             "VALUE @calib = the calibration .npy of the pruned model")
    parser.add_argument("--calib", type=int, default=16, help="calibration images (@calib)")
    parser.add_argument("--threads", type=int, default=2, help="onnxruntime intra-op threads")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    parser.add_argument("--plot", type=Path, default=None, help="also plot them here (.png)")
    return parser


def main(argv: Sequence[str] | None = None) -> list[dict]:
    """Runs the benchmark; prints the table; returns the rows (the original first)."""
    args = _parser().parse_args(argv)
    targets = [t for t in args.targets.split(",") if t]
    unknown = sorted(set(targets) - set(CORPUS_IDS))
    if unknown:
        raise SystemExit(f"error: unknown --targets {', '.join(unknown)} (use det, rec)")
    ratios = ({t: _floats(args.ratios) for t in targets} if args.ratios else DEFAULT_RATIOS)
    models = {t: corpus.fetch(corpus.BY_ID[i]) for t, i in CORPUS_IDS.items()}
    characters = recognizer_characters(models["rec"])
    samples = render_set(args.images)
    start = time.perf_counter()
    reference = run(models["det"], models["rec"], samples, characters, args.threads)
    rows = [{"target": "both", "criterion": "original", "ratio": 0.0, "round_to": 1,
             "macs_ratio": 1.0, "params_ratio": 1.0,
             "similarity": round(reference.similarity, 4)}]
    print(table(rows), flush=True)
    extra = [parse_prune_arg(a) for a in args.prune_arg]
    grid = settings(targets, [c for c in args.criteria.split(",") if c],
                    [int(v) for v in args.round_to.split(",") if v], ratios, extra)
    with tempfile.TemporaryDirectory(prefix="graphprune-fidelity-") as work:
        calib = (write_calibration(models, args.calib, Path(work), args.threads)
                 if any(v == CALIB for _, v in extra) else None)
        for setting in grid:
            rows.append(run_setting(setting, models, samples, characters, Path(work),
                                    args.threads, reference, calib))
            print(table(rows[-1:]).splitlines()[-1], flush=True)
    print(f"\n{len(samples)} images {IMAGE_HW[0]}x{IMAGE_HW[1]}, "
          f"{time.perf_counter() - start:.0f} s; prune() also got {dict(extra) or 'nothing'}\n")
    print(table(rows))
    if args.json:
        args.json.write_text(json.dumps({"images": len(samples), "image_hw": IMAGE_HW,
                                         "rows": rows}, indent=1))
    if args.plot:
        plot(rows, args.plot)
    return rows


if __name__ == "__main__":
    main()
