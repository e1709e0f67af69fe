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
from graphprune.compensation import CompensationContext, original_proto
from graphprune.compensation import compensate as run_compensation
from graphprune.importance import ScoringContext, score
from graphprune.options import PruneOptions
from graphprune.passes import (
    CleanupPass,
    FreezeStaticValuesPass,
    RewriteShapeConstantsPass,
    SliceParametersPass,
    UpdateValueShapesPass,
)
from graphprune.passes.base import start_rewrite
from graphprune.report.costs import CostModel, Costs, count_costs
from graphprune.verify.oracle import fills_for
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
        compensation: One report per compensation pass run (name, seconds, what it changed);
            empty when none ran. A compensated model no longer equals the masked original.
        latency: With ``target_latency``: the target, the predicted and the measured share of
            the original's latency on this machine, and what the lookup timed; else None.
        fills: For every name in ``masks``, what its removed entries become in the masked
            original (:func:`graphprune.verify.oracle.fills_for`, read before the rewrite);
            None when not known (the oracle then reads them from the input model).
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
    compensation: list[dict] = dataclasses.field(default_factory=list)
    latency: dict | None = None
    fills: dict | None = None


def _as_model(model: ir.Model | str | os.PathLike) -> ir.Model:
    return infer_shapes(model) if isinstance(model, ir.Model) else load_model(model)


def analyze(model: ir.Model | str | os.PathLike, exclude: Sequence[str] = (),
            resize_io: Sequence[str] = ()) -> ChannelAnalysis:
    """Channel groups and blocked channels of ``model``; nothing is changed."""
    return analyze_channels(_as_model(model), exclude, resize_io)


def _select(analysis: ChannelAnalysis, criterion: str, seed: int, allocation: str,
            costs: CostModel, budget: Budget, provider: CalibrationProvider,
            sensitivity=None) -> np.ndarray:
    scores = score(criterion, ScoringContext(analysis, analysis.model, provider, seed))
    allocator = ALLOCATORS[allocation]
    if budget.target is not None and not getattr(allocator, "handles_targets", False):
        allocator = ALLOCATORS["target"]
    if sensitivity is not None:  # the sensitivity allocator's table
        from graphprune.sensitivity import load_table

        return allocator(analysis, scores, costs, budget, table=load_table(sensitivity))
    return allocator(analysis, scores, costs, budget)


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
    compensate: str | Sequence[str] | None = None,
    target_latency: float | None = None,
    latency_timer=None,
    sensitivity=None,
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
        allocation: ``uniform`` (``ratio`` of every group), ``global`` (``ratio`` of all
            channels, ranked together by standardized scores; every group keeps at least a
            tenth) or ``sensitivity`` (per-group widths from ``sensitivity``, least summed
            output change), from :data:`graphprune.allocation.ALLOCATORS`.
        target_macs: Share of the original MACs to keep, in ``(0, 1]``: the global ranking is
            cut where the pruned model meets it within 2% after rounding (``ratio``, ``heads``
            and ``mlp`` are then not used); a ``target_missed`` warning when it cannot.
        target_params: The same for parameters (excludes ``target_macs``).
        calibration: What data-driven criteria run the model on: an ``Inputs``
            (:func:`graphprune.inputs.load_inputs`), a sequence of feeds, or a ``--data`` path;
            default: 16 valid random batches (not real calibration data). Compensation
            reads the same batches.
        compensate: ``"none"`` (default), a method or a comma-separated list of methods from
            :data:`graphprune.compensation.COMPENSATIONS`, run on the pruned model after the
            rewrite; their reports are ``PruneResult.compensation``.
        target_latency: Share of the original model's latency to keep, in ``(0, 1]``, on this
            machine (onnxruntime CPU, one thread): every computing node is timed alone at a few
            widths (:mod:`graphprune.allocation.latency`), the global ranking is cut where the
            predicted latency meets the target within 2%, and the pruned model is timed against
            the original (``PruneResult.latency``; ``target_missed`` when off by more than
            10%). Excludes ``target_macs`` and ``target_params``.
        latency_timer: What times the lookup (default: onnxruntime;
            :class:`graphprune.allocation.latency.Timer`, for tests).
        sensitivity: With ``allocation="sensitivity"``: the table of
            :func:`graphprune.sensitivity.sensitivity` (a dict or its JSON path).
    """
    options = PruneOptions.of(
        ratio, criterion=criterion, round_to=round_to, exclude=exclude, seed=seed, heads=heads,
        mlp=mlp, resize_io=resize_io, input_shapes=input_shapes, allocation=allocation,
        target_macs=target_macs, target_params=target_params, compensate=compensate,
        target_latency=target_latency, sensitivity=sensitivity, debug=debug).check()
    ratios = options.ratios
    budget = Budget(ratios, round_to, target_macs, target_params, target_latency=target_latency)
    methods = options.compensate
    model = _as_model(model)
    analysis = analyze_channels(model, exclude, resize_io)
    cost_model = CostModel(model, input_shapes)
    before = cost_model.costs()
    selected = removed is not None
    provider = _provider(model, calibration, input_shapes, seed)
    latency = None
    if budget.target_latency is not None and not selected:
        from graphprune.bench.latency_target import latency_lookup

        latency = latency_lookup(model, analysis, cost_model, budget, seed, latency_timer,
                                 {"exclude": exclude, "resize_io": resize_io,
                                  "input_shapes": input_shapes})
        budget = dataclasses.replace(budget, objective=latency.model.share)
    if removed is None:
        removed = _select(analysis, criterion, seed, allocation, cost_model, budget, provider,
                          sensitivity)
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
    latency_entry = latency and latency.entry(budget, latency.model.share(plan))
    if not len(removed):
        return PruneResult(model, analysis, groups, before, before, masks, warnings,
                           latency=latency_entry, fills={})
    fills = fills_for(model, masks)  # before the rewrite: the original's rules and divisors
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
    original = original_proto(model) if methods else None  # before the rewrite
    start_rewrite(model)
    ir.passes.Sequential(*passes)(model)
    compensation = []
    if methods:
        context = CompensationContext(*original, model, analysis, plan, provider.batches, io,
                                      provider.origin)
        compensation = run_compensation(context, methods)
    after = count_costs(model, resized_shapes(input_shapes, io))
    missed = None if selected else target_warning(budget, before, after)
    if latency is not None:
        latency_entry, missed = latency.check(budget, model, latency_entry["predicted"], io)
    warnings += (missed,) if missed is not None else ()
    return PruneResult(model, analysis, groups, before, after, masks, warnings, io,
                       changed_shapes(io, declared), compensation, latency_entry, fills)


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
    if group.kind == "heads":  # whole heads (GQA: KV heads, each with its query heads)
        report["heads_before"] = len(group.classes)
        report["heads_after"] = int(plan.keep[group.classes].sum())
        report["query_heads_before"] = report["heads_before"] * group.heads_per_class
        report["query_heads_after"] = report["heads_after"] * group.heads_per_class
    return report
