"""Batches from user files: a .npy or .npz file, a folder of them, or a folder of images.

- ``.npy``: one array for a model with one input. An array of the input's rank whose leading
  dim is a multiple of the batch size is cut into batches; one of rank - 1 is one sample.
- ``.npz``: arrays keyed by input name (one unnamed ``arr_0`` for a one-input model), cut the same
  way; every input must give the same number of batches.
- a folder: every .npy/.npz in it (sorted by name), else every image (see ``images.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from graphprune.errors import InputError, one_line
from graphprune.inputs.feeds import Batch
from graphprune.inputs.images import image_files, load_images
from graphprune.inputs.specs import InputSpec

_ARRAY_SUFFIXES = (".npy", ".npz")


def _cut(array: np.ndarray, spec: InputSpec, source: Path) -> list[np.ndarray]:
    """Batches of ``spec``'s shape cut from ``array`` (a stack of samples or one sample)."""
    shape = spec.shape
    if array.ndim == len(shape) - 1:
        array = array[None]
    batch = shape[0] if shape else 1
    fits = (array.ndim == len(shape) and array.shape[1:] == shape[1:]
            and array.shape[0] % batch == 0 and array.shape[0] > 0)
    if not fits:
        raise InputError(f"{source}: array of shape {list(array.shape)} does not fit input "
                         f"'{spec.name}' of shape {list(shape)} (batches of {batch})")
    if np.issubdtype(spec.dtype, np.floating) != np.issubdtype(array.dtype, np.floating):
        raise InputError(f"{source}: {array.dtype} data for input '{spec.name}' "
                         f"of type {spec.dtype}")
    array = array.astype(spec.dtype, copy=False)
    return [array[i:i + batch] for i in range(0, array.shape[0], batch)]


def _load_array_file(path: Path) -> dict[str, np.ndarray]:
    """Arrays by name (``""`` for a .npy file)."""
    try:
        loaded = np.load(path, allow_pickle=False)
        if isinstance(loaded, np.ndarray):
            return {"": loaded}
        with loaded:
            return {name: loaded[name] for name in loaded.files}
    except (OSError, ValueError, EOFError) as exc:
        first = one_line(exc)
        raise InputError(f"{path}: not a readable {path.suffix} file ({first})") from exc


def _batches_from_arrays(arrays: dict[str, np.ndarray], specs: Sequence[InputSpec],
                         source: Path) -> list[Batch]:
    names = [s.name for s in specs]
    if len(arrays) == 1 and len(specs) == 1 and set(arrays) != set(names):
        arrays = {names[0]: next(iter(arrays.values()))}  # an unnamed array for a one-input model
    missing = set(names) - set(arrays)
    if missing:
        raise InputError(f"{source}: no array for input(s) {', '.join(sorted(missing))} "
                         f"(arrays: {', '.join(sorted(arrays)) or 'none'})")
    cuts = {s.name: _cut(arrays[s.name], s, source) for s in specs}
    counts = {len(c) for c in cuts.values()}
    if len(counts) != 1:
        raise InputError(f"{source}: the inputs give different numbers of batches {sorted(counts)}")
    return [{name: cuts[name][i] for name in names} for i in range(counts.pop())]


def load_batches(path: Path, specs: Sequence[InputSpec], limit: int | None = None) -> list[Batch]:
    """Batches for ``specs`` from ``path`` (see the module docstring); InputError if none fit.

    With ``limit``, files past the first ``limit`` batches are not read.
    """
    if not path.exists():
        raise InputError(f"{path}: no such file or folder")
    if path.is_file():
        if path.suffix.lower() not in _ARRAY_SUFFIXES:
            raise InputError(f"{path}: --data takes a .npy or .npz file or a folder")
        return _batches_from_arrays(_load_array_file(path), specs, path)
    files = sorted(p for p in path.iterdir() if p.suffix.lower() in _ARRAY_SUFFIXES)
    if files:
        batches: list[Batch] = []
        for f in files:
            if limit is not None and len(batches) >= limit:
                break
            batches += _batches_from_arrays(_load_array_file(f), specs, f)
        return batches
    images = image_files(path)
    if not images:
        raise InputError(f"{path}: no .npy, .npz or image files in this folder")
    return load_images(images, specs, path, limit)
