"""The axis table: every ``(value, axis)`` the rules mention, laid out as a range of element ids."""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx_ir as ir

from graphprune.ops.base import AxisRef, is_constant, static_shape


@dataclasses.dataclass(frozen=True)
class ChannelAxis:
    """One axis of one tensor: elements ``base .. base+size-1`` in the analysis.

    ``opaque`` axes have no static size; they get one element, which is always blocked.
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

    def ids(self) -> np.ndarray:
        return np.arange(self.base, self.base + self.size)


class AxisTable:
    """Assigns element ids to axes on first use."""

    def __init__(self) -> None:
        self.axes: list[ChannelAxis] = []
        self._index: dict[tuple[int, int], int] = {}
        self._next = 0

    def get(self, ref: AxisRef) -> ChannelAxis:
        value, axis = ref
        key = (id(value), axis)
        found = self._index.get(key)
        if found is not None:
            return self.axes[found]
        shape = static_shape(value)
        size = shape[axis] if shape is not None and axis < len(shape) else None
        opaque = size is None
        size = 1 if opaque else size
        entry = ChannelAxis(value, axis, self._next, size, opaque, is_constant(value))
        self._index[key] = len(self.axes)
        self.axes.append(entry)
        self._next += entry.size
        return entry

    def find(self, value: ir.Value, axis: int) -> ChannelAxis | None:
        found = self._index.get((id(value), axis))
        return None if found is None else self.axes[found]

    def index_of(self, entry: ChannelAxis) -> int:
        return self._index[(id(entry.value), entry.axis)]

    @property
    def num_elements(self) -> int:
        return self._next
