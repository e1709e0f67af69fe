"""Channel analysis: axes, element classes, groups and block reasons (no op names here)."""

from graphprune.analysis.dependency import ChannelAnalysis, Group, analyze_channels
from graphprune.analysis.plan import PrunePlan
from graphprune.core import Blocked, BlockReason

__all__ = ["BlockReason", "Blocked", "ChannelAnalysis", "Group", "PrunePlan", "analyze_channels"]
