"""Latency of candidate plans, from a per-layer lookup by width measured on this machine.

Every node that computes (its rule counts MACs) depends on the kept counts of the groups whose
classes reach its inputs and outputs (a conv: the group of its input channels and that of its
output channels). Each such group gets a small grid of kept counts, multiples of 16 channels
(the block onnxruntime's CPU convs work in) from the floor share to the full width; the node is
timed alone (:mod:`graphprune.bench.node_latency`) at every grid point, and the latency of a
candidate is the multilinear interpolation between grid points (linear extrapolation below the
smallest). Configurations that time alike (same op, attributes, shapes) are timed once. A node
reached by more than :data:`MAX_VARIABLES` groups is timed at full width only and scaled by its
MAC share. Timings only shrink with width: a grid point is never slower than a wider one.

The whole model is timed once side by side with its nodes run alone one after another: the
difference is the rest of the graph (elementwise ops, pooling), a fixed cost. Where the nodes
alone take longer than the whole model (layout reorders around each lone conv), all tables are
scaled so that they add up to the whole model. The latency of a plan is therefore
``fixed + scale * sum of interpolated node latencies``; its share is that over the whole model.
:meth:`LatencyModel.calibrate` refits ``fixed`` and ``scale`` to a second measurement, of one
really pruned model near the target, timed side by side with the original (nodes alone miss
what layers share in the whole graph; the refit ``fixed`` may then be negative: the whole model
shrinks faster than its layers alone). Measured on models/ ResNet-50 and MobileNetV2 at
224x224, ``--target-latency 0.5``: predicted 0.500 and 0.500, achieved 0.500 and 0.482.

Time: at most 7, 36 or 64 probes per node (one, two or three groups), each probe 1 untimed and
5 timed runs. ResNet-50 at 224x224: 1244 probes, 514 distinct, 7.5 s of CPU (one thread; 20 to
70 s of wall time on a shared 2-core machine); MobileNetV2: 723 probes, 345 distinct, 1.6 s of
CPU. The table lives in memory for one prune.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import time
from collections.abc import Sequence
from typing import Protocol

import numpy as np
import onnx_ir as ir

from graphprune.allocation.budget import DEFAULT_FLOOR, Budget
from graphprune.allocation.uniform import group_removal, group_step, round_up, scratch_masks
from graphprune.analysis import ChannelAnalysis, PrunePlan
from graphprune.analysis.summary import PruneWarning
from graphprune.bench.node_latency import Probe
from graphprune.ops import lookup
from graphprune.ops.base import PlanView
from graphprune.report.costs import CostModel

GRID_CHANNELS = 16  # onnxruntime's NCHWc block on AVX-512 CPUs
POINTS = {0: 1, 1: 6, 2: 5, 3: 3}  # grid points per group, by groups reaching a node
MAX_VARIABLES = max(POINTS)
LATENCY_TOLERANCE = 0.1  # achieved vs target, relative: timings on a busy machine drift
_GRAPH_ATTRIBUTES = (ir.AttributeType.GRAPH, ir.AttributeType.GRAPHS)


class Timer(Protocol):
    """What the lookup measures with (:class:`~graphprune.bench.node_latency.OrtTimer`)."""

    def nodes(self, probes: Sequence[Probe]) -> list[float]:
        """Seconds per run of each probe alone, timed interleaved (NaN where it cannot run)."""
        ...

    def model(self, probes: Sequence[Probe]) -> tuple[float, float]:
        """Seconds of the whole model, and of ``probes`` run alone in turn, side by side."""
        ...


@dataclasses.dataclass
class NodeTable:
    """One node's latency by the kept counts of the groups that reach it.

    Attributes:
        node: The node.
        groups: Indices (into ``analysis.groups``) of the groups its shapes depend on.
        grids: Kept counts per group at which it was timed (empty: timed at full width only).
        seconds: Latency at every grid point, shape ``[len(g) for g in grids]``.
        macs: Its MACs at full width.
        mac_scaled: Reached by too many groups to grid: timed at full width, scaled by MACs.
    """

    node: ir.Node
    groups: tuple[int, ...]
    grids: tuple[np.ndarray, ...]
    seconds: np.ndarray
    macs: int
    mac_scaled: bool = False

    def at(self, counts: np.ndarray) -> float:
        """Interpolated latency at kept counts ``counts[g]`` of every group ``g``."""
        total = 0.0
        corners = [_weights(grid, counts[g]) for grid, g in zip(self.grids, self.groups,
                                                                 strict=True)]
        for corner in itertools.product(*corners):
            index = tuple(i for i, _ in corner)
            total += math.prod(w for _, w in corner) * float(self.seconds[index])
        return max(total, 0.0)


class _AttributeView:
    """What a rule's rewrite reads and writes of a node, with a copy of its attributes."""

    def __init__(self, node: ir.Node) -> None:
        self.op_type, self.domain, self.name = node.op_type, node.domain, node.name
        self.version, self.graph = node.version, node.graph
        self.inputs, self.outputs = node.inputs, node.outputs
        self.attributes = dict(node.attributes)


