"""Terminal tables (rich)."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from graphprune.analysis import ChannelAnalysis
from graphprune.report.format import (
    environment_line,
    fidelity_rows,
    human,
    human_bytes,
    number,
    summary_rows,
)

_MAX_ROWS = 25


def _table(title: str, *columns: str) -> Table:
    """A table whose first column is left-aligned and the others right-aligned (numbers)."""
    table = Table(title=title, title_justify="left")
    for k, column in enumerate(columns):
        table.add_column(column, justify="right" if k else "left")
    return table


def print_notices(notices: list[str], console: Console) -> None:
    """One line each (a measurement that was skipped, and why)."""
    for notice in notices:
        console.print(f"note: {notice}", style="yellow", markup=False, highlight=False,
                      soft_wrap=True)


def print_summary(report: dict, console: Console) -> None:
    """Groups (largest first, at most 25 rows), totals, latency, fidelity and the oracle."""
    table = Table(title="Channel groups", title_justify="left")
    table.add_column("group")
    table.add_column("tensors", justify="right")
    table.add_column("channels", justify="right")
    rows = sorted(report["groups"], key=lambda g: -g["channels_before"])
    for group in rows[:_MAX_ROWS]:
        table.add_row(group["name"], str(len(group["tensors"])),
                      f"{group['channels_before']} -> {group['channels_after']}")
    if len(rows) > _MAX_ROWS:
        table.add_row(f"... {len(rows) - _MAX_ROWS} more groups (see the JSON report)", "", "")
    console.print(table)
    totals = _table("Before and after", "", "before", "after", "after/before")
    for row in summary_rows(report["before"], report["after"]):
        totals.add_row(*row)
    console.print(totals)
    fidelity = fidelity_rows(report.get("fidelity"))
    if fidelity:
        fid = _table("Fidelity (pruned vs original, worst output)", "metric", "value")
        for row in fidelity:
            fid.add_row(*row)
        console.print(fid)
    oracle = report.get("oracle")
    if oracle:
        console.print(f"mask-equivalence oracle (pruned vs masked original, "
                      f"{oracle['batches']} batches): relative error "
                      f"{oracle['relative_error']:.2g}, tolerance {oracle['tolerance']:.0e}",
                      markup=False, highlight=False, soft_wrap=True)
    if report.get("environment"):
        console.print(f"measured on {environment_line(report['environment'])}", markup=False,
                      highlight=False)


def print_bench(report: dict, console: Console) -> None:
    """One row per model: costs, file size, latency per provider, fidelity to the first."""
    models = report["models"]
    providers = sorted({p for m in models for p in m["latency"]})
    columns = ["model", "params", "MACs", "file size"]
    columns += [f"{p} {k} (ms)" for p in providers for k in ("median", "p90")]
    columns += ["rel. L2 vs first", "cosine vs first", "top-1 vs first"]
    table = _table("Models", *columns)
    for model in models:
        latency = [number(model["latency"][p][f"{k}_ms"]) if p in model["latency"] else "-"
                   for p in providers for k in ("median", "p90")]
        fidelity = model["fidelity_to_first"] or {}
        top1 = fidelity.get("top1_agreement")
        table.add_row(model["path"], human(model["params"]), human(model["macs"]),
                      human_bytes(model["file_size"]), *latency, number(fidelity.get("rel_l2")),
                      number(fidelity.get("cosine"), 6), "-" if top1 is None else f"{top1:.1%}")
    console.print(table)
    console.print(f"measured on {environment_line(report['environment'])}", markup=False,
                  highlight=False)


def print_sweep(report: dict, console: Console) -> None:
    """One row per ratio: costs relative to the original, latency and fidelity."""
    table = _table("Sweep (x: relative to the original)", "ratio", "params", "MACs", "MACs x",
                   "CPU ms", "CPU x", "rel L2", "cosine", "top-1")
    for point in report["points"]:
        if "error" in point:
            table.add_row(f"{point['ratio']:g}", f"failed: {point['error']}", *[""] * 7)
            continue
        cpu = point["latency"].get("cpu")
        fidelity = point.get("fidelity") or {}
        top1 = fidelity.get("top1_agreement")
        table.add_row(f"{point['ratio']:g}", human(point["params"]), human(point["macs"]),
                      f"{point['macs_ratio']:.3f}", number(cpu["median_ms"]) if cpu else "-",
                      number(point["latency_ratio"].get("cpu"), 3), number(fidelity.get("rel_l2")),
                      number(fidelity.get("cosine")), "-" if top1 is None else f"{top1:.0%}")
    console.print(table)


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
    blocked = Table(title=f"{len(analysis.blocked_sources)} blocked channel axes",
                    title_justify="left")
    blocked.add_column("tensor")
    blocked.add_column("channels", justify="right")
    blocked.add_column("reason")
    for entry, record in analysis.blocked_sources:
        blocked.add_row(entry.name, str(entry.size), record.describe())
    console.print(blocked)
