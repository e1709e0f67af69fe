"""Fidelity of pruned real models on a task metric: the PP-OCR models of RapidOCR.

The detector (PP-OCRv4 det), recognizer (PP-OCRv4 rec) and text direction classifier
(``ch_ppocr_mobile_v2.0_cls``) of ``rapidocr-onnxruntime==1.4.4`` (fetched by
``tests/corpus.py``) read text rendered with PIL (``benchmarks/ocr_pipeline.py``). Task metrics:

- ``det``, ``rec``: OCR character similarity, the mean of ``1 - levenshtein / max(len)`` between
  the pipeline's text and the rendered text, with the *other* model left original;
- ``cls``: orientation accuracy on the line crops of the same images, upright and turned 180.

Graded fidelity next to it (the OCR score falls off a cliff): ``det IoU`` (thresholded text map
against the original's), ``rec agr`` (non-blank arg-max agreement per time step), ``cls agr``.

Every ``(criterion, ratio, round_to)`` setting is passed to ``graphprune.prune(**kwargs)``; MACs
are counted at the shapes the pipeline runs (det ``1x3x160x480``, rec ``1x3x48x320``, cls
``1x3x48x192``). A criterion graphprune does not know (yet) gets a row with its error, so the
criteria of other work plug in by name, and any other ``graphprune.prune`` keyword (a
compensation, calibration data) by ``--prune-arg KEY=VALUE``; the value ``@calib`` is the path of
a ``.npy`` stack of calibration inputs of the model being pruned (from ``--calib N`` images
rendered with seeds disjoint from the test images):

    python benchmarks/fidelity.py --json out.json --plot out.png   # the default grid
    python benchmarks/fidelity.py --criteria l1,l2,activation --ratios 0.1,0.3
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
    CLS_WIDTH,
    IMAGE_HW,
    REC_HEIGHT,
    REC_MIN_WIDTH,
    Run,
    calibration_inputs,
    classify,
    evaluate,  # noqa: F401  (re-exported: evaluate(det_path, rec_path, samples) -> similarity)
    font_names,
    orientation_set,
    recognizer_characters,
    render_set,
    run,
    step_agreement,
    text_mask_iou,
)
from graphprune._io import save_model  # noqa: E402
from tests import corpus  # noqa: E402

SHAPES = {"det": {"x": (1, 3, *IMAGE_HW)}, "rec": {"x": (1, 3, REC_HEIGHT, REC_MIN_WIDTH)},
          "cls": {"x": (1, 3, REC_HEIGHT, CLS_WIDTH)}}
CORPUS_IDS = {"det": "ppocr4_det", "rec": "ppocr4_rec", "cls": "ppocr2_cls"}
DEFAULT_RATIOS = {"det": (0.1, 0.2, 0.3, 0.5), "rec": (0.1, 0.3), "cls": (0.1, 0.3)}


@dataclasses.dataclass(frozen=True)
class Setting:
    """One pruning of one model: the keyword arguments of ``graphprune.prune``."""

    target: str  # "det", "rec" or "cls"
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


@dataclasses.dataclass
class Bench:
    """What every setting is scored against: the models, the test set, the originals' outputs."""

    models: dict[str, Path]
    samples: list
    characters: list[str]
    threads: int
    reference: Run  # the original det+rec pipeline on the samples
    cls_inputs: np.ndarray  # line crops of the samples, upright and turned
    cls_labels: np.ndarray
    cls_reference: np.ndarray  # the original classifier's classes on them

    @classmethod
    def build(cls, models: dict[str, Path], count: int, threads: int) -> Bench:
        samples = render_set(count)
        characters = recognizer_characters(models["rec"])
        inputs, labels = orientation_set(samples, models["det"], threads)
        return cls(models, samples, characters, threads,
                   run(models["det"], models["rec"], samples, characters, threads),
                   inputs, labels, classify(models["cls"], inputs, threads))

    def score(self, target: str, path: Path | None = None) -> dict:
        """Task metric and graded fidelity with ``target`` replaced by ``path``.

        ``path`` None scores the original; the other models are always the originals.
        """
        if target == "cls":
            classes = classify(path or self.models["cls"], self.cls_inputs, self.threads)
            return {"metric": "orientation_accuracy",
                    "score": round(float(np.mean(classes == self.cls_labels)), 4),
                    "cls_agree": round(float(np.mean(classes == self.cls_reference)), 4)}
        pair = {**self.models, **({target: path} if path else {})}
        pruned = run(pair["det"], pair["rec"], self.samples, self.characters, self.threads)
        row = {"metric": "ocr_similarity", "score": round(pruned.similarity, 4)}
        if target == "det":
            row["det_iou"] = round(text_mask_iou(self.reference, pruned), 4)
        if target == "rec":
            agree = step_agreement(self.reference, pruned)
            row["rec_agree"] = None if agree is None else round(agree, 4)
        return row


