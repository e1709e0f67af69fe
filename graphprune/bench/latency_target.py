"""``--target-latency``: the lookup before allocation, the measurement after the rewrite.

:func:`latency_lookup` builds the :class:`~graphprune.allocation.latency.LatencyModel` of the
model to prune (onnxruntime CPU, one thread, on valid random inputs at the cost model's input
shapes); the target allocator searches its ``share``. :meth:`LatencyTarget.check` then times the
pruned model side by side with the original (interleaved, one thread) and reports the predicted
and the achieved share of the original's latency. Both are this machine's latency.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import numpy as np
import onnx
import onnx_ir as ir

from graphprune.allocation.budget import Budget
from graphprune.allocation.latency import LatencyModel, Timer, latency_warning
from graphprune.analysis import ChannelAnalysis
from graphprune.analysis.summary import PruneWarning
from graphprune.bench.node_latency import Feeds, OrtTimer, compare_models
from graphprune.calibration import model_proto
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
        pruned_feeds = dict(self.feeds)
        for name, cuts in io.items():  # graph inputs that lost channels are fed sliced
            if name in pruned_feeds:
                for axis, kept in cuts:
                    pruned_feeds[name] = np.take(pruned_feeds[name], kept, axis=axis)
        before_s, after_s = compare_models(self.original, model_proto(pruned)[0], self.feeds,
                                           pruned_feeds)
        achieved = after_s / before_s if before_s > 0 else 1.0
        entry = self.entry(budget, predicted)
        entry.update(achieved=achieved, original_ms=before_s * 1e3, pruned_ms=after_s * 1e3)
        return entry, latency_warning(budget, predicted, achieved)

    def entry(self, budget: Budget, predicted: float) -> dict:
        """The report entry before any measurement of the pruned model."""
        return {"target": budget.target_latency, "predicted": predicted, "achieved": None,
                "machine": MACHINE, "lookup": self.model.summary()}


def _loaded_proto(model: ir.Model) -> onnx.ModelProto:
    proto, folder = model_proto(model)
    if folder is not None:
        onnx.load_external_data_for_model(proto, str(folder))
    return proto


def latency_lookup(model: ir.Model, analysis: ChannelAnalysis, costs: CostModel, budget: Budget,
                   seed: int = 0, timer: Timer | None = None) -> LatencyTarget:
    """The latency model of ``model`` (before the rewrite), timed by ``timer`` or onnxruntime."""
    from graphprune.inputs import valid_feeds

    proto = _loaded_proto(model)
    feeds = valid_feeds(proto, costs.inputs, 1, seed)[0]
    timer = timer or OrtTimer(proto, feeds)
    return LatencyTarget(LatencyModel(analysis, costs, timer, budget.floor, budget.round_to),
                         proto, feeds)
