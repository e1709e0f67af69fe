"""Loading and saving through onnx-ir: external data stays memory-mapped, writes are atomic."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import onnx_ir as ir
from onnx_ir.passes.common import ShapeInferencePass

from graphprune.analysis.static_values import infer_shapes as infer_with_static_values
from graphprune.errors import InputError, OutputError


def load_model(path: str | os.PathLike) -> ir.Model:
    """Loads ``path`` and infers the shapes the rules read; raises InputError for bad input."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if path.is_dir():
        raise InputError(f"{path}: is a directory, not an ONNX model")
    if path.stat().st_size == 0:
        raise InputError(f"{path}: empty file")
    try:
        model = ir.load(path)
    except Exception as exc:  # protobuf and onnx-ir raise many kinds for a bad file
        raise InputError(f"{path}: not a readable ONNX model ({type(exc).__name__})") from exc
    if model.graph is None or len(model.graph) == 0:
        raise InputError(f"{path}: the model has no nodes")
    return infer_shapes(model)


def infer_shapes(model: ir.Model) -> ir.Model:
    """Fills in the value shapes the op rules read (partial results are kept)."""
    ShapeInferencePass(check_type=False, strict_mode=False, data_prop=True)(model)
    return infer_with_static_values(model)


def has_external_data(model: ir.Model) -> bool:
    return any(
        isinstance(v.const_value, ir.ExternalTensor) for v in model.graph.initializers.values()
    )


def save_model(
    model: ir.Model,
    path: str | os.PathLike,
    external_data: bool | None = None,
    check: Callable[[Path], None] | None = None,
) -> None:
    """Writes ``model`` to ``path`` atomically (temporary files in the same folder, then rename).

    With external data, tensors go to ``<name>.data`` beside the model, renamed into place before
    the model file, so a reader never sees a model whose data is missing. ``check`` is called on the
    staged file before anything is renamed; if it raises, nothing is written.
    """
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    if external_data is None:
        external_data = has_external_data(model)
    try:
        staging = Path(tempfile.mkdtemp(prefix=".graphprune-", dir=folder))
    except OSError as exc:
        raise OutputError(f"{path}: cannot write here ({exc.strerror or exc})") from exc
    try:
        data_name = f"{path.name}.data" if external_data else None
        ir.save(model, staging / path.name, external_data=data_name)
        if check is not None:
            check(staging / path.name)
        if data_name:
            os.replace(staging / data_name, folder / data_name)
        os.replace(staging / path.name, path)
    except OSError as exc:
        raise OutputError(f"{path}: cannot write ({exc.strerror or exc})") from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)
