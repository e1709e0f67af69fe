"""Per-channel statistics recalibration: each kept channel's mean and spread restored.

For every linear layer ``Y = W * X + b`` (:func:`linear_layers`, in topological order), on the
calibration batches, the pass measures each output channel's mean ``mu`` and standard deviation
``sd`` in the pruned model *as corrected so far* and in the original model at the original
channel it was (``plan.kept(Y, y_axis)``), then rescales the channel:

    s = clip(sd_orig / sd_pruned, lo, hi)       (default [0.5, 2])
    W[out c] *= s,   b' = s * b + (mu_orig - s * mu_pruned)

so that the channel's mean becomes the original's and its standard deviation too (where the
clip does not bind). Rules:

1. Channels whose standard deviation is about 0 (in either model: constant channels) keep
   ``s = 1``; only their mean is moved. A layer whose statistics are not finite is left alone.
2. A layer with a kept ``BatchNormalization`` after it: the BN is a per-channel affine map, the
   same in both models, so restoring the layer output's mean and spread restores the BN
   output's too: this *is* BatchNorm re-estimation, with the original's statistics as the
   target (and exactly the classic re-estimation, BN output mean ``beta`` and spread
   ``|gamma|``, when the original's running statistics are its calibration statistics).
3. Schedule. Strictly sequential recalibration measures one layer per pass over the data. A
   layer's statistics depend only on the layers upstream of it, so layers with no path between
   them are corrected together: layer ``L`` is at level ``1 + max(level of the linear layers
   upstream of L)`` (0 with none), and one pass over the data per level measures every layer
   of that level. This equals the sequential result exactly (a correction changes nothing that
   is not downstream of it), and is the fewest passes any exact schedule can have: each level
   needs the corrections of the level before it.
4. Memory: batches are streamed; only per-channel sums are kept
   (:func:`graphprune.calibration.collect_stats`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx_ir as ir

from graphprune.calibration import ProtoModel, Stats, collect_stats
from graphprune.compensation import COMPENSATIONS
from graphprune.compensation.context import CompensationContext
from graphprune.compensation.layers import Layer, linear_layers

CLIP = (0.5, 2.0)  # the range of the scale s (the measured default of the issue)
CONSTANT = 1e-6  # a channel whose sd is below this share of its layer's largest sd is constant


class StatsRecalibrationPass(ir.passes.InPlacePass):
    """Restores each linear layer's per-output-channel mean and standard deviation.

    Args:
        context: The original, the plan and the calibration batches.
        clip: Bounds of the per-channel scale ``s`` (default :data:`CLIP`).
    """

    def __init__(self, context: CompensationContext,
                 clip: tuple[float, float] | None = None) -> None:
        super().__init__()
        self.context = context
        self.clip = tuple(clip or CLIP)
        self.report: dict = {}

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        layers = [layer for layer in linear_layers(model) if layer.y.name]
        names = {id(layer.node): layer.y.name for layer in layers}  # before any edit
        original = self._original_stats(layers, names)
        layers = [layer for layer in layers if names[id(layer.node)] in original]
        levels = schedule(layers)
        scaled = shifted = 0
        for level in levels:
            pruned = collect_stats(model, self.context.pruned_batches(),
                                   {layer.y.name: _axis(layer) for layer in level})
            for layer in level:
                s, shift = self._correction(layer, original[names[id(layer.node)]],
                                            pruned[layer.y.name])
                if s is None:
                    continue
                apply(layer, s, shift)
                scaled += int(np.count_nonzero(s != 1.0))
                shifted += 1
        self.report = {"layers": shifted, "data_passes": len(levels) + 1,
                       "channels_scaled": scaled, "clip": list(self.clip),
                       "skipped": len(linear_layers(model)) - len(layers)}
        return ir.passes.PassResult(model, modified=bool(shifted))

    def _original_stats(self, layers: Sequence[Layer], names: dict[int, str]) -> dict[str, Stats]:
        """The original model's statistics of every layer output it computes (one pass)."""
        original = ProtoModel(self.context.original, self.context.folder)
        present = {o for node in self.context.original.graph.node for o in node.output}
        requests = {names[id(la.node)]: _axis(la) for la in layers
                    if names[id(la.node)] in present}
        return collect_stats(original, self.context.batches, requests)

    def _correction(self, layer: Layer, original: Stats, pruned: Stats
                    ) -> tuple[np.ndarray | None, np.ndarray | None]:
        """``(s, mu_orig - s * mu_pruned_without_bias)`` per pruned channel (None: leave it)."""
        kept = self.context.plan.kept(layer.y, _axis(layer))
        mu_o, sd_o = original.mean, np.sqrt(original.var)
        if kept is not None:
            mu_o, sd_o = mu_o[kept], sd_o[kept]
        mu_p, sd_p = pruned.mean, np.sqrt(pruned.var)
        if mu_o.shape != mu_p.shape or not np.all(np.isfinite([*mu_o, *sd_o, *mu_p, *sd_p])):
            return None, None
        return scale_and_shift(mu_o, sd_o, mu_p - _bias_in_output(layer), sd_p, self.clip)


