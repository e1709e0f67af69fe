"""Sweep: prune one model at several ratios, for several settings, and measure side by side.

A *setting* is one criterion with one compensation (``l1`` uncompensated, ``fluctuation`` with
``stats``, ...); every setting is pruned at every ratio, one point each. All pruned models and
the original are timed in one interleaved session and compared with the original on the same
inputs, so every point of the sweep is comparable with every other.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from rich.progress import Progress

from graphprune.analysis.summary import merge_point_warnings
from graphprune.bench.measure import BenchSettings, Measurement, measure
from graphprune.bench.progress import step
from graphprune.compensation import parse_compensate
from graphprune.errors import GraphpruneError, UsageError
from graphprune.importance import SCORERS
from graphprune.inputs import Inputs
from graphprune.job import prune_file
from graphprune.options import PruneOptions
from graphprune.report.costs import Costs
from graphprune.report.format import calibration_notices
from graphprune.report.json_report import measurement_notices, model_entry
from graphprune.staging import staging_folder


@dataclasses.dataclass(frozen=True)
class SweepSetting:
    """One criterion and the compensation methods run after it (none: an empty tuple)."""

    criterion: str = "l1"
    compensate: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        """``l1/none``, ``fluctuation/stats``, ``activation/bias+stats``."""
        return f"{self.criterion}/{'+'.join(self.compensate) or 'none'}"

    @property
    def slug(self) -> str:
        """The label as a file name part: ``fluctuation-bias+stats``."""
        return self.label.replace("/", "-")

    def as_dict(self) -> dict:
        return {"setting": self.label, "criterion": self.criterion,
                "compensate": list(self.compensate)}


def parse_criteria(text: str) -> list[str]:
    """``"l1,fluctuation"`` -> ``["l1", "fluctuation"]``; every name a registered criterion."""
    names = list(dict.fromkeys(n.strip() for n in text.split(",") if n.strip()))
    unknown = [n for n in names if n not in SCORERS]
    if not names or unknown:
        raise UsageError(f"--criteria: unknown criterion '{unknown[0] if unknown else text}' "
                         f"(choose from {', '.join(sorted(SCORERS))})")
    return names


def parse_compensations(text: str) -> list[tuple[str, ...]]:
    """``"none,stats,bias+stats"`` -> ``[(), ("stats",), ("bias", "stats")]``.

    Commas separate the settings compared; ``+`` combines methods within one setting (run in
    :data:`graphprune.compensation.ORDER`).
    """
    items = [item.strip() for item in text.split(",") if item.strip()]
    if not items:
        raise UsageError(f"--compensate wants none or methods, got '{text}'")
    return list(dict.fromkeys(parse_compensate(item.replace("+", ",")) for item in items))


def sweep_settings(criteria: Sequence[str],
                   compensations: Sequence[tuple[str, ...]]) -> list[SweepSetting]:
    """Every criterion with every compensation, criterion by criterion."""
    return [SweepSetting(c, tuple(m)) for c in criteria for m in compensations]


@dataclasses.dataclass(frozen=True)
class _Point:
    setting: SweepSetting
    ratio: float
    path: Path | None
    before: Costs | None = None
    after: Costs | None = None
    error: str | None = None
    warnings: tuple[dict, ...] = ()


def sweep_model_path(folder: Path, stem: str, ratio: float,
                     setting: SweepSetting | None = None) -> Path:
    """``<folder>/<stem>.ratio0.50.onnx``, or ``<stem>.l1-stats.ratio0.50.onnx`` for a setting.

    A sweep of one setting names its models without it (as before settings were compared).
    """
    middle = f".{setting.slug}" if setting is not None else ""
    return folder / f"{stem}{middle}.ratio{ratio:.2f}.onnx"


@contextlib.contextmanager
def _model_folder(out_dir: Path, keep: bool) -> Iterator[Path]:
    if keep:
        yield out_dir
        return
    with staging_folder(out_dir) as folder:
        yield folder


def _prune_point(model: Path, setting: SweepSetting, ratio: float, path: Path,
                 prune_options: dict, check: Callable[[Path], None] | None) -> _Point:
    options = {k: v for k, v in prune_options.items() if k != "calibration"}
    options = PruneOptions.of(ratio, **{**options, "criterion": setting.criterion,
                                        "compensate": setting.compensate})
    try:
        result = prune_file(model, path, options, calibration=prune_options.get("calibration"),
                            check=check, oracle=False)
    except GraphpruneError as exc:
        if exc.exit_code == 2:  # bad input fails every ratio alike
            raise
        return _Point(setting, ratio, None, error=str(exc))
    return _Point(setting, ratio, path, result.before, result.after,
                  warnings=tuple(w.as_dict() for w in result.warnings))


def _point_entry(point: _Point, original: dict, measurement: Measurement | None, index: int,
                 keep: bool) -> dict:
    if point.path is None:
        return {**point.setting.as_dict(), "ratio": point.ratio, "error": point.error}
    entry = model_entry(point.after, point.path, measurement, index)
    del entry["nodes"]
    ratios = {f"{key}_ratio": entry[key] / max(original[key], 1)
              for key in ("params", "macs", "file_size")}
    latency_ratio = {provider: stats["median_ms"] / original["latency"][provider]["median_ms"]
                     for provider, stats in entry["latency"].items()}
    return {**point.setting.as_dict(), "ratio": point.ratio,
            "model": str(point.path) if keep else None, **entry, **ratios,
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


def _settings_entry(ratios: Sequence[float], setting_list: Sequence[SweepSetting],
                    prune_options: dict) -> dict:
    """The sweep's settings as JSON: calibration data by origin and size, not the batches."""
    options = {k: v for k, v in prune_options.items() if k not in ("criterion", "compensate")}
    calibration = options.get("calibration")
    if isinstance(calibration, Inputs):
        options["calibration"] = {"origin": calibration.origin,
                                  "batches": len(calibration.batches)}
    elif calibration is not None and not isinstance(calibration, str | Path):
        options["calibration"] = {"batches": len(calibration)}
    elif calibration is not None:
        options["calibration"] = str(calibration)
    return {"ratios": list(ratios), "criteria": list(dict.fromkeys(s.criterion for s in
                                                                      setting_list)),
            "compensate": list(dict.fromkeys("+".join(s.compensate) or "none"
                                             for s in setting_list)),
            "points": [s.label for s in setting_list], **options}


