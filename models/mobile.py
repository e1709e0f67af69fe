"""MobileNetV2 and MobileNetV3-small (torchvision-style)."""

from __future__ import annotations

from functools import partial

import torch
from torch import nn

from models.common import make_divisible, scale_ch, seeded_build

CALIB_SHAPE = (4, 3, 128, 128)  # BN calibration batch


def conv_bn_act(
    cin: int, cout: int, k: int = 1, stride: int = 1, groups: int = 1, act: type | None = nn.ReLU6
) -> nn.Sequential:
    """Conv2d(no bias) + BatchNorm2d (+ activation if ``act``)."""
    layers = [
        nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
    ]
    if act is not None:
        layers.append(act(inplace=True))
    return nn.Sequential(*layers)


class InvertedResidual(nn.Module):
    """MobileNetV2 block: expand 1x1, depthwise 3x3, linear project 1x1."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int):
        super().__init__()
        hidden = cin * expand
        layers = [conv_bn_act(cin, hidden)] if expand != 1 else []
        layers += [
            conv_bn_act(hidden, hidden, 3, stride, groups=hidden),
            conv_bn_act(hidden, cout, act=None),
        ]
        self.conv = nn.Sequential(*layers)
        self.use_res = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_res else self.conv(x)


V2_SETTINGS = [
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
]


class MobileNetV2(nn.Module):
    """MobileNetV2 with a Dropout + Linear classifier."""

    def __init__(self, width: float = 1.0, num_classes: int = 1000):
        super().__init__()
        cin = scale_ch(32, width, 8)
        layers: list[nn.Module] = [conv_bn_act(3, cin, 3, 2)]
        for t, c, n, s in V2_SETTINGS:
            cout = scale_ch(c, width, 8)
            for i in range(n):
                layers.append(InvertedResidual(cin, cout, s if i == 0 else 1, t))
                cin = cout
        last = scale_ch(1280, width, 8)
        layers.append(conv_bn_act(cin, last))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(last, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(self.avgpool(self.features(x)), 1)
        return self.classifier(x)


class SqueezeExcite(nn.Module):
    """SE: AdaptiveAvgPool -> 1x1 -> ReLU -> 1x1 -> Hardsigmoid -> scale input."""

    def __init__(self, c: int, squeeze: int):
        super().__init__()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(c, squeeze, 1)
        self.relu = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(squeeze, c, 1)
        self.gate = nn.Hardsigmoid(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.gate(self.fc2(self.relu(self.fc1(self.avgpool(x)))))
        return s * x


class V3Block(nn.Module):
    """MobileNetV3 bneck: [expand 1x1], depthwise kxk, [SE], project 1x1."""

    def __init__(self, cin: int, k: int, exp: int, cout: int, se: bool, act: type, stride: int):
        super().__init__()
        layers = [conv_bn_act(cin, exp, act=act)] if exp != cin else []
        layers.append(conv_bn_act(exp, exp, k, stride, groups=exp, act=act))
        if se:
            layers.append(SqueezeExcite(exp, make_divisible(exp // 4)))
        layers.append(conv_bn_act(exp, cout, act=None))
        self.block = nn.Sequential(*layers)
        self.use_res = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x) if self.use_res else self.block(x)


RE, HS = nn.ReLU, nn.Hardswish
V3_SMALL = [
    (16, 3, 16, 16, True, RE, 2),
    (16, 3, 72, 24, False, RE, 2),
    (24, 3, 88, 24, False, RE, 1),
    (24, 5, 96, 40, True, HS, 2),
    (40, 5, 240, 40, True, HS, 1),
    (40, 5, 240, 40, True, HS, 1),
    (40, 5, 120, 48, True, HS, 1),
    (48, 5, 144, 48, True, HS, 1),
    (48, 5, 288, 96, True, HS, 2),
    (96, 5, 576, 96, True, HS, 1),
    (96, 5, 576, 96, True, HS, 1),
]


class MobileNetV3Small(nn.Module):
    """MobileNetV3-small: Hardswish, SE blocks, Linear-HS-Dropout-Linear head."""

    def __init__(self, width: float = 1.0, num_classes: int = 1000):
        super().__init__()
        s = partial(scale_ch, width=width, divisor=8)
        layers: list[nn.Module] = [conv_bn_act(3, s(16), 3, 2, act=HS)]
        for cin, k, exp, cout, se, act, stride in V3_SMALL:
            layers.append(V3Block(s(cin), k, s(exp), s(cout), se, act, stride))
        last_conv = s(576)
        layers.append(conv_bn_act(s(96), last_conv, act=HS))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(
            nn.Linear(last_conv, s(1024)),
            nn.Hardswish(inplace=True),
            nn.Dropout(0.2),
            nn.Linear(s(1024), num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(self.avgpool(self.features(x)), 1)
        return self.classifier(x)


def mobilenet_v2(width: float = 1.0, seed: int = 0) -> nn.Module:
    """MobileNetV2 (3.5M params at width 1.0)."""
    return seeded_build(partial(MobileNetV2, width), seed, CALIB_SHAPE)


def mobilenet_v3(width: float = 1.0, seed: int = 0) -> nn.Module:
    """MobileNetV3-small (2.5M params at width 1.0)."""
    return seeded_build(partial(MobileNetV3Small, width), seed, CALIB_SHAPE)
