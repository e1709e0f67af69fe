"""A YOLOv8-style backbone with C2f blocks, SPPF and a 3-level 1x1-conv head."""

from __future__ import annotations

from functools import partial

import torch
from torch import nn

from models.common import scale_ch, seeded_build

CALIB_SHAPE = (4, 3, 128, 128)  # BN calibration batch


class Conv(nn.Module):
    """Conv2d(no bias) + BatchNorm2d + SiLU."""

    def __init__(self, cin: int, cout: int, k: int = 1, s: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, s, k // 2, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=1e-3, momentum=0.03)
        self.act = nn.SiLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class Bottleneck(nn.Module):
    """Two 3x3 Convs with an optional residual shortcut."""

    def __init__(self, cin: int, cout: int, shortcut: bool = True):
        super().__init__()
        self.cv1 = Conv(cin, cout, 3)
        self.cv2 = Conv(cout, cout, 3)
        self.add = shortcut and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.cv2(self.cv1(x))
        return x + y if self.add else y


class C2f(nn.Module):
    """CSP bottleneck with 2 convs: split, chained bottlenecks, concat all."""

    def __init__(self, cin: int, cout: int, n: int = 1, shortcut: bool = True):
        super().__init__()
        self.c = cout // 2
        self.cv1 = Conv(cin, 2 * self.c, 1)
        self.cv2 = Conv((2 + n) * self.c, cout, 1)
        self.m = nn.ModuleList(Bottleneck(self.c, self.c, shortcut) for _ in range(n))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = list(self.cv1(x).chunk(2, 1))
        y.extend(m(y[-1]) for m in self.m)
        return self.cv2(torch.cat(y, 1))


class SPPF(nn.Module):
    """Spatial pyramid pooling (fast): three chained 5x5 max pools, concat."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        c = cin // 2
        self.cv1 = Conv(cin, c, 1)
        self.cv2 = Conv(c * 4, cout, 1)
        self.m = nn.MaxPool2d(5, 1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = [self.cv1(x)]
        y.extend(self.m(y[-1]) for _ in range(3))
        return self.cv2(torch.cat(y, 1))


class HeadLevel(nn.Module):
    """Box (4*reg_max) and class branches of 1x1 convs, concatenated."""

    def __init__(self, cin: int, hidden: int, nc: int, reg_max: int = 16):
        super().__init__()
        self.box = nn.Sequential(Conv(cin, hidden), nn.Conv2d(hidden, 4 * reg_max, 1))
        self.cls = nn.Sequential(Conv(cin, hidden), nn.Conv2d(hidden, nc, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.box(x), self.cls(x)], 1)


class C2fNet(nn.Module):
    """YOLOv8s-like backbone (32..512 channels) with outputs at strides 8/16/32."""

    def __init__(self, width: float = 1.0, nc: int = 80):
        super().__init__()
        c = [scale_ch(v, width, 8) for v in (32, 64, 128, 256, 512)]
        self.stem = Conv(3, c[0], 3, 2)
        self.stage1 = nn.Sequential(Conv(c[0], c[1], 3, 2), C2f(c[1], c[1], 1))
        self.stage2 = nn.Sequential(Conv(c[1], c[2], 3, 2), C2f(c[2], c[2], 2))
        self.stage3 = nn.Sequential(Conv(c[2], c[3], 3, 2), C2f(c[3], c[3], 2))
        self.stage4 = nn.Sequential(Conv(c[3], c[4], 3, 2), C2f(c[4], c[4], 1), SPPF(c[4], c[4]))
        hidden = scale_ch(64, width, 8)
        self.heads = nn.ModuleList(HeadLevel(ci, hidden, nc) for ci in c[2:])

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        p3 = self.stage2(self.stage1(self.stem(x)))
        p4 = self.stage3(p3)
        p5 = self.stage4(p4)
        return tuple(h(p) for h, p in zip(self.heads, (p3, p4, p5), strict=True))


def c2f(width: float = 1.0, seed: int = 0) -> nn.Module:
    """YOLOv8-style C2f net with 3 outputs of 64 + 80 channels each."""
    return seeded_build(partial(C2fNet, width), seed, CALIB_SHAPE)
