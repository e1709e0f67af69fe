"""Uniform allocation: every segment of every group keeps the same share of its channels."""

from __future__ import annotations

import numpy as np

from graphprune.analysis import ChannelAnalysis


def keep_count(n: int, ratio: float, round_to: int = 1) -> int:
    """Channels kept out of ``n`` when removing ``ratio`` of them.

    The count is rounded to the nearest multiple of ``round_to``, never below one channel (or one
    multiple when ``n`` allows) and never above ``n``; ratio 0 keeps everything.
    """
    if ratio <= 0:
        return n
    exact = n * (1.0 - ratio)
    step = max(1, round_to)
    rounded = int(np.floor(exact / step + 0.5)) * step
    return int(min(n, max(rounded, step, 1)))


def uniform_allocation(
    analysis: ChannelAnalysis, scores: np.ndarray, ratio: float, round_to: int = 1
) -> np.ndarray:
    """Class labels to remove: the lowest-scored classes of each segment of each group."""
    removed = []
    for group in analysis.groups:
        for segment in group.segments:
            keep = keep_count(len(segment), ratio, round_to)
            order = np.argsort(-scores[segment], kind="stable")
            removed.append(segment[order[keep:]])
    return np.concatenate(removed) if removed else np.zeros(0, dtype=np.int64)
