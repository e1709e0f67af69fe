"""Terminal tables (rich).

Every cell and line is literal text: names from the model are never read as rich markup
(``conv1[/b]``), their control characters are printed as escapes (:func:`printable`), and when
the output is not a terminal the tables are as wide as their content, so no name is cut.
"""

from __future__ import annotations

from collections.abc import Sequence

from rich.cells import cell_len
from rich.console import Console
from rich.table import Table
from rich.text import Text

from graphprune.analysis import ChannelAnalysis
from graphprune.report.format import (
    environment_line,
    fidelity_meaning,
    fidelity_rows,
    human,
    human_bytes,
    number,
    printable,
    summary_rows,
)

_MAX_ROWS = 25
_PIPE_WIDTH = 1 << 16  # a pipe or file has no width: never wrap or cut a name there


def terminal_console(stderr: bool = False) -> Console:
    """A console for tables: the terminal's width on a terminal, unlimited width elsewhere."""
    console = Console(stderr=stderr)
    if console.is_terminal:
        return console
    return Console(stderr=stderr, width=_PIPE_WIDTH)


def _cell(value: object) -> Text:
    """A literal, printable table cell (no markup; folded, not cut, when the terminal is narrow)."""
    return Text(printable(value), overflow="fold")


def _row(table: Table, *cells: object) -> None:
    table.add_row(*(_cell(c) for c in cells))


def _table(title: str, *columns: str) -> Table:
    """A table whose first column is left-aligned and the others right-aligned (numbers)."""
    table = Table(title=Text(printable(title)), title_justify="left")
    for k, column in enumerate(columns):
        table.add_column(Text(printable(column)), justify="right" if k else "left",
                         overflow="fold")
    return table


def print_line(text: str, console: Console, style: str | None = None) -> None:
    """One literal line (control characters escaped, no markup, no highlighting)."""
    console.print(Text(printable(text), style=style or ""), soft_wrap=True)


def print_notices(notices: list[str], console: Console) -> None:
    """One line each (a measurement that was skipped, and why)."""
    for notice in notices:
        print_line(f"note: {notice}", console, style="yellow")


def print_warnings(warnings: Sequence[dict], console: Console) -> None:
    """One ``warning: ...`` line per warning dict (``code``, ``message``; see analysis.summary)."""
    for warning in warnings:
        print_line(f"warning: {warning['message']}", console, style="bold yellow")


def shapes_line(costs: dict) -> str:
    """``MACs counted at input=1x3x224x224`` and the counting notes, from a costs entry."""
    shapes = ", ".join(f"{name}={'x'.join(map(str, dims))}"
                       for name, dims in costs.get("shapes", {}).items())
    notes = "".join(f"; {note}" for note in costs.get("notes", []))
    return f"MACs counted at {shapes or 'the static shapes'}{notes}"


def print_summary(report: dict, console: Console) -> None:
    """Groups (largest first, at most 25 rows), totals, latency, fidelity and the oracle."""
    table = _table("Channel groups", "group", "tensors", "channels")
    rows = sorted(report["groups"], key=lambda g: -g["channels_before"])
    for group in rows[:_MAX_ROWS]:
        channels = f"{group['channels_before']} -> {group['channels_after']}"
        if group.get("kind") == "heads":
            channels += f" ({group['heads_before']} -> {group['heads_after']} heads"
            if group.get("query_heads_before", group["heads_before"]) != group["heads_before"]:
                channels += (f" KV, {group['query_heads_before']} -> "
                             f"{group['query_heads_after']} query")
            channels += ")"
        _row(table, group["name"], len(group["tensors"]), channels)
    if len(rows) > _MAX_ROWS:
        _row(table, f"... {len(rows) - _MAX_ROWS} more groups (see the JSON report)", "", "")
    console.print(table)
    totals = _table("Before and after", "", "before", "after", "after/before")
    for row in summary_rows(report["before"], report["after"]):
        _row(totals, *row)
    console.print(totals)
    print_line(shapes_line(report["before"]), console)
    fidelity = fidelity_rows(report.get("fidelity"))
    if fidelity:
        fid = _table("Fidelity (pruned vs original, worst output)", "metric", "value")
        for row in fidelity:
            _row(fid, *row)
        console.print(fid)
        if report.get("fidelity_meaning"):
            print_line(f"fidelity: {report['fidelity_meaning']}", console)
    oracle = report.get("oracle")
    if oracle:
        print_line(f"mask-equivalence oracle (pruned vs masked original, "
                   f"{oracle['batches']} batches): relative error "
                   f"{oracle['relative_error']:.2g}, tolerance {oracle['tolerance']:.0e}", console)
    compensation = report.get("compensation") or []
    for entry in compensation:
        print_line(f"compensation {entry['name']}: {_compensation_details(entry)}", console)
    if compensation:
        names = ",".join(e["name"] for e in compensation)
        print_line(f"oracle: skipped (compensated: {names})", console)
    if report.get("environment"):
        print_line(f"measured on {environment_line(report['environment'])}", console)


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
        _row(table, model["path"], human(model["params"]), human(model["macs"]),
             human_bytes(model["file_size"]), *latency, number(fidelity.get("rel_l2")),
             number(fidelity.get("cosine"), 6), "-" if top1 is None else f"{top1:.1%}")
    console.print(table)
    for model in models:
        print_line(f"{model['path']}: {shapes_line(model)}", console)
    print_line(f"measured on {environment_line(report['environment'])}", console)


