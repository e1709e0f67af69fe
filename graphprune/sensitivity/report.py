"""The sensitivity table in the terminal: one row per group, the output change per ratio."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table
from rich.text import Text

from graphprune.report.format import printable


def _change(trial: dict) -> str:
    if trial.get("error"):
        return "failed"
    rel, cos = trial.get("rel_l2"), trial.get("cosine")
    return f"{rel:.3g} / {cos:.4f}" if rel is not None and cos is not None else "-"


def print_sensitivity(table: dict, console: Console) -> None:
    """Relative L2 / cosine to the original per group and ratio, then the wall time."""
    ratios = table["ratios"]
    view = Table(title=Text(f"sensitivity ({table['criterion']}, round-to "
                            f"{table['round_to']}): relative L2 / cosine to the original"),
                 title_justify="left")
    for k, column in enumerate(["#", "group", "channels", *(f"ratio {r:g}" for r in ratios)]):
        view.add_column(Text(column), justify="left" if k == 1 else "right", overflow="fold")
    rows: dict[int, dict[float, dict]] = {}
    for trial in table["trials"]:
        rows.setdefault(trial["index"], {})[trial["ratio"]] = trial
    for index, group in enumerate(table["groups"]):
        cells = [str(index), printable(group["name"]), str(group["channels"])]
        for ratio in ratios:
            trial = rows.get(index, {}).get(ratio)
            cells.append("-" if trial is None else
                         f"{_change(trial)} ({trial.get('channels_after', '?')})")
        view.add_row(*(Text(c) for c in cells))
    console.print(view)
    run = table["executor"]
    where = "Ray actors" if run["kind"] == "ray" else "local processes"
    console.print(Text(f"{len(table['trials'])} trials on {run['workers']} {where} "
                       f"in {run['seconds']:.1f} s (calibration: "
                       f"{printable(table['calibration']['origin'])})"), soft_wrap=True)
