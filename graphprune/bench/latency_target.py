"""``--target-latency``: the lookup before allocation, the measurement after the rewrite.

:func:`latency_lookup` builds the :class:`~graphprune.allocation.latency.LatencyModel` of the
model to prune (onnxruntime CPU, one thread, on valid random inputs at the cost model's input
shapes) and calibrates it on one really pruned copy near the target (uniform widths; timed side
by side with the original); the target allocator searches its ``share``.
:meth:`LatencyTarget.check` then times the
pruned model side by side with the original (interleaved, one thread) and reports the predicted
and the achieved share of the original's latency. Both are this machine's latency.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Mapping

import numpy as np
import onnx
import onnx_ir as ir

from graphprune.allocation.budget import Budget
from graphprune.allocation.latency import LatencyModel, Timer, latency_warning
from graphprune.allocation.uniform import uniform_allocation
from graphprune.analysis import ChannelAnalysis, PrunePlan
from graphprune.analysis.summary import PruneWarning
from graphprune.bench.node_latency import Feeds, OrtTimer, compare_models
from graphprune.calibration import model_proto
from graphprune.errors import GraphpruneError
from graphprune.report.costs import CostModel

MACHINE = ("this machine's latency: onnxruntime CPU execution provider, 1 thread, timed in the "
           "CPU time of that thread (other processes' load does not count)")


@dataclasses.dataclass
class LatencyTarget:
    """The latency model of one prune and what it needs to check the result."""

    model: LatencyModel
    original: onnx.ModelProto
    feeds: Feeds

    def check(self, budget: Budget, pruned: ir.Model, predicted: float,
              io: Mapping[str, list[tuple[int, np.ndarray]]]
              ) -> tuple[dict, PruneWarning | None]:
        """The report entry (``predicted`` vs achieved share) and ``target_missed`` if missed."""
        before_s, after_s = compare_models(self.original, model_proto(pruned)[0], self.feeds,
                                           _sliced(self.feeds, io))
        achieved = after_s / before_s if before_s > 0 else 1.0
        entry = self.entry(budget, predicted)
        entry.update(achieved=achieved, original_ms=before_s * 1e3, pruned_ms=after_s * 1e3)
        return entry, latency_warning(budget, predicted, achieved)

    def entry(self, budget: Budget, predicted: float) -> dict:
        """The report entry before any measurement of the pruned model."""
        return {"target": budget.target_latency, "predicted": predicted, "achieved": None,
                "machine": MACHINE, "lookup": self.model.summary()}


def _sliced(feeds: Feeds, io: Mapping[str, list[tuple[int, np.ndarray]]]) -> Feeds:
    """``feeds`` with the graph inputs that lost channels sliced to the kept ones."""
    sliced = dict(feeds)
    for name, cuts in io.items():
        if name in sliced:
            for axis, kept in cuts:
                sliced[name] = np.take(sliced[name], kept, axis=axis)
    return sliced


def _uniform_near(model: LatencyModel, budget: Budget) -> np.ndarray:
    """Labels removed by the uniform ratio whose predicted share is nearest the target."""
    analysis = model.analysis
    zeros = np.zeros(analysis.table.num_elements)
    best, best_gap = np.zeros(0, dtype=np.int64), math.inf
    for ratio in np.arange(0.05, 0.95, 0.05):
        removed = uniform_allocation(analysis, zeros, float(ratio), budget.round_to)
        gap = abs(model.share(PrunePlan(analysis, removed)) - budget.target_latency)
        if gap < best_gap:
            best, best_gap = removed, gap
    return best


def calibrate(target: LatencyTarget, budget: Budget, options: Mapping) -> bool:
    """Prunes a copy of the original uniformly near the target, times it, refits the model."""
    from graphprune.pipeline import prune

    start = time.perf_counter()
    removed = _uniform_near(target.model, budget)
    if not len(removed):
        return False
    try:
        copy = prune(ir.from_proto(target.original), removed=removed, round_to=budget.round_to,
                     **options)
        whole_s, pruned_s = compare_models(target.original, model_proto(copy.model)[0],
                                           target.feeds, _sliced(target.feeds, copy.io))
    except (GraphpruneError, RuntimeError):  # onnxruntime's failures are RuntimeErrors
        return False  # the lookup's own fit stays
    done = target.model.calibrate(PrunePlan(target.model.analysis, removed), whole_s, pruned_s)
    if done:
        target.model.calibration["seconds"] = round(time.perf_counter() - start, 3)
    return done


def _loaded_proto(model: ir.Model) -> onnx.ModelProto:
    proto, folder = model_proto(model)
    if folder is not None:
        onnx.load_external_data_for_model(proto, str(folder))
    return proto


def latency_lookup(model: ir.Model, analysis: ChannelAnalysis, costs: CostModel, budget: Budget,
                   seed: int = 0, timer: Timer | None = None,
                   options: Mapping | None = None) -> LatencyTarget:
    """The latency model of ``model`` (before the rewrite), timed by ``timer`` or onnxruntime.

    With onnxruntime (no ``timer``) it is calibrated on a pruned copy (:func:`calibrate`),
    which ``options`` (``exclude``, ``resize_io``, ``input_shapes`` of :func:`prune`) make.
    """
    from graphprune.inputs import valid_feeds

    proto = _loaded_proto(model)
    feeds = valid_feeds(proto, costs.inputs, 1, seed)[0]
    found = LatencyTarget(LatencyModel(analysis, costs, timer or OrtTimer(proto, feeds),
                                       budget.floor, budget.round_to), proto, feeds)
    if timer is None:
        calibrate(found, budget, options or {})
    return found
