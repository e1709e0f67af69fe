"""A small UNet mixing ConvTranspose2d and interpolate-based upsampling."""

from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from models.common import scale_ch, seeded_build

CALIB_SHAPE = (4, 3, 128, 128)  # BN calibration batch


def double_conv(cin: int, cout: int) -> nn.Sequential:
    """Two (Conv3x3 + BN + ReLU) layers."""
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class Up(nn.Module):
    """Upsample x2 (ConvTranspose2d or F.interpolate), concat skip, double conv.

    Args:
        cin: Channels of the deeper input.
        cskip: Channels of the skip connection.
        cout: Output channels.
        mode: "transpose", "nearest" or "bilinear".
    """

    def __init__(self, cin: int, cskip: int, cout: int, mode: str):
        super().__init__()
        self.mode = mode
        self.up = nn.ConvTranspose2d(cin, cin // 2, 2, 2) if mode == "transpose" else None
        cup = cin // 2 if mode == "transpose" else cin
        self.conv = double_conv(cup + cskip, cout)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        if self.up is not None:
            x = self.up(x)
        elif self.mode == "bilinear":
            x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        else:
            x = F.interpolate(x, scale_factor=2, mode="nearest")
        return self.conv(torch.cat([skip, x], dim=1))


class UNet(nn.Module):
    """4-level UNet (channels 32..512 at width 1.0), 1x1 conv to ``num_classes``."""

    def __init__(self, width: float = 1.0, num_classes: int = 3):
        super().__init__()
        c = [scale_ch(v, width) for v in (32, 64, 128, 256, 512)]
        self.inc = double_conv(3, c[0])
        self.downs = nn.ModuleList(double_conv(c[i], c[i + 1]) for i in range(4))
        self.pool = nn.MaxPool2d(2)
        modes = ("transpose", "bilinear", "transpose", "nearest")
        self.ups = nn.ModuleList(Up(c[4 - i], c[3 - i], c[3 - i], m) for i, m in enumerate(modes))
        self.outc = nn.Conv2d(c[0], num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = [self.inc(x)]
        for down in self.downs:
            skips.append(down(self.pool(skips[-1])))
        x = skips.pop()
        for up in self.ups:
            x = up(x, skips.pop())
        return self.outc(x)


def unet(width: float = 1.0, seed: int = 0) -> nn.Module:
    """Small UNet with 3 output classes."""
    return seeded_build(partial(UNet, width), seed, CALIB_SHAPE)
