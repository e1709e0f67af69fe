"""Shared helpers for the model zoo: channel scaling and deterministic builds."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

_BN_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d)


def scale_ch(c: int, width: float, divisor: int = 1) -> int:
    """Scales a channel count by a width multiplier.

    Args:
        c: Channel count at width 1.0.
        width: Width multiplier.
        divisor: When > 1 and width != 1.0, the result is rounded to the
            nearest multiple of ``divisor`` (needed for groups/shuffles/splits).

    Returns:
        ``c`` at width 1.0, otherwise ``max(8, int(c * width))`` (rounded).
    """
    if width == 1.0:
        return c
    v = max(8, int(c * width))
    if divisor > 1:
        v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return v


def make_divisible(v: float, divisor: int = 8) -> int:
    """Rounds ``v`` to the nearest multiple of ``divisor`` (>= 90% of ``v``)."""
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new_v + divisor if new_v < 0.9 * v else new_v


def _calibrate(model: nn.Module, bns: Sequence[nn.Module], x: torch.Tensor) -> None:
    """Sets BN running stats to the batch stats of ``x`` (keeps activations O(1))."""
    model.eval()
    momenta = [bn.momentum for bn in bns]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average == stats of the single batch
        bn.train()
    model(x)
    for bn, m in zip(bns, momenta, strict=True):
        bn.momentum = m
        bn.eval()


def randomize_bn(
    model: nn.Module, seed: int, calib_shape: Sequence[int] | None = None
) -> nn.Module:
    """Gives every BatchNorm non-trivial random affine params and running stats.

    Weights are drawn from U(0.5, 1.5) and biases from N(0, 0.2). If
    ``calib_shape`` is given, running stats are first calibrated on one random
    batch of that shape (so deep nets keep O(1) activations and outputs), then
    randomly perturbed: mean += N(0, 0.2) * std, var *= U(0.6, 1.6).

    Args:
        model: Model to modify in place.
        seed: Seed for the private random generator.
        calib_shape: Optional input shape for the calibration batch.

    Returns:
        The same model, in eval mode.
    """
    gen = torch.Generator().manual_seed(seed)
    bns = [m for m in model.modules() if isinstance(m, _BN_TYPES)]
    with torch.no_grad():
        for bn in bns:
            n = bn.num_features
            bn.weight.copy_(torch.empty(n).uniform_(0.5, 1.5, generator=gen))
            bn.bias.copy_(torch.randn(n, generator=gen) * 0.2)
        if calib_shape is not None:
            _calibrate(model, bns, torch.randn(tuple(calib_shape), generator=gen))
        for bn in bns:
            n = bn.num_features
            var = bn.running_var.clamp(min=1e-2 * float(bn.running_var.mean()) + 1e-4)
            bn.running_mean.add_(torch.randn(n, generator=gen) * 0.2 * var.sqrt())
            bn.running_var.copy_(var * torch.empty(n).uniform_(0.6, 1.6, generator=gen))
    return model.eval()


def seeded_build(
    factory: Callable[[], nn.Module], seed: int, calib_shape: Sequence[int] | None
) -> nn.Module:
    """Builds a model deterministically and randomizes its BatchNorms.

    The global RNG state is seeded with ``seed`` inside a forked RNG context,
    so callers' random state is left untouched.

    Args:
        factory: Zero-argument callable constructing the module.
        seed: Seed for parameter init and BN randomization.
        calib_shape: Input shape used to calibrate BN running stats.

    Returns:
        The built model in eval mode.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = factory()
        return randomize_bn(model, seed, calib_shape)
