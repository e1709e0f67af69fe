"""Einsum: ``Y[out] = sum over contracted letters of prod_k X_k[letters_k]``.

Axes that share a letter are the same channels: a letter kept in the output couples every
operand axis carrying it to the output axis; a contracted letter couples the operand axes that
carry it (a dot product, as in MatMul's K). Ellipses and letters repeated within one operand
(diagonals) block.

MACs: ``(n - 1) * prod(every index size)``, n operands (a single operand computes nothing).
"""

from __future__ import annotations

import re

import numpy as np
import onnx_ir as ir

from graphprune.core import Blocked, BlockReason
from graphprune.ops.base import AxisRef, Coupling, Dims, Rule, attr, identity, static_shape
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

    def macs(self, node: ir.Node, dims: Dims) -> int:
        terms, _ = _einsum_terms(attr(node, "equation", ""))
        shapes = [dims(v) for v in node.inputs]
        if len(terms) != len(shapes) or len(shapes) < 2 or any(s is None for s in shapes):
            return 0
        sizes: dict[str, int] = {}
        ellipsis: list[tuple[int, ...]] = []
        for term, shape in zip(terms, shapes, strict=True):
            letters = re.findall(r"[A-Za-z]", term)
            if "..." in term:
                head = term.index("...")
                before = len(re.findall(r"[A-Za-z]", term[:head]))
                rank = len(shape) - len(letters)
                ellipsis.append(tuple(shape[before:before + rank]))
                shape = shape[:before] + shape[before + rank:]
            if len(shape) != len(letters):
                return 0
            for letter, size in zip(letters, shape, strict=True):
                sizes[letter] = max(sizes.get(letter, 1), size)
        broadcast = np.broadcast_shapes(*ellipsis) if ellipsis else ()
        product = self.numel(tuple(sizes.values())) * self.numel(broadcast)
        return (len(shapes) - 1) * product


def _einsum_terms(equation: str) -> tuple[list[str], str | None]:
    lhs, _, rhs = equation.replace(" ", "").partition("->")
    return lhs.split(","), (rhs if "->" in equation else None)
