"""Sweep: prune one model at several ratios and measure every result side by side.

All pruned models and the original are timed in one interleaved session and compared with the
original on the same inputs, so the points of the sweep are comparable with each other.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from rich.progress import Progress

import graphprune
from graphprune._io import save_model
from graphprune.analysis.summary import merge_point_warnings
from graphprune.bench.measure import BenchSettings, Measurement, measure
from graphprune.bench.progress import step
from graphprune.errors import GraphpruneError, UsageError
from graphprune.inputs import Inputs
from graphprune.report.costs import Costs
from graphprune.report.json_report import model_entry
from graphprune.staging import staging_folder


@dataclasses.dataclass(frozen=True)
class _Point:
    ratio: float
    path: Path | None
    before: Costs | None = None
    after: Costs | None = None
    error: str | None = None
    warnings: tuple[dict, ...] = ()


def sweep_model_path(folder: Path, stem: str, ratio: float) -> Path:
    """``<folder>/<stem>.ratio0.50.onnx``."""
    return folder / f"{stem}.ratio{ratio:.2f}.onnx"


@contextlib.contextmanager
def _model_folder(out_dir: Path, keep: bool) -> Iterator[Path]:
    if keep:
        yield out_dir
        return
    with staging_folder(out_dir) as folder:
        yield folder


def _prune_point(model: Path, ratio: float, folder: Path, prune_options: dict,
                 check: Callable[[Path], None] | None) -> _Point:
    path = sweep_model_path(folder, model.stem, ratio)
    try:
        result = graphprune.prune(model, ratio, **prune_options)
        save_model(result.model, path, check=check)
    except GraphpruneError as exc:
        if exc.exit_code == 2:  # bad input fails every ratio alike
            raise
        return _Point(ratio, None, error=str(exc))
    return _Point(ratio, path, result.before, result.after,
                  warnings=tuple(w.as_dict() for w in result.warnings))


def _point_entry(point: _Point, original: dict, measurement: Measurement | None, index: int,
                 keep: bool) -> dict:
    if point.path is None:
        return {"ratio": point.ratio, "error": point.error}
    entry = model_entry(point.after, point.path, measurement, index)
    del entry["nodes"]
    ratios = {f"{key}_ratio": entry[key] / max(original[key], 1)
              for key in ("params", "macs", "file_size")}
    latency_ratio = {provider: stats["median_ms"] / original["latency"][provider]["median_ms"]
                     for provider, stats in entry["latency"].items()}
    return {"ratio": point.ratio, "model": str(point.path) if keep else None, **entry, **ratios,
            "latency_ratio": latency_ratio, "warnings": list(point.warnings),
            "fidelity": measurement.fidelity[index] if measurement else None}


def parse_ratios(text: str) -> list[float]:
    """``"0.1,0.2,0.3"`` -> ``[0.1, 0.2, 0.3]``; each in [0, 1)."""
    try:
        ratios = [float(r) for r in text.split(",") if r.strip()]
    except ValueError:
        ratios = []
    if not ratios or any(not 0 <= r < 1 for r in ratios):
        raise UsageError(f"--ratios must be comma-separated numbers in [0, 1), got '{text}'")
    return sorted(set(ratios))


def sweep(
    model: Path,
    ratios: Sequence[float],
    out_dir: Path,
    inputs: Inputs | None,
    settings: BenchSettings | None = None,
    *,
    prune_options: dict | None = None,
    keep_models: bool = False,
    check: Callable[[Path], None] | None = None,
    progress: Progress | None = None,
) -> dict:
    """Prunes ``model`` at every ratio, measures all results, returns the sweep report.

    Args:
        model: The original model.
        ratios: Pruning ratios, each in [0, 1).
        out_dir: Where pruned models go with ``keep_models`` (else a temporary folder in it).
        inputs: Batches for latency and fidelity; None measures nothing (costs only).
        settings: How latency is measured (default: ``BenchSettings()``).
        prune_options: Keyword arguments of :func:`graphprune.prune` besides the ratio.
        keep_models: Keep ``<stem>.ratioR.onnx`` for every ratio in ``out_dir``.
        check: Called on every staged pruned model before it is renamed into place.
        progress: Where progress bars go, if anywhere.
    """
    model = Path(model)
    with _model_folder(Path(out_dir), keep_models) as folder:
        with step(progress, "pruning at every ratio", len(ratios)) as advance:
            points = []
            for ratio in ratios:
                points.append(_prune_point(model, ratio, folder, prune_options or {}, check))
                advance()
        done = [p for p in points if p.path is not None]
        if not done:
            raise GraphpruneError(f"no ratio could be pruned: {points[0].error}")
        measurement = (measure([model, *(p.path for p in done)], inputs, settings, progress)
                       if inputs is not None else None)
        original = model_entry(done[0].before, model, measurement, 0)
        del original["nodes"]
        index = {id(p): k + 1 for k, p in enumerate(done)}
        entries = [_point_entry(p, original, measurement, index.get(id(p), 0), keep_models)
                   for p in points]
    return {
        "input": str(model),
        "settings": {"ratios": list(ratios), **(prune_options or {})},
        "environment": measurement.environment if measurement else None,
        "notices": list(measurement.notices) if measurement else [],
        "warnings": merge_point_warnings([(p.ratio, p.warnings) for p in points]),
        "original": original,
        "points": entries,
    }

