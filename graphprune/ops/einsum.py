"""Einsum: ``Y[out] = sum over contracted letters of prod_k X_k[letters_k]``.

Axes that share a letter are the same channels: a letter kept in the output couples every
operand axis carrying it to the output axis; a contracted letter couples the operand axes that
carry it (a dot product, as in MatMul's K). Ellipses and letters repeated within one operand
(diagonals) block.
"""

from __future__ import annotations

import onnx_ir as ir

from graphprune.analysis.blocked import Blocked, BlockReason
from graphprune.ops.base import AxisRef, Coupling, Rule, attr, identity, static_shape
from graphprune.ops.registry import register


def parse_equation(equation: str, count: int) -> tuple[list[str], str] | None:
    """``"bhid,bhjd->bhij"`` -> ``(["bhid", "bhjd"], "bhij")``; None for forms not handled."""
    text = equation.replace(" ", "")
    if "." in text:
        return None
    lhs, arrow, rhs = text.partition("->")
    operands = lhs.split(",")
    if len(operands) != count or any(len(set(op)) != len(op) for op in operands):
        return None
    if not arrow:  # implicit output: letters used once, in alphabetical order
        letters = "".join(operands)
        rhs = "".join(sorted(c for c in set(letters) if letters.count(c) == 1))
    return operands, rhs


@register
class EinsumRule(Rule):
    """Einsum (opset >= 12): see the module docstring."""

    op_types = ("Einsum",)
    since_version = 12

    def couplings(self, node: ir.Node) -> list[Coupling] | Blocked:
        inputs, y = list(node.inputs), node.outputs[0]
        parsed = parse_equation(attr(node, "equation", ""), len(inputs))
        if parsed is None:
            return self.blocked(node, BlockReason.UNSUPPORTED_ATTRIBUTE, "ellipsis or diagonal")
        operands, out = parsed
        shapes = [static_shape(v) for v in inputs]
        if any(s is None or len(s) != len(op) for s, op in zip(shapes, operands, strict=True)):
            return self.blocked(node, BlockReason.UNKNOWN_SHAPE, "operand rank unknown")
        by_letter: dict[str, list[AxisRef]] = {}
        for value, letters in zip(inputs, operands, strict=True):
            for axis, letter in enumerate(letters):
                by_letter.setdefault(letter, []).append((value, axis))
        for axis, letter in enumerate(out):
            by_letter.setdefault(letter, []).append((y, axis))
        found = []
        for refs in by_letter.values():
            sized = [r for r in refs if static_shape(r[0])[r[1]] != 1]  # size 1 broadcasts
            found += [identity(sized[0], other) for other in sized[1:]]
        return found
