"""Channel dependency analysis: rules' couplings -> element classes -> blocked classes -> groups.

A *class* is a set of tensor elements (one channel on every axis it reaches) that must be removed
together; it is identified by its smallest element id. A *group* is a set of classes that share
a source axis (an output axis created from parameters, such as a Conv's output channels); groups
are the unit of allocation and of the report. This module knows no op names.
"""

from __future__ import annotations

import dataclasses
import fnmatch
from collections.abc import Sequence

import numpy as np
import onnx_ir as ir

from graphprune.analysis.axes import AxisTable, ChannelAxis
from graphprune.analysis.blocked import Blocked, BlockReason
from graphprune.analysis.unionfind import components
from graphprune.ops import lookup
from graphprune.ops.base import Choice, Coupling, SplitChoice, is_constant, static_shape

NOT_BLOCKED = np.iinfo(np.int64).max


@dataclasses.dataclass(frozen=True)
class Group:
    """Coupled channels pruned as a unit.

    Attributes:
        id: Position in :attr:`ChannelAnalysis.groups`.
        root: The first source axis (by node order); its channel order names the group's channels.
        classes: Class labels of the group's channels, in root-axis order first.
        segments: A partition of ``classes`` into runs that reach the same set of axes (the two
            halves of a split, say); allocation keeps the same share of each.
        axes: Every axis (index into the axis table) the group touches.
        kind: ``"heads"`` when its classes are whole blocks of a split kept whole (attention
            heads: ``--heads`` sets their ratio, counted in whole heads), else ``"channels"``
            (conv channels, MLP neurons: ``--mlp``).
    """

    id: int
    root: ChannelAxis
    classes: np.ndarray
    segments: tuple[np.ndarray, ...]
    axes: tuple[int, ...]
    kind: str = "channels"

    @property
    def name(self) -> str:
        producer = self.root.value.producer()
        return (producer.name if producer is not None and producer.name else "") or self.root.name


@dataclasses.dataclass(frozen=True)
class ChannelAnalysis:
    """The frozen result of :func:`analyze_channels`."""

    model: ir.Model
    table: AxisTable
    labels: np.ndarray  # element id -> class label
    class_block: np.ndarray  # class label -> index into ``blocked`` (NOT_BLOCKED when free)
    blocked: tuple[Blocked, ...]
    groups: tuple[Group, ...]
    blocked_sources: tuple[tuple[ChannelAxis, Blocked], ...]

    def axis_labels(self, entry: ChannelAxis) -> np.ndarray:
        return self.labels[entry.base : entry.base + entry.size]


