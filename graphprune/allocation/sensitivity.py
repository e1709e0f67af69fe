"""Sensitivity allocation: per-group widths from a sensitivity table, least summed output change.

The table (:func:`graphprune.sensitivity.sensitivity`) measured, for every group pruned alone at
a few ratios, the output change (relative L2 to the original; ``1 - cosine`` where that is
undefined) and the model's MACs and parameters. For each group:

1. Its candidate widths are every rounding step from whole down to the largest ratio the table
   measured (never beyond: the table's top ratio is the group's floor; a failed trial caps it
   below that ratio).
2. The change at a width is interpolated linearly in the removed share between the measured
   points and ``(0, 0)``; so is what the width *saves*: classes under a ratio, the table's MACs
   under ``target_macs``, its parameters under ``target_params``.
3. The lower convex hull of ``(saved, change)`` over the widths gives each step its slope: the
   marginal change per class (MAC, parameter) saved of the hull segment it lies on, rising
   along the hull (a group whose change is not convex is cut to a hull point as one stretch).

Greedy: all groups' steps are merged by slope, lowest first (ties: group order); a prefix of
that sequence is a plan, and the summed change it adds is the smallest for what it saves as
far as the interpolation goes. With a ratio, each group kind takes the longest prefix that
removes at most ``ratio_of(kind)`` of its classes. With a cost target, the prefix is bisected on
the cost model's MACs (parameters) of the candidate plan and the one closest to the target is
taken. Groups absent from the table stay whole. The table should be measured with the
``--criterion`` and ``--round-to`` the pruning uses (each group keeps its best-scored classes).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from graphprune.allocation.budget import Budget
from graphprune.allocation.ranking import largest_count
from graphprune.allocation.uniform import group_removal, group_step, round_up, scratch_masks
from graphprune.analysis import ChannelAnalysis, Group, PrunePlan
from graphprune.errors import UsageError
from graphprune.report.costs import CostModel


def trial_change(trial: dict) -> float:
    """The output change a trial measured: relative L2, else ``1 - cosine``, else inf."""
    if trial.get("error"):
        return np.inf
    if trial.get("rel_l2") is not None:
        return float(trial["rel_l2"])
    return 1.0 - float(trial["cosine"]) if trial.get("cosine") is not None else np.inf


@dataclasses.dataclass(frozen=True)
class Steps:
    """One group's candidate widths along its hull.

    Attributes:
        group: The group.
        position: Its index among the allocated groups (ties in the merge).
        kept: Classes kept at each candidate width, whole first.
        slopes: Marginal change per unit saved of each step ``kept[i] -> kept[i + 1]``: the
            slope of the hull segment the step lies on.
    """

    group: Group
    position: int
    kept: np.ndarray
    slopes: np.ndarray


def _widths(analysis: ChannelAnalysis, group: Group, round_to: int, top: float) -> np.ndarray:
    """Kept counts from whole down to removing ``top`` of ``group``, one rounding step apart."""
    n = len(group.classes)
    step = group_step(analysis, group, round_to)
    least = round_up(n * (1.0 - top), n, step)
    inner = np.arange(((n - 1) // step) * step, least - 1, -step)
    return np.concatenate([[n], inner[inner >= max(least, 1)]]).astype(np.int64)


def _measured(trials: list[dict], n: int, saved_of) -> tuple[np.ndarray, np.ndarray, np.ndarray,
                                                               float]:
    """Removed shares, changes and savings of ``trials`` with ``(0, 0, 0)``; the largest share."""
    shares, changes, saved = [0.0], [0.0], [0.0]
    top = 0.0
    for trial in sorted(trials, key=lambda t: t["ratio"]):
        change = trial_change(trial)
        if not np.isfinite(change):
            break  # a failed trial: no wider cut is trusted
        share = trial.get("removed", 0) / n
        if share <= shares[-1]:
            changes[-1] = max(changes[-1], change)
            continue
        shares.append(share)
        changes.append(change)
        saved.append(max(saved[-1], saved_of(trial)))
        top = share
    return np.array(shares), np.array(changes), np.array(saved), top


def _hull(saved: np.ndarray, change: np.ndarray) -> list[int]:
    """Indices of the lower convex hull of the points (``saved`` ascending), first point kept."""
    hull: list[int] = []
    for index in range(len(saved)):
        if hull and saved[index] <= saved[hull[-1]]:
            if change[index] < change[hull[-1]] and len(hull) > 1:
                hull.pop()
            else:
                continue
        while len(hull) > 1:
            a, b = hull[-2], hull[-1]
            cross = ((saved[b] - saved[a]) * (change[index] - change[a])
                     - (change[b] - change[a]) * (saved[index] - saved[a]))
            if cross > 0:
                break
            hull.pop()
        hull.append(index)
    return hull


def _group_steps(analysis, group, position, trials, budget: Budget, base: dict) -> Steps:
    n = len(group.classes)
    what = budget.target[0] if budget.target is not None else None

    def saved_of(trial: dict) -> float:
        if what is None:
            return float(trial.get("removed", 0))
        return float(base[what] - trial.get(what, base[what])) / max(base[what], 1)

    shares, changes, saved, top = _measured(trials, n, saved_of)
    kept = _widths(analysis, group, budget.round_to, top)
    share = 1.0 - kept / n
    at_change = np.interp(share, shares, changes)
    at_saved = (n - kept).astype(np.float64) if what is None else np.interp(share, shares, saved)
    hull = _hull(at_saved, at_change)
    slopes = np.zeros(len(kept) - 1)
    for a, b in zip(hull, hull[1:], strict=False):  # every step of a segment takes its slope
        slopes[a:b] = (at_change[b] - at_change[a]) / max(at_saved[b] - at_saved[a], 1e-300)
    last = hull[-1]  # widths past the hull's end save nothing more: never taken
    return Steps(group, position, kept[: last + 1], slopes[:last])


def _merged(steps: list[Steps]) -> list[tuple[int, int]]:
    """``(steps index, hull point)`` moves, by slope, then group order, then width."""
    moves = [(float(s.slopes[k]), s.position, k + 1, i)
             for i, s in enumerate(steps) for k in range(len(s.slopes))]
    moves.sort(key=lambda m: m[:3])
    return [(m[3], m[2]) for m in moves]


def _kept_after(steps: list[Steps], moves, count: int) -> np.ndarray:
    kept = np.array([s.kept[0] for s in steps], dtype=np.int64)
    for index, point in moves[:count]:
        kept[index] = steps[index].kept[point]
    return kept


def _removal(analysis, scores, steps: list[Steps], kept: np.ndarray) -> np.ndarray:
    scratch = scratch_masks(analysis)
    parts = [group_removal(analysis, s.group, scores, int(k), scratch)
             for s, k in zip(steps, kept, strict=True) if k < len(s.group.classes)]
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


def _table_trials(analysis: ChannelAnalysis, table: dict) -> dict[int, list[dict]]:
    """Trials by group id, after checking that the table describes this model's groups."""
    sizes = {g["name"]: g["classes"] for g in table.get("groups", [])}
    by_group: dict[int, list[dict]] = {}
    names = {g.name: g for g in analysis.groups}
    for trial in table.get("trials", []):
        group = names.get(trial["group"])
        if group is None:
            continue
        if sizes.get(trial["group"], trial.get("classes")) != len(group.classes):
            raise UsageError(f"the sensitivity table does not match the model: group "
                             f"'{group.name}' has {len(group.classes)} channels, the table "
                             f"{sizes.get(trial['group'])}")
        by_group.setdefault(group.id, []).append(trial)
    if table.get("trials") and not by_group:
        raise UsageError("the sensitivity table names none of the model's groups (another "
                         "model, or other --exclude patterns?)")
    return by_group


