"""Loading and saving through onnx-ir: external data stays memory-mapped, writes are atomic."""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import stat
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
from onnx_ir.passes.common import TopologicalSortPass

from graphprune import staging
from graphprune._shape_inference import infer_onnx_shapes
from graphprune.analysis.static_values import infer_shapes as infer_with_static_values
from graphprune.destinations import (
    check_destinations,
    check_folder,
    check_writable_path,
    data_files,
    files_named_after,
    input_files,
    same_file,
)
from graphprune.errors import InputError, OutputError, UsageError, one_line
from graphprune.ops.base import constant_array
from graphprune.staging import make_staging, remove_staging, signals_deferred, sweep_stale

SOURCE_KEY = "graphprune.source"  # model.meta: the resolved path the model was loaded from
EXTERNAL_KEY = "graphprune.external_data"  # model.meta: the loaded file had external data
PROTOBUF_LIMIT = 2**31 - 2**26  # above this many tensor bytes a model needs external data
BLOCK_BYTES = 2**24  # what one block of a large constant holds while it is read


@contextlib.contextmanager
def _quiet_onnx_ir() -> Iterator[None]:
    """Silences onnx-ir's warnings (dangling inputs, failed inference) for the duration.

    Python's last-resort handler would print them on stderr; the CLI reports one line per error,
    and what the warnings describe is either checked (the ONNX checker) or tolerated (partial
    shape inference).
    """
    logger = logging.getLogger("onnx_ir")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def check_path(path: Path) -> None:
    """Refuses a path that is missing, a folder, unreadable or empty (InputError)."""
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if path.is_dir():
        raise InputError(f"{path}: is a directory, not an ONNX model")
    if not os.access(path, os.R_OK):
        raise InputError(f"{path}: not readable")
    if path.stat().st_size == 0:
        raise InputError(f"{path}: empty file")


def check_input(path: Path) -> None:
    """Runs ``onnx.checker`` (full check, by path so external data and > 2 GB work) on an input."""
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except Exception as exc:  # ValidationError, InferenceError and the C++ parser's errors
        if not _passes_once_sorted(path, exc):
            raise InputError(f"{path}: fails the ONNX checker: {one_line(exc)}") from exc


def _passes_once_sorted(path: Path, exc: Exception) -> bool:
    """Nodes out of topological order (onnxruntime sorts them): the sorted graph is checked.

    The check runs in memory, so only for a model without external data; the model is sorted
    on load (:func:`infer_shapes`).
    """
    if "topologically sorted" not in str(exc):
        return False
    try:
        proto = onnx.load(str(path), load_external_data=False)
        if any(t.data_location == onnx.TensorProto.EXTERNAL for t in proto.graph.initializer):
            return False
        model = ir.from_proto(proto)
        TopologicalSortPass()(model)
        onnx.checker.check_model(ir.to_proto(model), full_check=True)
    except Exception:  # a cycle, or another checker error: the first error is reported
        return False
    return True


def _graphs(graph: ir.Graph) -> Iterator[ir.Graph]:
    """``graph`` and every subgraph in it, at any depth (one look at each node's attributes)."""
    yield graph
    for node in graph:
        if not node.attributes:
            continue
        for attribute in node.attributes.data.values():
            if attribute.type == ir.AttributeType.GRAPH:
                yield from _graphs(attribute.value)
            elif attribute.type == ir.AttributeType.GRAPHS:
                for body in attribute.value:
                    yield from _graphs(body)


def _external_tensors(graph: ir.Graph) -> Iterator[ir.ExternalTensor]:
    for sub in _graphs(graph):
        for value in sub.initializers.values():
            if isinstance(value.const_value, ir.ExternalTensor):
                yield value.const_value


def check_external_data(model: ir.Model, path: Path) -> None:
    """Every external tensor lies inside the model's folder, in a file long enough to hold it."""
    folder = path.resolve().parent
    for tensor in _external_tensors(model.graph):
        where = f"{path}: external data of '{tensor.name}'"
        data = Path(tensor.path).resolve()
        if folder != data.parent and folder not in data.parents:
            raise InputError(f"{where} points outside the model's folder ({tensor.location})")
        if not data.is_file():
            raise InputError(f"{where}: no such file {tensor.location}")
        end = (tensor.offset or 0) + (tensor.length if tensor.length is not None else tensor.nbytes)
        if data.stat().st_size < end:
            raise InputError(f"{where}: {tensor.location} is truncated ({data.stat().st_size} "
                             f"bytes, the tensor ends at byte {end})")


