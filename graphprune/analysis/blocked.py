"""Moved to :mod:`graphprune.core` (the contract shared by ops and analysis); kept as an alias."""

from graphprune.core import Blocked, BlockReason

__all__ = ["BlockReason", "Blocked"]
