"""A pruning plan: which classes are removed, and what that means for every axis."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from graphprune.analysis.axes import ChannelAxis
from graphprune.analysis.dependency import ChannelAnalysis
from graphprune.core import PlanView


class PrunePlan(PlanView):
    """Kept classes of a :class:`ChannelAnalysis`, answered per ``(value, axis)``.

    The axes that lose elements are found once, with one pass over the element arrays; every
    other axis answers from a dictionary (the passes and the cost model ask for every axis of
    every value).

    Args:
        analysis: The analysis the class labels come from.
        removed: Class labels to remove (blocked classes are never passed here).
    """

    def __init__(self, analysis: ChannelAnalysis, removed: np.ndarray) -> None:
        self.analysis = analysis
        self.keep = np.ones(analysis.table.num_elements, dtype=bool)
        self.keep[np.asarray(removed, dtype=np.int64)] = False
        self._changed: dict[tuple[int, int], tuple[ChannelAxis, np.ndarray]] | None = None

    def _changed_axes(self) -> dict[tuple[int, int], tuple[ChannelAxis, np.ndarray]]:
        """``(id(value), axis) -> (entry, kept indices)`` for every axis that loses elements."""
        if self._changed is None:
            table = self.analysis.table
            bases, sizes, opaque = table.arrays()
            removed = np.concatenate([[0], np.cumsum(~self.keep[self.analysis.labels])])
            lost = removed[bases + sizes] - removed[bases]
            self._changed = {}
            for index in np.flatnonzero((lost > 0) & ~opaque).tolist():
                entry = table.axes[index]
                mask = self.keep[self.analysis.axis_labels(entry)]
                self._changed[(id(entry.value), entry.axis)] = (entry, np.flatnonzero(mask))
        return self._changed

    def kept(self, value: ir.Value, axis: int) -> np.ndarray | None:
        found = self._changed_axes().get((id(value), axis))
        return None if found is None else found[1]

    def new_size(self, value: ir.Value, axis: int) -> int | None:
        kept = self.kept(value, axis)
        if kept is not None:
            return len(kept)
        entry = self.analysis.table.find(value, axis)
        if entry is not None and not entry.opaque:
            return entry.size
        shape = value.shape
        dim = shape[axis] if shape is not None and axis < len(shape) else None
        return dim if isinstance(dim, int) else None

    def changed_axes(self):
        """Every ``(ChannelAxis, kept indices)`` that loses elements, in axis-table order."""
        yield from self._changed_axes().values()
