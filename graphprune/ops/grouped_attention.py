"""Grouped-query attention and rotary embeddings as onnxruntime fuses them (``com.microsoft``).

``GroupQueryAttention`` (what onnxruntime GenAI and the transformer optimizer write for Llama-style
decoders): ``Y[B,S,N*H]`` from ``query[B,S,N*H]``, ``key``/``value[B,L,KV*H]`` (or one packed
``query[B,S,(N+2KV)*H]`` with Q, K, V parts in that order), ``N = num_heads`` query heads and
``KV = kv_num_heads`` KV heads of ``H`` channels; query head ``n`` reads KV head
``n // G``, ``G = N / KV``. Optional ``past_key``/``past_value[B,KV,P,H]`` in,
``present_key``/``present_value[B,KV,T,H]`` out (BNSH).

Pruning unit: **one KV head together with the G query heads that share it** (the option of the
issue that keeps ``G`` fixed). It is the one the op's layout allows exactly: removing a KV head and
its query heads keeps ``N / KV = G`` and every remaining query head still reads its own KV head,
so ``num_heads`` and ``kv_num_heads`` are rewritten and nothing else changes. Query heads removed
within a KV group would have to be removed in equal numbers from every group (or ``n // G`` would
pair them with other KV heads); channel classes cannot state "equal count per group", and it would
leave the KV cache, the memory a decoder serves from, as large as before. The same unit is what
the plain-op decoders in the zoo get (Expand/Tile of a KV head to its queries). The report counts
such a group in KV heads (``heads_*``) and query heads (``query_heads_*``).

Couplings: channel ``c`` of Y (query head ``c // H``) is the same channel as channel ``c`` of Q and
channel ``c // (G*H) * H + c % H`` of K and V, so the G query heads of a KV group and the KV head's
channels form one class; a head-dim offset cannot go alone (the op derives ``H`` from the widths),
so every channel of a query head is coupled to its first. A KV cache's head axis (axis 1) maps
``c -> c // (G*H)``; as graph I/O it blocks unless ``--resize-io`` names it. ``attention_bias``,
``head_sink`` and the ``output_qk`` output block.

MACs: ``B*S*T*N*H`` for ``Q K^T`` and as many for ``P V``, ``T`` the key length plus the past
length (every query against every key: the kernel computes the causal triangle as a full block).

``RotaryEmbedding``: ``Y = rotate(X, cos_cache[pos], sin_cache[pos])`` per head, X either
``[B,S,N*H]`` (``num_heads`` attribute, or ``H = 2 * cos_cache.shape[1]`` when it is 0) or
``[B,N,S,H]``. Each output channel reads channels of its own head only (pairs ``i, i + H/2`` or
``2i, 2i+1``), so whole heads pass; the head-dim axis stays whole. Elementwise: no MACs.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from graphprune.core import Blocked, BlockReason
from graphprune.ops.attention import _head_closure, _HeadsRule, _in_use
from graphprune.ops.base import (
    Coupling,
    Dims,
    PlanView,
    Rule,
    attr,
    fill_shape,
    identity,
    mapped,
    static_shape,
)
from graphprune.ops.registry import register

CONTRIB = "com.microsoft"
_UNSUPPORTED_INPUTS = {10: "attention_bias", 11: "head_sink"}


def _input(node: ir.Node, index: int) -> ir.Value | None:
    return node.inputs[index] if len(node.inputs) > index else None


def _output(node: ir.Node, index: int) -> ir.Value | None:
    value = node.outputs[index] if len(node.outputs) > index else None
    return value if value is not None and value.name else None


@register
class GroupQueryAttentionRule(_HeadsRule):
    """``com.microsoft::GroupQueryAttention``: a KV head and its query heads go together."""

    op_types = ("GroupQueryAttention",)

    def _heads(self, node: ir.Node) -> tuple[int, int, int] | None:
        """``(N, KV, H)`` from the attributes and the query width, or None."""
        n, kv = attr(node, "num_heads", 0), attr(node, "kv_num_heads", 0)
        qs = static_shape(_input(node, 0))
        if not n or not kv or n % kv or qs is None or len(qs) != 3 or qs[2] is None:
            return None
        width = n + 2 * kv if _input(node, 1) is None else n
        return (n, kv, qs[2] // width) if qs[2] % width == 0 else None

    def couplings(self, node: ir.Node) -> list[Coupling] | Blocked:
        extra = [name for i, name in _UNSUPPORTED_INPUTS.items() if _input(node, i) is not None]
        if extra or _in_use(node.outputs[3:]):
            detail = ", ".join(extra or ["output_qk"]) + " in use"
            return self.blocked(node, BlockReason.UNSUPPORTED_ATTRIBUTE, detail)
        heads = self._heads(node)
        if heads is None:
            detail = "query width, num_heads or kv_num_heads unknown or not divisible"
            return self.blocked(node, BlockReason.UNKNOWN_SHAPE, detail)
        n, kv, hd = heads
        q, k, v = (_input(node, i) for i in range(3))
        y = node.outputs[0]
        c = np.arange(n * hd)
        kv_head = c // (n // kv * hd)
        kv_channel = kv_head * hd + c % hd  # the K/V channel query channel c reads
        found = [identity((q, 0), (y, 0)), identity((q, 1), (y, 1)),
                 _head_closure(y, 2, hd, n * hd)]
        if k is None:  # packed [Q | K | V]
            found += [mapped((y, 2), (q, 2), c, c), mapped((y, 2), (q, 2), c, n * hd + kv_channel),
                      mapped((y, 2), (q, 2), c, (n + kv) * hd + kv_channel)]
        elif v is None or any(len(static_shape(t) or ()) != 3 for t in (k, v)):
            return self.blocked(node, BlockReason.UNKNOWN_SHAPE, "key or value is not [B, L, D]")
        else:
            found += [identity((q, 2), (y, 2)), identity((k, 0), (y, 0)), identity((v, 0), (y, 0)),
                      identity((k, 1), (v, 1)), mapped((y, 2), (k, 2), c, kv_channel),
                      mapped((y, 2), (v, 2), c, kv_channel)]
        for cache in (_input(node, 3), _input(node, 4), _output(node, 1), _output(node, 2)):
            if cache is None:
                continue
            if len(static_shape(cache) or ()) != 4:
                return self.blocked(node, BlockReason.UNKNOWN_SHAPE, "KV cache is not [B,KV,T,H]")
            found += [identity((cache, 0), (y, 0)), mapped((y, 2), (cache, 1), c, kv_head)]
        return found

    def macs(self, node: ir.Node, dims: Dims) -> int:
        q = dims(_input(node, 0))
        heads = self._heads(node)
        if q is None or heads is None:
            return 0
        n, _, hd = heads
        k, past = dims(_input(node, 1)), dims(_input(node, 3))
        length = (q[1] if k is None else k[1]) + (past[2] if past is not None else 0)
        return 2 * q[0] * q[1] * length * n * hd

    def rewrite(self, node: ir.Node, plan: PlanView) -> None:
        n, kv = attr(node, "num_heads"), attr(node, "kv_num_heads")
        super().rewrite(node, plan)
        new = attr(node, "num_heads")
        if new != n:
            node.attributes["kv_num_heads"] = ir.AttrInt64("kv_num_heads", new // (n // kv))

    def refine_shapes(self, node: ir.Node) -> bool:
        q, heads = _input(node, 0), self._heads(node)
        if q is None or q.shape is None or heads is None:
            return False
        n, kv, hd = heads
        batch, seq = q.shape[0], q.shape[1]
        changed = fill_shape(node.outputs[0], [batch, seq, n * hd], q.dtype)
        past, key = static_shape(_input(node, 3)), static_shape(_input(node, 1))
        length = seq if key is None else _input(node, 1).shape[1]
        if past is not None:  # separate past and present buffers: T = P + L
            length = past[2] + length if isinstance(length, int) and past[2] else None
        for index in (1, 2):
            changed |= fill_shape(_output(node, index), [batch, kv, length, hd], q.dtype)
        return changed


@register
class RotaryEmbeddingRule(Rule):
    """``com.microsoft::RotaryEmbedding``: rotates within each head; whole heads pass."""

    op_types = ("RotaryEmbedding",)
    domain = CONTRIB

    def couplings(self, node: ir.Node) -> list[Coupling] | Blocked:
        x, y = node.inputs[0], node.outputs[0]
        xs = static_shape(x)
        if xs is None or len(xs) not in (3, 4):
            return self.blocked(node, BlockReason.UNKNOWN_SHAPE, "input is not 3-D or 4-D")
        if len(xs) == 4:  # [B, N, S, H]: the head axis passes, the head-dim axis stays whole
            return [identity((x, a), (y, a)) for a in range(3)]
        hd = self._head_dim(node, xs)
        if hd is None:
            return self.blocked(node, BlockReason.UNKNOWN_SHAPE, "head size unknown")
        return [identity((x, 0), (y, 0)), identity((x, 1), (y, 1)), identity((x, 2), (y, 2)),
                _head_closure(y, 2, hd, xs[2])]

    @staticmethod
    def _head_dim(node: ir.Node, xs) -> int | None:
        heads, cos = attr(node, "num_heads", 0), static_shape(_input(node, 2))
        if xs[2] is None:
            return None
        if heads:
            return xs[2] // heads if xs[2] % heads == 0 else None
        if cos is None or cos[-1] is None or xs[2] % (2 * cos[-1]):
            return None
        return 2 * cos[-1]

    def rewrite(self, node: ir.Node, plan: PlanView) -> None:
        y, heads = node.outputs[0], attr(node, "num_heads", 0)
        ys = static_shape(y)
        if not heads or ys is None or len(ys) != 3:
            return
        new = plan.new_size(y, 2)
        if new is not None and new != ys[2]:
            node.attributes["num_heads"] = ir.AttrInt64("num_heads", new // (ys[2] // heads))

    def refine_shapes(self, node: ir.Node) -> bool:
        x = node.inputs[0]
        if x is None or x.shape is None:
            return False
        return fill_shape(node.outputs[0], list(x.shape), x.dtype)
