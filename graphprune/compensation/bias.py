"""BiasCompensationPass: the removed input channels' mean contribution, folded into the bias.

FLAP's bias compensation. A layer ``Y = W * X + b`` that lost input channels ``R`` computes
``Y' = W[:, K] * X_K + b``; on average the original also added ``sum_{c in R} W[:, c] * x_c``.
With ``m_c`` the mean of ``x_c`` over the calibration set (the ORIGINAL model's input to the
layer, every position of every batch), the pass sets::

    b'[o] = b[o] + sum_{c in R} sum_k W[o, c, k] * m_c

where ``k`` runs over the kernel taps of a convolution (none for MatMul/Gemm). This is exact
when every removed channel is constant, except at a convolution's zero-padded border (a tap that
reads padding adds nothing there). For a transposed layout (a weight whose full axis is the
input, with kernel taps: ConvTranspose) each input position scatters to every tap, so the mean
over output positions is scaled by ``positions in / positions out`` (``1 / prod(strides)``). A
grouped layer adds each group's removed channels to that group's outputs only.

The means are streamed (per-channel sums only). Channel layouts come from
:meth:`Rule.linear <graphprune.ops.base.Rule.linear>`; no op names here.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx_ir as ir

from graphprune.calibration import ProtoModel, collect_stats
from graphprune.compensation import COMPENSATIONS
from graphprune.compensation.context import CompensationContext
from graphprune.compensation.layers import Layer, linear_layers, source_name


@dataclasses.dataclass
class PrunedLayer:
    """A linear layer of the pruned model whose input channels were removed.

    Attributes:
        layer: The layer (in the pruned model).
        kept: Kept indices of the weight's input axis, in the original's numbering (per group
            when the input axis is the weight's per-group axis).
        weight: The original weight (before slicing).
        kept_out: Kept indices of the weight's output axis (None: all kept).
        x: The layer's input's name in the original model.
        y: The layer's output's name in the original model.
    """

    layer: Layer
    kept: np.ndarray
    kept_out: np.ndarray | None
    weight: np.ndarray
    x: str
    y: str

    @property
    def removed(self) -> np.ndarray:
        """Removed indices of the original weight's input axis."""
        size = self.weight.shape[self.layer.linear.in_axis]
        return np.setdiff1d(np.arange(size), self.kept)


def pruned_layers(context: CompensationContext, model: ir.Model) -> list[PrunedLayer]:
    """Every linear layer of ``model`` that lost input channels, in topological order."""
    found = []
    for layer in linear_layers(model):
        weight = layer.node.inputs[layer.linear.weight]
        kept = context.plan.kept(weight, layer.linear.in_axis)
        if kept is None:
            continue
        kept_out = context.plan.kept(weight, layer.linear.out_axis)
        found.append(PrunedLayer(layer, kept, kept_out, context.original_array(weight.name),
                                 source_name(layer.x), source_name(layer.y)))
    return found


def mean_contribution(pruned: PrunedLayer, mean: np.ndarray, scale: float = 1.0
                      ) -> np.ndarray:
    """``sum_{c removed} sum_k W[o, c, k] * mean[c]`` per kept output channel ``o``.

    Args:
        pruned: The layer and its original weight.
        mean: Per-channel means of the original ``X`` (all of its channels).
        scale: Positions in per position out (scatter layouts; 1 otherwise).
    """
    linear, w = pruned.layer.linear, pruned.weight.astype(np.float64)
    taps = w.reshape(w.shape[0], w.shape[1], -1).sum(axis=2)  # kernel summed: [axis0, axis1]
    removed = np.zeros(w.shape[linear.in_axis], dtype=bool)
    removed[pruned.removed] = True
    if linear.in_axis == 0:  # W[in, out] (Gemm/MatMul; ConvTranspose with one group)
        full = np.where(removed, mean, 0.0) @ taps
    else:  # W[out (all), in / groups]: group g reads X channels g*per .. (g+1)*per
        per = w.shape[1]
        groups = len(mean) // per
        rows = w.shape[0] // groups
        full = np.concatenate([taps[g * rows:(g + 1) * rows] @ np.where(
            removed, mean[g * per:(g + 1) * per], 0.0) for g in range(groups)])
    full = full * scale
    return full if pruned.kept_out is None else full[pruned.kept_out]


def supported(pruned: PrunedLayer) -> str | None:
    """Why the pass leaves the layer alone (None: it handles it)."""
    linear = pruned.layer.linear
    if linear.in_axis == 0 and linear.groups > 1:
        return "grouped layer whose weight's full axis is the input (grouped ConvTranspose)"
    return None


class BiasCompensationPass(ir.passes.InPlacePass):
    """Adds each pruned layer's removed input channels' mean contribution to its bias.

    Rules:
    1. A layer whose weight lost input channels gets ``b' = b + W_R * m_R`` (module docstring),
       with ``m`` measured on the original model over the calibration batches.
    2. A layer without a bias gets one (its op's bias input, or an ``Add`` after it).
    3. Weights are unchanged; layers that lost no input channel are untouched.
    """

    def __init__(self, context: CompensationContext) -> None:
        super().__init__()
        self.context = context
        self.report: dict = {}

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        layers, skipped = [], []
        for p in pruned_layers(self.context, model):
            reason = supported(p)
            if reason is None:
                layers.append(p)
            else:
                skipped.append({"node": p.layer.node.name, "reason": reason})
        requests = {p.x: p.layer.linear.x_axis for p in layers}
        scatter = [p for p in layers if _scatters(p)]
        requests.update({p.y: p.layer.linear.y_axis for p in scatter})
        original = ProtoModel(self.context.original, self.context.folder)
        stats = collect_stats(original, self.context.batches, requests) if layers else {}
        shift = 0.0
        for p in layers:
            scale = stats[p.x].count / stats[p.y].count if p in scatter else 1.0
            delta = mean_contribution(p, stats[p.x].mean, scale)
            p.layer.set_bias(p.layer.bias() + delta)
            shift = max(shift, float(np.abs(delta).max(initial=0.0)))
        self.report = {"layers": len(layers), "max_bias_change": shift,
                       "scatter_layers": len(scatter), "skipped": skipped}
        return ir.passes.PassResult(model, bool(layers))


def _scatters(pruned: PrunedLayer) -> bool:
    """A weight with kernel taps whose full axis is the input (ConvTranspose's layout)."""
    return pruned.weight.ndim > 2 and pruned.layer.linear.in_axis == 0


COMPENSATIONS["bias"] = BiasCompensationPass
