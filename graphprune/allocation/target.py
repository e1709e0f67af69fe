"""Target allocation: the global ranking cut where the pruned model keeps a share of its cost.

Candidate plans are costed by an objective, the kept share of a candidate plan (no rewrite):
MACs or parameters from :class:`~graphprune.report.costs.CostModel`, or the predicted latency
of :class:`~graphprune.allocation.latency.LatencyModel` (``Budget.objective``). The kept share
only falls as more of the ranking is removed, so bisection on the ranking cut (a score
threshold) finds the boundary in about ``log2(candidates)`` evaluations (15 for ResNet-50).
Rounding is inside each evaluation, so the target is met after rounding. When one group's next
rounding step jumps over the tolerance band (a 16-channel stem halving at round-to 8), that
group is frozen at its current width and the cut goes on through the others' candidates; each
freeze costs one more bisection. The plan closest to the target wins; where the floors do not
allow the target, :func:`target_warning` says so.
"""

from __future__ import annotations

import numpy as np

from graphprune.allocation.budget import Budget, Objective
from graphprune.allocation.ranking import largest_count, rank, removal
from graphprune.analysis import ChannelAnalysis, PrunePlan
from graphprune.analysis.summary import PruneWarning
from graphprune.errors import UsageError
from graphprune.report.costs import CostModel, Costs


def _measure(costs: Costs, what: str) -> int:
    return costs.macs if what == "macs" else costs.params


def cost_objective(costs: CostModel, what: str) -> Objective:
    """The kept share of MACs (``what="macs"``) or parameters of a candidate plan."""
    base = _measure(costs.costs(), what)
    return lambda plan: _measure(costs.costs(plan), what) / base if base else 1.0


def _objective(costs: CostModel | None, budget: Budget) -> Objective:
    if budget.objective is not None:
        return budget.objective
    if budget.target is None or costs is None or budget.target[0] == "latency":
        raise UsageError("the target allocator needs --target-macs, --target-params or "
                         "--target-latency")
    return cost_objective(costs, budget.target[0])


def target_allocation(analysis: ChannelAnalysis, scores: np.ndarray, costs: CostModel | None,
                      budget: Budget) -> np.ndarray:
    """Class labels to remove so that the objective's kept share is closest to the target.

    The objective is ``budget.objective`` when set, else the cost model's MACs or params. All
    groups (heads and channels) share one ranking; ``budget.ratio`` is not used.
    """
    objective = _objective(costs, budget)
    target = budget.target[1]
    ranking = rank(analysis, scores, analysis.groups, budget)
    shares: dict[bytes, float] = {}

    def share(kept: np.ndarray) -> float:
        key = kept.tobytes()
        if key not in shares:
            shares[key] = objective(PrunePlan(analysis, removal(analysis, scores, ranking, kept)))
        return shares[key]

    best = ranking.sizes.copy()
    frozen, owner = np.zeros(len(ranking.groups), dtype=np.int64), ranking.owner
    while True:
        def kept_at(count: int, frozen=frozen, owner=owner) -> np.ndarray:
            return ranking.keep_counts(frozen + ranking.asked(count, owner))

        count = largest_count(len(owner), lambda c: share(kept_at(c)) >= target)
        for kept in (kept_at(count), kept_at(min(count + 1, len(owner)))):
            if abs(share(kept) - target) < abs(share(best) - target):
                best = kept
        if abs(share(best) - target) <= budget.tolerance * target or count == len(owner):
            break
        jumper = owner[count]  # its next candidate crosses a rounding step past the band
        frozen = frozen + ranking.asked(count, owner)
        owner = owner[count:][owner[count:] != jumper]
    return removal(analysis, scores, ranking, best)


def target_warning(budget: Budget, before: Costs, after: Costs) -> PruneWarning | None:
    """``target_missed`` when the pruned model's share is not within tolerance of the target.

    Latency targets are checked by measurement instead
    (:func:`graphprune.allocation.latency.latency_warning`).
    """
    if budget.target is None or budget.target[0] == "latency":
        return None
    what, target = budget.target
    base = _measure(before, what)
    achieved = _measure(after, what) / base if base else 1.0
    if abs(achieved - target) <= budget.tolerance * target:
        return None
    return PruneWarning(
        "target_missed",
        f"--target-{what} {target:g}: the closest achievable is {achieved:.3f}x {what} "
        f"(floor {budget.floor:g} per group, --round-to {budget.round_to})",
        {"target": target, "what": what, "achieved": achieved})


def target_nothing_pruned(budget: Budget) -> PruneWarning:
    """``nothing_pruned`` when the plan closest to the target removes nothing."""
    what, target = budget.target
    return PruneWarning(
        "nothing_pruned",
        f"nothing was pruned: at --target-{what} {target:g} the closest plan removes nothing "
        f"(--round-to {budget.round_to})",
        {"cause": "target_unpruned", "target": target, "what": what})
