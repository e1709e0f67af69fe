"""Gradual pruning: ``steps`` calls of :func:`graphprune.prune`, re-scoring in between.

With ``keep = 1 - ratio`` (per group kind), step ``i`` of ``N`` brings the model to the kept
fraction ``keep ** (i / N)`` of the ORIGINAL, so the last step ends where one-shot pruning ends:

1. ``uniform``: every group keeps ``keep_count(n, 1 - keep ** (i / N), step)`` of its original
   ``n`` classes (the one-shot rounding, so the last step keeps the one-shot count), its
   best-scored classes by the criterion re-scored on the current model.
2. ``global``: each kind loses the share of its current classes that leaves
   ``keep ** (i / N)`` of its original total.
3. ``target_macs`` / ``target_params`` ``t``: step ``i`` keeps ``t ** (i / N)`` of the original
   cost (the target allocator's 2% band, per step).

Each step prunes the previous step's model (compensation included when ``compensate`` is set,
so each step's model tracks the model it started from). The result's ``masks``, ``groups`` (kept
indices), ``io`` and ``before`` refer to the original model: every step's kept indices are
composed with the earlier steps'. With ``compensate`` none the mask-equivalence oracle holds
for the composed masks.
"""

from __future__ import annotations

import os

import numpy as np
import onnx_ir as ir

from graphprune.allocation import DEFAULT_ROUND_TO, Budget, target_warning
from graphprune.allocation.uniform import group_removal, group_step, keep_count, scratch_masks
from graphprune.analysis import analyze_channels
from graphprune.errors import UsageError
from graphprune.options import PruneOptions, check_steps
from graphprune.pipeline import Masks, PruneResult, _as_model, _provider, prune


def _compose(first: Masks, later: Masks) -> Masks:
    """Kept indices of ``later`` (into what ``first`` kept) as indices into the original."""
    axes: dict[str, dict[int, np.ndarray]] = {
        name: {axis: np.asarray(kept) for axis, kept in entries} for name, entries in first.items()}
    for name, entries in later.items():
        mine = axes.setdefault(name, {})
        for axis, kept in entries:
            before = mine.get(axis)
            mine[axis] = np.asarray(kept) if before is None else before[np.asarray(kept)]
    return {name: list(found.items()) for name, found in axes.items()}


def _compose_groups(groups: list[dict], later: list[dict]) -> list[dict]:
    """The original's group reports with ``later``'s kept channels (by group name) composed."""
    by_name = {g["name"]: g for g in later}
    out = []
    for group in groups:
        step = by_name.get(group["name"])
        if step is None:
            out.append(group)
            continue
        kept = np.asarray(group["kept"])[np.asarray(step["kept"], dtype=np.int64)]
        sizes = {(t["tensor"], t["axis"]): t["after"] for t in step["tensors"]}
        tensors = [{**t, "after": sizes.get((t["tensor"], t["axis"]), t["after"])}
                   for t in group["tensors"]]
        composed = {**group, "kept": kept.tolist(), "channels_after": len(kept),
                    "tensors": tensors}
        if "heads_after" in step:
            composed["heads_after"] = step["heads_after"]
        out.append(composed)
    return out


def _uniform_removal(model: ir.Model, options: dict, ratios: dict[str, float], fraction: float,
                     originals: dict[str, int]) -> np.ndarray:
    """Labels to remove from ``model`` so each group keeps its step-``fraction`` count."""
    from graphprune.importance import ScoringContext, score

    analysis = analyze_channels(model, options.get("exclude", ()), options.get("resize_io", ()))
    seed = options.get("seed", 0)
    provider = _provider(model, options.get("calibration"), options.get("input_shapes"), seed)
    scores = score(options.get("criterion", "l1"), ScoringContext(analysis, model, provider, seed))
    round_to = options.get("round_to", DEFAULT_ROUND_TO)
    scratch = scratch_masks(analysis)
    parts = []
    for group in analysis.groups:
        n = len(group.classes)
        share = 1.0 - (1.0 - ratios.get(group.kind, 0.0)) ** fraction
        step = group_step(analysis, group, round_to)
        keep = min(n, keep_count(originals.get(group.name, n), share, step))
        if keep < n:
            parts.append(group_removal(analysis, group, scores, keep, scratch))
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


