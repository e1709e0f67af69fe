"""Op knowledge: one rule per op family, registered by ``(domain, op_type, opset range)``."""

from graphprune.ops import (  # noqa: F401
    attention,
    contrib,
    conv,
    costs_only,
    einsum,
    elementwise,
    gather,
    grouped_attention,
    layout,
    linear,
    normalization,
    quantize,
    quantize_contrib,
    repeat,
    shape_of,
    spatial,
)
from graphprune.ops.base import Coupling, PlanView, Rule
from graphprune.ops.registry import lookup, register, registered

__all__ = ["Coupling", "PlanView", "Rule", "lookup", "register", "registered"]
