"""Model inputs for measurement: resolved shapes, random batches, or batches loaded from files.

A symbolic dim takes its size from ``--input-shape NAME=D1,D2,...``; without one, a leading
(batch) dim is 1 and the two spatial dims of a rank-4 input are 224. Any other symbolic dim needs
``--input-shape``.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import onnx

from graphprune._io import check_path
from graphprune.errors import InputError, UsageError

Batch = dict[str, np.ndarray]
DEFAULT_SAMPLES = 16
_DEFAULT_SPATIAL = 224


@dataclasses.dataclass(frozen=True)
class InputSpec:
    """One graph input: its declared dims (a str for a symbolic dim) and the resolved shape."""

    name: str
    declared: tuple[int | str, ...]
    shape: tuple[int, ...]
    dtype: np.dtype


@dataclasses.dataclass(frozen=True)
class Inputs:
    """The batches every model of a measurement is fed, and where they came from."""

    specs: tuple[InputSpec, ...]
    batches: tuple[Batch, ...]
    origin: str

    def as_dict(self) -> dict:
        shapes = sorted({tuple((k, v.shape) for k, v in b.items()) for b in self.batches})
        return {
            "origin": self.origin,
            "batches": len(self.batches),
            "shapes": [{name: list(shape) for name, shape in s} for s in shapes],
        }


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


def _declared(path: Path) -> list[tuple[str, tuple[int | str, ...], np.dtype]]:
    check_path(path)
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf raises many kinds for a bad file
        raise InputError(f"{path}: not a readable ONNX model ({type(exc).__name__})") from exc
    initializers = {t.name for t in proto.graph.initializer}
    declared = []
    for value in proto.graph.input:
        if value.name in initializers:
            continue
        tensor = value.type.tensor_type
        dims = tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or "?")
                     for d in tensor.shape.dim)
        dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type))
        declared.append((value.name, dims, dtype))
    return declared


def _default_dim(name: str, dims: tuple[int | str, ...], axis: int) -> int:
    if axis == 0:
        return 1
    if len(dims) == 4 and axis in (2, 3):
        return _DEFAULT_SPATIAL
    raise UsageError(f"input '{name}' has symbolic dim '{dims[axis]}' at axis {axis}; "
                     f"give its size with --input-shape {name}=...")


def _resolve(name: str, dims: tuple[int | str, ...],
             given: tuple[int, ...] | None) -> tuple[int, ...]:
    if given is None:
        return tuple(d if isinstance(d, int) else _default_dim(name, dims, a)
                     for a, d in enumerate(dims))
    static_mismatch = any(isinstance(d, int) and d != g for d, g in zip(dims, given, strict=False))
    if len(given) != len(dims) or static_mismatch:
        declared = ",".join(str(d) for d in dims)
        raise UsageError(f"--input-shape for '{name}' is {','.join(map(str, given))}, "
                         f"but the model declares [{declared}]")
    return given


def resolve_specs(path: str | os.PathLike, shapes: Mapping[str, tuple[int, ...]] | None = None
                  ) -> tuple[InputSpec, ...]:
    """The graph inputs of the model at ``path`` with every dim resolved (see module docstring)."""
    declared = _declared(Path(path))
    shapes = dict(shapes or {})
    if "" in shapes:
        if len(declared) != 1:
            raise UsageError("--input-shape without NAME= needs a model with exactly one input "
                             f"(this one has {', '.join(n for n, _, _ in declared)})")
        shapes[declared[0][0]] = shapes.pop("")
    unknown = set(shapes) - {name for name, _, _ in declared}
    if unknown:
        raise UsageError(f"--input-shape names no input of the model: {', '.join(sorted(unknown))} "
                         f"(inputs: {', '.join(n for n, _, _ in declared)})")
    return tuple(InputSpec(name, dims, _resolve(name, dims, shapes.get(name)), dtype)
                 for name, dims, dtype in declared)


def _random_array(rng: np.random.Generator, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    if np.issubdtype(dtype, np.floating):
        return rng.standard_normal(shape).astype(dtype)
    if dtype == np.bool_:
        return rng.random(shape) < 0.5
    return rng.integers(0, 2, size=shape).astype(dtype)


def random_batches(specs: Sequence[InputSpec], count: int, seed: int = 0) -> list[Batch]:
    """``count`` batches of standard-normal floats (0/1 for integer and bool inputs)."""
    rng = np.random.default_rng(seed)
    return [{s.name: _random_array(rng, s.shape, s.dtype) for s in specs} for _ in range(count)]


def load_inputs(
    path: str | os.PathLike,
    shapes: Mapping[str, tuple[int, ...]] | None = None,
    data: str | os.PathLike | None = None,
    samples: int | None = None,
    seed: int = 0,
) -> Inputs:
    """The batches to feed the model at ``path`` (and the models derived from it).

    Args:
        path: The (original) model; its graph inputs fix names, ranks and dtypes.
        shapes: Sizes of symbolic dims by input name (see :func:`parse_input_shapes`).
        data: A .npy/.npz file, a folder of them, or a folder of images; random when None.
        samples: Most batches used; random inputs default to ``DEFAULT_SAMPLES``.
        seed: Seed of the random inputs.
    """
    if samples is not None and samples < 1:
        raise UsageError(f"--samples must be at least 1, got {samples}")
    specs = resolve_specs(path, shapes)
    if data is None:
        batches = random_batches(specs, samples or DEFAULT_SAMPLES, seed)
        return Inputs(specs, tuple(batches), "random")
    from graphprune.bench.data import load_batches

    batches = load_batches(Path(data), specs)
    return Inputs(specs, tuple(batches[:samples] if samples else batches), str(data))


def inputs_for_models(
    paths: Sequence[str | os.PathLike],
    shapes: Mapping[str, tuple[int, ...]] | None = None,
    data: str | os.PathLike | None = None,
    samples: int | None = None,
    seed: int = 0,
) -> list[Inputs]:
    """Inputs per model: the first model's for every model whose inputs are the same."""
    first = load_inputs(paths[0], shapes, data, samples, seed)
    inputs = [first]
    for path in paths[1:]:
        same = resolve_specs(path, shapes) == first.specs
        inputs.append(first if same else load_inputs(path, shapes, data, samples, seed))
    return inputs

