"""The HTML reports of ``graphprune MODEL`` and ``graphprune sweep`` (self-contained pages)."""

from __future__ import annotations

from graphprune.report import plots
from graphprune.report.format import (
    environment_line,
    fidelity_meaning,
    fidelity_rows,
    human,
    human_bytes,
    number,
    summary_rows,
)
from graphprune.report.html import image, page, paragraph, section, table

_MAX_BLOCKED_ROWS = 200


def _notices(report: dict) -> list[str]:
    """Skipped measurements, then the warnings (nothing pruned, unmatched --exclude, ...)."""
    warnings = [f"warning: {w['message']}" for w in report.get("warnings", [])]
    return [paragraph(n, "notice") for n in [*report.get("notices", []), *warnings]]


def _fidelity_section(fidelity: dict | None, meaning: str | None = None) -> str:
    if not fidelity:
        return section("Fidelity", paragraph("not measured (--no-bench)"))
    outputs = fidelity.get("outputs", {})
    rows = [(name, number(m.get("rel_l2")), number(m.get("cosine"), 6),
             number(m.get("cosine_min"), 6),
             "-" if m.get("top1_agreement") is None else f"{m['top1_agreement']:.1%}",
             number(m.get("max_abs")), m.get("samples", m.get("error", "")))
            for name, m in outputs.items()]
    return section(
        "Fidelity (pruned vs original, same inputs)",
        paragraph(f"Fidelity here is the {meaning}.") if meaning else "",
        table(["metric", "worst output"], fidelity_rows(fidelity)),
        table(["output", "relative L2", "cosine (mean)", "cosine (min)", "top-1 agreement",
               "max |diff|", "samples"], rows),
    )


def _blocked_section(blocked: list[dict]) -> str:
    rows = [(b["tensor"], b["channels"], b["reason"], b["op_type"] or "", b["node"] or "")
            for b in blocked[:_MAX_BLOCKED_ROWS]]
    more = len(blocked) - len(rows)
    return section(f"Channel axes left whole ({len(blocked)})",
                   table(["tensor", "channels", "reason", "op", "node"], rows),
                   paragraph(f"... {more} more in the JSON report") if more > 0 else "")


def prune_html(report: dict) -> str:
    """The page for one prune: summary, fidelity, plots, blocked channels."""
    before, after = report["before"], report["after"]
    settings = ", ".join(f"{k}={v}" for k, v in report["settings"].items())
    sections = [
        paragraph(f"{report['input']} -> {report['output']}; {settings}"),
        paragraph(f"Measured on: {environment_line(report.get('environment'))}"),
        *_notices(report),
        section("Before and after", table(["", "before", "after", "after/before"],
                                          summary_rows(before, after))),
        _fidelity_section(report.get("fidelity"), report.get("fidelity_meaning")),
        section("Channels kept per layer", image(plots.channels_per_group(report["groups"]),
                                                 "channels per group")),
        section("MACs", image(plots.macs_by_op(before["macs_by_op"], after["macs_by_op"]),
                              "MACs per op type"),
                image(plots.macs_per_node(before["nodes"], after["nodes"]), "MACs per node")),
        section("Latency distributions",
                image(plots.latency_distributions(before["latency"], after["latency"]),
                      "latency distributions") or paragraph("not measured")),
        _blocked_section(report["blocked"]),
    ]
    return page(f"graphprune report: {report['output']}", sections)


def _sweep_rows(report: dict) -> list[tuple]:
    rows = []
    for point in report["points"]:
        setting = point.get("setting", "")
        if "error" in point:
            rows.append((setting, point["ratio"], "failed: " + point["error"], *[""] * 7))
            continue
        cpu = point["latency"].get("cpu")
        fidelity = point.get("fidelity") or {}
        top1 = fidelity.get("top1_agreement")
        rows.append((setting, point["ratio"], human(point["params"]), human(point["macs"]),
                     f"{point['macs_ratio']:.3f}", human_bytes(point["file_size"]),
                     number(cpu["median_ms"]) if cpu else "-",
                     number(fidelity.get("rel_l2")), number(fidelity.get("cosine"), 6),
                     "-" if top1 is None else f"{top1:.1%}"))
    return rows


def sweep_curves(points: list[dict]) -> dict[str, list[dict]]:
    """The points that were pruned, by setting label (in sweep order), each by ratio."""
    curves: dict[str, list[dict]] = {}
    for point in points:
        if "error" not in point:
            curves.setdefault(point.get("setting", ""), []).append(point)
    return {label: sorted(ps, key=lambda p: p["ratio"]) for label, ps in curves.items()}


def sweep_html(report: dict) -> str:
    """The page for a sweep: the points, then costs, latency and fidelity of every setting."""
    curves = sweep_curves(report["points"])
    original = report["original"]
    measured = {label: [p for p in ps if p.get("fidelity") and "error" not in p["fidelity"]]
                for label, ps in curves.items()}
    measured = {label: ps for label, ps in measured.items() if ps}
    cpu = original["latency"].get("cpu")
    latency = f"{number(cpu['median_ms'])} ms CPU median" if cpu else "latency not measured"
    fidelity = ([paragraph(f"Fidelity here is the {fidelity_meaning(report.get('environment'))}."),
                 image(plots.sweep_fidelity(measured), "fidelity against MACs")]
                if measured else [paragraph("not measured")])
    sections = [
        paragraph(f"{report['input']}; original: {human(original['params'])} params, "
                  f"{human(original['macs'])} MACs, {latency}"),
        paragraph(f"Measured on: {environment_line(report.get('environment'))}"),
        *_notices(report),
        section("Points", table(["setting", "ratio", "params", "MACs", "MACs x", "file size",
                                 "CPU median (ms)", "relative L2", "cosine", "top-1 agreement"],
                                _sweep_rows(report))),
        section("Fidelity against MACs", *fidelity),
        section("Costs", image(plots.sweep_costs(curves), "costs against ratio")),
        section("Latency", image(plots.sweep_latency(curves, original),
                                 "latency against ratio") or paragraph("not measured")),
    ]
    return page(f"graphprune sweep: {report['input']}", sections)
