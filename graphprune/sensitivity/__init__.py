"""Sensitivity analysis: prune each group alone at a few ratios and measure the output change.

:func:`sensitivity` scores the model once (``criterion``), then runs one trial per
``(group, ratio)`` (:mod:`graphprune.sensitivity.worker`) on an executor
(:mod:`graphprune.sensitivity.executors`: this process, a local process pool, or Ray) and
returns the table: one record per trial, in ``(group, ratio)`` order, with the group's channels
and the model's MACs after, and the output change against the original on the calibration
batches (relative L2, cosine, top-1 agreement of class-score outputs; the worst over the
outputs). The table is a plain dict, written as JSON by ``graphprune analyze --sensitivity
--json PATH``; the ``sensitivity`` allocator (:mod:`graphprune.allocation.sensitivity`) reads
it. Trial records are identical whatever the executor and the worker count.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Sequence
from pathlib import Path

from graphprune.errors import InputError, UsageError
from graphprune.sensitivity.executors import default_workers, import_ray, run_local, run_ray
from graphprune.sensitivity.worker import Job

DEFAULT_RATIOS = (0.25, 0.5)
FORMAT = "graphprune.sensitivity/1"


def _scores(model, criterion: str, job: Job, seed: int):
    """Standardized per-class scores of ``criterion`` on the original model."""
    from graphprune.analysis import analyze_channels
    from graphprune.calibration import CalibrationProvider
    from graphprune.importance import NEEDS_CALIBRATION, ScoringContext, score
    analysis = analyze_channels(model, job.exclude)
    batches = _checked_batches(model, job)
    provider = CalibrationProvider(model, batches) if criterion in NEEDS_CALIBRATION else None
    return analysis, score(criterion, ScoringContext(analysis, model, provider, seed))


def _checked_batches(model, job: Job):
    """The job's batches, after checking here that the original runs on the first one."""
    from graphprune.errors import one_line
    from graphprune.sensitivity.worker import job_batches, run_outputs

    batches = job_batches(job)
    if not batches:
        raise UsageError("sensitivity: no input batches")
    try:
        run_outputs(model, batches[:1])
    except Exception as exc:  # onnxruntime raises its own kinds
        raise InputError(f"onnxruntime cannot run the input model on the sensitivity inputs: "
                         f"{one_line(exc)} (set them with --input-shape or --data)") from exc
    return batches


def parse_ratios(text: str) -> list[float]:
    """``"0.25,0.5"`` -> ``[0.25, 0.5]``; each in (0, 1) (UsageError otherwise)."""
    try:
        ratios = [float(r) for r in text.split(",") if r.strip()]
    except ValueError:
        ratios = []
    if not ratios or any(not 0 < r < 1 for r in ratios):
        raise UsageError(f"--ratios must be comma-separated numbers in (0, 1), got '{text}'")
    return sorted(set(ratios))


def _check_ratios(ratios: Sequence[float]) -> list[float]:
    ratios = sorted({float(r) for r in ratios})
    if not ratios or any(not 0 < r < 1 for r in ratios):
        raise UsageError(f"sensitivity ratios must be in (0, 1), got {list(ratios)}")
    return ratios


def sensitivity(
    model: str | os.PathLike,
    ratios: Sequence[float] = DEFAULT_RATIOS,
    *,
    data=None,
    samples: int | None = None,
    criterion: str = "l1",
    round_to: int = 1,
    exclude: Sequence[str] = (),
    seed: int = 0,
    input_shapes=None,
    workers: int | None = None,
    ray: str | None = None,
) -> dict:
    """The sensitivity table of the model at ``model`` (see the module docstring).

    Args:
        model: Path of the model (workers load it from there, once each).
        ratios: Removal ratios tried per group, each in (0, 1).
        data: A ``--data`` path, a sequence of batches, or None (valid random feeds).
        samples: Most batches used (random: 16).
        criterion: Scorer that picks which classes a trial removes.
        round_to: Kept counts rounded up to a multiple of this (as ``prune --round-to``).
        exclude: fnmatch patterns of nodes left untouched.
        seed: Seed of random feeds and of the ``random`` criterion.
        input_shapes: Sizes of symbolic input dims by input name.
        workers: Local processes (default: CPU count) or Ray actors (default: cluster CPUs).
        ray: None for local processes; ``"auto"`` or a Ray cluster address for Ray.
    """
    from graphprune._io import load_model
    from graphprune.report.costs import CostModel

    ratios = _check_ratios(ratios)
    if ray is not None:
        import_ray()  # before any work
    if round_to < 1:
        raise UsageError(f"round-to must be a positive integer, got {round_to}")
    if workers is not None and workers < 1:
        raise UsageError(f"--workers must be at least 1, got {workers}")
    path = str(Path(model).resolve())
    origin = getattr(data, "origin", None)
    data = getattr(data, "batches", data)  # an Inputs
    loaded = load_model(path)
    shapes = dict(input_shapes) if input_shapes else None
    job = Job(path, None, data if data is None or isinstance(data, str) else tuple(data),
              samples, seed, round_to, tuple(exclude), shapes)
    analysis, scores = _scores(loaded, criterion, job, seed)
    job = dataclasses.replace(job, scores=scores)
    trials = [(g.id, r) for g in analysis.groups for r in ratios]
    start = time.perf_counter()
    if ray is None:
        count = workers or default_workers()
        records = run_local(job, trials, count)
    else:
        records, count = run_ray(job, trials, ray, workers)
    seconds = time.perf_counter() - start
    costs = CostModel(loaded, shapes).costs()
    return {
        "format": FORMAT,
        "model": path,
        "criterion": criterion,
        "round_to": round_to,
        "ratios": ratios,
        "seed": seed,
        "exclude": list(exclude),
        "calibration": {"origin": origin or (str(data) if isinstance(data, str) else
                                             "random" if data is None else "batches"),
                        "samples": samples},
        "macs": costs.macs,
        "params": costs.params,
        "groups": [{"name": g.name, "kind": g.kind, "classes": len(g.classes),
                    "channels": g.root.size} for g in analysis.groups],
        "trials": records,
        "executor": {"kind": "local" if ray is None else "ray", "address": ray,
                     "workers": count, "seconds": seconds},
    }


def load_table(table) -> dict:
    """A sensitivity table from a dict or a JSON path (InputError for anything else)."""
    if isinstance(table, dict):
        found = table
    else:
        try:
            found = json.loads(Path(table).read_text())
        except (OSError, ValueError) as exc:
            raise InputError(f"{table}: not a readable sensitivity table ({exc})") from exc
    if not isinstance(found, dict) or found.get("format") != FORMAT:
        raise InputError(f"{table if not isinstance(table, dict) else 'table'}: not a "
                         f"sensitivity table ('format' is not '{FORMAT}'); write one with "
                         "graphprune analyze MODEL --sensitivity --json PATH")
    return found


__all__ = ["DEFAULT_RATIOS", "FORMAT", "load_table", "parse_ratios", "sensitivity"]
