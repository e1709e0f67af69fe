"""ResNet-18/50 (torchvision-style) and a small ResNeXt with grouped convs."""

from __future__ import annotations

import math
from functools import partial

import torch
from torch import nn

from models.common import scale_ch, seeded_build

CALIB_SHAPE = (4, 3, 128, 128)  # BN calibration batch


def conv_bn(cin: int, cout: int, k: int, stride: int = 1, groups: int = 1) -> list[nn.Module]:
    """Returns [Conv2d(no bias), BatchNorm2d] with 'same'-style padding."""
    conv = nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False)
    return [conv, nn.BatchNorm2d(cout)]


class BasicBlock(nn.Module):
    """Two 3x3 convs with an identity/projection shortcut."""

    expansion = 1

    def __init__(self, cin: int, planes: int, stride: int = 1, groups: int = 1, wpg: int = 64):
        super().__init__()
        del groups, wpg  # BasicBlock only supports plain convs.
        self.conv1, self.bn1 = conv_bn(cin, planes, 3, stride)
        self.conv2, self.bn2 = conv_bn(planes, planes, 3)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = make_downsample(cin, planes, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        idt = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + idt)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (optionally grouped), 1x1 expand (x4) with shortcut."""

    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int = 1, groups: int = 1, wpg: int = 64):
        super().__init__()
        inner = planes * wpg * groups // 64
        g = min(groups, max(1, inner // 4))
        g = math.gcd(inner, g)
        cout = planes * self.expansion
        self.conv1, self.bn1 = conv_bn(cin, inner, 1)
        self.conv2, self.bn2 = conv_bn(inner, inner, 3, stride, groups=g)
        self.conv3, self.bn3 = conv_bn(inner, cout, 1)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = make_downsample(cin, cout, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        idt = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.relu(self.bn3(self.conv3(out)) + idt)


def make_downsample(cin: int, cout: int, stride: int) -> nn.Sequential | None:
    """1x1 conv + BN projection when shape changes, else None."""
    if stride == 1 and cin == cout:
        return None
    return nn.Sequential(*conv_bn(cin, cout, 1, stride))


class ResNet(nn.Module):
    """Torchvision-style ResNet/ResNeXt.

    Args:
        block: BasicBlock or Bottleneck.
        layers: Number of blocks per stage.
        width: Channel width multiplier.
        num_classes: Classifier outputs.
        groups: Groups of the 3x3 conv in bottlenecks (ResNeXt cardinality).
        wpg: Width per group (64 for plain ResNet).
    """

    def __init__(
        self,
        block: type,
        layers: list[int],
        width: float = 1.0,
        num_classes: int = 1000,
        groups: int = 1,
        wpg: int = 64,
    ):
        super().__init__()
        div = 8 if groups > 1 else 1
        stem = scale_ch(64, width, div)
        self.conv1 = nn.Conv2d(3, stem, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(stem)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        cin, stages = stem, []
        for i, n in enumerate(layers):
            planes = scale_ch(64 * 2**i, width, div)
            blocks = []
            for j in range(n):
                blocks.append(block(cin, planes, 2 if (i > 0 and j == 0) else 1, groups, wpg))
                cin = planes * block.expansion
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = torch.flatten(self.avgpool(x), 1)
        return self.fc(x)


def resnet18(width: float = 1.0, seed: int = 0) -> nn.Module:
    """ResNet-18 (BasicBlock, [2, 2, 2, 2])."""
    return seeded_build(partial(ResNet, BasicBlock, [2, 2, 2, 2], width), seed, CALIB_SHAPE)


def resnet50(width: float = 1.0, seed: int = 0) -> nn.Module:
    """ResNet-50 (Bottleneck, [3, 4, 6, 3]); 25,557,032 params at width 1.0."""
    return seeded_build(partial(ResNet, Bottleneck, [3, 4, 6, 3], width), seed, CALIB_SHAPE)


def resnext(width: float = 1.0, seed: int = 0) -> nn.Module:
    """ResNeXt-26 32x4d (grouped 3x3 bottlenecks, [2, 2, 2, 2])."""
    factory = partial(ResNet, Bottleneck, [2, 2, 2, 2], width, groups=32, wpg=4)
    return seeded_build(factory, seed, CALIB_SHAPE)