def scale_and_shift(mu_o: np.ndarray, sd_o: np.ndarray, mu_p: np.ndarray, sd_p: np.ndarray,
                    clip: tuple[float, float] = CLIP) -> tuple[np.ndarray, np.ndarray]:
    """``s = clip(sd_o / sd_p)`` (1 on constant channels) and the new bias ``mu_o - s * mu_p``.

    ``mu_p`` is the mean of ``W * X`` (the layer output without its bias).
    """
    constant = (sd_p <= CONSTANT * max(float(sd_p.max(initial=0.0)), 1e-30)) | (
        sd_o <= CONSTANT * max(float(sd_o.max(initial=0.0)), 1e-30))
    ratio = np.divide(sd_o, sd_p, out=np.ones_like(sd_o), where=~constant)
    s = np.where(constant, 1.0, np.clip(ratio, *clip))
    return s, mu_o - s * mu_p


def apply(layer: Layer, s: np.ndarray, bias: np.ndarray) -> None:
    """``W[out c] *= s[c]`` and the bias set to ``bias`` (the layer's weight layout)."""
    w = layer.weight()
    linear = layer.linear
    axis = linear.out_axis % w.ndim
    if linear.groups > 1 and axis == 1:  # ConvTranspose: W[Ci, Co/g, k...], Co = g * (Co/g)
        g = linear.groups
        shape = (g, w.shape[0] // g, w.shape[1], *w.shape[2:])
        factor = s.reshape(g, 1, w.shape[1], *[1] * (w.ndim - 2))
        scaled = (w.reshape(shape) * factor).reshape(w.shape)
    else:
        factor = s.reshape([-1 if k == axis else 1 for k in range(w.ndim)])
        scaled = w * factor
    layer.set_weight(scaled.astype(w.dtype))
    layer.set_bias(bias)


def schedule(layers: Sequence[Layer]) -> list[list[Layer]]:
    """Layers by level: no path between two layers of a level; every upstream layer earlier."""
    index = {id(layer.node): k for k, layer in enumerate(layers)}
    level: dict[int, int] = {}  # id(value) -> deepest level of a linear layer upstream of it
    levels: list[list[Layer]] = []
    nodes = list(layers[0].node.graph) if layers else []
    for node in nodes:
        upstream = max((level.get(id(v), -1) for v in node.inputs if v is not None), default=-1)
        if id(node) in index:
            depth = upstream + 1
            if depth == len(levels):
                levels.append([])
            levels[depth].append(layers[index[id(node)]])
            upstream = depth
        for out in node.outputs:
            level[id(out)] = upstream
    return levels


def _axis(layer: Layer) -> int:
    """The layer output's channel axis, non-negative where the rank is known."""
    axis = layer.linear.y_axis
    shape = layer.y.shape
    return axis % len(shape) if axis < 0 and shape is not None else axis


def _bias_in_output(layer: Layer) -> np.ndarray:
    """The part of the measured output that is the layer's bias (0 when added after it)."""
    return layer.bias() if layer.linear.bias is not None else 0.0


COMPENSATIONS["stats"] = StatsRecalibrationPass
