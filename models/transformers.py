"""Transformer zoo: BERT-style encoder, ViT, GPT-2 decoder with KV cache, Llama-style decoder.

The Llama style has RMSNorm, rotary embeddings, grouped-query attention and a SwiGLU MLP.

Written with plain torch ops (no ``nn.MultiheadAttention``, no fused SDPA) so that the exported
graphs show the Reshape/Transpose/MatMul/Softmax structure that real exporters write for
attention. Every build function is deterministic in ``seed`` and returns the model in eval mode.

Shapes (``B`` batch, ``S`` sequence, ``P`` past length, ``D`` hidden, ``H`` heads, ``Hd = D/H``):

- ``bert``: ``input_ids[B,S] int64, attention_mask[B,S] int64, token_type_ids[B,S] int64 ->
  last_hidden_state[B,S,D]``.
- ``vit``: ``pixel_values[B,3,32,32] -> logits[B,classes]``.
- ``gpt2``/``llama``: ``input_ids[B,S], past_key_i/past_value_i[B,Hkv,P,Hd] -> logits[B,S,V],
  present_key_i/present_value_i[B,Hkv,P+S,Hd]``.
"""

from __future__ import annotations

import dataclasses
import math

import torch
from torch import nn


@dataclasses.dataclass(frozen=True)
class Config:
    """Sizes of one transformer (``kv_heads < heads`` is grouped-query attention)."""

    hidden: int = 64
    heads: int = 4
    kv_heads: int = 4
    layers: int = 2
    mlp: int = 128
    vocab: int = 100
    positions: int = 64
    type_vocab: int = 2

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads


def _split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """``[B,S,H*Hd] -> [B,H,S,Hd]``."""
    b, s, d = x.shape
    return x.view(b, s, heads, d // heads).transpose(1, 2)


def _merge_heads(x: torch.Tensor) -> torch.Tensor:
    """``[B,H,S,Hd] -> [B,S,H*Hd]``."""
    b, h, s, hd = x.shape
    return x.transpose(1, 2).reshape(b, s, h * hd)


def _attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor | None):
    """``softmax(Q K^T / sqrt(Hd) + bias) V`` with explicit MatMuls."""
    scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(q.shape[-1])
    if bias is not None:
        scores = scores + bias
    return torch.matmul(torch.softmax(scores, dim=-1), v)


class SelfAttention(nn.Module):
    """Multi-head (or grouped-query) self-attention with separate Q, K, V projections."""

    def __init__(self, cfg: Config, bias: bool = True) -> None:
        super().__init__()
        self.cfg = cfg
        kv = cfg.kv_heads * cfg.head_dim
        self.q = nn.Linear(cfg.hidden, cfg.hidden, bias=bias)
        self.k = nn.Linear(cfg.hidden, kv, bias=bias)
        self.v = nn.Linear(cfg.hidden, kv, bias=bias)
        self.o = nn.Linear(cfg.hidden, cfg.hidden, bias=bias)

    def project(self, x: torch.Tensor):
        cfg = self.cfg
        return (_split_heads(self.q(x), cfg.heads), _split_heads(self.k(x), cfg.kv_heads),
                _split_heads(self.v(x), cfg.kv_heads))

    def finish(self, q, k, v, bias):
        groups = self.cfg.heads // self.cfg.kv_heads
        if groups > 1:  # each KV head serves ``groups`` consecutive query heads
            k = k.repeat_interleave(groups, dim=1)
            v = v.repeat_interleave(groups, dim=1)
        return self.o(_merge_heads(_attend(q, k, v, bias)))


class BertLayer(nn.Module):
    """Post-norm encoder layer: ``LN(x + Attn(x))``, then ``LN(h + W2 GELU(W1 h))``."""

    def __init__(self, cfg: Config) -> None:
        super().__init__()
        self.attn = SelfAttention(cfg)
        self.ln1 = nn.LayerNorm(cfg.hidden)
        self.up = nn.Linear(cfg.hidden, cfg.mlp)
        self.down = nn.Linear(cfg.mlp, cfg.hidden)
        self.ln2 = nn.LayerNorm(cfg.hidden)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        x = self.ln1(x + self.attn.finish(*self.attn.project(x), bias))
        return self.ln2(x + self.down(nn.functional.gelu(self.up(x))))


