"""Report plots as base64 PNGs (matplotlib, no pyplot state), so the HTML needs no network."""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence

import numpy as np

from graphprune.report.format import printable

BEFORE, AFTER = "#9bb7d4", "#1f4e79"
_MAX_LABELS = 60
# Labels made from the model (node names, op types) are literal text: ``conv$\\x{$`` is a name,
# not mathtext to parse (a parse error would fail the report after the model is written).
_LITERAL = {"parse_math": False, "usetex": False}


def _labels(names: Sequence[str]) -> list[str]:
    return [printable(n) for n in names]
_MAX_BARS = 200  # longer per-layer series are summed over runs of consecutive entries


def _values(values: Sequence[float | None]) -> np.ndarray:
    """Floats with None as NaN (a gap in the line)."""
    return np.array([np.nan if v is None else v for v in values], dtype=float)


def _figure(width: float, height: float, rows: int = 1, cols: int = 1):
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=100, layout="constrained")
    return figure, figure.subplots(rows, cols, squeeze=False)


def _png(figure) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _binned(values: Sequence[float], bins: int) -> np.ndarray:
    """``values`` summed over ``bins`` runs of consecutive entries (as equal as can be)."""
    values = np.asarray(values, dtype=float)
    if len(values) <= bins:
        return values
    starts = (np.arange(bins) * len(values)) // bins
    return np.add.reduceat(values, starts)


def _runs_note(count: int, what: str) -> str:
    """Title suffix saying how a series of ``count`` entries was summed into bars."""
    if count <= _MAX_BARS:
        return ""
    return f", summed over {_MAX_BARS} runs of ~{count / _MAX_BARS:.0f} consecutive {what}"


def _legend_place(bars: int) -> str:
    """A legend place: the "best" search is slow (and warns) over hundreds of bars."""
    return "best" if bars <= _MAX_LABELS else "upper right"


def _bar_pairs(ax, labels: Sequence[str], before: Sequence[float], after: Sequence[float]) -> None:
    x = np.arange(len(labels))
    ax.bar(x - 0.2, before, 0.4, color=BEFORE, label="before")
    ax.bar(x + 0.2, after, 0.4, color=AFTER, label="after")
    if len(labels) <= _MAX_LABELS:
        ax.set_xticks(x, _labels(labels), rotation=90, fontsize=6 if len(labels) > 20 else 8,
                      **_LITERAL)
    ax.legend(loc=_legend_place(len(labels)))


def _short(name: str) -> str:
    """A node name for a tick label: path parts that are not a prefix of the next, no op type.

    ``/layer1/layer1.0/conv1/Conv`` -> ``layer1.0/conv1``.
    """
    parts = [p for p in name.split("/") if p]
    parts = parts[:-1] if len(parts) > 1 else parts
    following = [*parts[1:], ""]
    return "/".join(p for p, after in zip(parts, following, strict=True) if not after.startswith(p))


def channels_per_group(groups: Sequence[dict]) -> str:
    """Channels before and after of every group, in graph order.

    Above ``_MAX_BARS`` groups, each bar sums a run of consecutive groups.
    """
    figure, axes = _figure(12, 4.5)
    ax = axes[0][0]
    many = len(groups) > _MAX_BARS
    labels = [""] * _MAX_BARS if many else [_short(g["name"]) for g in groups]
    _bar_pairs(ax, labels, _binned([g["channels_before"] for g in groups], _MAX_BARS),
               _binned([g["channels_after"] for g in groups], _MAX_BARS))
    ax.set_ylabel("channels")
    ax.set_title(f"Channels kept per layer ({len(groups)} groups"
                 f"{_runs_note(len(groups), 'groups')})")
    return _png(figure)


def macs_by_op(before: dict[str, int], after: dict[str, int]) -> str:
    """MACs per op type, before and after (in millions)."""
    ops = sorted(set(before) | set(after), key=lambda op: -before.get(op, 0))
    figure, axes = _figure(6, 3.5)
    ax = axes[0][0]
    _bar_pairs(ax, ops, [before.get(op, 0) / 1e6 for op in ops],
               [after.get(op, 0) / 1e6 for op in ops])
    ax.set_xticks(range(len(ops)), _labels(ops), rotation=0, **_LITERAL)
    for container in ax.containers:
        ax.bar_label(container, fmt="%.4g", fontsize=7)
    ax.set_ylabel("MMACs")
    ax.set_title("MACs per op type")
    return _png(figure)


def macs_per_node(before: Sequence[dict], after: Sequence[dict]) -> str:
    """MACs of every node with MACs, in graph order, before and after (by node name).

    Above ``_MAX_BARS`` nodes, each bar sums a run of consecutive nodes.
    """
    after_by_name = {n["name"]: n["macs"] for n in after}
    nodes = [n for n in before if n["macs"]]
    figure, axes = _figure(12, 3.5)
    ax = axes[0][0]
    macs_before = _binned([n["macs"] / 1e6 for n in nodes], _MAX_BARS)
    macs_after = _binned([after_by_name.get(n["name"], 0) / 1e6 for n in nodes], _MAX_BARS)
    x = np.arange(len(macs_before))
    ax.bar(x, macs_before, 0.8, color=BEFORE, label="before")
    ax.bar(x, macs_after, 0.5, color=AFTER, label="after")
    ax.set_xlabel("node (graph order)")
    ax.set_ylabel("MMACs")
    ax.set_title(f"MACs per node{_runs_note(len(nodes), 'nodes')}")
    ax.legend(loc=_legend_place(len(x)))
    return _png(figure)


