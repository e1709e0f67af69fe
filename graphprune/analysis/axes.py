"""The axis table: every ``(value, axis)`` the rules mention, laid out as a range of element ids."""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx_ir as ir

from graphprune.core import AxisRef, is_constant, static_shape
from graphprune.errors import UsageError

MAX_AXIS_ELEMENTS = 1 << 24  # a longer axis holds no channels: it stays whole (opaque)
MAX_ELEMENTS = 1 << 27  # more elements than this in all axes would need gigabytes: refused


@dataclasses.dataclass(frozen=True, slots=True)
class ChannelAxis:
    """One axis of one tensor: elements ``base .. base+size-1`` in the analysis.

    ``opaque`` axes have no static size, or more than :data:`MAX_AXIS_ELEMENTS`; they get one
    element, which is always blocked.
    """

    value: ir.Value
    axis: int
    base: int
    size: int
    opaque: bool
    constant: bool

    @property
    def name(self) -> str:
        return f"{self.value.name}[{self.axis}]"

    @property
    def opaque_reason(self) -> str:
        """Why an opaque axis has no channels: no static size, or too long to follow."""
        shape = static_shape(self.value)
        size = shape[self.axis] if shape is not None and self.axis < len(shape) else None
        if size is None:
            return "has no static size"
        return f"has {size} elements, more than the analysis follows ({MAX_AXIS_ELEMENTS})"

    def ids(self) -> np.ndarray:
        return np.arange(self.base, self.base + self.size)


class AxisTable:
    """Assigns element ids to axes on first use."""

    def __init__(self) -> None:
        self.axes: list[ChannelAxis] = []
        self._index: dict[tuple[int, int], int] = {}
        self._facts: dict[int, tuple[tuple[int | None, ...] | None, bool]] = {}  # per value
        self._next = 0
        self._arrays: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None

    def facts(self, value: ir.Value) -> tuple[tuple[int | None, ...] | None, bool]:
        """``(static_shape(value), is_constant(value))``, computed once per value."""
        key = id(value)
        found = self._facts.get(key)
        if found is None:
            found = self._facts[key] = (static_shape(value), is_constant(value))
        return found

    def forget_facts(self) -> None:
        """Drops the per-value cache of :meth:`facts` (the walk is over; it refills on demand)."""
        self._facts = {}

    def get(self, ref: AxisRef) -> ChannelAxis:
        value, axis = ref
        key = (id(value), axis)
        found = self._index.get(key)
        if found is not None:
            return self.axes[found]
        shape, constant = self.facts(value)
        size = shape[axis] if shape is not None and axis < len(shape) else None
        opaque = size is None or size > MAX_AXIS_ELEMENTS
        size = 1 if opaque else size
        if self._next + size > MAX_ELEMENTS:
            raise UsageError(f"the channel analysis needs more than {MAX_ELEMENTS} elements "
                             f"(at axis {axis} of '{value.name}'); the model is too large to "
                             "analyze in bounded memory")
        entry = ChannelAxis(value, axis, self._next, size, opaque, constant)
        self._index[key] = len(self.axes)
        self.axes.append(entry)
        self._next += entry.size
        return entry

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per axis, in table order: first element id, element count, opaque flag."""
        if self._arrays is None or len(self._arrays[0]) != len(self.axes):
            self._arrays = (np.array([e.base for e in self.axes], dtype=np.int64),
                            np.array([e.size for e in self.axes], dtype=np.int64),
                            np.array([e.opaque for e in self.axes], dtype=bool))
        return self._arrays

    def find(self, value: ir.Value, axis: int) -> ChannelAxis | None:
        found = self._index.get((id(value), axis))
        return None if found is None else self.axes[found]

    def index_of(self, entry: ChannelAxis) -> int:
        return self._index[(id(entry.value), entry.axis)]

    @property
    def num_elements(self) -> int:
        return self._next
