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
from graphprune.analysis.unionfind import components
from graphprune.core import (
    Blocked,
    BlockReason,
    Choice,
    Coupling,
    SplitChoice,
    is_onnx_domain,
)
from graphprune.ops import lookup

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
        heads_per_class: Blocks (heads) one class holds on its widest blocked axis: ``G`` for
            grouped-query attention (a KV head with its ``G`` query heads), else 1.
    """

    id: int
    root: ChannelAxis
    classes: np.ndarray
    segments: tuple[np.ndarray, ...]
    axes: tuple[int, ...]
    kind: str = "channels"
    heads_per_class: int = 1

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
        self.same: list[tuple[int, int, int]] = []  # identity couplings: (base a, base b, size)
        self.records: list[Blocked] = []
        self.blocks: list[tuple[int, int, int]] = []  # whole axes blocked: (base, size, record)
        self.sources: list[ChannelAxis] = []
        self.choices: list[tuple[ir.Node, Choice | SplitChoice]] = []
        self.block_axes: list[tuple[ChannelAxis, int]] = []  # axes joined into whole blocks,
        # with the elements of one block there

    def shape(self, value: ir.Value) -> tuple[int | None, ...] | None:
        """``static_shape(value)``, computed once per value (the walk asks several times)."""
        return self.table.facts(value)[0]

    def constant(self, value: ir.Value) -> bool:
        """``is_constant(value)``, computed once per value."""
        return self.table.facts(value)[1]

    def record(self, blocked: Blocked) -> int:
        self.records.append(blocked)
        return len(self.records) - 1

    def block_value(self, value: ir.Value, record: int, only=None) -> None:
        shape = self.shape(value)
        for axis in range(0 if shape is None else len(shape)):
            if only is None or axis in only:
                self.block_axis(self.table.get((value, axis)), record)

    def block_axis(self, entry: ChannelAxis, record: int) -> None:
        self.blocks.append((entry.base, entry.size, record))

    def labels_and_blocks(self) -> tuple[np.ndarray, np.ndarray]:
        """Class label per element, and the first block record per class label."""
        n = self.table.num_elements
        same = np.array(self.same, np.int64).reshape(-1, 3)
        pairs_a = np.concatenate([_ranges(same[:, 0], same[:, 2]), *self.pairs_a])
        pairs_b = np.concatenate([_ranges(same[:, 1], same[:, 2]), *self.pairs_b])
        labels = components(n, pairs_a, pairs_b)
        class_block = np.full(n, NOT_BLOCKED, dtype=np.int64)
        blocks = np.array(self.blocks, np.int64).reshape(-1, 3)
        sizes = np.maximum(blocks[:, 1], 0)
        ids = _ranges(blocks[:, 0], sizes)
        np.minimum.at(class_block, labels[ids], np.repeat(blocks[:, 2], sizes))
        return labels, class_block

    def settle_choices(self) -> None:
        """Settles splits (whole blocks or offsets), then merges (the option with free channels).

        Every split first keeps whole blocks. One whose blocks end up blocked, or merged back as
        the minor axis of a merge (a channel shuffle), takes the offsets instead, and everything
        is settled again; each retry moves at least one split, so this ends.
        """
        splits = [(n, c) for n, c in self.choices if isinstance(c, SplitChoice)]
        merges = [(n, c) for n, c in self.choices if isinstance(c, Choice)]
        marks = (len(self.pairs_a), len(self.blocks), len(self.records), len(self.block_axes),
                 len(self.same))
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
            del self.same[marks[4]:]

    def _settle_splits(self, splits, minor: set[int]) -> None:
        for i, (node, split) in enumerate(splits):
            take, other = (split.minor, split.major) if i in minor else (split.major, split.minor)
            self.couple(take)
            detail = ("split keeps the same offset in every block" if i in minor
                      else "split keeps whole blocks")
            record = self.record(_not_preserved(node, detail))
            self.block_axis(self.table.get(other.b), record)

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
                    self.block_axis(self.table.get(option.a), record)
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
            blocks = eb.size if coupling.ib is None else len(np.unique(coupling.ib))
            self.block_axes.append((eb, max(1, eb.size // max(1, blocks))))
        if coupling.ia is not None and not ea.opaque and not eb.opaque:
            ia, ib = coupling.ia, coupling.ib
        elif coupling.ia is None and not ea.opaque and not eb.opaque and ea.size == eb.size:
            self.same.append((ea.base, eb.base, max(ea.size, 0)))
            return ea, eb
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
    if exclude and _matches(name, exclude):
        return Blocked(BlockReason.EXCLUDED, name, op, "matches --exclude")
    if node.attributes and _has_subgraph(node):
        return Blocked(BlockReason.SUBGRAPH, name, op, "channels reaching a subgraph stay whole")
    rule = lookup(node)
    if rule is None:
        domain = "" if is_onnx_domain(node) else f"{node.domain}::"
        return Blocked(BlockReason.UNKNOWN_OP, name, op, f"no rule for {domain}{op}")
    return rule.couplings(node)


_GRAPH_TYPES = frozenset({ir.AttributeType.GRAPH, ir.AttributeType.GRAPHS})


def _has_subgraph(node: ir.Node) -> bool:
    return any(a.type in _GRAPH_TYPES for a in node.attributes.data.values())


def _matches(name: str, patterns: Sequence[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns)


def _walk(graph: ir.Graph, exclude: Sequence[str], resize_io: Sequence[str] = ()) -> _Collector:
    col = _Collector()
    derived: set[int] = set()  # values computed from constants alone (Identity of a weight, say)
    for node in graph:
        inputs = [v for v in node.inputs if v is not None]
        outputs = [v for v in node.outputs if v is not None and v.name]
        from_constants = all(col.constant(v) or id(v) in derived for v in inputs)
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
                    if not ea.constant and id(ea.value) not in derived:
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
                    if not other.constant and id(other.value) not in derived:
                        fed.add((id(out.value), out.axis))
        record = None
        for value in inputs + outputs:
            shape = col.shape(value) or ()
            loose = [a for a in range(len(shape)) if (id(value), a) not in declared]
            if loose:
                if record is None:
                    detail = "axes this op does not keep channel-wise"
                    record = col.record(_not_preserved(node, detail))
                col.block_value(value, record, only=loose)
        if from_constants:
            continue  # outputs computed from constants alone are no layer's channels
        for value in outputs:
            for axis in range(len(col.shape(value) or ())):
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
            col.block_axis(entry, record)
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
    col.table.forget_facts()
    return ChannelAnalysis(model, col.table, labels, class_block, tuple(col.records), groups,
                           blocked_sources)


def _build_groups(col: _Collector, labels: np.ndarray, class_block: np.ndarray):
    """Groups of free, sourced, parameter-carrying classes; every step is one pass over arrays."""
    table, n = col.table, col.table.num_elements
    layout = _Layout(table, labels)
    has_param = np.zeros(n, bool)
    has_param[labels[layout.elements_where(layout.constant)]] = True
    free = (class_block == NOT_BLOCKED) & has_param
    sources = _unique_sources(col.sources)
    blocked_sources = []
    for entry in sources:  # classes sharing a source axis form one group
        stuck = class_block[labels[entry.base : entry.base + entry.size]]
        if (stuck != NOT_BLOCKED).any():
            blocked_sources.append((entry, col.records[int(stuck.min())]))
    sources = [e for e in sources if e.size > 0]  # an empty axis reaches no class
    sizes = np.array([e.size for e in sources], dtype=np.int64)
    source_labels = labels[_ranges([e.base for e in sources], sizes)]
    starts_axis = np.zeros(len(source_labels), bool)  # elements that begin a source axis
    starts_axis[np.cumsum(sizes) - sizes] = True
    linked = ~starts_axis[1:]  # element i and i+1 lie on one source axis
    group_of = components(n, source_labels[:-1][linked], source_labels[1:][linked])
    sourced = np.zeros(n, bool)
    sourced[source_labels] = True
    prunable = np.flatnonzero(free & sourced & (labels == np.arange(n)))
    # the first source axis (in walk order) that reaches a group names it
    source_of = np.repeat(np.arange(len(sources)), sizes)
    found, first = np.unique(group_of[source_labels], return_index=True)
    root_index = np.full(n, -1, np.int64)
    root_index[found] = source_of[first]
    keys = np.unique(group_of[prunable])
    keys = keys[np.argsort([sources[root_index[k]].base for k in keys], kind="stable")]
    slot = np.full(n, -1, np.int64)
    slot[keys] = np.arange(len(keys))
    label_group = np.full(n, -1, dtype=np.int64)
    label_group[prunable] = slot[group_of[prunable]]
    touched = layout.axes_per_group(label_group, len(keys))
    signature = layout.signatures()
    by_group = _split_by(prunable, label_group[prunable], len(keys))
    index_of = {id(entry): i for i, entry in enumerate(table.axes)}
    block_axes = {index_of[id(entry)]: unit for entry, unit in col.block_axes}
    groups = []
    for g, key in enumerate(keys):
        root = sources[root_index[key]]
        order = labels[root.base : root.base + root.size]
        on_root = _first_occurrences(order[label_group[order] == g])
        if len(on_root) == len(by_group[g]):  # the usual case: the root reaches every class
            members = on_root.astype(np.int64)
        else:
            rest = np.setdiff1d(by_group[g], on_root, assume_unique=True)
            members = np.concatenate([on_root, rest]).astype(np.int64)
        parts = _segments(members, signature[members])
        axes = tuple(touched[g].tolist())
        kind = "heads" if block_axes.keys() & set(axes) else "channels"
        per_class = _heads_per_class(table, labels, members, block_axes, axes)
        groups.append(Group(g, root, members, parts, axes, kind, per_class))
    return tuple(groups), tuple(blocked_sources)


def _heads_per_class(table: AxisTable, labels: np.ndarray, members: np.ndarray,
                     block_axes: dict[int, int], axes: tuple[int, ...]) -> int:
    """The most blocks one class of ``members`` holds on any of its blocked axes (at least 1)."""
    most = 1
    for index in block_axes.keys() & set(axes):
        on_axis = labels[table.axes[index].ids()]
        mine = on_axis[np.isin(on_axis, members)]
        if len(mine):
            most = max(most, len(mine) // (len(np.unique(mine)) * block_axes[index]))
    return most


class _Layout:
    """Element ids laid out by axis: which axis owns each element, and per-axis facts."""

    def __init__(self, table: AxisTable, labels: np.ndarray) -> None:
        self.table, self.labels = table, labels
        self.num_axes = max(1, len(table.axes))
        bases, sizes, _ = table.arrays()
        sizes = np.maximum(0, sizes)
        self.constant = np.array([e.constant for e in table.axes], dtype=bool)
        self.element = _ranges(bases, sizes)  # axis by axis
        self.axis_of = np.repeat(np.arange(len(sizes)), sizes)
        self._pairs: tuple[np.ndarray, np.ndarray] | None = None

    def elements_where(self, axis_mask: np.ndarray) -> np.ndarray:
        return self.element[axis_mask[self.axis_of]]

    def label_axis_pairs(self) -> tuple[np.ndarray, np.ndarray]:
        """Each distinct ``(class label, axis index)`` once, sorted by label then axis."""
        if self._pairs is None:
            key = _distinct(self.labels[self.element] * self.num_axes + self.axis_of)
            self._pairs = key // self.num_axes, key % self.num_axes
        return self._pairs

    def axes_per_group(self, label_group: np.ndarray, num_groups: int) -> list[np.ndarray]:
        """Per group, the ascending indices of the axes any of its classes reaches."""
        label, axis = self.label_axis_pairs()
        group = label_group[label]
        keep = group >= 0
        key = _distinct(group[keep] * self.num_axes + axis[keep])
        return _split_by(key % self.num_axes, key // self.num_axes, num_groups)

    def signatures(self) -> np.ndarray:
        """A hash per class of the set of axes it reaches (equal sets share a segment)."""
        rng = np.random.default_rng(0)
        weights = rng.integers(1, 2**63 - 1, size=len(self.table.axes), dtype=np.int64)
        signature = np.zeros(len(self.labels), dtype=np.uint64)
        label, axis = self.label_axis_pairs()
        np.add.at(signature, label, weights.astype(np.uint64)[axis])
        return signature


def _distinct(values: np.ndarray) -> np.ndarray:
    """``np.unique(values)`` by one sort (numpy's hash-based unique is slower on large ints)."""
    values = np.sort(values, kind="stable")
    if len(values) < 2:
        return values
    return values[np.concatenate([[True], values[1:] != values[:-1]])]


def _unique_sources(sources: Sequence[ChannelAxis]) -> list[ChannelAxis]:
    """Source axes without repeats, in walk order."""
    seen, unique = set(), []
    for entry in sources:
        if (entry.base, entry.size) not in seen:
            seen.add((entry.base, entry.size))
            unique.append(entry)
    return unique


def _ranges(starts: Sequence[int], sizes: Sequence[int]) -> np.ndarray:
    """``concat(arange(s, s + k) for s, k)`` without a Python loop."""
    sizes = np.asarray(sizes, dtype=np.int64)
    if not len(sizes):
        return np.zeros(0, np.int64)
    offsets = np.repeat(np.asarray(starts, np.int64) - np.cumsum(sizes) + sizes, sizes)
    return offsets + np.arange(int(sizes.sum()))


def _split_by(values: np.ndarray, keys: np.ndarray, num_keys: int) -> list[np.ndarray]:
    """``values`` per key ``0..num_keys-1``, each keeping the order ``values`` had."""
    order = np.argsort(keys, kind="stable")
    bounds = np.searchsorted(keys[order], np.arange(num_keys + 1))
    ordered = values[order]
    return [ordered[bounds[k] : bounds[k + 1]] for k in range(num_keys)]


def _first_occurrences(values: np.ndarray) -> np.ndarray:
    """The distinct entries of ``values`` in the order they first appear."""
    if len(values) < 2 or bool((values[1:] > values[:-1]).all()):
        return values  # increasing: already distinct, in order
    _, first = np.unique(values, return_index=True)
    return values[np.sort(first)]


def _segments(members: np.ndarray, signature: np.ndarray) -> tuple[np.ndarray, ...]:
    """``members`` split by signature, segments in order of first appearance, order kept."""
    if not len(signature):
        return ()
    if bool((signature == signature[0]).all()):
        return (members,)  # one segment
    _, first, inverse = np.unique(signature, return_index=True, return_inverse=True)
    parts = _split_by(members, inverse.reshape(-1), len(first))
    return tuple(parts[k] for k in np.argsort(first, kind="stable"))