def load_model(path: str | os.PathLike) -> ir.Model:
    """Loads ``path`` and infers the shapes the rules read; raises InputError for bad input.

    A model is refused when it cannot be parsed, has no nodes, fails ``onnx.checker`` (full
    check), or has external data outside its folder or shorter than its tensors. Tensors in
    external data stay memory-mapped.
    """
    path = Path(path)
    check_path(path)
    with _quiet_onnx_ir():
        try:  # what ir.load does, keeping the proto for shape inference
            proto = onnx.load(path, load_external_data=False)
            model = ir.serde.deserialize_model(proto)
            ir.external_data.set_base_dir(model.graph, os.path.dirname(path))
        except Exception as exc:  # protobuf and onnx-ir raise many kinds for a bad file
            raise InputError(f"{path}: not a readable ONNX model ({type(exc).__name__})") from exc
    if model.graph is None or len(model.graph) == 0:
        raise InputError(f"{path}: the model has no nodes")
    check_input(path)
    check_external_data(model, path)
    model.meta[SOURCE_KEY] = str(path.resolve())
    model.meta[EXTERNAL_KEY] = has_external_data(model)
    return infer_shapes(model, proto)


def infer_shapes(model: ir.Model, proto: onnx.ModelProto | None = None) -> ir.Model:
    """Fills in the value shapes the op rules read (partial results are kept).

    ``proto``: the proto ``model`` was just deserialized from; shape inference runs on it
    rather than on a new serialization when sorting the graph leaves it as it was.
    """
    with _quiet_onnx_ir():
        # onnxruntime runs unsorted graphs; our passes need order
        if TopologicalSortPass()(model).modified:
            proto = None
        infer_onnx_shapes(model, proto=proto)
        return infer_with_static_values(model)


def has_external_data(model: ir.Model) -> bool:
    return any(True for _ in _external_tensors(model.graph))


def tensor_bytes(model: ir.Model) -> int:
    """Bytes of every initializer of the main graph."""
    return sum(v.const_value.nbytes for v in model.graph.initializers.values()
               if v.const_value is not None)


def check_output(output: Path, source: Path, force: bool = False,
                 reports: Sequence[Path] = ()) -> None:
    """Refuses an output path before any work is done (the CLI calls this first).

    Raises UsageError when ``output`` or a report path is, or resolves to, a file the input
    reads (its model file, or any of its external-data files; through symlinks and hard links
    too), except ``output`` replacing the input model itself with ``force``; also when
    ``<output>.data`` is one of the input's data files (unless in place with ``force``).
    Raises OutputError when a destination is a folder or not a regular file (a device, FIFO
    or socket), or its folder does not take new files (a temporary file is made and removed).
    """
    output, source = Path(output), Path(source)
    in_place = force and same_file(output, source)
    data = [] if in_place else [output.with_name(f"{output.name}.data")]
    check_destinations(source, [output, *reports, *data], model_output=output, force=force)
    check_folder(output.parent, output)


def _check_destination(model: ir.Model, path: Path) -> None:
    """Refuses a folder, a non-regular file, and any data file the model itself reads from.

    Writing over the model's own source file is the caller's decision (``--force``). As for
    :func:`check_output`, ``<path>.data`` being the input's data is refused too (not written
    any more, but what older writes named the data of ``path``).
    """
    check_writable_path(path)
    source = model.meta.get(SOURCE_KEY)
    if source is not None and same_file(path, Path(source)):
        return
    reads = [Path(t.path) for t in _external_tensors(model.graph)]
    reads += input_files(Path(source))[1:] if source is not None else []
    for target in (path, path.with_name(f"{path.name}.data")):
        if any(same_file(target, r) for r in reads):
            raise UsageError(f"{target}: is the input's external data; "
                             "choose another output name")


def _old_data(path: Path, model: ir.Model) -> list[Path]:
    """Data files of the model now at ``path`` that replacing it makes ours to remove.

    Only files named as graphprune names ``path``'s data, and never a file the loaded input
    reads, unless the write replaces the input model itself (in place, no other hard link).
    """
    if not path.is_file():
        return []
    old = files_named_after(path, data_files(path))
    source = model.meta.get(SOURCE_KEY)
    in_place = source is not None and same_file(path, Path(source)) and os.stat(path).st_nlink == 1
    reads = [] if source is None or in_place else input_files(Path(source))[1:]
    reads += [] if in_place else [Path(t.path) for t in _external_tensors(model.graph)]
    return [f for f in old if not any(same_file(f, r) for r in reads)]


def _place(staged: Path, target: Path) -> None:
    """Moves a staged data file to ``target``, never over an existing file."""
    try:
        os.link(staged, target)
    except FileExistsError:
        raise
    except OSError:  # a file system without hard links
        if target.exists():
            raise FileExistsError(target) from None
        os.replace(staged, target)
        return
    staged.unlink()


def _replace_pair(staging: Path, path: Path, data_name: str | None, model: ir.Model) -> None:
    """Puts the new data in place under its fresh name, then the model, then drops old data.

    A reader opening ``path`` sees the old model with its old data, or the new model with its
    new data; signals are held back until the renames are done.
    """
    folder = path.parent if str(path.parent) else Path(".")
    with signals_deferred():
        old = _old_data(path, model)
        if data_name:
            _place(staging / data_name, folder / data_name)
        try:
            os.replace(staging / path.name, path)
        except BaseException:
            if data_name:
                (folder / data_name).unlink(missing_ok=True)
            raise
        for file in old:
            file.unlink(missing_ok=True)


