"""Allocation: which classes each group loses, by name in :data:`ALLOCATORS`.

Every allocator is ``(analysis, scores, costs, budget) -> removed class labels``
(:class:`Allocator`): ``uniform`` removes the same share of every group, ``global`` ranks all
groups together by standardized scores with per-group floors, ``target`` cuts that ranking where
the kept MACs or parameters meet ``--target-macs`` / ``--target-params``, ``sensitivity``
meets a ratio or a cost target from a sensitivity table (``prune(..., sensitivity=table)``).
Rounding is :func:`keep_count` / :func:`round_up`: kept counts round UP, never removing more
than asked.
"""

from graphprune.allocation.budget import DEFAULT_FLOOR, Allocator, Budget
from graphprune.allocation.ranking import global_allocation
from graphprune.allocation.sensitivity import sensitivity_allocation
from graphprune.allocation.target import target_allocation, target_warning
from graphprune.allocation.uniform import (
    DEFAULT_ROUND_TO,
    keep_count,
    round_up,
    uniform_allocation,
)


def _uniform(analysis, scores, costs, budget: Budget):
    del costs
    return uniform_allocation(analysis, scores, budget.ratio, budget.round_to)


ALLOCATORS: dict[str, Allocator] = {
    "uniform": _uniform,
    "global": global_allocation,
    "target": target_allocation,
    "sensitivity": sensitivity_allocation,
}

__all__ = ["ALLOCATORS", "DEFAULT_FLOOR", "DEFAULT_ROUND_TO", "Allocator", "Budget",
           "global_allocation", "keep_count", "round_up", "sensitivity_allocation",
           "target_allocation", "target_warning", "uniform_allocation"]
