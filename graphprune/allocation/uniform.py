"""Uniform allocation: every group keeps the same share of its channels.

Within a group the kept count is shared out over its segments (classes that reach the same
axes, such as the two halves of a split) in proportion to their sizes, largest remainders
first, so each part keeps about the same share; then every axis of the group keeps at least one
element, and each segment keeps its best-scored classes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from graphprune.analysis import ChannelAnalysis, Group

# Measured with benchmarks/round_to.py (onnxruntime CPU, AVX-512 Xeon, where the NCHWc block is
# 16 channels): 16 was fastest in 4 of 5 model/ratio pairs; a multiple of 16 is one of 8 too.
DEFAULT_ROUND_TO = 16


def keep_count(n: int, ratio: float, round_to: int = 1) -> int:
    """Channels kept out of ``n`` when removing ``ratio`` of them.

    Rounding policy: the exact kept count ``n * (1 - ratio)`` is rounded UP to a multiple of
    ``round_to``, so a group never loses more than ``ratio`` of its channels; the count is capped
    at ``n`` (a group may then keep everything, which the no-op warnings report) and is never
    below one multiple (or ``n`` when smaller). Ratio 0 keeps everything.
    """
    if ratio <= 0:
        return n
    return round_up(n * (1.0 - ratio), n, round_to)


def round_up(exact: float, n: int, step: int = 1) -> int:
    """``exact`` kept channels rounded up to a multiple of ``step``, within ``[step, n]``.

    A hair of tolerance keeps float noise (``100 * 0.3 = 30.000000000000004``) from adding a
    whole step.
    """
    step = max(1, step)
    rounded = math.ceil(exact / step - 1e-9) * step
    return int(min(n, max(rounded, step)))


def _class_step(analysis: ChannelAnalysis, group: Group, round_to: int) -> int:
    """``round_to`` counted in classes: a class of ``m`` root channels needs ``round_to/gcd``."""
    root = analysis.axis_labels(group.root)
    counts = np.unique(root, return_counts=True)[1]
    multiplicity = int(counts.min()) if len(counts) else 1
    return max(1, round_to // math.gcd(round_to, multiplicity))


def _quotas(sizes: np.ndarray, keep: int) -> np.ndarray:
    """``keep`` shared out in proportion to ``sizes`` (largest remainders first)."""
    exact = keep * sizes / sizes.sum()
    quota = np.floor(exact).astype(np.int64)
    order = np.argsort(-(exact - quota), kind="stable")
    quota[order[: keep - int(quota.sum())]] += 1
    return np.minimum(quota, sizes)


def group_step(analysis: ChannelAnalysis, group: Group, round_to: int) -> int:
    """The rounding step of ``group`` in classes (head groups count in whole heads)."""
    return 1 if group.kind == "heads" else _class_step(analysis, group, round_to)


def scratch_masks(analysis: ChannelAnalysis) -> tuple[np.ndarray, np.ndarray]:
    """Two all-False masks over class labels for :func:`group_removal` to share across groups."""
    keep = np.zeros(analysis.table.num_elements, dtype=bool)
    return keep, np.zeros_like(keep)


def group_removal(analysis: ChannelAnalysis, group: Group, scores: np.ndarray,
                  keep_total: int, scratch: tuple[np.ndarray, np.ndarray] | None = None
                  ) -> np.ndarray:
    """Class labels of ``group`` removed when it keeps ``keep_total`` classes.

    The count is shared over the group's segments; each keeps its best-scored classes, and no
    axis of the group loses every element. ``scratch`` (from :func:`scratch_masks`, shared by
    every group so that the work stays proportional to the group's size) is all-False again on
    return.
    """
    keep, members = scratch if scratch is not None else scratch_masks(analysis)
    sizes = np.array([len(s) for s in group.segments], dtype=np.int64)
    kept = []
    for segment, quota in zip(group.segments, _quotas(sizes, keep_total), strict=False):
        order = np.argsort(-scores[segment], kind="stable")
        kept.append(segment[order[:quota]])
    keep[np.concatenate(kept)] = True
    members[group.classes] = True
    for index in group.axes:  # no axis may lose every element
        labels = analysis.axis_labels(analysis.table.axes[index])
        if not (keep[labels] | ~members[labels]).any():
            keep[labels[np.argmax(scores[labels])]] = True
    removed = group.classes[~keep[group.classes]]
    keep[group.classes] = False  # only members were set (an axis's rescue is all members)
    members[group.classes] = False
    return removed


def uniform_allocation(
    analysis: ChannelAnalysis, scores: np.ndarray, ratio: float | Mapping[str, float],
    round_to: int = 1,
) -> np.ndarray:
    """Class labels to remove: ``ratio`` of every group, lowest scores first.

    ``ratio`` may map a group kind (``"heads"``, ``"channels"``) to its own ratio.
    """
    ratios = ratio if isinstance(ratio, Mapping) else {}
    scratch = scratch_masks(analysis)
    removed = []
    for group in analysis.groups:
        share = ratios.get(group.kind, 0.0) if ratios else ratio
        keep = keep_count(len(group.classes), share, group_step(analysis, group, round_to))
        removed.append(group_removal(analysis, group, scores, keep, scratch))
    return np.concatenate(removed) if removed else np.zeros(0, dtype=np.int64)
