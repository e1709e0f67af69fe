"""Input specs: every graph input's declared dims resolved to one concrete shape.

A symbolic dim takes its size from ``--input-shape NAME=D1,D2,...``; inputs that share a dim name
(``input_ids[B, S]`` and ``attention_mask[B, S]``) get the same size. Without one:

- the leading (batch) dim is 1;
- the two spatial dims of an image-like rank-4 input are 224, NCHW or NHWC alike (the channel
  axis is the static one of size 1, 3 or 4 at axis 1 or 3, see :func:`channel_axis`), a
  symbolic channel dim 3;
- the second dim of a rank-2 float input (audio samples, in practice: feature vectors have a
  static size) is 16000, one second at 16 kHz;
- any other symbolic dim of an input of rank 2 or 3 (a token or time sequence, say) is 128, and
  of a higher rank 16: never 1, so that a 3x3 conv never sees a 1x1 image.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir

from graphprune._io import check_path
from graphprune.errors import InputError, UsageError

DEFAULT_BATCH = 1
DEFAULT_SPATIAL = 224
DEFAULT_SEQUENCE = 128
DEFAULT_DIM = 16
DEFAULT_AUDIO = 16000
_IMAGE_CHANNELS = (1, 3, 4)

Declared = tuple[int | str, ...]


@dataclasses.dataclass(frozen=True)
class InputSpec:
    """One graph input.

    Attributes:
        name: The graph input's name.
        declared: Its declared dims (a str for a symbolic dim, ``"?"`` when unnamed).
        shape: The resolved concrete shape.
        dtype: Its numpy element type.
        channel_axis: 1 (NCHW) or 3 (NHWC) for an image-like rank-4 input, else None.
    """

    name: str
    declared: Declared
    shape: tuple[int, ...]
    dtype: np.dtype
    channel_axis: int | None = None


def parse_input_shapes(texts: Sequence[str]) -> dict[str, tuple[int, ...]]:
    """``["x=1,3,224,224"]`` -> ``{"x": (1, 3, 224, 224)}``; a bare shape is keyed ``""``."""
    shapes = {}
    for text in texts:
        name, _, dims = text.rpartition("=")
        try:
            shape = tuple(int(d) for d in dims.replace("x", ",").split(","))
        except ValueError:
            shape = ()
        if not shape or min(shape) < 1:
            raise UsageError(f"--input-shape {text!r}: expected NAME=D1,D2,... "
                             "of positive integers")
        shapes[name.strip()] = shape
    return shapes


def read_interface(path: str | os.PathLike) -> onnx.ModelProto:
    """The model at ``path`` without its external data (graph, inputs and tensor dims only)."""
    path = Path(path)
    check_path(path)
    try:
        return onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf raises many kinds for a bad file
        raise InputError(f"{path}: not a readable ONNX model ({type(exc).__name__})") from exc


def interface_of(model: ir.Model) -> onnx.ModelProto:
    """A proto holding only ``model``'s graph inputs (what input specs read), without weights."""
    initializers = set(model.graph.initializers)
    inputs = [ir.serde.serialize_value(v) for v in model.graph.inputs if v.name not in initializers]
    return onnx.helper.make_model(onnx.helper.make_graph([], "interface", inputs, []))


def _np_dtype(elem_type: int) -> np.dtype:
    try:
        return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(elem_type))
    except (KeyError, TypeError):
        return np.dtype(np.float32)  # an input without a declared type: the common case


def declared_inputs(proto: onnx.ModelProto) -> list[tuple[str, Declared, np.dtype]]:
    """``(name, declared dims, dtype)`` of every graph input that is not an initializer."""
    initializers = {t.name for t in proto.graph.initializer}
    declared = []
    for value in proto.graph.input:
        if value.name in initializers:
            continue
        tensor = value.type.tensor_type
        dims = tuple(d.dim_value if d.HasField("dim_value") and d.dim_value >= 0
                     else (d.dim_param or "?")  # old exporters write -1 for "dynamic"
                     for d in tensor.shape.dim) if tensor.HasField("shape") else None
        declared.append((value.name, dims, _np_dtype(tensor.elem_type)))
    return declared


