"""What a model file reads, and destinations that must not be written.

An input is its model file plus every external-data file its tensors name (initializers,
Constant nodes and other tensor attributes, sparse tensors, subgraphs and functions at any
depth), read from the protobuf without loading the data. Before any work, every path a job will
write (model, reports) is compared with those files, by resolved path and by inode (symlinks
and hard links), and refused if it is one of them. ``--force`` lets the output replace the input
model file itself, never a file the input reads its data from.
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import onnx

from graphprune.errors import OutputError, UsageError
from graphprune.staging import make_staging, prefix


def _graph_tensors(graph: onnx.GraphProto) -> Iterator[onnx.TensorProto]:
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield from (sparse.values, sparse.indices)
    for node in graph.node:
        yield from _node_tensors(node)


def _node_tensors(node: onnx.NodeProto) -> Iterator[onnx.TensorProto]:
    for attribute in node.attribute:
        if attribute.HasField("t"):
            yield attribute.t
        yield from attribute.tensors
        for sparse in [*attribute.sparse_tensors,
                       *([attribute.sparse_tensor] if attribute.HasField("sparse_tensor") else [])]:
            yield from (sparse.values, sparse.indices)
        if attribute.HasField("g"):
            yield from _graph_tensors(attribute.g)
        for graph in attribute.graphs:
            yield from _graph_tensors(graph)


def external_locations(proto: onnx.ModelProto) -> set[str]:
    """The ``location`` of every tensor in external data, anywhere in ``proto``."""
    tensors = [*_graph_tensors(proto.graph),
               *(t for f in proto.functions for n in f.node for t in _node_tensors(n))]
    return {entry.value for tensor in tensors if tensor.data_location == onnx.TensorProto.EXTERNAL
            for entry in tensor.external_data if entry.key == "location"}


def data_files(path: Path) -> list[Path]:
    """The external-data files the model at ``path`` names (none if it cannot be parsed)."""
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception:  # not a model: loading reports that; it names no data files
        return []
    return [path.parent / location for location in sorted(external_locations(proto))]


def input_files(model: Path) -> list[Path]:
    """``model`` and the data files it reads (just ``model`` when it is no readable file)."""
    model = Path(model)
    return [model, *(data_files(model) if model.is_file() else [])]


def same_file(a: Path, b: Path) -> bool:
    """``a`` and ``b`` are one file: the same resolved path or the same inode."""
    if Path(a).resolve() == Path(b).resolve():
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist
        return False


def check_writable_path(path: Path) -> None:
    """OutputError when ``path`` is a folder or an existing non-regular file (device, FIFO, ...)."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return  # nothing there (or a dangling link, which a rename replaces)
    if stat.S_ISDIR(mode):
        raise OutputError(f"{path}: is a directory")
    if not stat.S_ISREG(mode):
        raise OutputError(f"{path}: is not a regular file (a device, FIFO or socket); "
                          "choose a file path")


def check_folder(folder: Path, what: Path | None = None) -> None:
    """OutputError unless ``folder`` takes new files (a temporary file is made and removed).

    This is a real write, not a look at permission bits, so it holds for root and for
    read-only mounts alike.
    """
    folder = folder if str(folder) else Path(".")
    try:
        with tempfile.TemporaryFile(prefix=prefix(), dir=folder):
            pass
    except OSError as exc:
        raise OutputError(f"{what or folder}: cannot write here ({exc.strerror or exc})") from exc


def check_destinations(source: Path, paths: Sequence[Path], *, model_output: Path | None = None,
                       force: bool = False) -> None:
    """Refuses any of ``paths`` that is a file ``source`` reads (UsageError), or not a file.

    ``model_output`` (one of ``paths``, or None) may replace the ``source`` model file itself
    when ``force`` is set; nothing may replace a data file of ``source``.
    """
    reads = input_files(source)
    for path in paths:
        check_writable_path(path)
        for index, read in enumerate(reads):
            if not same_file(path, read):
                continue
            if index > 0:
                raise UsageError(f"{path}: is external data the input {source} reads; "
                                 "choose another output name")
            if path != model_output:
                raise UsageError(f"{path}: would overwrite the input model; "
                                 "choose another output name")
            if not force:
                raise UsageError(f"{path}: output would overwrite the input (use --force)")


def _copy(source: Path, target: Path) -> None:
    """Copies ``source`` to ``target``.

    Not a hard link: onnxruntime and ``onnx.checker`` refuse data files with several links, and
    the save-time checks read the input while the copy exists.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(source, target)


def keep_original(model: Path, output: Path) -> Path:
    """A path that still reads the original ``model`` after ``output`` has replaced it.

    When ``output`` is ``model`` itself (``--force`` in place), the model and its data files are
    copied into a staging folder beside it, which lives until the
    CLI exits (:func:`graphprune.staging.remove_all`); otherwise ``model`` is returned as is.
    """
    model, output = Path(model), Path(output)
    if not (model.is_file() and output.exists() and same_file(model, output)):
        return model
    try:
        staging = make_staging(model.parent)
        for path in input_files(model):
            _copy(path, staging / os.path.relpath(path, model.parent))
    except OSError as exc:
        raise OutputError(f"{model}: cannot keep the original for measurement "
                          f"({exc.strerror or exc})") from exc
    return staging / model.name


def files_named_after(path: Path, files: Iterable[Path]) -> list[Path]:
    """Those of ``files`` that graphprune writes as ``path``'s data (``<name>[.<hex>].data``)."""
    found = []
    for file in files:
        name = file.name
        middle = name[len(path.name) + 1 : -len(".data")] if name.endswith(".data") else None
        if (file.parent.resolve() == path.parent.resolve() and name.startswith(f"{path.name}.")
                and middle is not None and (middle == "" or _is_token(middle))):
            found.append(file)
    return found


def _is_token(text: str) -> bool:
    return len(text) == 8 and all(c in "0123456789abcdef" for c in text)