class _Collector:
    """Accumulates couplings, blocks and source axes while walking the graph."""

    def __init__(self) -> None:
        self.table = AxisTable()
        self.pairs_a: list[np.ndarray] = []
        self.pairs_b: list[np.ndarray] = []
        self.records: list[Blocked] = []
        self.blocks: list[tuple[np.ndarray, int]] = []
        self.sources: list[ChannelAxis] = []
        self.choices: list[tuple[ir.Node, Choice | SplitChoice]] = []
        self.block_axes: list[ChannelAxis] = []  # axes of couplings that join whole blocks

    def record(self, blocked: Blocked) -> int:
        self.records.append(blocked)
        return len(self.records) - 1

    def block_value(self, value: ir.Value, record: int, only=None) -> None:
        shape = static_shape(value)
        for axis in range(0 if shape is None else len(shape)):
            if only is None or axis in only:
                self.blocks.append((self.table.get((value, axis)).ids(), record))

    def labels_and_blocks(self) -> tuple[np.ndarray, np.ndarray]:
        """Class label per element, and the first block record per class label."""
        n = self.table.num_elements
        cat = lambda parts: np.concatenate(parts) if parts else np.zeros(0, np.int64)  # noqa: E731
        labels = components(n, cat(self.pairs_a), cat(self.pairs_b))
        class_block = np.full(n, NOT_BLOCKED, dtype=np.int64)
        for ids, record in self.blocks:
            np.minimum.at(class_block, labels[ids], record)
        return labels, class_block

    def settle_choices(self) -> None:
        """Settles splits (whole blocks or offsets), then merges (the option with free channels).

        Every split first keeps whole blocks. One whose blocks end up blocked, or merged back as
        the minor axis of a merge (a channel shuffle), takes the offsets instead, and everything
        is settled again; each retry moves at least one split, so this ends.
        """
        splits = [(n, c) for n, c in self.choices if isinstance(c, SplitChoice)]
        merges = [(n, c) for n, c in self.choices if isinstance(c, Choice)]
        marks = (len(self.pairs_a), len(self.blocks), len(self.records), len(self.block_axes))
        minor: set[int] = set()
        while True:
            self._settle_splits(splits, minor)
            picked = self._settle_merges(merges)
            if len(minor) == len(splits):
                return
            worse = self._fragmented_splits(splits, minor, picked)
            if not worse:
                return
            minor |= worse
            del self.pairs_a[marks[0]:], self.pairs_b[marks[0]:]
            del self.blocks[marks[1]:], self.records[marks[2]:], self.block_axes[marks[3]:]

    def _settle_splits(self, splits, minor: set[int]) -> None:
        for i, (node, split) in enumerate(splits):
            take, other = (split.minor, split.major) if i in minor else (split.major, split.minor)
            self.couple(take)
            detail = ("split keeps the same offset in every block" if i in minor
                      else "split keeps whole blocks")
            record = self.record(_not_preserved(node, detail))
            self.blocks.append((self.table.get(other.b).ids(), record))

    def _settle_merges(self, merges) -> list[tuple[int, Coupling]]:
        """Declares, for every merge, the option whose input channels are free; blocks the rest."""
        labels, class_block = self.labels_and_blocks()

        def free(option: Coupling) -> bool:
            entry = self.table.get(option.a)
            classes = labels[entry.base : entry.base + entry.size]
            return bool((class_block[classes] == NOT_BLOCKED).any())

        picks = []
        for node, choice in merges:
            index = next((k for k, o in enumerate(choice.options) if free(o)), 0)
            picked = choice.options[index]
            picks.append((index, picked))
            self.couple(picked)
            others = [o for o in choice.options if o is not picked]
            if others:
                kept = f"{picked.a[0].name}[{picked.a[1]}]"
                detail = f"merged into an axis that keeps the channels of {kept}"
                record = self.record(_not_preserved(node, detail))
                for option in others:
                    self.blocks.append((self.table.get(option.a).ids(), record))
        return picks

    def _fragmented_splits(self, splits, minor: set[int], picks) -> set[int]:
        """Splits kept whole whose blocks are blocked or merged back as a merge's minor axis."""
        labels, class_block = self.labels_and_blocks()
        minor_merged = [labels[self.table.get(o.a).ids()] for k, o in picks if k > 0]
        minor_merged = np.unique(np.concatenate(minor_merged)) if minor_merged else None
        worse = set()
        for i, (_, split) in enumerate(splits):
            if i in minor:
                continue
            blocks = labels[self.table.get(split.major.b).ids()]
            if (class_block[blocks] != NOT_BLOCKED).all() or (
                    minor_merged is not None and np.isin(blocks, minor_merged).any()):
                worse.add(i)
        return worse

    def couple(self, coupling: Coupling) -> tuple[ChannelAxis, ChannelAxis]:
        ea, eb = self.table.get(coupling.a), self.table.get(coupling.b)
        if coupling.blocks:
            self.block_axes.append(eb)
        if coupling.ia is not None and not ea.opaque and not eb.opaque:
            ia, ib = coupling.ia, coupling.ib
        elif coupling.ia is None and not ea.opaque and not eb.opaque and ea.size == eb.size:
            ia = ib = np.arange(ea.size)
        else:  # sizes unknown or unequal: everything on both axes is one (blocked) class
            ia = np.concatenate([np.arange(ea.size), np.zeros(eb.size, np.int64)])
            ib = np.concatenate([np.zeros(ea.size, np.int64), np.arange(eb.size)])
        self.pairs_a.append(ea.base + np.asarray(ia, np.int64))
        self.pairs_b.append(eb.base + np.asarray(ib, np.int64))
        return ea, eb


def _not_preserved(node: ir.Node, detail: str) -> Blocked:
    return Blocked(BlockReason.AXIS_NOT_PRESERVED, node.name or "", node.op_type, detail)


def _subgraph_outer_values(node: ir.Node) -> list[ir.Value]:
    """Values of the enclosing graph read inside ``node``'s subgraphs."""
    found = []
    for attr in node.attributes.values():
        graphs = attr.value if attr.type == ir.AttributeType.GRAPHS else [attr.value]
        if attr.type not in (ir.AttributeType.GRAPH, ir.AttributeType.GRAPHS):
            continue
        for graph in graphs:
            inner = {id(v) for v in graph.inputs} | {id(v) for v in graph.initializers.values()}
            for sub in ir.traversal.RecursiveGraphIterator(graph):
                inner.update(id(v) for v in sub.outputs)
            for sub in ir.traversal.RecursiveGraphIterator(graph):
                found += [v for v in sub.inputs if v is not None and id(v) not in inner]
    return found


