"""VGG16-BN and a small DenseNet."""

from __future__ import annotations

from functools import partial

import torch
from torch import nn

from models.common import scale_ch, seeded_build

CALIB_SHAPE = (4, 3, 128, 128)  # BN calibration batch
VGG16_CFG = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]


class VGG16BN(nn.Module):
    """VGG16 with BatchNorm; adaptive avgpool to 7x7 and a 3-layer classifier.

    The ONNX (TorchScript) exporter needs the final feature map to be a
    multiple of 7, so export inputs must be 224 (or a multiple of 224).
    """

    def __init__(self, width: float = 1.0, num_classes: int = 1000):
        super().__init__()
        layers: list[nn.Module] = []
        cin = 3
        for v in VGG16_CFG:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
                continue
            cout = scale_ch(v, width)
            layers += [
                nn.Conv2d(cin, cout, 3, padding=1),
                nn.BatchNorm2d(cout),
                nn.ReLU(inplace=True),
            ]
            cin = cout
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        hidden = scale_ch(4096, width)
        self.classifier = nn.Sequential(
            nn.Linear(cin * 7 * 7, hidden),
            nn.ReLU(True),
            nn.Dropout(0.5),
            nn.Linear(hidden, hidden),
            nn.ReLU(True),
            nn.Dropout(0.5),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(self.avgpool(self.features(x)), 1)
        return self.classifier(x)


class DenseLayer(nn.Module):
    """BN-ReLU-Conv1x1 (bottleneck) then BN-ReLU-Conv3x3 producing ``growth`` maps."""

    def __init__(self, cin: int, growth: int, bn_size: int = 4):
        super().__init__()
        mid = bn_size * growth
        self.layers = nn.Sequential(
            nn.BatchNorm2d(cin),
            nn.ReLU(inplace=True),
            nn.Conv2d(cin, mid, 1, bias=False),
            nn.BatchNorm2d(mid),
            nn.ReLU(inplace=True),
            nn.Conv2d(mid, growth, 3, padding=1, bias=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, self.layers(x)], 1)


def transition(cin: int, cout: int) -> nn.Sequential:
    """BN-ReLU-Conv1x1 followed by 2x2 average pooling."""
    return nn.Sequential(
        nn.BatchNorm2d(cin),
        nn.ReLU(inplace=True),
        nn.Conv2d(cin, cout, 1, bias=False),
        nn.AvgPool2d(2, 2),
    )


class DenseNet(nn.Module):
    """Small DenseNet-BC (blocks [3, 6, 6, 4], growth 32, compression 0.5)."""

    def __init__(
        self, width: float = 1.0, num_classes: int = 1000, blocks: tuple[int, ...] = (3, 6, 6, 4)
    ):
        super().__init__()
        growth, c = scale_ch(32, width), scale_ch(64, width)
        layers: list[nn.Module] = [
            nn.Conv2d(3, c, 7, 2, 3, bias=False),
            nn.BatchNorm2d(c),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, 2, 1),
        ]
        for i, n in enumerate(blocks):
            for _ in range(n):
                layers.append(DenseLayer(c, growth))
                c += growth
            if i != len(blocks) - 1:
                layers.append(transition(c, c // 2))
                c //= 2
        layers += [nn.BatchNorm2d(c), nn.ReLU(inplace=True)]
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.classifier = nn.Linear(c, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(self.avgpool(self.features(x)), 1)
        return self.classifier(x)


def vgg16_bn(width: float = 1.0, seed: int = 0) -> nn.Module:
    """VGG16-BN (138.4M params at width 1.0)."""
    return seeded_build(partial(VGG16BN, width), seed, CALIB_SHAPE)


def densenet(width: float = 1.0, seed: int = 0) -> nn.Module:
    """Small DenseNet-BC."""
    return seeded_build(partial(DenseNet, width), seed, CALIB_SHAPE)
