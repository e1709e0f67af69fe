"""onnxruntime's fused transformer ops (``com.microsoft``), as its transformer optimizer writes.

``Attention``: ``Y[B,S,D] = MHA(X W[Din, 3D] + bias[3D])`` with ``num_heads`` heads of
``Hd = D / num_heads``; columns ``[0, D)`` of W are Q, ``[D, 2D)`` K and ``[2D, 3D)`` V, head
``h`` owning columns ``h*Hd .. h*Hd + Hd - 1`` of each part, and output channels of the same
range. ``MultiHeadAttention``: the same with Q, K, V as three inputs ``[B,S,D]``.

A head is removed whole: its Q, K and V columns, its output channels and one of ``num_heads``
(rewritten). A head-dim offset cannot be removed alone (the op derives ``Hd`` from ``D``), so
every channel of a head is coupled to the head's first channel. KV-cache inputs and outputs
(``past``/``present``) block.

MACs: Attention ``B*S*I*|qkv|`` projections + ``B*S*L*(Dq + Dv)`` (QK^T, PV);
MultiHeadAttention ``B*S*L*(Dq + Dv)`` (its projections are separate MatMuls).

``SkipLayerNormalization`` and friends normalize the last axis (the residual stream), which
stays whole; ``BiasGelu``/``FastGelu``/``Gelu``/``QuickGelu`` are elementwise with a bias along
the last axis. ONNX has no schema for these ops, so output shapes are filled here.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx_ir as ir

from graphprune.core import Blocked, BlockReason
from graphprune.ops.base import (
    Coupling,
    Dims,
    PlanView,
    Rule,
    attr,
    broadcast_couplings,
    fill_shape,
    identity,
    mapped,
    static_shape,
)
from graphprune.ops.registry import register

CONTRIB = "com.microsoft"


def _same_shape(node: ir.Node, outputs: range) -> bool:
    x = node.inputs[0]
    if x is None or x.shape is None:
        return False
    changed = False
    for k in outputs:
        if k < len(node.outputs):
            changed |= fill_shape(node.outputs[k], list(x.shape), x.dtype)
    return changed


def _in_use(values) -> bool:
    return any(v is not None and v.name and (v.uses() or v.is_graph_output()) for v in values)


def _head_closure(value: ir.Value, axis: int, head_dim: int, size: int) -> Coupling:
    """Every channel of a head is the same channel as the head's first one."""
    c = np.arange(size)
    closure = mapped((value, axis), (value, axis), c, c // head_dim * head_dim)
    return dataclasses.replace(closure, blocks=True)


class _HeadsRule(Rule):
    """Shared by the attention ops: ``num_heads`` heads of the output's last axis."""

    domain = CONTRIB

    def head_dim(self, node: ir.Node) -> int | None:
        out = static_shape(node.outputs[0])
        heads = attr(node, "num_heads")
        if out is None or out[-1] is None or not heads or out[-1] % heads:
            return None
        return out[-1] // heads

    def rewrite(self, node: ir.Node, plan: PlanView) -> None:
        y = node.outputs[0]
        size, new = static_shape(y)[-1], plan.new_size(y, len(y.shape) - 1)
        if new is not None and new != size:
            heads = attr(node, "num_heads")
            node.attributes["num_heads"] = ir.AttrInt64("num_heads", new // (size // heads))


@register
class AttentionRule(_HeadsRule):
    """``com.microsoft::Attention`` with packed QKV weights (see module docstring)."""

    op_types = ("Attention",)

    def couplings(self, node: ir.Node) -> list[Coupling] | Blocked:
        x, w, y = node.inputs[0], node.inputs[1], node.outputs[0]
        bias = node.inputs[2] if len(node.inputs) > 2 else None
        if _in_use(node.outputs[1:]) or any(v is not None for v in node.inputs[4:]):
            detail = "KV cache, attention bias or past length inputs in use"
            return self.blocked(node, BlockReason.UNSUPPORTED_ATTRIBUTE, detail)
        sizes = attr(node, "qkv_hidden_sizes")
        if sizes is not None and len(set(sizes)) != 1:
            return self.blocked(node, BlockReason.UNSUPPORTED_ATTRIBUTE, "qkv_hidden_sizes differ")
        if attr(node, "do_rotary", 0):
            return self.blocked(node, BlockReason.UNSUPPORTED_ATTRIBUTE, "do_rotary")
        xs, ws, hd = static_shape(x), static_shape(w), self.head_dim(node)
        if xs is None or ws is None or hd is None or len(xs) != 3:
            return self.blocked(node, BlockReason.UNKNOWN_SHAPE, "input or weight shape unknown")
        d = ws[1] // 3
        c = np.arange(d)
        found = [identity((x, 0), (y, 0)), identity((x, 1), (y, 1)),
                 identity((x, 2), (w, 0)), _head_closure(y, 2, hd, d)]
        for part in range(3):
            found.append(mapped((y, 2), (w, 1), c, part * d + c))
            if bias is not None:
                found.append(mapped((y, 2), (bias, 0), c, part * d + c))
        return found

    def macs(self, node: ir.Node, dims: Dims) -> int:
        x, w, y = dims(node.inputs[0]), dims(node.inputs[1]), dims(node.outputs[0])
        if x is None or w is None or y is None or len(x) != 3 or len(w) != 2:
            return 0
        batch, seq = x[0], x[1]
        sizes = attr(node, "qkv_hidden_sizes", None)
        dq = int(sizes[0]) if sizes else w[1] // 3
        past = dims(node.inputs[4]) if len(node.inputs) > 4 else None
        total = seq + (past[3] if past is not None and len(past) == 5 else 0)
        return batch * seq * w[0] * w[1] + batch * seq * total * (dq + y[2])

    def rewrite(self, node: ir.Node, plan: PlanView) -> None:
        super().rewrite(node, plan)
        new = plan.new_size(node.outputs[0], 2)
        if attr(node, "qkv_hidden_sizes") is not None and new is not None:
            node.attributes["qkv_hidden_sizes"] = ir.AttrInt64s("qkv_hidden_sizes", [new] * 3)

    def refine_shapes(self, node: ir.Node) -> bool:
        x, w = node.inputs[0], node.inputs[1]
        ws = static_shape(w)
        if x is None or x.shape is None or ws is None or len(x.shape) != 3:
            return False
        sizes = attr(node, "qkv_hidden_sizes")
        d = sizes[2] if sizes else ws[1] // 3
        return fill_shape(node.outputs[0], [x.shape[0], x.shape[1], d], x.dtype)


@register
class MultiHeadAttentionRule(_HeadsRule):
    """``com.microsoft::MultiHeadAttention`` with separate ``[B,S,D]`` query, key and value."""

    op_types = ("MultiHeadAttention",)

    def couplings(self, node: ir.Node) -> list[Coupling] | Blocked:
        q, k, v = (node.inputs[i] if len(node.inputs) > i else None for i in range(3))
        y = node.outputs[0]
        if k is None or v is None or _in_use(node.outputs[1:]) or \
                any(x is not None for x in node.inputs[3:]):
            detail = "packed QKV, bias, masks or KV cache inputs"
            return self.blocked(node, BlockReason.UNSUPPORTED_ATTRIBUTE, detail)
        shapes = [static_shape(t) for t in (q, k, v, y)]
        hd = self.head_dim(node)
        if hd is None or any(s is None or len(s) != 3 for s in shapes):
            return self.blocked(node, BlockReason.UNKNOWN_SHAPE, "inputs are not [B, S, D]")
        d = shapes[3][2]
        return [identity((q, 0), (y, 0)), identity((q, 1), (y, 1)), identity((k, 0), (y, 0)),
                identity((v, 0), (y, 0)), identity((k, 1), (v, 1)), identity((q, 2), (k, 2)),
                identity((v, 2), (y, 2)), identity((q, 2), (y, 2)), _head_closure(y, 2, hd, d)]

    def macs(self, node: ir.Node, dims: Dims) -> int:
        q, y = dims(node.inputs[0]), dims(node.outputs[0])
        k = dims(node.inputs[1]) if len(node.inputs) > 1 else None
        if q is None or y is None or len(y) != 3:
            return 0
        batch, seq = q[0], q[1]
        dq = q[2] if len(q) == 3 else (q[2] * q[4] if len(q) == 5 else None)
        if k is None:
            length = seq
        elif len(k) == 3:
            length = k[1]
        elif len(k) == 4:  # [B, N, L, H]: keys already split into heads
            length = k[2]
        else:
            return 0
        return 0 if dq is None else batch * seq * length * (dq + y[2])

    def refine_shapes(self, node: ir.Node) -> bool:
        q, v = node.inputs[0], node.inputs[2] if len(node.inputs) > 2 else None
        if q is None or v is None or q.shape is None or v.shape is None or len(q.shape) != 3:
            return False
        return fill_shape(node.outputs[0], [q.shape[0], q.shape[1], v.shape[-1]], q.dtype)


@register
class SkipLayerNormRule(Rule):
    """``Y = LayerNorm(X + skip + bias)`` over the last axis, which stays whole.

    Extra outputs: ``mean`` and ``inv_std_var`` (size 1 last), ``input_skip_bias_sum`` (X's).
    """

    op_types = ("SkipLayerNormalization", "SkipSimplifiedLayerNormalization")
    domain = CONTRIB

    def couplings(self, node: ir.Node) -> list[Coupling] | Blocked:
        x, skip = node.inputs[0], node.inputs[1]
        xs = static_shape(x)
        if xs is None:
            return self.blocked(node, BlockReason.UNKNOWN_SHAPE, "input rank unknown")
        lead = range(len(xs) - 1)
        found = [identity((x, a), (out, a)) for out in node.outputs if out is not None
                 and out.name and len(static_shape(out) or ()) == len(xs) for a in lead]
        ss = static_shape(skip)
        if ss is not None and len(ss) == len(xs):
            found += [identity((skip, a), (x, a)) for a in lead]
        return found

    def refine_shapes(self, node: ir.Node) -> bool:
        changed = _same_shape(node, range(0, 1)) | _same_shape(node, range(3, 4))
        x = node.inputs[0]
        if x is not None and x.shape is not None:
            stats = [*list(x.shape)[:-1], 1]
            for k in (1, 2):
                if k < len(node.outputs):
                    changed |= fill_shape(node.outputs[k], stats, ir.DataType.FLOAT)
        return changed


@register
class EmbedLayerNormRule(Rule):
    """``EmbedLayerNormalization``: embeddings + LayerNorm of the residual stream (whole).

    ``[B,S]`` of the ids pass; output shapes are filled for the ops after it.
    """

    op_types = ("EmbedLayerNormalization",)
    domain = CONTRIB

    def couplings(self, node: ir.Node) -> list[Coupling] | Blocked:
        ids, y = node.inputs[0], node.outputs[0]
        return [identity((ids, a), (y, a)) for a in range(2)]

    def refine_shapes(self, node: ir.Node) -> bool:
        ids, word = node.inputs[0], node.inputs[2]
        ws = static_shape(word)
        if ids is None or ids.shape is None or ws is None:
            return False
        changed = fill_shape(node.outputs[0], [*ids.shape, ws[1]], word.dtype)
        if len(node.outputs) > 1:
            changed |= fill_shape(node.outputs[1], [ids.shape[0]], ir.DataType.INT32)
        if len(node.outputs) > 2:
            changed |= fill_shape(node.outputs[2], [*ids.shape, ws[1]], word.dtype)
        return changed


@register
class BiasActivationRule(Rule):
    """``Y = act(X + bias)`` (BiasGelu, FastGelu, Gelu, QuickGelu): elementwise, broadcasting."""

    op_types = ("BiasGelu", "FastGelu", "Gelu", "QuickGelu")
    domain = CONTRIB

    def couplings(self, node: ir.Node) -> list[Coupling] | Blocked:
        return broadcast_couplings(node, [v for v in node.inputs if v is not None])

    def refine_shapes(self, node: ir.Node) -> bool:
        return _same_shape(node, range(0, 1))
