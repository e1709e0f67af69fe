"""graphprune: structured pruning of ONNX models into smaller dense ONNX models."""

from graphprune.analysis import Blocked, BlockReason, ChannelAnalysis
from graphprune.errors import GraphpruneError
from graphprune.pipeline import PruneResult, analyze, prune

__all__ = [
    "BlockReason",
    "Blocked",
    "ChannelAnalysis",
    "GraphpruneError",
    "PruneResult",
    "analyze",
    "prune",
]
__version__ = "0.1.0"