def sensitivity_allocation(analysis: ChannelAnalysis, scores: np.ndarray,
                           costs: CostModel | None, budget: Budget,
                           table: dict | None = None) -> np.ndarray:
    """Class labels to remove: the greedy plan of the module docstring.

    Raises:
        UsageError: No table, a table of another model, or a cost target without a cost model.
    """
    if table is None:
        raise UsageError("allocation 'sensitivity' needs a sensitivity table (prune "
                         "--sensitivity-json PATH; write one with graphprune analyze MODEL "
                         "--sensitivity --json PATH)")
    by_group = _table_trials(analysis, table)
    base = {"macs": table.get("macs", 0), "params": table.get("params", 0)}
    groups = [g for g in analysis.groups if g.id in by_group]
    steps = [_group_steps(analysis, g, k, by_group[g.id], budget, base)
             for k, g in enumerate(groups)]
    if budget.target is None:
        return _ratio_plan(analysis, scores, steps, budget)
    if costs is None:
        raise UsageError("a cost target needs the cost model")
    return _target_plan(analysis, scores, steps, costs, budget)


def _ratio_plan(analysis, scores, steps: list[Steps], budget: Budget) -> np.ndarray:
    removed = []
    for kind in dict.fromkeys(g.kind for g in analysis.groups):
        mine = [s for s in steps if s.group.kind == kind]
        allowed = budget.ratio_of(kind) * sum(len(g.classes) for g in analysis.groups
                                              if g.kind == kind)
        moves = _merged(mine)
        count = largest_count(len(moves), lambda c, m=mine, v=moves, a=allowed: int(
            sum(s.kept[0] for s in m) - _kept_after(m, v, c).sum()) <= a + 1e-9)
        removed.append(_removal(analysis, scores, mine, _kept_after(mine, moves, count)))
    return np.concatenate(removed) if removed else np.zeros(0, dtype=np.int64)


def _target_plan(analysis, scores, steps: list[Steps], costs: CostModel,
                 budget: Budget) -> np.ndarray:
    what, target = budget.target
    moves = _merged(steps)
    whole = costs.costs()
    base = whole.macs if what == "macs" else whole.params
    shares: dict[int, float] = {}

    def share(count: int) -> float:
        if count not in shares:
            plan = PrunePlan(analysis, _removal(analysis, scores, steps,
                                                _kept_after(steps, moves, count)))
            found = costs.costs(plan)
            shares[count] = (found.macs if what == "macs" else found.params) / max(base, 1)
        return shares[count]

    count = largest_count(len(moves), lambda c: share(c) >= target)
    if count < len(moves) and abs(share(count + 1) - target) < abs(share(count) - target):
        count += 1
    return _removal(analysis, scores, steps, _kept_after(steps, moves, count))


sensitivity_allocation.handles_targets = True  # it meets cost targets itself