def attributes_at(node: ir.Node, plan: PlanView) -> dict[str, ir.Attr]:
    """``node``'s attributes once ``plan``'s channels are removed (the node is not changed).

    Its rule's rewrite runs on a stand-in that shares the node's values and holds a copy of
    its attributes (a depthwise conv's ``group``, an attention op's ``num_heads``).
    """
    view = _AttributeView(node)
    rule = lookup(node)
    if rule is not None:
        rule.rewrite(view, plan)
    return view.attributes


def _weights(grid: np.ndarray, count: float) -> list[tuple[int, float]]:
    """Linear-interpolation weights of ``count`` on ``grid`` (extrapolated below its start)."""
    if len(grid) == 1:
        return [(0, 1.0)]
    i = int(np.clip(np.searchsorted(grid, count) - 1, 0, len(grid) - 2))
    t = (count - grid[i]) / (grid[i + 1] - grid[i])
    return [(i, 1.0 - t), (i + 1, t)]


def _monotone(seconds: np.ndarray) -> np.ndarray:
    """Never slower than a wider point: a running minimum from the full width down, per axis."""
    for axis in range(seconds.ndim):
        flipped = np.flip(seconds, axis)
        seconds = np.flip(np.minimum.accumulate(flipped, axis=axis), axis)
    return seconds


def grid_of(analysis: ChannelAnalysis, group_index: int, points: int,
            floor: float = DEFAULT_FLOOR, round_to: int = 1) -> np.ndarray:
    """Kept counts (classes) a group is timed at: ``points`` shares from ``floor`` to 1.

    Counts are rounded up to 16 channels; the fewest the allocator may keep (its floor at
    ``round_to``) is a grid point too, so no candidate lies below the grid.
    """
    group = analysis.groups[group_index]
    n = len(group.classes)
    step = group_step(analysis, group, GRID_CHANNELS)
    shares = np.linspace(floor, 1.0, points) if points > 1 else np.ones(1)
    counts = [round_up(s * n, n, step) for s in shares]
    if points > 1:
        fine = group_step(analysis, group, round_to)
        counts.append(round_up(max(fine, floor * n), n, fine))
    return np.unique(counts).astype(np.int64)


