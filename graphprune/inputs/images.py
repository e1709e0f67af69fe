"""Image folders as model inputs (Pillow, which matplotlib brings along).

Every image is converted to RGB (grey for a one-channel input), resized to the input's H x W
(bilinear), scaled to [0, 1] and, for three channels, normalized with the ImageNet mean and
standard deviation (what torchvision-trained classifiers expect), laid out as C x H x W, or
H x W x C for an NHWC input (see ``InputSpec.channel_axis``). Images are stacked into batches
of the input's batch size; a last partial batch is dropped.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from graphprune.errors import InputError
from graphprune.inputs.feeds import Batch
from graphprune.inputs.specs import InputSpec

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
_MEAN = np.array([0.485, 0.456, 0.406], np.float32)[:, None, None]
_STD = np.array([0.229, 0.224, 0.225], np.float32)[:, None, None]


def image_files(folder: Path) -> list[Path]:
    """The images directly inside ``folder``, sorted by name."""
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def _image_spec(specs: Sequence[InputSpec], folder: Path) -> InputSpec:
    if len(specs) != 1:
        raise InputError(f"{folder}: a folder of images needs a model with one input")
    spec = specs[0]
    is_float = np.issubdtype(spec.dtype, np.floating)
    axis = spec.channel_axis or 1
    if len(spec.shape) != 4 or spec.shape[axis] not in (1, 3) or not is_float:
        raise InputError(f"{folder}: images need a float input of shape N x 1|3 x H x W "
                         f"or N x H x W x 1|3, '{spec.name}' is {spec.dtype} {list(spec.shape)}")
    return spec


def _load_image(path: Path, channels: int, height: int, width: int) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image = image.convert("RGB" if channels == 3 else "L").resize((width, height),
                                                                          Image.BILINEAR)
            array = np.asarray(image, dtype=np.float32) / 255.0
    except (OSError, UnidentifiedImageError) as exc:
        raise InputError(f"{path}: not a readable image ({type(exc).__name__})") from exc
    if channels == 1:
        return array[None]
    return (array.transpose(2, 0, 1) - _MEAN) / _STD


def load_images(files: Sequence[Path], specs: Sequence[InputSpec], folder: Path,
                limit: int | None = None) -> list[Batch]:
    """Batches of preprocessed images for the model's one image input (at most ``limit``)."""
    spec = _image_spec(specs, folder)
    nhwc = spec.channel_axis == 3
    if nhwc:
        batch, height, width, channels = spec.shape
    else:
        batch, channels, height, width = spec.shape
    if len(files) < batch:
        raise InputError(f"{folder}: {len(files)} images, fewer than one batch of {batch}")
    if limit is not None:
        files = files[:limit * batch]
    arrays = [_load_image(f, channels, height, width) for f in files]
    stacked = np.stack(arrays).astype(spec.dtype, copy=False)
    if nhwc:
        stacked = np.ascontiguousarray(stacked.transpose(0, 2, 3, 1))
    count = len(arrays) // batch
    return [{spec.name: stacked[i * batch:(i + 1) * batch]} for i in range(count)]
