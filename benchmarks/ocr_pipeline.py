"""A small PP-OCR pipeline in numpy + onnxruntime, rendered test images and the OCR metric.

Follows the pre/post-processing of ``rapidocr-onnxruntime==1.4.4`` without OpenCV, pyclipper or
shapely: DB detection (``(x / 255 - 0.5) / 0.5``, threshold 0.3, 2x2 dilation, connected regions,
mean-probability box score >= 0.5, boxes grown by ``area * 1.6 / perimeter``), crops resized to
height 48 and padded to at least 320 wide, CTC greedy decoding with the dictionary the recognizer
carries in its ``character`` metadata (blank first, space last, as rapidocr does).

Images are rendered with PIL at a fixed size (a multiple of 32) so the detector runs at the
shape its costs are counted at; no resize happens before detection.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from PIL import Image, ImageDraw, ImageFont

IMAGE_HW = (160, 480)  # detector input H, W
REC_HEIGHT, REC_MIN_WIDTH = 48, 320
DET_THRESH, BOX_THRESH, UNCLIP_RATIO, MIN_SIZE = 0.3, 0.5, 1.6, 3

_FONT_DIR = Path("/usr/share/fonts/truetype/dejavu")
_FONT_FILES = ("DejaVuSans.ttf", "DejaVuSerif.ttf", "DejaVuSansMono.ttf", "DejaVuSans-Bold.ttf")
_WORDS = ("invoice", "total", "amount", "network", "pruning", "model", "graph", "channel",
          "detector", "Station", "Market", "Street", "Open", "Daily", "Coffee", "Price",
          "Order", "Berlin", "London", "Paris", "summer", "window", "garden", "yellow",
          "Monday", "Friday", "ticket", "number", "Tel", "Room", "Hotel", "Exit")


# ---------------------------------------------------------------------------------------------
# The metric.


def levenshtein(a: str, b: str) -> int:
    """Edit distance (insertions, deletions, substitutions, each cost 1)."""
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1,
                               previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


def similarity(predicted: str, truth: str) -> float:
    """``1 - levenshtein / max(len)``: 1 for equal strings (two empty ones included), 0 at worst."""
    longest = max(len(predicted), len(truth))
    return 1.0 if longest == 0 else 1.0 - levenshtein(predicted, truth) / longest


def ctc_greedy_decode(logits: np.ndarray, characters: Sequence[str]) -> str:
    """Greedy CTC: arg-max per step, repeats merged, blanks (index 0) dropped.

    Args:
        logits: ``[T, C]`` scores (probabilities or logits) of one sequence.
        characters: Label of every class; ``characters[0]`` is the blank.
    """
    best = np.asarray(logits).argmax(axis=-1)
    keep = np.ones(best.shape, dtype=bool)
    keep[1:] = best[1:] != best[:-1]
    keep &= best != 0
    return "".join(characters[i] for i in best[keep])


def recognizer_characters(rec_path: str | Path) -> list[str]:
    """The recognizer's labels: ``blank``, its ``character`` metadata lines, then a space."""
    model = onnx.load(str(rec_path), load_external_data=False)
    meta = {p.key: p.value for p in model.metadata_props}
    if "character" not in meta:
        raise ValueError(f"{rec_path} has no 'character' metadata (not a rapidocr recognizer)")
    return ["blank", *meta["character"].splitlines(), " "]


# ---------------------------------------------------------------------------------------------
# Test images.


@dataclasses.dataclass(frozen=True)
class Sample:
    """One rendered image (``uint8 [H, W, 3]``) and its text lines."""

    image: np.ndarray
    lines: tuple[str, ...]

    @property
    def text(self) -> str:
        return " ".join(self.lines)


def _fonts() -> list[Path]:
    return [_FONT_DIR / name for name in _FONT_FILES if (_FONT_DIR / name).exists()]