def _node_result(node: ir.Node, exclude: Sequence[str]) -> list[Coupling | Choice] | Blocked:
    name, op = node.name or "", node.op_type
    if any(fnmatch.fnmatchcase(name, pattern) for pattern in exclude):
        return Blocked(BlockReason.EXCLUDED, name, op, "matches --exclude")
    graph_types = (ir.AttributeType.GRAPH, ir.AttributeType.GRAPHS)
    if any(a.type in graph_types for a in node.attributes.values()):
        return Blocked(BlockReason.SUBGRAPH, name, op, "channels reaching a subgraph stay whole")
    rule = lookup(node)
    if rule is None:
        domain = f"{node.domain}::" if node.domain not in ("", "ai.onnx") else ""
        return Blocked(BlockReason.UNKNOWN_OP, name, op, f"no rule for {domain}{op}")
    return rule.couplings(node)


def _matches(name: str, patterns: Sequence[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns)


def _walk(graph: ir.Graph, exclude: Sequence[str], resize_io: Sequence[str] = ()) -> _Collector:
    col = _Collector()
    derived: set[int] = set()  # values computed from constants alone (Identity of a weight, say)
    for node in graph:
        inputs = [v for v in node.inputs if v is not None]
        outputs = [v for v in node.outputs if v is not None and v.name]
        from_constants = all(is_constant(v) or id(v) in derived for v in inputs)
        if from_constants:
            derived.update(id(v) for v in outputs)
        result = _node_result(node, exclude)
        if isinstance(result, Blocked):
            record = col.record(result)
            for value in inputs + outputs:
                col.block_value(value, record)
            if result.reason is BlockReason.SUBGRAPH:
                for value in _subgraph_outer_values(node):
                    col.block_value(value, record)
            continue
        declared, fed = set(), set()
        output_ids = {id(v) for v in outputs}
        for item in result:
            if isinstance(item, SplitChoice):  # settled once every node has spoken
                col.choices.append((node, item))
                for option in (item.major, item.minor):
                    ea, eb = col.table.get(option.a), col.table.get(option.b)
                    declared.update([(id(ea.value), ea.axis), (id(eb.value), eb.axis)])
                    if not is_constant(ea.value) and id(ea.value) not in derived:
                        fed.add((id(eb.value), eb.axis))
                continue
            if isinstance(item, Choice):  # settled once every node has spoken
                col.choices.append((node, item))
                declared.update((id(o.a[0]), o.a[1]) for o in item.options)
                ea, eb = col.table.get(item.options[0].a), col.table.get(item.options[0].b)
            else:
                ea, eb = col.couple(item)
            declared.update([(id(ea.value), ea.axis), (id(eb.value), eb.axis)])
            for out, other in ((ea, eb), (eb, ea)):
                if id(out.value) in output_ids and id(other.value) not in output_ids:
                    if not is_constant(other.value) and id(other.value) not in derived:
                        fed.add((id(out.value), out.axis))
        record = None
        for value in inputs + outputs:
            shape = static_shape(value) or ()
            loose = [a for a in range(len(shape)) if (id(value), a) not in declared]
            if loose:
                if record is None:
                    detail = "axes this op does not keep channel-wise"
                    record = col.record(_not_preserved(node, detail))
                col.block_value(value, record, only=loose)
        if from_constants:
            continue  # outputs computed from constants alone are no layer's channels
        for value in outputs:
            for axis in range(len(static_shape(value) or ())):
                if (id(value), axis) in declared and (id(value), axis) not in fed:
                    col.sources.append(col.table.get((value, axis)))
    for value in graph.inputs:
        if _matches(value.name, resize_io):
            continue  # the caller lets this input change shape
        col.block_value(value, col.record(Blocked(BlockReason.GRAPH_IO, value.name, "graph input")))
    for value in graph.outputs:
        if _matches(value.name, resize_io):
            continue
        output = Blocked(BlockReason.GRAPH_IO, value.name, "graph output")
        col.block_value(value, col.record(output))
    for entry in list(col.table.axes):
        if entry.opaque:
            detail = f"axis {entry.axis} of '{entry.value.name}' {entry.opaque_reason}"
            record = col.record(Blocked(BlockReason.DYNAMIC_SIZE, "", "shape", detail))
            col.blocks.append((entry.ids(), record))
    return col


def analyze_channels(model: ir.Model, exclude: Sequence[str] = (),
                     resize_io: Sequence[str] = ()) -> ChannelAnalysis:
    """Runs every rule over ``model``'s main graph and builds classes and groups.

    The model should have come through ``graphprune._io.infer_shapes`` (as :func:`load_model`
    and :func:`graphprune.prune` do): rules read the shapes and the static values it records, and
    block what they cannot see. Graph inputs and outputs block, except those whose name matches
    a ``resize_io`` fnmatch pattern (a KV cache the serving code will allocate smaller).
    """
    col = _walk(model.graph, exclude, resize_io)
    if col.choices:
        col.settle_choices()
    labels, class_block = col.labels_and_blocks()
    groups, blocked_sources = _build_groups(col, labels, class_block)
    return ChannelAnalysis(model, col.table, labels, class_block, tuple(col.records), groups,
                           blocked_sources)


def _build_groups(col: _Collector, labels: np.ndarray, class_block: np.ndarray):
    table, n = col.table, col.table.num_elements
    has_param = np.zeros(n, bool)
    for entry in table.axes:
        if entry.constant:
            has_param[labels[entry.base : entry.base + entry.size]] = True
    free = (class_block == NOT_BLOCKED) & has_param
    # classes sharing a source axis form one group
    link_a, link_b, blocked_sources, seen = [], [], [], set()
    for entry in col.sources:
        if (entry.base, entry.size) in seen:
            continue
        seen.add((entry.base, entry.size))
        axis_labels = labels[entry.base : entry.base + entry.size]
        stuck = class_block[axis_labels]
        if (stuck != NOT_BLOCKED).any():
            blocked_sources.append((entry, col.records[int(stuck.min())]))
        link_a.append(axis_labels[:-1])
        link_b.append(axis_labels[1:])
    sourced = np.zeros(n, bool)
    for entry in col.sources:
        sourced[labels[entry.base : entry.base + entry.size]] = True
    group_of = components(n, np.concatenate(link_a or [np.zeros(0, np.int64)]),
                          np.concatenate(link_b or [np.zeros(0, np.int64)]))
    prunable = np.flatnonzero(free & sourced & (labels == np.arange(n)))
    signature = _axis_signatures(table, labels, n)
    root_of: dict[int, ChannelAxis] = {}
    for entry in col.sources:
        for label in labels[entry.base : entry.base + entry.size]:
            root_of.setdefault(int(group_of[label]), entry)
    keys = sorted({int(group_of[label]) for label in prunable}, key=lambda k: root_of[k].base)
    slot = {key: i for i, key in enumerate(keys)}
    label_group = np.full(n, -1, dtype=np.int64)
    label_group[prunable] = [slot[int(group_of[label])] for label in prunable]
    touched: list[list[int]] = [[] for _ in keys]
    for i, entry in enumerate(table.axes):
        for g in np.unique(label_group[labels[entry.base : entry.base + entry.size]]):
            if g >= 0:
                touched[g].append(i)
    index_of = {id(entry): i for i, entry in enumerate(table.axes)}
    block_axes = {index_of[id(entry)] for entry in col.block_axes}
    groups = []
    for g, key in enumerate(keys):
        root = root_of[key]
        order = labels[root.base : root.base + root.size]
        on_root = list(dict.fromkeys(int(c) for c in order if label_group[c] == g))
        rest = sorted(set(np.flatnonzero(label_group == g).tolist()) - set(on_root))
        members = np.array(on_root + rest, dtype=np.int64)
        segments: dict[int, list[int]] = {}
        for label in members:
            segments.setdefault(int(signature[label]), []).append(int(label))
        parts = tuple(np.array(s, np.int64) for s in segments.values())
        kind = "heads" if block_axes & set(touched[g]) else "channels"
        groups.append(Group(g, root, members, parts, tuple(touched[g]), kind))
    return tuple(groups), tuple(blocked_sources)


def _axis_signatures(table: AxisTable, labels: np.ndarray, n: int) -> np.ndarray:
    """A hash per class of the set of axes it reaches (classes with equal sets share a segment)."""
    rng = np.random.default_rng(0)
    weights = rng.integers(1, 2**63 - 1, size=len(table.axes), dtype=np.int64).astype(np.uint64)
    signature = np.zeros(n, dtype=np.uint64)
    for i, entry in enumerate(table.axes):
        present = np.unique(labels[entry.base : entry.base + entry.size])
        signature[present] += weights[i]
    return signature
