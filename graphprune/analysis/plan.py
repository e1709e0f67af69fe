"""A pruning plan: which classes are removed, and what that means for every axis."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from graphprune.analysis.dependency import ChannelAnalysis
from graphprune.core import PlanView


class PrunePlan(PlanView):
    """Kept classes of a :class:`ChannelAnalysis`, answered per ``(value, axis)``.

    Args:
        analysis: The analysis the class labels come from.
        removed: Class labels to remove (blocked classes are never passed here).
    """

    def __init__(self, analysis: ChannelAnalysis, removed: np.ndarray) -> None:
        self.analysis = analysis
        self.keep = np.ones(analysis.table.num_elements, dtype=bool)
        self.keep[np.asarray(removed, dtype=np.int64)] = False
        self._cache: dict[tuple[int, int], np.ndarray | None] = {}

    def kept(self, value: ir.Value, axis: int) -> np.ndarray | None:
        key = (id(value), axis)
        if key not in self._cache:
            entry = self.analysis.table.find(value, axis)
            kept = None
            if entry is not None and not entry.opaque:
                mask = self.keep[self.analysis.axis_labels(entry)]
                kept = None if mask.all() else np.flatnonzero(mask)
            self._cache[key] = kept
        return self._cache[key]

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
        """Every ``(ChannelAxis, kept indices)`` that loses elements."""
        for entry in self.analysis.table.axes:
            kept = self.kept(entry.value, entry.axis)
            if kept is not None:
                yield entry, kept