class Bert(nn.Module):
    """BERT-style encoder: word + position + token-type embeddings, post-norm layers."""

    def __init__(self, cfg: Config) -> None:
        super().__init__()
        self.word = nn.Embedding(cfg.vocab, cfg.hidden)
        self.position = nn.Embedding(cfg.positions, cfg.hidden)
        self.token_type = nn.Embedding(cfg.type_vocab, cfg.hidden)
        self.ln = nn.LayerNorm(cfg.hidden)
        self.layers = nn.ModuleList(BertLayer(cfg) for _ in range(cfg.layers))

    def forward(self, input_ids, attention_mask, token_type_ids):
        positions = torch.arange(input_ids.shape[1], device=input_ids.device).unsqueeze(0)
        x = self.word(input_ids) + self.position(positions) + self.token_type(token_type_ids)
        x = self.ln(x)
        bias = (1.0 - attention_mask[:, None, None, :].to(x.dtype)) * -10000.0
        for layer in self.layers:
            x = layer(x, bias)
        return x


class VitLayer(nn.Module):
    """Pre-norm encoder layer: ``x + Attn(LN(x))``, then ``x + MLP(LN(x))``."""

    def __init__(self, cfg: Config) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(cfg.hidden)
        self.attn = SelfAttention(cfg)
        self.ln2 = nn.LayerNorm(cfg.hidden)
        self.up = nn.Linear(cfg.hidden, cfg.mlp)
        self.down = nn.Linear(cfg.mlp, cfg.hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn.finish(*self.attn.project(self.ln1(x)), None)
        return x + self.down(nn.functional.gelu(self.up(self.ln2(x))))


class Vit(nn.Module):
    """ViT: 8x8 patches of a 32x32 image, a class token, learned positions, a linear head."""

    def __init__(self, cfg: Config, classes: int = 10, patch: int = 8, image: int = 32) -> None:
        super().__init__()
        self.patch = nn.Conv2d(3, cfg.hidden, patch, stride=patch)
        self.cls = nn.Parameter(torch.randn(1, 1, cfg.hidden) * 0.02)
        self.position = nn.Parameter(torch.randn(1, (image // patch) ** 2 + 1, cfg.hidden) * 0.02)
        self.layers = nn.ModuleList(VitLayer(cfg) for _ in range(cfg.layers))
        self.ln = nn.LayerNorm(cfg.hidden)
        self.head = nn.Linear(cfg.hidden, classes)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        x = self.patch(pixel_values).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], dim=1) + self.position
        for layer in self.layers:
            x = layer(x)
        return self.head(self.ln(x)[:, 0])


class RMSNorm(nn.Module):
    """``x / sqrt(mean(x^2) + eps) * weight``, written out as Pow/ReduceMean/Sqrt/Div/Mul."""

    def __init__(self, hidden: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat([-x[..., half:], x[..., :half]], dim=-1)


class DecoderLayer(nn.Module):
    """A causal decoder layer with a KV cache.

    GPT-2 style: LayerNorm, GELU. Llama style: RMSNorm, rotary Q/K, SwiGLU MLP
    ``down(silu(gate(x)) * up(x))``.
    """

    def __init__(self, cfg: Config, llama: bool) -> None:
        super().__init__()
        self.llama = llama
        norm = (lambda: RMSNorm(cfg.hidden)) if llama else (lambda: nn.LayerNorm(cfg.hidden))
        self.ln1, self.ln2 = norm(), norm()
        self.attn = SelfAttention(cfg, bias=not llama)
        self.up = nn.Linear(cfg.hidden, cfg.mlp, bias=not llama)
        self.gate = nn.Linear(cfg.hidden, cfg.mlp, bias=False) if llama else None
        self.down = nn.Linear(cfg.mlp, cfg.hidden, bias=not llama)

    def mlp(self, x: torch.Tensor) -> torch.Tensor:
        if self.gate is not None:
            return self.down(nn.functional.silu(self.gate(x)) * self.up(x))
        return self.down(nn.functional.gelu(self.up(x)))

    def forward(self, x, past_k, past_v, bias, cos, sin):
        q, k, v = self.attn.project(self.ln1(x))
        if self.llama:
            q = q * cos + _rotate_half(q) * sin
            k = k * cos + _rotate_half(k) * sin
        k = torch.cat([past_k, k], dim=2)
        v = torch.cat([past_v, v], dim=2)
        x = x + self.attn.finish(q, k, v, bias)
        return x + self.mlp(self.ln2(x)), k, v


class Decoder(nn.Module):
    """GPT-2-style (``llama=False``: learned positions) or Llama-style decoder with KV cache."""

    def __init__(self, cfg: Config, llama: bool) -> None:
        super().__init__()
        self.cfg, self.llama = cfg, llama
        self.word = nn.Embedding(cfg.vocab, cfg.hidden)
        self.position = None if llama else nn.Embedding(cfg.positions, cfg.hidden)
        self.layers = nn.ModuleList(DecoderLayer(cfg, llama) for _ in range(cfg.layers))
        self.ln = RMSNorm(cfg.hidden) if llama else nn.LayerNorm(cfg.hidden)
        self.head = nn.Linear(cfg.hidden, cfg.vocab, bias=False)
        inv = 1.0 / (10000 ** (torch.arange(0, cfg.head_dim, 2).float() / cfg.head_dim))
        angles = torch.outer(torch.arange(cfg.positions).float(), inv)
        self.register_buffer("cos_table", torch.cat([angles, angles], -1).cos(), persistent=False)
        self.register_buffer("sin_table", torch.cat([angles, angles], -1).sin(), persistent=False)

    def forward(self, input_ids, *past):
        s, p = input_ids.shape[1], past[0].shape[2]
        positions = torch.arange(p, p + s, device=input_ids.device)
        x = self.word(input_ids)
        if self.position is not None:
            x = x + self.position(positions)[None]
        cos, sin = self.cos_table[positions][None, None], self.sin_table[positions][None, None]
        causal = torch.ones(s, p + s, dtype=torch.bool).tril(diagonal=p)
        bias = torch.zeros(s, p + s).masked_fill(~causal, -10000.0)[None, None]
        present = []
        for i, layer in enumerate(self.layers):
            x, k, v = layer(x, past[2 * i], past[2 * i + 1], bias, cos, sin)
            present += [k, v]
        return (self.head(self.ln(x)), *present)


def _randomize(model: nn.Module, seed: int) -> nn.Module:
    """Deterministic non-trivial weights (norm scales and biases away from 1 and 0)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1:
                base = 1.0 if name.endswith("weight") else 0.0
                p.copy_(base + 0.1 * torch.randn(p.shape, generator=gen))
            else:
                p.copy_(torch.randn(p.shape, generator=gen) / math.sqrt(p.shape[-1]))
    return model.eval()


TINY = Config()
TINY_GQA = Config(heads=4, kv_heads=2)


def bert(cfg: Config = TINY, seed: int = 0) -> nn.Module:
    return _randomize(Bert(cfg), seed)


def vit(cfg: Config = TINY, seed: int = 0) -> nn.Module:
    return _randomize(Vit(cfg), seed)


def gpt2(cfg: Config = TINY, seed: int = 0) -> nn.Module:
    return _randomize(Decoder(cfg, llama=False), seed)


def llama(cfg: Config = TINY_GQA, seed: int = 0) -> nn.Module:
    return _randomize(Decoder(cfg, llama=True), seed)


TRANSFORMERS = {"bert": bert, "vit": vit, "gpt2": gpt2, "llama": llama}
