"""Refusals as values: why a channel axis cannot be pruned."""

from __future__ import annotations

import dataclasses
import enum


class BlockReason(enum.Enum):
    """Why a channel axis is left alone."""

    UNKNOWN_OP = "unknown_op"
    GRAPH_IO = "graph_io"
    EXCLUDED = "excluded"
    SUBGRAPH = "subgraph"
    UNKNOWN_SHAPE = "unknown_shape"
    DYNAMIC_SIZE = "dynamic_size"
    DYNAMIC_SHAPE_INPUT = "dynamic_shape_input"
    AXIS_NOT_PRESERVED = "axis_not_preserved"
    UNSUPPORTED_ATTRIBUTE = "unsupported_attribute"


@dataclasses.dataclass(frozen=True)
class Blocked:
    """A rule's refusal: every channel axis of ``node`` (or only ``axes``) stays untouched.

    Attributes:
        reason: The reason code; tests assert on it.
        node: Name of the node that refused ("" for graph inputs/outputs).
        op_type: The node's op type (or "graph").
        detail: One line for humans.
    """

    reason: BlockReason
    node: str
    op_type: str
    detail: str = ""

    def describe(self) -> str:
        where = f"{self.op_type} '{self.node}'" if self.node else self.op_type
        text = f"{self.reason.value} at {where}"
        return f"{text}: {self.detail}" if self.detail else text
