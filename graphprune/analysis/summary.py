"""Warnings about a prune that does less than asked: pure data, read from the analysis and plan.

Codes (tests and the JSON report use them; the message is for humans):

1. ``nothing_pruned``: no channel was removed. ``cause`` says why: ``no_prunable_group`` (every
   channel axis is blocked; ``blocked`` counts the reasons), ``all_excluded`` (``--exclude``
   covers every group there would be), ``ratio_zero``, ``rounded_to_full`` (every group's kept
   count rounds back to its full size) or ``empty_selection`` (an explicit, empty removal).
2. ``exclude_unmatched``: an ``--exclude`` pattern matches no node name (one per pattern).
3. ``round_to_too_large``: ``--round-to`` is at or above every group's channel count, so no
   group can lose channels at any ratio.
"""

from __future__ import annotations

import collections
import dataclasses
import fnmatch
from collections.abc import Sequence

from graphprune.analysis.dependency import ChannelAnalysis, analyze_channels
from graphprune.core import Blocked

_TOP_REASONS = 3


@dataclasses.dataclass(frozen=True)
class PruneWarning:
    """One thing the user asked for that did not happen.

    Attributes:
        code: ``nothing_pruned``, ``exclude_unmatched`` or ``round_to_too_large``.
        message: One line for humans (names inside are raw; printers escape them).
        detail: Machine-readable facts (``cause``, ``pattern``, ``blocked`` counts, ...).
    """

    code: str
    message: str
    detail: dict = dataclasses.field(default_factory=dict)

    def as_dict(self) -> dict:
        return {"code": self.code, "message": self.message, **self.detail}


def _block_records(analysis: ChannelAnalysis) -> list[Blocked]:
    """What blocks the source axes; the rules' refusals when no axis is a source at all."""
    return [b for _, b in analysis.blocked_sources] or list(analysis.blocked)


def blocked_reason_counts(analysis: ChannelAnalysis) -> dict[str, int]:
    """Blocked source axes by reason, most frequent first; the rules' refusals when none."""
    counts = collections.Counter(b.reason.value for b in _block_records(analysis))
    return dict(counts.most_common())


def unmatched_patterns(analysis: ChannelAnalysis, exclude: Sequence[str]) -> list[str]:
    """The ``exclude`` patterns that match no node name of the analysed graph."""
    names = [node.name or "" for node in analysis.model.graph]
    return [p for p in dict.fromkeys(exclude) if not any(fnmatch.fnmatchcase(n, p) for n in names)]


def analysis_warnings(analysis: ChannelAnalysis, exclude: Sequence[str] = ()) -> list[PruneWarning]:
    """Warnings that hold for the analysis alone (``exclude_unmatched``)."""
    return [PruneWarning("exclude_unmatched", f"--exclude '{p}' matches no node", {"pattern": p})
            for p in unmatched_patterns(analysis, exclude)]


def _no_group(analysis: ChannelAnalysis, exclude: Sequence[str]) -> PruneWarning:
    if exclude:  # the model is untouched when nothing is pruned, so this second look is exact
        unexcluded = analyze_channels(analysis.model)
        if unexcluded.groups:
            count = len(unexcluded.groups)
            return PruneWarning(
                "nothing_pruned",
                f"nothing was pruned: --exclude covers every prunable group ({count} without it)",
                {"cause": "all_excluded", "groups_without_exclude": count})
    counts = blocked_reason_counts(analysis)
    top = ", ".join(f"{reason} {n}" for reason, n in list(counts.items())[:_TOP_REASONS])
    first = next(iter(counts), None)
    example = next((b for b in _block_records(analysis) if b.reason.value == first), None)
    what = "blocked axes" if analysis.blocked_sources else "refusals"
    parts = [f"{what}: {top}"] if top else []
    parts += [f"e.g. {example.describe()}"] if example is not None else []
    text = "nothing was pruned: no prunable channel group"
    text += f" ({'; '.join(parts)})" if parts else ""
    return PruneWarning("nothing_pruned", text, {"cause": "no_prunable_group", "blocked": counts})


def _nothing_pruned(analysis: ChannelAnalysis, ratio: float, round_to: int,
                    exclude: Sequence[str], selected: bool) -> PruneWarning:
    if not analysis.groups:
        return _no_group(analysis, exclude)
    if selected:
        return PruneWarning("nothing_pruned", "nothing was pruned: the selection is empty",
                            {"cause": "empty_selection"})
    if ratio <= 0:
        return PruneWarning("nothing_pruned", "nothing was pruned: the ratio is 0",
                            {"cause": "ratio_zero"})
    return PruneWarning(
        "nothing_pruned",
        f"nothing was pruned: at ratio {ratio:g} every group's kept count rounds back to its full "
        f"size (--round-to {round_to}, largest group {_largest(analysis)} channels)",
        {"cause": "rounded_to_full", "ratio": ratio, "round_to": round_to})


def _largest(analysis: ChannelAnalysis) -> int:
    return max(g.root.size for g in analysis.groups)


def prune_warnings(analysis: ChannelAnalysis, removed_count: int, *, ratio: float, round_to: int,
                   exclude: Sequence[str] = (), selected: bool = False) -> list[PruneWarning]:
    """Every warning about one prune.

    Args:
        analysis: The analysis of the original model.
        removed_count: How many classes the plan removes.
        ratio: The requested ratio.
        round_to: The rounding multiple of kept counts.
        exclude: The ``--exclude`` patterns.
        selected: The removal was given explicitly rather than allocated.
    """
    found = analysis_warnings(analysis, exclude)
    if analysis.groups and round_to > 1 and round_to >= _largest(analysis):
        largest = _largest(analysis)
        found.append(PruneWarning(
            "round_to_too_large",
            f"--round-to {round_to} is at or above every group's size (largest {largest} "
            "channels): no group can lose channels; use a smaller --round-to",
            {"round_to": round_to, "largest_group": largest}))
    if removed_count == 0:
        found.append(_nothing_pruned(analysis, ratio, round_to, exclude, selected))
    return found


def merge_point_warnings(points: Sequence[tuple[float, Sequence[dict]]]) -> list[dict]:
    """The warnings of a sweep: each distinct warning once, with the ``ratios`` it holds at.

    A warning that holds at some ratios only says which in its message.
    """
    merged: dict[tuple[str, str], dict] = {}
    for ratio, warnings in points:
        for warning in warnings:
            key = (warning["code"], warning["message"])
            merged.setdefault(key, {**warning, "ratios": []})["ratios"].append(ratio)
    every = len(points)
    for warning in merged.values():
        if len(warning["ratios"]) < every:
            at = ", ".join(f"{r:g}" for r in warning["ratios"])
            warning["message"] += f" (at ratio {at})"
    return list(merged.values())