def print_sweep(report: dict, console: Console) -> None:
    """One row per (setting, ratio): costs relative to the original, latency and fidelity."""
    table = _table("Sweep (x: relative to the original)", "setting", "ratio", "params", "MACs",
                   "MACs x", "CPU ms", "CPU x", "rel L2", "cosine", "top-1")
    for point in report["points"]:
        setting = point.get("setting", "")
        if "error" in point:
            _row(table, setting, f"{point['ratio']:g}", f"failed: {point['error']}", *[""] * 7)
            continue
        cpu = point["latency"].get("cpu")
        fidelity = point.get("fidelity") or {}
        top1 = fidelity.get("top1_agreement")
        _row(table, setting, f"{point['ratio']:g}", human(point["params"]),
             human(point["macs"]), f"{point['macs_ratio']:.3f}",
             number(cpu["median_ms"]) if cpu else "-",
             number(point["latency_ratio"].get("cpu"), 3), number(fidelity.get("rel_l2")),
             number(fidelity.get("cosine")), "-" if top1 is None else f"{top1:.0%}")
    console.print(table)
    if any(p.get("fidelity") for p in report["points"]):
        print_line(f"fidelity: {fidelity_meaning(report.get('environment'))}", console)


PLAIN_ROWS = 2000  # longer tables are printed as plain aligned text (rich: 8 s for 50k rows)


def _print_rows(console: Console, title: str, columns: Sequence[str], left: set[int],
                rows: Sequence[Sequence[object]]) -> None:
    """A table of ``rows`` (columns in ``left`` left-aligned, the others right-aligned).

    Up to :data:`PLAIN_ROWS` rows it is a rich table; longer ones are plain text with the same
    cells, a header line and columns two spaces apart.
    """
    if len(rows) <= PLAIN_ROWS:
        table = _table(title, *columns)
        for k, column in enumerate(table.columns):
            column.justify = "left" if k in left else "right"
        for row in rows:
            _row(table, *row)
        console.print(table)
        return
    cells = [[printable(c) for c in row] for row in rows]
    header = [printable(c) for c in columns]
    widths = [max(cell_len(header[k]), *(cell_len(r[k]) for r in cells))
              for k in range(len(columns))]

    def line(row: Sequence[str]) -> str:
        return "  ".join((c + " " * (w - cell_len(c))) if k in left else
                         (" " * (w - cell_len(c)) + c)
                         for k, (c, w) in enumerate(zip(row, widths, strict=True))).rstrip()

    text = "\n".join([printable(title), line(header), *(line(r) for r in cells)])
    console.print(Text(text), soft_wrap=True, highlight=False)


def print_analysis(analysis: ChannelAnalysis, console: Console) -> None:
    """Every group with its tensors, then every blocked source axis with its reason."""
    _print_rows(console, f"{len(analysis.groups)} prunable groups",
                ("#", "group", "channels", "segments", "tensors"), {1},
                [(g.id, g.name, len(g.classes), len(g.segments), len(g.axes))
                 for g in analysis.groups])
    _print_rows(console, f"{len(analysis.blocked_sources)} blocked channel axes",
                ("tensor", "channels", "reason"), {0, 2},
                [(entry.name, entry.size, record.describe())
                 for entry, record in analysis.blocked_sources])


def _compensation_details(entry: dict) -> str:
    """A pass report in one line: scalars as they are, per-layer lists by their length.

    The per-layer entries stay in the JSON report.
    """
    parts = []
    for key, value in entry.items():
        if key == "name":
            continue
        if isinstance(value, list | tuple) and value and isinstance(value[0], dict):
            parts.append(f"{key} {len(value)}")
        elif isinstance(value, float):
            parts.append(f"{key} {value:.3g}")
        else:
            parts.append(f"{key} {value}")
    return ", ".join(parts)
