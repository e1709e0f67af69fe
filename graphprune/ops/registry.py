"""The op-rule registry, keyed by ``(domain, op_type)`` with opset ranges."""

from __future__ import annotations

import onnx_ir as ir

from graphprune.ops.base import Rule, opset_of

_RULES: dict[tuple[str, str], list[Rule]] = {}


def register(rule_class: type[Rule]) -> type[Rule]:
    """Class decorator: registers one instance of ``rule_class`` for each of its op types."""
    rule = rule_class()
    for op_type in rule_class.op_types:
        rules = _RULES.setdefault((rule_class.domain, op_type), [])
        rules.append(rule)
        rules.sort(key=lambda r: r.cost_only)  # stable: a channel rule wins over a cost-only one
    return rule_class


def lookup(node: ir.Node) -> Rule | None:
    """The rule for ``node``'s op at its opset version, or None (the node then blocks)."""
    domain = "" if node.domain == "ai.onnx" else node.domain
    version = opset_of(node)
    for rule in _RULES.get((domain, node.op_type), ()):
        until = rule.until_version
        if rule.since_version <= version and (until is None or version <= until):
            return rule
    return None


def registered() -> list[tuple[str, str, Rule]]:
    """Every registered ``(domain, op_type, rule)``, for conformance tests and docs."""
    return [(d, op, r) for (d, op), rules in sorted(_RULES.items()) for r in rules]