def _step_options(model: ir.Model, options: dict, ratios, fraction: float, first,
                  current) -> dict:
    """``prune`` keywords of one step (see the module docstring)."""
    step = {k: v for k, v in options.items() if k not in ("heads", "mlp")}
    for key, what in (("target_macs", "macs"), ("target_params", "params")):
        if options.get(key) is not None:
            base, now = getattr(first, what), getattr(current, what)
            step[key] = min(1.0, options[key] ** fraction * base / max(now, 1))
            return step
    if options.get("allocation", "uniform") == "global":
        analysis = analyze_channels(model, options.get("exclude", ()))
        for kind, flag in (("heads", "heads"), ("channels", "mlp")):
            now = sum(len(g.classes) for g in analysis.groups if g.kind == kind)
            wanted = (1.0 - ratios[kind]) ** fraction * first.totals.get(kind, now)
            step[flag] = float(np.clip(1.0 - wanted / max(now, 1), 0.0, 0.999))
        return step
    originals = first.originals
    step["removed"] = _uniform_removal(model, options, ratios, fraction, originals)
    return step


class _Original:
    """What the steps compare with: the original's costs, group sizes and kind totals."""

    def __init__(self, model: ir.Model, exclude, resize_io, input_shapes) -> None:
        from graphprune.report.costs import CostModel

        analysis = analyze_channels(model, exclude, resize_io)
        costs = CostModel(model, input_shapes).costs()
        self.macs, self.params = costs.macs, costs.params
        self.originals = {g.name: len(g.classes) for g in analysis.groups}
        self.totals: dict[str, int] = {}
        for group in analysis.groups:
            self.totals[group.kind] = self.totals.get(group.kind, 0) + len(group.classes)


def _check(steps: int, options: dict) -> None:
    check_steps(steps)
    if steps == 1:
        return
    if options.get("removed") is not None:
        raise UsageError("--steps chooses the channels of every step: no explicit removal")
    if options.get("allocation") == "sensitivity":
        raise UsageError("--steps does not combine with --allocation sensitivity (the table "
                         "describes the original model only)")
    if options.get("resize_io"):
        raise UsageError("--steps does not combine with --resize-io")


def prune_in_steps(model: ir.Model | str | os.PathLike, ratio: float = 0.5, *, steps: int = 1,
                   **options) -> PruneResult:
    """Prunes ``model`` in ``steps`` steps; the keywords are :func:`graphprune.prune`'s.

    Returns one :class:`PruneResult` whose masks, groups and kept indices refer to the
    original model, ``before`` its costs, ``after`` the last step's, ``compensation`` every
    step's reports (each with its ``step``), and the warnings of all steps (a cost target
    judged once, on the final model).
    """
    _check(steps, options)
    if steps == 1:
        return prune(model, ratio, **options)
    if not 0 <= ratio < 1:
        raise UsageError(f"ratio must be in [0, 1), got {ratio}")
    current = _as_model(model)
    ratios = PruneOptions(ratio, heads=options.get("heads"), mlp=options.get("mlp")).ratios
    first = _Original(current, options.get("exclude", ()), (), options.get("input_shapes"))
    results: list[PruneResult] = []
    for index in range(1, steps + 1):
        costs = results[-1].after if results else first
        kwargs = _step_options(current, options, ratios, index / steps, first, costs)
        results.append(prune(current, ratio, **kwargs))
        current = results[-1].model
    return _combined(results, options)


def _combined(results: list[PruneResult], options: dict) -> PruneResult:
    first, last = results[0], results[-1]
    masks, io, groups = first.masks, first.io, first.groups
    for result in results[1:]:
        masks = _compose(masks, result.masks)
        io = _compose(io, result.io)
        groups = _compose_groups(groups, result.groups)
    warnings, seen = [], set()
    for result in results:
        for warning in result.warnings:
            key = (warning.code, warning.message)
            if warning.code != "target_missed" and key not in seen:
                seen.add(key)
                warnings.append(warning)
    budget = Budget(0.0, options.get("round_to", DEFAULT_ROUND_TO), options.get("target_macs"),
                    options.get("target_params"))
    missed = target_warning(budget, first.before, last.after)
    compensation = [{**report, "step": k + 1} for k, result in enumerate(results)
                    for report in result.compensation]
    fills = None
    if all(result.fills is not None for result in results):  # a name's fill is the same in
        fills = {}                                             # every step's model
        for result in reversed(results):
            fills.update(result.fills)
        fills = {name: fills[name] for name in masks if name in fills}
        fills = fills if len(fills) == len(masks) else None
    return PruneResult(last.model, first.analysis, groups, first.before, last.after, masks,
                       tuple(warnings) + ((missed,) if missed else ()), io, last.resized_io,
                       compensation, fills=fills)
