"""The JSON report written beside the pruned model."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from graphprune.analysis import ChannelAnalysis
from graphprune.pipeline import PruneResult


def report_path(output: Path) -> Path:
    """``<output stem>.report.json`` beside the output model."""
    return output.with_name(f"{output.stem}.report.json")


def blocked_summary(analysis: ChannelAnalysis) -> list[dict]:
    """Source channel axes that stay whole, with the reason and the op that blocked them."""
    return [
        {
            "tensor": entry.value.name,
            "axis": entry.axis,
            "channels": entry.size,
            "reason": blocked.reason.value,
            "node": blocked.node,
            "op_type": blocked.op_type,
            "detail": blocked.detail,
        }
        for entry, blocked in analysis.blocked_sources
    ]


def build_report(result: PruneResult, *, source: Path, output: Path, settings: dict) -> dict:
    return {
        "input": str(source),
        "output": str(output),
        "settings": settings,
        "before": result.before.as_dict(),
        "after": result.after.as_dict(),
        "ratios": {
            "params": result.after.params / max(result.before.params, 1),
            "macs": result.after.macs / max(result.before.macs, 1),
        },
        "groups": result.groups,
        "blocked": blocked_summary(result.analysis),
    }


def write_json(data: dict, path: Path) -> None:
    """Writes ``data`` to ``path`` atomically."""
    fd, tmp = tempfile.mkstemp(prefix=".graphprune-", suffix=".json", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(data, handle, indent=1)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
