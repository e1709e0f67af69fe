"""What an allocator is asked for, and the interface every allocator implements."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Protocol

import numpy as np

from graphprune.analysis import ChannelAnalysis, PrunePlan
from graphprune.report.costs import CostModel

DEFAULT_FLOOR = 0.1  # global ranking: every group keeps at least this share (and one step)

Objective = Callable[[PrunePlan], float]  # the kept share of a candidate plan's cost, in (0, 1]


@dataclasses.dataclass(frozen=True)
class Budget:
    """The budget of one allocation.

    Attributes:
        ratio: Share of classes removed, or one share per group kind (``"heads"``,
            ``"channels"``); uniform applies it to every group, global to each kind's total.
        round_to: Kept channel counts are rounded UP to a multiple of this (head groups count
            in whole heads), so no group loses more than asked.
        target_macs: Fraction of the original MACs to keep, in ``(0, 1]`` (target allocator).
        target_params: Fraction of the original parameters to keep, in ``(0, 1]``.
        target_latency: Fraction of the original latency to keep, in ``(0, 1]``; needs
            ``objective`` (:class:`graphprune.allocation.latency.LatencyModel.share`).
        floor: Global ranking: every group keeps at least ``max(1 step, floor * size)``.
        tolerance: Target allocator: relative distance to the target that counts as met.
        objective: Target allocator: the kept share of a candidate plan; None counts MACs or
            parameters with the cost model.
    """

    ratio: float | Mapping[str, float] = 0.5
    round_to: int = 1
    target_macs: float | None = None
    target_params: float | None = None
    floor: float = DEFAULT_FLOOR
    tolerance: float = 0.02
    target_latency: float | None = None
    objective: Objective | None = dataclasses.field(default=None, compare=False, repr=False)

    def ratio_of(self, kind: str) -> float:
        """The removal ratio of groups of ``kind``."""
        if isinstance(self.ratio, Mapping):
            return float(self.ratio.get(kind, 0.0))
        return float(self.ratio)

    @property
    def target(self) -> tuple[str, float] | None:
        """``("macs" | "params" | "latency", fraction)`` when a cost target is set."""
        if self.target_macs is not None:
            return "macs", self.target_macs
        if self.target_params is not None:
            return "params", self.target_params
        if self.target_latency is not None:
            return "latency", self.target_latency
        return None


class Allocator(Protocol):
    """``(analysis, scores, costs, budget) -> removed class labels``.

    ``scores`` is indexed by class label (higher is more important); ``costs`` evaluates
    candidate plans of the analysed model (allocators without a cost target ignore it).
    """

    def __call__(self, analysis: ChannelAnalysis, scores: np.ndarray, costs: CostModel | None,
                 budget: Budget) -> np.ndarray: ...
