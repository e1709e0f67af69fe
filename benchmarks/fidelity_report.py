"""Tables and the plot of the fidelity benchmark's rows (``benchmarks/fidelity.py``).

A row is one model pruned (or simplified) one way: ``target``, ``criterion``, ``compensate``,
``allocation`` (``uniform`` at ``ratio``; ``target_macs`` at the ``macs_target`` level,
criterion-ranked; ``uniform@macs``: uniform, its ratio searched to meet ``macs_target``;
``simplifier``), ``round_to``, ``extra`` (further prune keywords), then ``macs_ratio``,
``params_ratio``, optional ``latency_ratio``, the task ``metric`` and ``score`` and graded
fidelity (``det_iou``, ``rec_agree``, ``cls_agree``, ``top5``, ``cos_min``), or ``error``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

GRADED = ("det_iou", "rec_agree", "cls_agree", "top5", "cos_min")
_LITERAL = {"parse_math": False, "usetex": False}


def label(row: dict) -> str:
    """``fluctuation/stats target rt=1 heads=0.25`` (criterion/compensation, allocation, ...)."""
    if row.get("allocation") == "simplifier":
        return row.get("tool", row["criterion"])
    if row["criterion"] == "original":
        return "original"
    extra = " ".join(f"{k}={v}" for k, v in row.get("extra", {}).items())
    allocation = row.get("allocation", "uniform")
    return " ".join(p for p in (f"{row['criterion']}/{row.get('compensate', 'none')}",
                                allocation, f"rt={row['round_to']}", extra) if p)


def _graded(row: dict) -> str:
    return " ".join(f"{k}={row[k]:.3f}" for k in GRADED if row.get(k) is not None)


def _num(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def table(rows: Sequence[dict]) -> str:
    """The rows as fixed-width text, one line each."""
    lines = [f"{'model':<8} {'setting':<44} {'ratio':>5} {'MACs x':>7} {'params x':>8} "
             f"{'lat x':>6} {'task':>7}  graded"]
    for r in rows:
        head = f"{r['target']:<8} {label(r):<44} {r.get('ratio', 0):>5}"
        if "error" in r:
            lines.append(f"{head}  error: {r['error']}")
            continue
        lines.append(f"{head} {r['macs_ratio']:>7.3f} {r['params_ratio']:>8.3f} "
                     f"{_num(r.get('latency_ratio')):>6} {r['score']:>7.3f}  {_graded(r)}")
    return "\n".join(lines)


def markdown(rows: Sequence[dict]) -> str:
    """The rows as a GitHub markdown table (for the README)."""
    lines = ["| model | criterion / compensation | allocation | round_to | ratio | MACs × | "
             "params × | latency × | task metric | score | graded |",
             "|---|---|---|---:|---:|---:|---:|---:|---|---:|---|"]
    for r in rows:
        setting = (r.get("tool", r["criterion"]) if r.get("allocation") == "simplifier"
                   else "original" if r["criterion"] == "original"
                   else f"{r['criterion']} / {r.get('compensate', 'none')}")
        extra = " ".join(f"{k}={v}" for k, v in r.get("extra", {}).items())
        allocation = f"{r.get('allocation', 'uniform')} {extra}".strip()
        head = (f"| {r['target']} | {setting} | {allocation} | {r['round_to']} | "
                f"{r.get('ratio', 0):g} |")
        if "error" in r:
            lines.append(f"{head} - | - | - | - | error: {r['error'].replace('|', '/')} | |")
            continue
        lines.append(f"{head} {r['macs_ratio']:.3f} | {r['params_ratio']:.3f} | "
                     f"{_num(r.get('latency_ratio'))} | {r['metric']} | {r['score']:.3f} | "
                     f"{_graded(r)} |")
    return "\n".join(lines)


def plot(rows: Sequence[dict], path: Path) -> None:
    """Task score against MACs, one panel per model, one curve per setting.

    Curves start at the original (MACs 1); simplifier rows are single crosses.
    """
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    originals = {r["target"]: r["score"] for r in rows if r["criterion"] == "original"}
    done = [r for r in rows if r["criterion"] != "original" and "error" not in r]
    targets = list(dict.fromkeys(r["target"] for r in done))
    figure = Figure(figsize=(6.5 * max(1, len(targets)), 5), layout="constrained")
    axes = figure.subplots(1, max(1, len(targets)), squeeze=False)[0]
    for ax, target in zip(axes, targets, strict=False):
        mine = [r for r in done if r["target"] == target]
        start = originals.get(target, originals.get("det+rec" if target in ("det", "rec")
                                                    else target))
        curves: dict[str, list[tuple[float, float]]] = {}
        for r in mine:
            if r.get("allocation") == "simplifier":
                ax.scatter([r["macs_ratio"]], [r["score"]], marker="X", s=90, zorder=3,
                           label=label(r))
                continue
            curves.setdefault(label(r), []).append((r["macs_ratio"], r["score"]))
        for name, points in curves.items():
            xs, ys = zip(*sorted(points, reverse=True), strict=True)
            first = [1.0] if start is not None else []
            ax.plot([*first, *xs], [*([start] if first else []), *ys], marker="o", label=name)
        ax.set(title=f"{target} pruned", xlabel="MACs (x original)",
               ylabel=mine[0]["metric"].replace("_", " "), ylim=(-0.03, 1.03))
        ax.invert_xaxis()
        ax.grid(alpha=0.3)
        legend = ax.legend(fontsize=7)
        for text in legend.get_texts():
            text.set(**_LITERAL)
    figure.savefig(path, dpi=110)