def write_calibration(models: Mapping[str, Path], count: int, folder: Path,
                      threads: int) -> dict[str, Path]:
    """``det_calib.npy``, ``rec_calib.npy``, ``cls_calib.npy`` in ``folder``, by target."""
    samples = render_set(count, first=CALIBRATION_SEEDS)
    arrays = calibration_inputs(samples, models["det"], threads)
    arrays["cls"] = orientation_set(samples, models["det"], threads)[0]
    paths = {}
    for target, array in arrays.items():
        paths[target] = folder / f"{target}_calib.npy"
        np.save(paths[target], array)
    return paths


def run_setting(setting: Setting, bench: Bench, work: Path,
                calib: Mapping[str, Path] | None = None) -> dict:
    """Prunes ``setting.target``, scores it with the other models original: one table row.

    Besides the task ``score`` the row has graded output fidelity against the original:
    ``det_iou`` (text-mask IoU) for the detector, ``rec_agree`` (non-blank arg-max agreement
    per time step) for the recognizer, ``cls_agree`` (same class) for the classifier.
    """
    row = dataclasses.asdict(setting)
    row["extra"] = dict(setting.extra)
    start = time.perf_counter()
    try:
        result = graphprune.prune(bench.models[setting.target], **setting.kwargs(calib))
    except Exception as exc:  # an unknown criterion, a model the tool refuses: a row, not a stop
        row.update(error=f"{type(exc).__name__}: {exc}".splitlines()[0][:160])
        return row
    path = work / f"{setting.target}_{setting.criterion}_{setting.ratio}_{setting.round_to}.onnx"
    save_model(result.model, path)
    row.update(macs_ratio=round(result.after.macs / result.before.macs, 4),
               params_ratio=round(result.after.params / result.before.params, 4),
               **bench.score(setting.target, path),
               seconds=round(time.perf_counter() - start, 1))
    path.unlink()
    return row


def table(rows: Sequence[dict]) -> str:
    """The rows as a fixed-width text table."""
    lines = [f"{'model':<8} {'criterion':<11} {'ratio':>5} {'round_to':>8} {'MACs x':>7} "
             f"{'params x':>8} {'task':>7} {'det IoU':>7} {'rec agr':>7} {'cls agr':>7}"]
    for r in rows:
        if "error" in r:
            lines.append(f"{r['target']:<8} {r['criterion']:<11} {r['ratio']:>5} "
                         f"{r['round_to']:>8}  error: {r['error']}")
            continue
        lines.append(f"{r['target']:<8} {r['criterion']:<11} {r['ratio']:>5} {r['round_to']:>8} "
                     f"{r['macs_ratio']:>7.3f} {r['params_ratio']:>8.3f} {r['score']:>7.3f} "
                     f"{_cell(r.get('det_iou'))} {_cell(r.get('rec_agree'))} "
                     f"{_cell(r.get('cls_agree'))}")
    return "\n".join(lines)


