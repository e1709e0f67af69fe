"""Allocation: how many channels each group keeps."""

from graphprune.allocation.uniform import DEFAULT_ROUND_TO, keep_count, uniform_allocation

__all__ = ["DEFAULT_ROUND_TO", "keep_count", "uniform_allocation"]
