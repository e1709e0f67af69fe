"""Registry of the graphprune model zoo.

Every build function takes ``width`` (channel multiplier, default 1.0) and
``seed`` keyword arguments, is deterministic, returns the model in eval mode,
and gives every BatchNorm non-trivial random statistics (see
``models.common.randomize_bn``).

Example:
    >>> from models.zoo import ZOO
    >>> entry = ZOO["resnet18"]
    >>> model = entry.build(width=0.25, seed=0)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from models.audio import audio1d
from models.classic import densenet, vgg16_bn
from models.mobile import mobilenet_v2, mobilenet_v3
from models.resnet import resnet18, resnet50, resnext
from models.shufflenet import shufflenet_v2
from models.unet import unet
from models.yolo import c2f


@dataclass(frozen=True)
class ZooEntry:
    """A zoo model and its default export shapes.

    Attributes:
        build: Callable ``(width=1.0, seed=0) -> nn.Module``.
        input_shape: Default export input shape (N, C, H, W) or (N, C, L).
        small_input_shape: Small input shape suitable for fast tests.
        num_outputs: Number of output tensors of ``forward``.
    """

    build: Callable[..., nn.Module]
    input_shape: tuple[int, ...]
    small_input_shape: tuple[int, ...]
    num_outputs: int = 1


_IMG = (1, 3, 224, 224)
_SMALL = (1, 3, 64, 64)

ZOO: dict[str, ZooEntry] = {
    "resnet18": ZooEntry(resnet18, _IMG, _SMALL),
    "resnet50": ZooEntry(resnet50, _IMG, _SMALL),
    "mobilenet_v2": ZooEntry(mobilenet_v2, _IMG, _SMALL),
    # The 7x7 adaptive pool only exports when the feature map is a multiple of 7.
    "vgg16_bn": ZooEntry(vgg16_bn, _IMG, _IMG),
    "densenet": ZooEntry(densenet, _IMG, _SMALL),
    "resnext": ZooEntry(resnext, _IMG, _SMALL),
    "mobilenet_v3": ZooEntry(mobilenet_v3, _IMG, _SMALL),
    "shufflenet_v2": ZooEntry(shufflenet_v2, _IMG, _SMALL),
    "unet": ZooEntry(unet, (1, 3, 256, 256), _SMALL),
    "c2f": ZooEntry(c2f, (1, 3, 640, 640), _SMALL, num_outputs=3),
    "audio1d": ZooEntry(audio1d, (1, 1, 16000), (1, 1, 4000)),
}