class LatencyModel:
    """Predicted latency of candidate plans of one analysed model (see the module docstring).

    Args:
        analysis: The channel analysis whose plans are costed.
        costs: The cost model of the same (unrewritten) model: concrete shapes at any plan.
        timer: What times probes and the whole model.
        floor: Smallest share of a group timed (the allocator's floor).
        round_to: The allocator's rounding (the floor's step).
    """

    def __init__(self, analysis: ChannelAnalysis, costs: CostModel, timer: Timer,
                 floor: float = DEFAULT_FLOOR, round_to: int = 1) -> None:
        start, cpu_start = time.perf_counter(), time.process_time()
        self.analysis, self.costs, self.floor, self.round_to = analysis, costs, floor, round_to
        self.owner = np.full(analysis.table.num_elements, -1, dtype=np.int64)
        for index, group in enumerate(analysis.groups):
            self.owner[group.classes] = index
        self.sizes = np.array([len(g.classes) for g in analysis.groups], dtype=np.int64)
        self.timed: dict[tuple, float] = {}
        self.probes = 0  # probes asked for, repeats included
        self.untimed: list[str] = []
        self.tables = [t for t in (self._table(n, timer) for n in self._computing()) if t]
        full = [self._probe(t.node, None) for t in self.tables]
        self.whole_s, alone_s = timer.model(full)
        tabled = self.tabled()
        self.fixed_s = max(self.whole_s - alone_s, 0.0)
        self.scale = min(alone_s, self.whole_s) / tabled if tabled > 0 else 0.0
        self.calibration: dict | None = None  # see calibrate
        self.lookup_s = time.perf_counter() - start
        self.lookup_cpu_s = time.process_time() - cpu_start  # what an idle machine would take

    # --- building ------------------------------------------------------------------------

    def _computing(self) -> list[ir.Node]:
        dims = self.costs.dims()
        nodes = []
        for node in self.analysis.model.graph:
            rule = lookup(node)
            if any(a.type in _GRAPH_ATTRIBUTES for a in node.attributes.values()):
                continue  # subgraph bodies count in the fixed rest
            if rule is not None and rule.macs(node, dims) > 0:
                nodes.append(node)
        return nodes

    def _groups_of(self, node: ir.Node) -> tuple[int, ...]:
        dims, found = self.costs.dims(), set()
        for value in (*node.inputs, *node.outputs):
            shape = dims(value) if value is not None else None
            for axis in range(len(shape or ())):
                entry = self.analysis.table.find(value, axis)
                if entry is not None and not entry.opaque:
                    found.update(self.owner[self.analysis.axis_labels(entry)].tolist())
        found.discard(-1)
        return tuple(sorted(found))

    def _plan(self, groups: Sequence[int], kept: Sequence[int]) -> PrunePlan:
        scratch = scratch_masks(self.analysis)
        zeros = np.zeros(self.analysis.table.num_elements)
        removed = [group_removal(self.analysis, self.analysis.groups[g], zeros, int(k), scratch)
                   for g, k in zip(groups, kept, strict=True) if k < self.sizes[g]]
        return PrunePlan(self.analysis, np.concatenate(removed) if removed
                         else np.zeros(0, dtype=np.int64))

    def _probe(self, node: ir.Node, plan: PrunePlan | None) -> Probe | None:
        dims = self.costs.dims(plan)
        shapes = tuple(None if v is None else dims(v) for v in node.inputs)
        present = [s for v, s in zip(node.inputs, shapes, strict=True) if v is not None]
        if any(s is None for s in present):
            return None
        return Probe.of(node, shapes, None if plan is None else attributes_at(node, plan))

    def _table(self, node: ir.Node, timer: Timer) -> NodeTable | None:
        groups = self._groups_of(node)
        variables = groups if len(groups) <= MAX_VARIABLES else ()
        grids = tuple(grid_of(self.analysis, g, POINTS[len(variables)], self.floor,
                              self.round_to) for g in variables)
        points = list(itertools.product(*grids))
        probes = [self._probe(node, self._plan(variables, p)) for p in points]
        if any(p is None for p in probes):
            self.untimed.append(node.name or node.op_type)
            return None
        self.probes += len(probes)
        fresh = list({p.key: p for p in probes if p.key not in self.timed}.values())
        for probe, seconds in zip(fresh, timer.nodes(fresh) if fresh else [], strict=True):
            self.timed[probe.key] = seconds
        seconds = np.array([self.timed[p.key] for p in probes], dtype=np.float64)
        if not np.isfinite(seconds).all():
            self.untimed.append(node.name or node.op_type)
            return None
        shape = tuple(len(g) for g in grids)
        macs = lookup(node).macs(node, self.costs.dims())
        return NodeTable(node, variables, grids, _monotone(seconds.reshape(shape)), macs,
                         mac_scaled=len(groups) > MAX_VARIABLES)

    # --- predicting ----------------------------------------------------------------------

    def tabled(self, plan: PrunePlan | None = None) -> float:
        """The sum of the node latencies interpolated at ``plan`` (None: full width)."""
        if plan is None:
            return sum(float(t.seconds[(-1,) * t.seconds.ndim]) for t in self.tables)
        counts = np.array([int(plan.keep[g.classes].sum()) for g in self.analysis.groups],
                          dtype=np.float64)
        total = 0.0
        for table in self.tables:
            seconds = table.at(counts)
            if table.mac_scaled:
                seconds *= lookup(table.node).macs(table.node, self.costs.dims(plan)) / table.macs
            total += seconds
        return total

    def seconds(self, plan: PrunePlan | None = None) -> float:
        """Predicted seconds per run of the model with ``plan``'s classes removed."""
        if plan is None:
            return self.whole_s
        return max(self.fixed_s + self.scale * self.tabled(plan), 0.0)

    def calibrate(self, plan: PrunePlan, whole_s: float, pruned_s: float) -> bool:
        """Refits the fixed cost and the scale to two whole-model measurements.

        ``whole_s`` and ``pruned_s`` are the original and ``plan``'s pruned model, timed side
        by side: ``fixed + scale * tabled`` then goes through both (nodes alone miss what the
        graph shares between layers: fused activations, reorders, caches). Declined (False)
        when the plan is too close to full width to tell, or the fit is not a latency
        (non-positive scale, or a fixed cost below minus half the model).
        """
        full, pruned = self.tabled(None), self.tabled(plan)
        if full - pruned < 0.05 * full or pruned_s <= 0:
            return False
        scale = (whole_s - pruned_s) / (full - pruned)
        fixed = whole_s - scale * full
        if scale <= 0 or fixed < -0.5 * whole_s:
            return False
        self.scale, self.fixed_s, self.whole_s = float(scale), float(fixed), whole_s
        self.calibration = {"plan_share": pruned_s / whole_s, "original_ms": whole_s * 1e3}
        return True

    def share(self, plan: PrunePlan) -> float:
        """Predicted latency of ``plan`` as a share of the original model's.

        A plan that removes nothing is the original: exactly 1 (the fit of the fixed cost and
        the scale reproduces the whole model's time only up to rounding).
        """
        if self.whole_s <= 0 or bool(np.all(plan.keep)):
            return 1.0
        return float(self.seconds(plan) / self.whole_s)

    def summary(self) -> dict:
        """What the lookup measured and how long it took (for the report)."""
        return {"lookup_s": round(self.lookup_s, 3), "lookup_cpu_s": round(self.lookup_cpu_s, 3),
                "original_ms": self.whole_s * 1e3,
                "fixed_ms": self.fixed_s * 1e3, "nodes": len(self.tables),
                "probes": self.probes, "configurations_timed": len(self.timed),
                "untimed_nodes": list(self.untimed), "calibration": self.calibration}


def latency_warning(budget: Budget, predicted: float, achieved: float,
                    tolerance: float = LATENCY_TOLERANCE) -> PruneWarning | None:
    """``target_missed`` when the measured share is off the target by more than ``tolerance``."""
    target = budget.target_latency
    if target is None or abs(achieved - target) <= tolerance * target:
        return None
    return PruneWarning(
        "target_missed",
        f"--target-latency {target:g}: measured {achieved:.3f}x the original's latency on this "
        f"machine (predicted {predicted:.3f}x; tolerance {tolerance:.0%})",
        {"target": target, "what": "latency", "achieved": achieved, "predicted": predicted,
         "tolerance": tolerance})
