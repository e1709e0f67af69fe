"""ShuffleNetV2 (torchvision-style, x1.0 at width 1.0)."""

from __future__ import annotations

from functools import partial

import torch
from torch import nn

from models.common import scale_ch, seeded_build

CALIB_SHAPE = (4, 3, 128, 128)  # BN calibration batch


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """Torchvision channel shuffle via view/transpose/view."""
    b, c, h, w = x.size()
    x = x.view(b, groups, c // groups, h, w)
    x = torch.transpose(x, 1, 2).contiguous()
    return x.view(b, -1, h, w)


def conv_bn(
    cin: int, cout: int, k: int = 1, stride: int = 1, groups: int = 1, relu: bool = True
) -> list[nn.Module]:
    """Conv2d(no bias) + BatchNorm2d (+ ReLU)."""
    layers = [
        nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
    ]
    return layers + [nn.ReLU(inplace=True)] if relu else layers


class ShuffleUnit(nn.Module):
    """ShuffleNetV2 unit: split (stride 1) or dual branch (stride 2), cat, shuffle."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.stride = stride
        bf = cout // 2
        if stride > 1:
            self.branch1 = nn.Sequential(
                *conv_bn(cin, cin, 3, stride, cin, relu=False), *conv_bn(cin, bf)
            )
        else:
            self.branch1 = nn.Sequential()
        self.branch2 = nn.Sequential(
            *conv_bn(cin if stride > 1 else bf, bf),
            *conv_bn(bf, bf, 3, stride, bf, relu=False),
            *conv_bn(bf, bf),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1:
            x1, x2 = x.chunk(2, dim=1)
            out = torch.cat((x1, self.branch2(x2)), dim=1)
        else:
            out = torch.cat((self.branch1(x), self.branch2(x)), dim=1)
        return channel_shuffle(out, 2)


class ShuffleNetV2(nn.Module):
    """ShuffleNetV2 with stages [4, 8, 4] and channels [24, 116, 232, 464, 1024]."""

    def __init__(self, width: float = 1.0, num_classes: int = 1000):
        super().__init__()
        chans = [scale_ch(c, width, 8) for c in (24, 116, 232, 464, 1024)]
        self.conv1 = nn.Sequential(*conv_bn(3, chans[0], 3, 2))
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        cin, stages = chans[0], []
        for reps, cout in zip((4, 8, 4), chans[1:4], strict=True):
            units = [ShuffleUnit(cin, cout, 2)]
            units += [ShuffleUnit(cout, cout, 1) for _ in range(reps - 1)]
            stages.append(nn.Sequential(*units))
            cin = cout
        self.stage2, self.stage3, self.stage4 = stages
        self.conv5 = nn.Sequential(*conv_bn(cin, chans[4]))
        self.fc = nn.Linear(chans[4], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.conv1(x))
        x = self.conv5(self.stage4(self.stage3(self.stage2(x))))
        return self.fc(x.mean([2, 3]))


def shufflenet_v2(width: float = 1.0, seed: int = 0) -> nn.Module:
    """ShuffleNetV2 x1.0 (2.28M params at width 1.0)."""
    return seeded_build(partial(ShuffleNetV2, width), seed, CALIB_SHAPE)