def font_names() -> list[str]:
    """The fonts the images are rendered in here (the test set depends on them)."""
    return [f.name for f in _fonts()] or ["PIL load_default"]


def _font(rng: random.Random, size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    fonts = _fonts()
    if fonts:
        return ImageFont.truetype(str(rng.choice(fonts)), size)
    return ImageFont.load_default(size=size)  # Pillow >= 10.1


def _line(rng: random.Random) -> str:
    words = [rng.choice(_WORDS) for _ in range(rng.randint(1, 2))]
    if rng.random() < 0.6:
        words.append(str(rng.randint(1, 99999)))
    return " ".join(words)


def render(seed: int, hw: tuple[int, int] = IMAGE_HW) -> Sample:
    """1-3 lines of words and numbers, black on white with mild noise, one font per image."""
    rng = random.Random(seed)
    height, width = hw
    count = rng.randint(1, 3)
    size = rng.randint(24, 30)
    font = _font(rng, size)
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    lines, y = [], 8 + rng.randint(0, 6)
    for _ in range(count):
        text = _line(rng)
        while draw.textlength(text, font=font) > width - 30 and " " in text:
            text = text.rsplit(" ", 1)[0]
        draw.text((12 + rng.randint(0, 10), y), text, fill=(0, 0, 0), font=font)
        lines.append(text)
        y += int(size * 1.6)
    pixels = np.asarray(canvas, dtype=np.float32)
    noise = np.random.default_rng(seed).normal(0.0, 6.0, pixels.shape)
    return Sample(np.clip(pixels + noise, 0, 255).astype(np.uint8), tuple(lines))


CALIBRATION_SEEDS = 10_000  # calibration images use seeds from here: disjoint from the test set


def render_set(count: int, hw: tuple[int, int] = IMAGE_HW, first: int = 0) -> list[Sample]:
    """``count`` images, seeds ``first .. first+count-1`` (the same set on every run)."""
    return [render(seed, hw) for seed in range(first, first + count)]


# ---------------------------------------------------------------------------------------------
# Detection.


def _normalize(image: np.ndarray) -> np.ndarray:
    chw = (image.astype(np.float32) / 255.0 - 0.5) / 0.5
    return chw.transpose(2, 0, 1)[None]


def _dilate(mask: np.ndarray) -> np.ndarray:
    """OpenCV's 2x2 dilation, anchor (1, 1): set where the pixel or its up/left/up-left one is."""
    out = mask.copy()
    out[1:, :] |= mask[:-1, :]
    out[:, 1:] |= mask[:, :-1]
    out[1:, 1:] |= mask[:-1, :-1]
    return out


def _regions(mask: np.ndarray) -> list[tuple[int, int, int, int]]:
    """``(y0, y1, x0, x1)`` (inclusive) bounding boxes of the 8-connected regions of ``mask``."""
    from scipy import ndimage

    labels, _ = ndimage.label(mask, structure=np.ones((3, 3), dtype=bool))
    return [(s[0].start, s[0].stop - 1, s[1].start, s[1].stop - 1)
            for s in ndimage.find_objects(labels) if s is not None]


def boxes_from_probability(prob: np.ndarray) -> list[tuple[int, int, int, int]]:
    """Text boxes ``(y0, y1, x0, x1)`` (inclusive) of a DB probability map ``[H, W]``.

    In reading order: top to bottom, then left to right.
    """
    height, width = prob.shape
    boxes = []
    for y0, y1, x0, x1 in _regions(_dilate(prob > DET_THRESH)):
        h, w = y1 - y0 + 1, x1 - x0 + 1
        if min(h, w) < MIN_SIZE or prob[y0:y1 + 1, x0:x1 + 1].mean() < BOX_THRESH:
            continue
        grow = h * w * UNCLIP_RATIO / (2 * (h + w))
        box = (max(0, int(round(y0 - grow))), min(height - 1, int(round(y1 + grow))),
               max(0, int(round(x0 - grow))), min(width - 1, int(round(x1 + grow))))
        if box[1] - box[0] > MIN_SIZE and box[3] - box[2] > MIN_SIZE:
            boxes.append(box)
    return sorted(boxes, key=lambda b: (round((b[0] + b[1]) / 2 / 16), b[2]))


# ---------------------------------------------------------------------------------------------
# Recognition.


def rec_input(crop: np.ndarray, max_width: int | None = None,
              pad_to: int = REC_MIN_WIDTH) -> np.ndarray:
    """A crop resized to height 48, normalized, right-padded with 0 to at least ``pad_to`` wide.

    The aspect ratio is kept unless the width would exceed ``max_width``.
    """
    h, w = crop.shape[:2]
    new_w = max(1, int(np.ceil(REC_HEIGHT * w / h)))
    new_w = new_w if max_width is None else min(new_w, max_width)
    resized = np.asarray(Image.fromarray(crop).resize((new_w, REC_HEIGHT), Image.BILINEAR))
    chw = _normalize(resized)[0]
    padded = np.zeros((3, REC_HEIGHT, max(pad_to, new_w)), dtype=np.float32)
    padded[:, :, :new_w] = chw
    return padded[None]


def calibration_inputs(samples: Sequence[Sample], det_path: str | Path,
                       threads: int = 2) -> dict[str, np.ndarray]:
    """Model inputs for calibration, by target.

    ``det``: ``[N, 3, H, W]``, the images. ``rec``: ``[M, 3, 48, 320]``, every crop the
    detector finds, squeezed or padded to width 320.
    """
    det = session(det_path, threads)
    name = det.get_inputs()[0].name
    images, crops = [], []
    for sample in samples:
        x = _normalize(sample.image)
        images.append(x)
        prob = det.run(None, {name: x})[0][0, 0]
        for y0, y1, x0, x1 in boxes_from_probability(prob):
            crops.append(rec_input(sample.image[y0:y1 + 1, x0:x1 + 1], max_width=REC_MIN_WIDTH))
    return {"det": np.concatenate(images), "rec": np.concatenate(crops)}


def session(path: str | Path, threads: int = 2) -> ort.InferenceSession:
    """A CPU session with ``threads`` intra-op threads."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


class OCR:
    """Detector + recognizer sessions.

    ``ocr(image)`` is the recognized text, its lines joined by spaces in reading order.
    """

    def __init__(self, det_path: str | Path, rec_path: str | Path,
                 characters: Sequence[str], threads: int = 2) -> None:
        self.det = session(det_path, threads)
        self.rec = session(rec_path, threads)
        self.characters = list(characters)
        self.det_input = self.det.get_inputs()[0].name
        self.rec_input = self.rec.get_inputs()[0].name

    def read_line(self, crop: np.ndarray) -> tuple[str, np.ndarray]:
        """Text of one crop and the recognizer's ``[T, C]`` output."""
        logits = self.rec.run(None, {self.rec_input: rec_input(crop)})[0][0]
        return ctc_greedy_decode(logits, self.characters).strip(), logits

    def read(self, image: np.ndarray) -> tuple[str, np.ndarray, list[np.ndarray]]:
        """Text of one image, the detector's ``[H, W]`` map and the recognizer output per box."""
        prob = self.det.run(None, {self.det_input: _normalize(image)})[0][0, 0]
        lines = [self.read_line(image[y0:y1 + 1, x0:x1 + 1])
                 for y0, y1, x0, x1 in boxes_from_probability(prob)]
        return " ".join(t for t, _ in lines if t), prob, [logits for _, logits in lines]

    def __call__(self, image: np.ndarray) -> str:
        return self.read(image)[0]


@dataclasses.dataclass
class Run:
    """What the pipeline produced on a sample set, per image."""

    texts: list[str]
    similarities: list[float]
    det_maps: list[np.ndarray]
    rec_outputs: list[list[np.ndarray]]

    @property
    def similarity(self) -> float:
        return float(np.mean(self.similarities))


def run(det_path: str | Path, rec_path: str | Path, samples: Sequence[Sample],
        characters: Sequence[str] | None = None, threads: int = 2) -> Run:
    """The det+rec pipeline on every sample (labels: the recognizer's metadata by default)."""
    ocr = OCR(det_path, rec_path, characters or recognizer_characters(rec_path), threads)
    result = Run([], [], [], [])
    for sample in samples:
        text, prob, logits = ocr.read(sample.image)
        result.texts.append(text)
        result.similarities.append(similarity(text, sample.text))
        result.det_maps.append(prob)
        result.rec_outputs.append(logits)
    return result


def evaluate(det_path: str | Path, rec_path: str | Path, samples: Sequence[Sample],
             characters: Sequence[str] | None = None, threads: int = 2) -> float:
    """Mean character similarity of the det+rec pipeline's text to the ground truth."""
    return run(det_path, rec_path, samples, characters, threads).similarity


def text_mask_iou(reference: Run, other: Run) -> float:
    """IoU of the thresholded detector maps (``> DET_THRESH``) against the reference's.

    Pooled over all images; 1 means the same text regions. A graded signal where the OCR score
    falls off a cliff.
    """
    inter = union = 0
    for ref, out in zip(reference.det_maps, other.det_maps, strict=True):
        a, b = ref > DET_THRESH, out > DET_THRESH
        inter += int(np.sum(a & b))
        union += int(np.sum(a | b))
    return 1.0 if union == 0 else inter / union


def step_agreement(reference: Run, other: Run) -> float | None:
    """Share of recognizer time steps whose arg-max class matches the reference's.

    Steps where both are blank are not counted (most steps are; they would hide a recognizer
    that reads nothing). Over the images where both runs read the same number of crops of the
    same shapes (all of them when the detector is the same); None when no image lines up.
    """
    same = total = 0
    for refs, outs in zip(reference.rec_outputs, other.rec_outputs, strict=True):
        if [r.shape for r in refs] != [o.shape for o in outs]:
            continue
        for ref, out in zip(refs, outs, strict=True):
            a, b = ref.argmax(-1), out.argmax(-1)
            counted = (a != 0) | (b != 0)
            same += int(np.sum((a == b) & counted))
            total += int(np.sum(counted))
    return same / total if total else None


# ---------------------------------------------------------------------------------------------
# Text orientation (the PP-OCR direction classifier: 0 or 180 degrees).

CLS_WIDTH = 192


def orientation_set(samples: Sequence[Sample], det_path: str | Path,
                    threads: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Every line crop the detector finds, upright (label 0) and turned 180 degrees (label 1).

    Returns ``[2M, 3, 48, 192]`` classifier inputs (rapidocr's: height 48, width at most 192,
    padded) and their ``[2M]`` labels.
    """
    det = session(det_path, threads)
    name = det.get_inputs()[0].name
    inputs, labels = [], []
    for sample in samples:
        prob = det.run(None, {name: _normalize(sample.image)})[0][0, 0]
        for y0, y1, x0, x1 in boxes_from_probability(prob):
            crop = sample.image[y0:y1 + 1, x0:x1 + 1]
            for label, image in ((0, crop), (1, crop[::-1, ::-1])):
                inputs.append(rec_input(np.ascontiguousarray(image), max_width=CLS_WIDTH,
                                        pad_to=CLS_WIDTH))
                labels.append(label)
    return np.concatenate(inputs), np.asarray(labels)


def classify(cls_path: str | Path, inputs: np.ndarray, threads: int = 2) -> np.ndarray:
    """The classifier's arg-max class of every input, one at a time."""
    cls = session(cls_path, threads)
    name = cls.get_inputs()[0].name
    return np.asarray([int(cls.run(None, {name: x[None]})[0][0].argmax()) for x in inputs])
