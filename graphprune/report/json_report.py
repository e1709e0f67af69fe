"""The JSON reports: prune (beside the pruned model), bench, and sweep.

The prune report's ``before`` and ``after`` hold parameters, MACs (total, per op type, per node),
the input ``shapes`` the MACs were counted at and ``notes`` on inexact counts, file size and
latency per execution provider; ``fidelity`` compares the outputs of the pruned model with the
original's on the same inputs and ``fidelity_meaning`` says on which (random inputs measure the
output change, never task accuracy: a notice says so); ``oracle`` is the mask-equivalence check
of the written model (relative error against its tolerance, None when skipped); ``compensation``
lists the passes run (the oracle is skipped after one: compensation departs from the masked
original by design); ``environment`` says what it was measured on.
"""

from __future__ import annotations

import collections
from pathlib import Path
from typing import TYPE_CHECKING

import onnx_ir as ir

from graphprune.analysis import ChannelAnalysis
from graphprune.analysis.summary import PruneWarning
from graphprune.bench.measure import Measurement
from graphprune.pipeline import PruneResult
from graphprune.report.costs import Costs, file_size
from graphprune.report.files import write_json
from graphprune.report.format import calibration_notices, fidelity_meaning, fidelity_notices

if TYPE_CHECKING:
    from graphprune.verify.oracle import OracleResult

__all__ = ["analysis_report", "bench_report", "blocked_summary", "build_report", "html_path",
           "measurement_notices", "model_entry", "report_path", "write_json"]


def report_path(output: Path) -> Path:
    """``<output stem>.report.json`` beside the output model."""
    return output.with_name(f"{output.stem}.report.json")


def html_path(output: Path) -> Path:
    """``<output stem>.report.html`` beside the output model."""
    return output.with_name(f"{output.stem}.report.html")


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


def model_entry(costs: Costs, path: Path, measurement: Measurement | None, index: int) -> dict:
    """Costs, file size and latency by provider of the ``index``-th measured model."""
    latency = measurement.latency[index] if measurement else {}
    return {
        **costs.as_dict(),
        "file_size": file_size(path),
        "latency": {provider: stats.as_dict() for provider, stats in latency.items()},
    }


def measurement_notices(measurement: Measurement | None, fidelity: list[dict | None]) -> list[str]:
    """The measurement's notices, and that ``fidelity`` on random inputs is not accuracy."""
    if measurement is None:
        return []
    return [*measurement.notices, *fidelity_notices(measurement.environment, fidelity)]


def _ratio(after: float | None, before: float | None) -> float | None:
    return after / before if after is not None and before else None


def _ratios(before: dict, after: dict) -> dict:
    ratios = {key: _ratio(after[key], before[key]) for key in ("params", "macs", "file_size")}
    for provider, stats in after["latency"].items():
        if provider in before["latency"]:
            ratios[f"latency_{provider}"] = _ratio(stats["median_ms"],
                                                   before["latency"][provider]["median_ms"])
    return ratios


def build_report(result: PruneResult, *, source: Path, output: Path, settings: dict,
                 measurement: Measurement | None = None,
                 oracle: OracleResult | None = None) -> dict:
    """The prune report; ``measurement`` (original first, pruned second) adds latency/fidelity."""
    before = model_entry(result.before, source, measurement, 0)
    after = model_entry(result.after, output, measurement, 1)
    fidelity = measurement.fidelity[1] if measurement else None
    return {
        "input": str(source),
        "output": str(output),
        "settings": settings,
        "before": before,
        "after": after,
        "ratios": _ratios(before, after),
        "fidelity": fidelity,
        "fidelity_meaning": fidelity_meaning(measurement.environment) if fidelity else None,
        "oracle": oracle.as_dict() if oracle is not None else None,
        "compensation": result.compensation,  # one report per pass; the oracle is then skipped
        "environment": measurement.environment if measurement else None,
        "notices": [*measurement_notices(measurement, [fidelity]),
                    *calibration_notices(settings.get("calibration"),
                                         measurement.environment if measurement else None)],
        "warnings": [w.as_dict() for w in result.warnings],
        "groups": result.groups,
        "resized_io": result.resized_io,
        "blocked": blocked_summary(result.analysis),
    }


def bench_report(costs: list[Costs], measurement: Measurement) -> dict:
    """``graphprune bench``: every model's costs, file size, latency and fidelity to the first."""
    models = []
    for index, (path, cost) in enumerate(zip(measurement.paths, costs, strict=True)):
        entry = {"path": str(path), **model_entry(cost, path, measurement, index)}
        entry["fidelity_to_first"] = measurement.fidelity[index]
        models.append(entry)
    return {"environment": measurement.environment,
            "notices": measurement_notices(measurement, list(measurement.fidelity[1:])),
            "models": models}


def _analysis_group(analysis: ChannelAnalysis, group) -> dict:
    tensors = []
    for index in group.axes:
        entry = analysis.table.axes[index]
        tensors.append({"tensor": entry.value.name, "axis": entry.axis,
                        "kind": "parameter" if entry.constant else "activation",
                        "size": entry.size})
    return {"id": group.id, "name": group.name, "root": group.root.name,
            "channels": group.root.size, "classes": len(group.classes),
            "segments": [len(s) for s in group.segments], "tensors": tensors}


def analysis_report(analysis: ChannelAnalysis, *, source: Path, exclude: list[str],
                    warnings: list[PruneWarning]) -> dict:
    """``graphprune analyze --json``: node and op counts, groups with their tensors, blocked axes.

    ``nodes`` counts the main graph (what the analysis walks); ``nodes_in_subgraphs`` the rest.
    """
    graph = analysis.model.graph
    blocked = blocked_summary(analysis)
    every = list(ir.traversal.RecursiveGraphIterator(graph))
    ops = collections.Counter(
        f"{n.domain}::{n.op_type}" if n.domain not in ("", "ai.onnx") else n.op_type
        for n in every)
    return {
        "input": str(source),
        "settings": {"exclude": list(exclude)},
        "nodes": len(graph),
        "nodes_in_subgraphs": len(every) - len(graph),
        "op_counts": dict(ops.most_common()),
        "warnings": [w.as_dict() for w in warnings],
        "groups": [_analysis_group(analysis, g) for g in analysis.groups],
        "blocked_reasons": dict(collections.Counter(b["reason"] for b in blocked).most_common()),
        "blocked": blocked,
    }
