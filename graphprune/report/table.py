"""Terminal tables (rich)."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from graphprune.analysis import ChannelAnalysis
from graphprune.pipeline import PruneResult

_MAX_ROWS = 25


def _human(n: float) -> str:
    for unit in ("", "K", "M", "G", "T"):
        if abs(n) < 1000:
            return f"{n:.4g}{unit}"
        n /= 1000
    return f"{n:.4g}P"


def print_summary(result: PruneResult, console: Console) -> None:
    """Groups (largest first, at most 25 rows) and the before/after totals."""
    table = Table(title="Channel groups", title_justify="left")
    table.add_column("group")
    table.add_column("tensors", justify="right")
    table.add_column("channels", justify="right")
    rows = sorted(result.groups, key=lambda g: -g["channels_before"])
    for group in rows[:_MAX_ROWS]:
        table.add_row(group["name"], str(len(group["tensors"])),
                      f"{group['channels_before']} -> {group['channels_after']}")
    if len(rows) > _MAX_ROWS:
        table.add_row(f"... {len(rows) - _MAX_ROWS} more groups (see the JSON report)", "", "")
    console.print(table)
    totals = Table(title="Totals", title_justify="left")
    for column in ("", "before", "after", "ratio"):
        totals.add_column(column, justify="right")
    for key in ("params", "macs"):
        before, after = getattr(result.before, key), getattr(result.after, key)
        totals.add_row(key, _human(before), _human(after), f"{after / max(before, 1):.3f}")
    console.print(totals)


def print_analysis(analysis: ChannelAnalysis, console: Console) -> None:
    """Every group with its tensors, then every blocked source axis with its reason."""
    table = Table(title=f"{len(analysis.groups)} prunable groups", title_justify="left")
    table.add_column("#", justify="right")
    table.add_column("group")
    table.add_column("channels", justify="right")
    table.add_column("segments", justify="right")
    table.add_column("tensors", justify="right")
    for group in analysis.groups:
        table.add_row(str(group.id), group.name, str(len(group.classes)),
                      str(len(group.segments)), str(len(group.axes)))
    console.print(table)
    blocked = Table(title=f"{len(analysis.blocked_sources)} blocked channel axes", title_justify="left")
    blocked.add_column("tensor")
    blocked.add_column("channels", justify="right")
    blocked.add_column("reason")
    for entry, record in analysis.blocked_sources:
        blocked.add_row(entry.name, str(entry.size), record.describe())
    console.print(blocked)