def channel_axis(dims: Declared) -> int | None:
    """1 (NCHW) or 3 (NHWC) for a rank-4 input (see the module docstring), else None.

    Axis 1 when it holds 1, 3 or 4; else axis 3 when it does; else axis 1 when it is static;
    else axis 3 when it is static and the dim before it symbolic (``[N, H, W, 64]``); else 1.
    """
    if dims is None or len(dims) != 4:
        return None
    if dims[1] in _IMAGE_CHANNELS:
        return 1
    if dims[3] in _IMAGE_CHANNELS:
        return 3
    if isinstance(dims[1], int):
        return 1
    return 3 if isinstance(dims[3], int) and isinstance(dims[2], str) else 1


def _default_dim(dims: Declared, axis: int, dtype: np.dtype) -> int:
    if axis == 0:
        return DEFAULT_BATCH
    if len(dims) == 2 and np.issubdtype(dtype, np.floating):
        return DEFAULT_AUDIO
    layout = channel_axis(dims)
    if layout is not None:
        spatial = (2, 3) if layout == 1 else (1, 2)
        return DEFAULT_SPATIAL if axis in spatial else 3
    return DEFAULT_SEQUENCE if len(dims) <= 3 else DEFAULT_DIM


def _check_given(name: str, dims: Declared | None, given: tuple[int, ...]) -> None:
    if dims is None:
        return  # rank unknown: the given shape is the only word on it
    static_mismatch = any(isinstance(d, int) and d != g for d, g in zip(dims, given, strict=False))
    if len(given) != len(dims) or static_mismatch:
        declared = ",".join(str(d) for d in dims)
        raise UsageError(f"--input-shape for '{name}' is {','.join(map(str, given))}, "
                         f"but the model declares [{declared}]")


def _symbol_sizes(declared, shapes: Mapping[str, tuple[int, ...]]) -> dict[str, int]:
    """Sizes of named symbolic dims: first from ``shapes``, then from the defaults."""
    sizes: dict[str, int] = {}
    for name, dims, _ in declared:
        for d, g in zip(dims or (), shapes.get(name, ()), strict=False):
            if isinstance(d, str) and d != "?":
                sizes.setdefault(d, g)
    for _, dims, dtype in declared:
        for axis, d in enumerate(dims or ()):
            if isinstance(d, str) and d != "?":
                sizes.setdefault(d, _default_dim(dims, axis, dtype))
    return sizes


def _normalized(declared, shapes) -> dict[str, tuple[int, ...]]:
    shapes = dict(shapes or {})
    names = [name for name, _, _ in declared]
    if "" in shapes:
        if len(declared) != 1:
            raise UsageError("--input-shape without NAME= needs a model with exactly one input "
                             f"(this one has {', '.join(names)})")
        shapes[names[0]] = shapes.pop("")
    unknown = set(shapes) - set(names)
    if unknown:
        raise UsageError(f"--input-shape names no input of the model: {', '.join(sorted(unknown))} "
                         f"(inputs: {', '.join(names)})")
    for name, dims, _ in declared:
        if name in shapes:
            _check_given(name, dims, shapes[name])
    return shapes


def resolve_specs(model: str | os.PathLike | onnx.ModelProto,
                  shapes: Mapping[str, tuple[int, ...]] | None = None) -> tuple[InputSpec, ...]:
    """The graph inputs of ``model`` (a path or a proto) with every dim resolved.

    Args:
        model: The model, or its path (read without external data).
        shapes: Shapes by input name (see :func:`parse_input_shapes`); they win over defaults.
    """
    proto = model if isinstance(model, onnx.ModelProto) else read_interface(model)
    declared = declared_inputs(proto)
    shapes = _normalized(declared, shapes)
    sizes = _symbol_sizes(declared, shapes)
    specs = []
    for name, dims, dtype in declared:
        if name in shapes or dims is None:  # (an input of unknown rank without one: ())
            shape = shapes.get(name, ())
        else:
            shape = tuple(d if isinstance(d, int) else
                          sizes.get(d) or _default_dim(dims, axis, dtype)
                          for axis, d in enumerate(dims))
        specs.append(InputSpec(name, dims, tuple(shape), dtype, channel_axis(dims)))
    return tuple(specs)