def _prune_all(model: Path, ratios, setting_list, folder: Path, prune_options: dict, check,
               progress) -> list[_Point]:
    named = len(setting_list) > 1
    points = []
    with step(progress, "pruning at every ratio", len(ratios) * len(setting_list)) as advance:
        for setting in setting_list:
            for ratio in ratios:
                path = sweep_model_path(folder, model.stem, ratio, setting if named else None)
                points.append(_prune_point(model, setting, ratio, path, prune_options, check))
                advance()
    return points


def sweep(
    model: Path,
    ratios: Sequence[float],
    out_dir: Path,
    inputs: Inputs | None,
    settings: BenchSettings | None = None,
    *,
    prune_options: dict | None = None,
    sweep_settings: Sequence[SweepSetting] | None = None,
    keep_models: bool = False,
    check: Callable[[Path], None] | None = None,
    progress: Progress | None = None,
) -> dict:
    """Prunes ``model`` at every ratio for every setting, measures all, returns the report.

    Args:
        model: The original model.
        ratios: Pruning ratios, each in [0, 1).
        out_dir: Where pruned models go with ``keep_models`` (else a temporary folder in it).
        inputs: Batches for latency and fidelity; None measures nothing (costs only).
        settings: How latency is measured (default: ``BenchSettings()``).
        prune_options: Keyword arguments of :func:`graphprune.prune` besides the ratio,
            criterion and compensation (the same for every point: calibration data included).
        sweep_settings: The (criterion, compensation) pairs compared; default one, from
            ``prune_options``' ``criterion`` and ``compensate``.
        keep_models: Keep every pruned model in ``out_dir`` (:func:`sweep_model_path`).
        check: Called on every staged pruned model before it is renamed into place.
        progress: Where progress bars go, if anywhere.

    Returns:
        The report: ``points`` has one entry per (setting, ratio), setting by setting, each
        with its ``setting`` label, ``criterion`` and ``compensate``.
    """
    model = Path(model)
    options = dict(prune_options or {})
    setting_list = list(sweep_settings or [SweepSetting(
        options.get("criterion", "l1"), parse_compensate(options.get("compensate")))])
    with _model_folder(Path(out_dir), keep_models) as folder:
        points = _prune_all(model, ratios, setting_list, folder, options, check, progress)
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
    described = _settings_entry(ratios, setting_list, options)
    environment = measurement.environment if measurement else None
    return {
        "input": str(model),
        "settings": described,
        "environment": environment,
        "notices": [*measurement_notices(measurement, [e.get("fidelity") for e in entries]),
                    *calibration_notices(described.get("calibration"), environment)],
        "warnings": merge_point_warnings([(p.ratio, p.warnings) for p in points]),
        "original": original,
        "points": entries,
    }
