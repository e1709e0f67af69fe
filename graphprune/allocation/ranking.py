"""Global allocation: all groups ranked together by standardized scores, with per-group floors.

Scores are z-scored within each group (magnitudes of a wide layer and a narrow one do not
compare otherwise). Each group offers its lowest classes as removal candidates, all but its
floor (``max(1 step, floor * size)``, rounded up to a step, so no layer collapses); candidates
of all groups are ranked together. Removing the lowest ``count`` candidates asks each group for
some removal; its kept count is then rounded UP to a multiple of its step (never removing more
than asked) and each group keeps its best-scored classes. ``count`` is the one knob: the ratio
allocator and the target allocator (:mod:`graphprune.allocation.target`) search it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import numpy as np

from graphprune.allocation.budget import Budget
from graphprune.allocation.uniform import group_removal, group_step, round_up, scratch_masks
from graphprune.analysis import ChannelAnalysis, Group
from graphprune.report.costs import CostModel


def standardized(scores: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """Z-scores of ``scores[classes]`` (zeros when they are all equal)."""
    values = np.asarray(scores[classes], dtype=np.float64)
    spread = values.std()
    return (values - values.mean()) / spread if spread > 0 else np.zeros_like(values)


@dataclasses.dataclass(frozen=True)
class Ranking:
    """Removal candidates of some groups, lowest standardized score first.

    Attributes:
        groups: The ranked groups.
        sizes: Classes per group.
        steps: Rounding step per group, in classes.
        floors: Fewest classes each group keeps.
        owner: For every candidate in rank order, the index (into ``groups``) of its group.
    """

    groups: tuple[Group, ...]
    sizes: np.ndarray
    steps: np.ndarray
    floors: np.ndarray
    owner: np.ndarray

    @property
    def candidates(self) -> int:
        return len(self.owner)

    def asked(self, count: int, owner: np.ndarray | None = None) -> np.ndarray:
        """Classes asked of each group by the first ``count`` candidates of ``owner``."""
        owner = self.owner if owner is None else owner
        return np.bincount(owner[:count], minlength=len(self.groups))

    def keep_counts(self, asked: np.ndarray) -> np.ndarray:
        """Classes each group keeps when ``asked[i]`` classes are asked of group ``i``."""
        return np.array([round_up(n - r, n, s) if r else n for n, r, s
                         in zip(self.sizes, asked, self.steps, strict=True)], dtype=np.int64)

    def removed_count(self, count: int) -> int:
        """Classes actually removed (after rounding) by the lowest ``count`` candidates."""
        return int((self.sizes - self.keep_counts(self.asked(count))).sum())


def rank(analysis: ChannelAnalysis, scores: np.ndarray, groups: Sequence[Group],
         budget: Budget) -> Ranking:
    """The global ranking of ``groups`` under ``budget``'s floor and rounding."""
    sizes, steps, floors, owners, values = [], [], [], [], []
    for index, group in enumerate(groups):
        n = len(group.classes)
        step = group_step(analysis, group, budget.round_to)
        floor = round_up(max(step, budget.floor * n), n, step)
        z = np.sort(standardized(scores, group.classes))[: n - floor]
        sizes.append(n)
        steps.append(step)
        floors.append(floor)
        owners.append(np.full(len(z), index, dtype=np.int64))
        values.append(z)
    owner = np.concatenate(owners) if owners else np.zeros(0, dtype=np.int64)
    value = np.concatenate(values) if values else np.zeros(0)
    order = np.argsort(value, kind="stable")
    return Ranking(tuple(groups), np.array(sizes, dtype=np.int64),
                   np.array(steps, dtype=np.int64), np.array(floors, dtype=np.int64),
                   owner[order])


def removal(analysis: ChannelAnalysis, scores: np.ndarray, ranking: Ranking,
            kept: np.ndarray) -> np.ndarray:
    """Class labels removed when group ``i`` of ``ranking`` keeps ``kept[i]`` classes."""
    scratch = scratch_masks(analysis)
    parts = [group_removal(analysis, g, scores, int(k), scratch)
             for g, k, n in zip(ranking.groups, kept, ranking.sizes, strict=True) if k < n]
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


def largest_count(candidates: int, fits: Callable[[int], bool]) -> int:
    """The largest ``count`` in ``[0, candidates]`` with ``fits(count)``, for a monotone ``fits``.

    ``fits(0)`` is assumed; bisection, about ``log2(candidates)`` calls.
    """
    low, high = 0, candidates
    if fits(high):
        return high
    while high - low > 1:  # fits(low), not fits(high)
        middle = (low + high) // 2
        low, high = (middle, high) if fits(middle) else (low, middle)
    return low


def global_allocation(analysis: ChannelAnalysis, scores: np.ndarray, costs: CostModel | None,
                      budget: Budget) -> np.ndarray:
    """Class labels to remove: per group kind, the lowest-ranked classes of all its groups.

    Each kind (``"heads"``, ``"channels"``) is ranked on its own and loses at most
    ``ratio_of(kind)`` of its classes in total, after rounding; floors may keep it from
    reaching the ratio.
    """
    del costs
    removed = []
    for kind in dict.fromkeys(g.kind for g in analysis.groups):
        groups = [g for g in analysis.groups if g.kind == kind]
        ranking = rank(analysis, scores, groups, budget)
        allowed = budget.ratio_of(kind) * ranking.sizes.sum()
        count = largest_count(ranking.candidates,
                              lambda c, r=ranking, a=allowed: r.removed_count(c) <= a + 1e-9)
        kept = ranking.keep_counts(ranking.asked(count))
        removed.append(removal(analysis, scores, ranking, kept))
    return np.concatenate(removed) if removed else np.zeros(0, dtype=np.int64)