def plot(rows: Sequence[dict], path: Path) -> None:
    """Task score against MACs ratio, one panel per pruned model, a line per setting."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    originals = {r["metric"]: r["score"] for r in rows if r["criterion"] == "original"}
    pruned = [r for r in rows if r["criterion"] != "original" and "error" not in r]
    targets = sorted({r["target"] for r in pruned})
    fig, axes = plt.subplots(1, max(1, len(targets)), figsize=(6 * max(1, len(targets)), 4.5),
                             squeeze=False)
    for ax, target in zip(axes[0], targets, strict=False):
        curves: dict[str, list[tuple[float, float]]] = {}
        mine = [r for r in pruned if r["target"] == target]
        for r in mine:
            label = f"{r['criterion']} round_to={r['round_to']} {_extra(r)}".strip()
            curves.setdefault(label, []).append((r["macs_ratio"], r["score"]))
        for label, points in curves.items():
            xs, ys = zip(*sorted(points, reverse=True), strict=True)
            ax.plot([1.0, *xs], [originals[mine[0]["metric"]], *ys], marker="o", label=label)
        ax.set(title=f"PP-OCR {target} pruned", xlabel="MACs (x original)",
               ylabel=mine[0]["metric"].replace("_", " "), ylim=(-0.03, 1.03))
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
                             "(default: det 0.1,0.2,0.3,0.5; rec and cls 0.1,0.3)")
    parser.add_argument("--targets", default="det,rec,cls",
                        help="which models to prune: det, rec (OCR similarity), cls (accuracy)")
    parser.add_argument("--prune-arg", action="append", default=[], metavar="KEY=VALUE",
                        help="a further graphprune.prune keyword (repeatable); "
                             "VALUE @calib = the calibration .npy of the pruned model")
    parser.add_argument("--calib", type=int, default=16, help="calibration images (@calib)")
    parser.add_argument("--threads", type=int, default=2, help="onnxruntime intra-op threads")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    parser.add_argument("--plot", type=Path, default=None, help="also plot them here (.png)")
    return parser


def originals(bench: Bench, targets: Sequence[str]) -> list[dict]:
    """Rows of the original models: OCR (det+rec) and, with ``cls``, orientation accuracy."""
    chosen = [(name, target) for name, target in (("det+rec", "rec"), ("cls", "cls"))
              if target in targets or (target == "rec" and "det" in targets)]
    rows = []
    for name, target in chosen:
        score = bench.score(target)
        rows.append({"target": name, "criterion": "original", "ratio": 0.0, "round_to": 1,
                     "macs_ratio": 1.0, "params_ratio": 1.0, "metric": score["metric"],
                     "score": score["score"]})
    return rows


def main(argv: Sequence[str] | None = None) -> list[dict]:
    """Runs the benchmark; prints the table; returns the rows (the originals first)."""
    args = _parser().parse_args(argv)
    targets = [t for t in args.targets.split(",") if t]
    unknown = sorted(set(targets) - set(CORPUS_IDS))
    if unknown:
        raise SystemExit(f"error: unknown --targets {', '.join(unknown)} (use det, rec, cls)")
    ratios = ({t: _floats(args.ratios) for t in targets} if args.ratios else DEFAULT_RATIOS)
    models = {t: corpus.fetch(corpus.BY_ID[i]) for t, i in CORPUS_IDS.items()}
    start = time.perf_counter()
    bench = Bench.build(models, args.images, args.threads)
    rows = originals(bench, targets)
    print(table(rows), flush=True)
    extra = [parse_prune_arg(a) for a in args.prune_arg]
    grid = settings(targets, [c for c in args.criteria.split(",") if c],
                    [int(v) for v in args.round_to.split(",") if v], ratios, extra)
    with tempfile.TemporaryDirectory(prefix="graphprune-fidelity-") as work:
        calib = (write_calibration(models, args.calib, Path(work), args.threads)
                 if any(v == CALIB for _, v in extra) else None)
        for setting in grid:
            rows.append(run_setting(setting, bench, Path(work), calib))
            print(table(rows[-1:]).splitlines()[-1], flush=True)
    print(f"\n{len(bench.samples)} images {IMAGE_HW[0]}x{IMAGE_HW[1]} "
          f"({len(bench.cls_labels)} orientation crops), {time.perf_counter() - start:.0f} s; "
          f"prune() also got {dict(extra) or 'nothing'}\n")
    print(table(rows))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"images": len(bench.samples), "image_hw": IMAGE_HW,
                                         "fonts": font_names(), "rows": rows}, indent=1))
    if args.plot:
        args.plot.parent.mkdir(parents=True, exist_ok=True)
        plot(rows, args.plot)
    return rows


if __name__ == "__main__":
    main()
