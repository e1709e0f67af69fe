"""A 1D-conv audio classifier for raw waveforms (or MFCC frames)."""

from __future__ import annotations

from functools import partial

import torch
from torch import nn

from models.common import scale_ch, seeded_build


def conv_bn_relu(cin: int, cout: int, k: int, stride: int = 1, groups: int = 1) -> nn.Sequential:
    """Conv1d(no bias) + BatchNorm1d + ReLU."""
    return nn.Sequential(
        nn.Conv1d(cin, cout, k, stride, k // 2, groups=groups, bias=False),
        nn.BatchNorm1d(cout),
        nn.ReLU(inplace=True),
    )


class ResBlock1d(nn.Module):
    """Conv-BN-ReLU-Conv-BN plus identity, then ReLU."""

    def __init__(self, c: int, k: int = 3):
        super().__init__()
        self.conv1 = conv_bn_relu(c, c, k)
        self.conv2 = nn.Conv1d(c, c, k, padding=k // 2, bias=False)
        self.bn2 = nn.BatchNorm1d(c)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(x + self.bn2(self.conv2(self.conv1(x))))


class Audio1D(nn.Module):
    """M5-like 1D CNN with a residual and a depthwise-separable block.

    Strided stem, conv stacks with max pools, a residual block, a
    depthwise-separable conv, mean over time and a linear head.

    Args:
        width: Channel width multiplier.
        in_channels: 1 for raw audio, e.g. 40 for MFCC features.
        num_classes: Classifier outputs (35 = Speech Commands).
    """

    def __init__(self, width: float = 1.0, in_channels: int = 1, num_classes: int = 35):
        super().__init__()
        c = [scale_ch(v, width) for v in (32, 64, 128, 256)]
        stem_k, stem_s = (80, 4) if in_channels == 1 else (3, 1)
        self.features = nn.Sequential(
            conv_bn_relu(in_channels, c[0], stem_k, stem_s),
            nn.MaxPool1d(4),
            conv_bn_relu(c[0], c[1], 3),
            nn.MaxPool1d(4),
            ResBlock1d(c[1]),
            conv_bn_relu(c[1], c[2], 3),
            nn.MaxPool1d(4),
            conv_bn_relu(c[2], c[2], 3, groups=c[2]),
            conv_bn_relu(c[2], c[3], 1),
        )
        self.fc = nn.Linear(c[3], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x).mean(dim=-1))


def audio1d(width: float = 1.0, seed: int = 0, in_channels: int = 1) -> nn.Module:
    """Audio1D on (N, in_channels, L) inputs."""
    shape = (4, in_channels, 8000 if in_channels == 1 else 256)  # BN calibration
    return seeded_build(partial(Audio1D, width, in_channels), seed, shape)