def _orphaned_data(path: Path, model: ir.Model) -> list[Path]:
    """Files named as graphprune names ``path``'s data (``<name>.<hex>.data``) no model reads.

    A write killed (SIGKILL) after its data was put in place and before the model was renamed
    leaves one. It is ours to remove when it is this user's regular file, neither written nor
    linked for :data:`~graphprune.staging.STALE_AFTER_S` (a concurrent write links its data just
    before it renames its model), and read by neither the model now at ``path``, nor any other
    model in the folder, nor the input being written.
    """
    folder = path.parent if str(path.parent) else Path(".")
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return []
    named = files_named_after(path, [Path(e.path) for e in entries if e.name.endswith(".data")])
    now = time.time()
    candidates = []
    for file in named:
        if file.name == f"{path.name}.data":
            continue  # the name earlier versions wrote: the previous model's, see _old_data
        with contextlib.suppress(OSError):
            info = file.lstat()
            if (stat.S_ISREG(info.st_mode) and info.st_uid == os.getuid()
                    and staging.age_s(info, now, linked=True) >= staging.STALE_AFTER_S):
                candidates.append(file)
    if not candidates:
        return []
    reads = [Path(t.path) for t in _external_tensors(model.graph)]
    source = model.meta.get(SOURCE_KEY)
    reads += input_files(Path(source)) if source is not None else []
    for entry in entries:
        if entry.name.endswith(".onnx") and entry.is_file():
            reads += data_files(Path(entry.path))
    return [f for f in candidates if not any(same_file(f, r) for r in reads)]


def save_model(
    model: ir.Model,
    path: str | os.PathLike,
    external_data: bool | None = None,
    check: Callable[[Path], None] | None = None,
) -> None:
    """Writes ``model`` to ``path`` atomically, the model and its external data as a pair.

    External data goes to a file of a fresh name, ``<name>.<8 hex digits>.data`` beside the
    model; it is put in place first, the model renamed over ``path`` last, and only then is the
    data file of the model that was at ``path`` removed (when graphprune wrote it and the input
    does not read it). A reader never sees a model with data from another write. External data
    is used when the loaded file had it (even if every external tensor was sliced into memory
    since), when the model still has external tensors, or when its tensors would not fit a
    protobuf. ``check`` is called on the staged file before anything is renamed; if it raises,
    nothing is written. Stale staging folders of dead processes, and data files of ``path``
    that a killed write left unreferenced, are swept from the folder first.
    """
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    if external_data is None:
        external_data = (model.meta.get(EXTERNAL_KEY, False) or has_external_data(model)
                         or tensor_bytes(model) > PROTOBUF_LIMIT)
    data_name = f"{path.name}.{secrets.token_hex(4)}.data" if external_data else None
    _check_destination(model, path)
    sweep_stale(folder)
    for orphan in _orphaned_data(path, model):
        orphan.unlink(missing_ok=True)
    try:
        staged = make_staging(folder)
    except OSError as exc:
        raise OutputError(f"{path}: cannot write here ({exc.strerror or exc})") from exc
    try:
        ir.save(model, staged / path.name, external_data=data_name)
        if check is not None:
            check(staged / path.name)
        _replace_pair(staged, path, data_name, model)
    except OSError as exc:
        raise OutputError(f"{path}: cannot write ({exc.strerror or exc})") from exc
    finally:
        remove_staging(staged)


def _file_backed(tensor) -> bool:
    """External tensors of plain numpy types (others go through onnx-ir's memory map)."""
    return (isinstance(tensor, ir.ExternalTensor) and len(tensor.shape) > 0
            and np.dtype(tensor.dtype.numpy()).kind in "fiub")


def iter_blocks(
    value: ir.Value, block_bytes: int = BLOCK_BYTES
) -> Iterator[tuple[int, np.ndarray]]:
    """``(start, array[start:stop])``: a constant in blocks along its first axis.

    A tensor in external data is read from its file block by block with plain reads, not through
    the memory map, so one pass over a tensor larger than memory holds one block at a time (pages
    of a mapped file that were read count towards the process's resident memory). Other constants
    are sliced from their array. A scalar comes as one block.
    """
    tensor = value.const_value
    if not _file_backed(tensor):
        array = np.asarray(constant_array(value))
        if array.ndim == 0:
            yield 0, array
            return
        step = max(1, block_bytes // max(1, array[:1].nbytes))
        for start in range(0, len(array), step):
            yield start, array[start : start + step]
        return
    shape = tuple(int(d) for d in tensor.shape.numpy())
    dtype = np.dtype(tensor.dtype.numpy()).newbyteorder("<")
    row = int(np.prod(shape[1:], dtype=np.int64))
    step = max(1, block_bytes // max(1, row * dtype.itemsize))
    with open(tensor.path, "rb") as handle:
        for start in range(0, shape[0], step):
            stop = min(shape[0], start + step)
            handle.seek((tensor.offset or 0) + start * row * dtype.itemsize)
            block = np.fromfile(handle, dtype=dtype, count=(stop - start) * row)
            yield start, block.reshape((stop - start, *shape[1:])).astype(dtype.newbyteorder("="),
                                                                         copy=False)
