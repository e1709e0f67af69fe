"""Writing the report files: every page is rendered first, then each file written atomically."""

from __future__ import annotations

from pathlib import Path

from graphprune.report.files import write_json, write_text
from graphprune.report.html_report import prune_html, sweep_html
from graphprune.report.json_report import html_path, report_path


def prune_report_paths(output: Path) -> list[Path]:
    """``<output stem>.report.json`` and ``.report.html`` beside ``output``."""
    return [report_path(output), html_path(output)]


def sweep_report_paths(out_dir: Path, model: Path) -> list[Path]:
    """``<out_dir>/<model stem>.sweep.json`` and ``.sweep.html``."""
    return [out_dir / f"{model.stem}.sweep.json", out_dir / f"{model.stem}.sweep.html"]


def write_prune_reports(report: dict, output: Path) -> list[Path]:
    """``<output stem>.report.json`` and ``.report.html``; returns their paths.

    Raises OutputError when a file cannot be written (no space left, say).
    """
    page = prune_html(report)
    paths = prune_report_paths(output)
    write_json(report, paths[0])
    write_text(page, paths[1])
    return paths


def write_sweep_reports(report: dict, out_dir: Path, model: Path) -> list[Path]:
    """``<out_dir>/<model stem>.sweep.json`` and ``.sweep.html``; returns their paths."""
    page = sweep_html(report)
    paths = sweep_report_paths(out_dir, model)
    write_json(report, paths[0])
    write_text(page, paths[1])
    return paths