def latency_distributions(before: dict[str, dict], after: dict[str, dict]) -> str | None:
    """Per provider: the latency samples of before and after as box plots with every sample."""
    providers = [p for p in before if p in after]
    if not providers:
        return None
    figure, axes = _figure(5 * len(providers), 3.8, 1, len(providers))
    rng = np.random.default_rng(0)
    for ax, provider in zip(axes[0], providers, strict=True):
        samples = [before[provider]["samples_ms"], after[provider]["samples_ms"]]
        ax.boxplot(samples, showfliers=False, widths=0.5)
        for k, (values, color) in enumerate(zip(samples, (BEFORE, AFTER), strict=True), start=1):
            ax.scatter(k + rng.uniform(-0.15, 0.15, len(values)), values, s=6, color=color,
                       alpha=0.6)
        ax.set_xticks([1, 2], ["before", "after"])
        ax.set_ylabel("ms per run")
        top = 1.15 * max(np.percentile(s, 99) for s in samples)  # a stray spike hides the boxes
        ax.set_ylim(0, top)
        hidden = sum(int(np.sum(np.asarray(s) > top)) for s in samples)
        note = f", {hidden} above the axis" if hidden else ""
        ax.set_title(f"{provider.upper()} latency ({len(samples[0])} runs each{note})")
    return _png(figure)


Curves = dict[str, list[dict]]  # setting label -> its points, in ratio order


def _legend(ax, **kwargs) -> None:
    """A legend whose labels (setting names) are literal text, never mathtext."""
    legend = ax.legend(**kwargs)
    for text in legend.get_texts():
        text.set(**_LITERAL)


def sweep_costs(curves: Curves) -> str:
    """MACs and params relative to the original against the pruning ratio, per setting."""
    figure, axes = _figure(6, 3.8)
    ax = axes[0][0]
    many = len(curves) > 1
    for label, points in curves.items():
        ratios = [p["ratio"] for p in points]
        for key, marker in (("macs_ratio", "o"), ("params_ratio", "s"), ("file_size_ratio", "^")):
            if many and key == "file_size_ratio":
                continue
            name = key.replace("_ratio", "")
            ax.plot(ratios, [p[key] for p in points], marker=marker,
                    label=f"{label}: {name}" if many else name)
    ax.set_xlabel("pruning ratio")
    ax.set_ylabel("after / before")
    ax.set_ylim(0, 1.05)
    ax.set_title("Costs against ratio")
    ax.grid(alpha=0.3)
    _legend(ax, fontsize=7 if many else None)
    return _png(figure)


def sweep_latency(curves: Curves, original: dict) -> str | None:
    """Median latency (bars to p90) against the ratio per setting, the original as a line."""
    providers = list(original["latency"])
    if not providers:
        return None
    figure, axes = _figure(5 * len(providers), 3.8, 1, len(providers))
    many = len(curves) > 1
    for ax, provider in zip(axes[0], providers, strict=True):
        for label, points in curves.items():
            ratios = [p["ratio"] for p in points]
            medians = np.array([p["latency"][provider]["median_ms"] for p in points])
            p90 = np.array([p["latency"][provider]["p90_ms"] for p in points])
            ax.errorbar(ratios, medians, yerr=[np.zeros_like(p90), p90 - medians], marker="o",
                        capsize=3, color=None if many else AFTER,
                        label=f"{label} (median, bar to p90)" if many
                        else "pruned (median, bar to p90)")
        ax.axhline(original["latency"][provider]["median_ms"], color=BEFORE, linestyle="--",
                   label="original median")
        ax.set_xlabel("pruning ratio")
        ax.set_ylabel("ms per run")
        ax.set_ylim(bottom=0)
        ax.set_title(f"{provider.upper()} latency against ratio")
        ax.grid(alpha=0.3)
        _legend(ax, fontsize=7 if many else None)
    return _png(figure)


_MARKERS = "os^Dv<>p"
_LINES = ("-", "--", ":", "-.")
_FIDELITY_PANELS = (("rel_l2", "relative L2 error (lower is closer)", 0.0),
                    ("cosine", "cosine similarity", 1.0),
                    ("top1_agreement", "top-1 agreement", 1.0))


def sweep_fidelity(curves: Curves) -> str:
    """Fidelity against MACs (x original), one curve per setting, one panel per metric.

    Every curve starts at the original (MACs 1: no error, cosine and agreement 1); the top-1
    panel is drawn only where some output is classifier-shaped.
    """
    panels = [(key, title, perfect) for key, title, perfect in _FIDELITY_PANELS
              if any(p["fidelity"].get(key) is not None for ps in curves.values() for p in ps)]
    figure, axes = _figure(4.6 * len(panels), 4.0, 1, len(panels))
    for ax, (key, title, perfect) in zip(axes[0], panels, strict=True):
        for k, (label, points) in enumerate(curves.items()):
            ordered = sorted(points, key=lambda p: -p["macs_ratio"])
            ax.plot([1.0, *(p["macs_ratio"] for p in ordered)],
                    _values([perfect, *(p["fidelity"].get(key) for p in ordered)]),
                    marker=_MARKERS[k % len(_MARKERS)], linestyle=_LINES[k % len(_LINES)],
                    label=label)  # equal curves stay visible: markers and dashes differ
        ax.set_xlabel("MACs (x original)")
        ax.set_title(title)
        ax.invert_xaxis()
        if key != "rel_l2":
            ax.set_ylim(-0.05, 1.05)
        else:
            ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
    _legend(axes[0][0], fontsize=8)
    figure.suptitle("Fidelity to the original against MACs, per criterion/compensation")
    return _png(figure)
