"""The pipeline: load -> analyze -> score -> allocate -> rewrite -> (verify) -> result."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence

import numpy as np
import onnx_ir as ir

from graphprune._io import infer_shapes, load_model
from graphprune.allocation import ALLOCATORS, DEFAULT_ROUND_TO, Budget
from graphprune.allocation.target import target_nothing_pruned, target_warning
from graphprune.analysis import ChannelAnalysis, PrunePlan, analyze_channels
from graphprune.analysis.summary import PruneWarning, prune_warnings
from graphprune.calibration import DEFAULT_CALIB_SAMPLES, CalibrationProvider
from graphprune.errors import UsageError
from graphprune.importance import SCORERS, ScoringContext, score
from graphprune.passes import (
    CleanupPass,
    FreezeStaticValuesPass,
    RewriteShapeConstantsPass,
    SliceParametersPass,
    UpdateValueShapesPass,
)
from graphprune.report.costs import CostModel, Costs, count_costs
from graphprune.verify.resized_io import changed_shapes, resized_shapes

Masks = dict[str, list[tuple[int, np.ndarray]]]


@dataclasses.dataclass
class PruneResult:
    """What :func:`prune` did.

    Attributes:
        model: The pruned model (the loaded model, rewritten in place).
        analysis: The channel analysis of the original model.
        groups: One report dict per group (tensors touched, channels before/after, kept indices).
        before: Costs of the original model.
        after: Costs of the pruned model.
        masks: For every sliced constant, ``(axis, kept indices)`` by name: the mask-equivalence
            oracle zeroes everything else in the original.
        warnings: What did not happen as asked (nothing pruned and why, ``--exclude`` patterns
            that match no node, ``--round-to`` above every group), from
            :mod:`graphprune.analysis.summary`.
        io: For every graph input or output that changed shape (``resize_io``), ``(axis, kept
            indices)`` by name: feed the pruned model inputs sliced to these indices.
        resized_io: The same, for people: name, axes, declared shape before and after.
    """

    model: ir.Model
    analysis: ChannelAnalysis
    groups: list[dict]
    before: Costs
    after: Costs
    masks: Masks
    warnings: tuple[PruneWarning, ...] = ()
    io: Masks = dataclasses.field(default_factory=dict)
    resized_io: list[dict] = dataclasses.field(default_factory=list)


def _as_model(model: ir.Model | str | os.PathLike) -> ir.Model:
    return infer_shapes(model) if isinstance(model, ir.Model) else load_model(model)


def analyze(model: ir.Model | str | os.PathLike, exclude: Sequence[str] = (),
            resize_io: Sequence[str] = ()) -> ChannelAnalysis:
    """Channel groups and blocked channels of ``model``; nothing is changed."""
    return analyze_channels(_as_model(model), exclude, resize_io)


def _select(analysis: ChannelAnalysis, criterion: str, seed: int, allocation: str,
            costs: CostModel, budget: Budget, calibration=None, input_shapes=None) -> np.ndarray:
    if criterion not in SCORERS:
        raise UsageError(f"unknown criterion '{criterion}' (choose from {', '.join(SCORERS)})")
    provider = _provider(analysis.model, calibration, input_shapes, seed)
    scores = score(criterion, ScoringContext(analysis, analysis.model, provider, seed))
    name = "target" if budget.target is not None else allocation
    return ALLOCATORS[name](analysis, scores, costs, budget)


def _budget(ratios: dict[str, float], round_to: int, allocation: str, target_macs: float | None,
            target_params: float | None) -> Budget:
    if allocation not in ALLOCATORS or allocation == "target":
        choices = ", ".join(n for n in ALLOCATORS if n != "target")
        raise UsageError(f"unknown allocation '{allocation}' (choose from {choices})")
    if target_macs is not None and target_params is not None:
        raise UsageError("--target-macs and --target-params exclude each other")
    for name, value in (("target-macs", target_macs), ("target-params", target_params)):
        if value is not None and not 0 < value <= 1:
            raise UsageError(f"{name} must be in (0, 1], got {value}")
    return Budget(ratios, round_to, target_macs, target_params)


def _provider(model: ir.Model, calibration, input_shapes, seed: int) -> CalibrationProvider:
    """Calibration from ``calibration`` (Inputs or batches), else valid random feeds, lazily."""
    if calibration is None:
        def make():
            from graphprune.inputs import valid_feeds

            return valid_feeds(ir.to_proto(model), input_shapes, DEFAULT_CALIB_SAMPLES, seed)

        return CalibrationProvider(model, origin="random", make_batches=make)
    if isinstance(calibration, (str, os.PathLike)):  # a --data file or folder
        from graphprune.inputs import load_inputs
        from graphprune.inputs.specs import interface_of

        calibration = load_inputs(interface_of(model), input_shapes, calibration,
                                  DEFAULT_CALIB_SAMPLES, seed)
    batches = getattr(calibration, "batches", calibration)
    return CalibrationProvider(model, batches, getattr(calibration, "origin", "data"))


def prune(
    model: ir.Model | str | os.PathLike,
    ratio: float = 0.5,
    *,
    criterion: str = "l1",
    round_to: int = DEFAULT_ROUND_TO,
    exclude: Sequence[str] = (),
    seed: int = 0,
    removed: np.ndarray | None = None,
    debug: bool = False,
    heads: float | None = None,
    mlp: float | None = None,
    resize_io: Sequence[str] = (),
    input_shapes: Mapping[str, tuple[int, ...]] | None = None,
    allocation: str = "uniform",
    target_macs: float | None = None,
    target_params: float | None = None,
    calibration=None,
) -> PruneResult:
    """Prunes ``ratio`` of the channels of every prunable group of ``model``.

    Args:
        model: An onnx-ir model (rewritten in place) or a path.
        ratio: Share of channels removed per group, in ``[0, 1)``.
        criterion: Importance scorer name (``l1``, ``l2``, ``random``, ``activation``,
            ``fluctuation``; see :mod:`graphprune.importance`).
        round_to: Kept counts are rounded to a multiple of this.
        exclude: fnmatch patterns of node names left untouched.
        seed: Seed of the ``random`` criterion.
        removed: Explicit class labels to remove instead of scoring and allocating (tests).
        debug: Run the ONNX checker with strict shape inference after the rewrite.
        heads: Share of whole attention heads removed (default ``ratio``).
        mlp: Share of channel and neuron groups removed (default ``ratio``).
        resize_io: fnmatch patterns of graph inputs/outputs that may change shape (KV caches);
            every change is listed in ``PruneResult.io``.
        input_shapes: Sizes of symbolic input dims by input name (``--input-shape``); costs are
            counted at these shapes (default: batch 1, image H and W 224).
        allocation: ``uniform`` (``ratio`` of every group) or ``global`` (``ratio`` of all
            channels, ranked together by standardized scores; every group keeps at least a
            tenth), from :data:`graphprune.allocation.ALLOCATORS`.
        target_macs: Share of the original MACs to keep, in ``(0, 1]``: the global ranking is
            cut where the pruned model meets it within 2% after rounding (``ratio``, ``heads``
            and ``mlp`` are then not used); a ``target_missed`` warning when it cannot.
        target_params: The same for parameters (excludes ``target_macs``).
        calibration: What data-driven criteria run the model on: an ``Inputs``
            (:func:`graphprune.inputs.load_inputs`), a sequence of feeds, or a ``--data`` path;
            default: 16 valid random batches (not real calibration data).
    """
    ratios = {"heads": ratio if heads is None else heads,
              "channels": ratio if mlp is None else mlp}
    for name, value in (("ratio", ratio), ("heads", ratios["heads"]), ("mlp", ratios["channels"])):
        if not 0 <= value < 1:
            raise UsageError(f"{name} must be in [0, 1), got {value}")
    if round_to < 1:
        raise UsageError(f"round-to must be a positive integer, got {round_to}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise UsageError(f"seed must be a non-negative integer, got {seed!r}")
    budget = _budget(ratios, round_to, allocation, target_macs, target_params)
    model = _as_model(model)
    analysis = analyze_channels(model, exclude, resize_io)
    cost_model = CostModel(model, input_shapes)
    before = cost_model.costs()
    selected = removed is not None
    if removed is None:
        removed = _select(analysis, criterion, seed, allocation, cost_model, budget,
                          calibration, input_shapes)
    warnings = tuple(prune_warnings(analysis, len(removed), ratio=max(ratios.values()),
                                    round_to=round_to, exclude=exclude, selected=selected))
    if budget.target is not None and not selected:  # the ratio was not used: say what was
        warnings = tuple(target_nothing_pruned(budget) if w.detail.get("cause") in
                         ("rounded_to_full", "ratio_zero") else w for w in warnings)
    plan = PrunePlan(analysis, removed)
    groups = [_group_report(analysis, plan, g) for g in analysis.groups]
    masks: Masks = {}
    io: Masks = {}
    graph_io = {id(v) for v in (*model.graph.inputs, *model.graph.outputs)}
    for entry, kept in plan.changed_axes():
        if entry.constant:
            masks.setdefault(entry.value.name, []).append((entry.axis, kept))
        elif id(entry.value) in graph_io:
            io.setdefault(entry.value.name, []).append((entry.axis, kept))
    if not len(removed):
        return PruneResult(model, analysis, groups, before, before, masks, warnings)
    passes = [
        FreezeStaticValuesPass(),
        RewriteShapeConstantsPass(plan),
        SliceParametersPass(plan),
        UpdateValueShapesPass(plan),
        CleanupPass(model),
    ]
    if debug:
        from graphprune.verify.structural import StrictCheckPass

        passes.append(StrictCheckPass())  # mid-sequence states are not meant to be consistent
    declared = {v.name: [d if isinstance(d, int) else str(d) for d in (v.shape or ())]
                for v in (*model.graph.inputs, *model.graph.outputs)}
    ir.passes.Sequential(*passes)(model)
    after = count_costs(model, resized_shapes(input_shapes, io))
    missed = None if selected else target_warning(budget, before, after)
    warnings += (missed,) if missed is not None else ()
    return PruneResult(model, analysis, groups, before, after, masks, warnings, io,
                       changed_shapes(io, declared))


def _group_report(analysis: ChannelAnalysis, plan: PrunePlan, group) -> dict:
    root = group.root
    kept_root = plan.kept(root.value, root.axis)
    tensors = []
    for index in group.axes:
        entry = analysis.table.axes[index]
        tensors.append({
            "tensor": entry.value.name,
            "axis": entry.axis,
            "kind": "parameter" if entry.constant else "activation",
            "before": entry.size,
            "after": plan.new_size(entry.value, entry.axis),
        })
    report = {
        "name": group.name,
        "kind": group.kind,
        "root": root.name,
        "channels_before": root.size,
        "channels_after": plan.new_size(root.value, root.axis),
        "kept": (np.arange(root.size) if kept_root is None else kept_root).tolist(),
        "tensors": tensors,
    }
    if group.kind == "heads":  # whole heads: count them, not their channels
        report["heads_before"] = len(group.classes)
        report["heads_after"] = int(plan.keep[group.classes].sum())
    return report
