"""Allocation: how many channels each group keeps."""

from graphprune.allocation.uniform import keep_count, uniform_allocation

__all__ = ["keep_count", "uniform_allocation"]
