"""The batches a job feeds its models: from ``--data`` when given, else valid random feeds.

Shapes come from :mod:`graphprune.inputs.specs` (``--input-shape`` first), values from
:mod:`graphprune.inputs.domains` (integer inputs inside the tables they index, masks 0/1).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import onnx

from graphprune.errors import UsageError
from graphprune.inputs.data import load_batches
from graphprune.inputs.domains import ValueDomain, value_domains
from graphprune.inputs.feeds import Batch, random_batches
from graphprune.inputs.specs import InputSpec, read_interface, resolve_specs

DEFAULT_SAMPLES = 16


@dataclasses.dataclass(frozen=True)
class Inputs:
    """The batches every model of a job is fed, and where they came from.

    Attributes:
        specs: The resolved graph inputs.
        batches: The batches, each a feed of every input.
        origin: ``"random"`` or the ``--data`` path.
        domains: The value domain of every input (random batches are drawn from them).
    """

    specs: tuple[InputSpec, ...]
    batches: tuple[Batch, ...]
    origin: str
    domains: Mapping[str, ValueDomain] = dataclasses.field(default_factory=dict, compare=False)

    def as_dict(self) -> dict:
        shapes = sorted({tuple((k, v.shape) for k, v in b.items()) for b in self.batches})
        return {
            "origin": self.origin,
            "batches": len(self.batches),
            "shapes": [{name: list(shape) for name, shape in s} for s in shapes],
            "domains": {name: d.as_dict() for name, d in self.domains.items()
                        if d.kind != "float"},
        }


def _proto(model: str | os.PathLike | onnx.ModelProto) -> onnx.ModelProto:
    return model if isinstance(model, onnx.ModelProto) else read_interface(model)


def valid_feeds(model: str | os.PathLike | onnx.ModelProto,
                shapes: Mapping[str, tuple[int, ...]] | None = None, count: int = 1,
                seed: int = 0) -> list[Batch]:
    """``count`` random batches ``model`` can run on (see :mod:`graphprune.inputs.domains`)."""
    proto = _proto(model)
    specs = resolve_specs(proto, shapes)
    return random_batches(specs, count, seed, value_domains(proto))


def load_inputs(
    model: str | os.PathLike | onnx.ModelProto,
    shapes: Mapping[str, tuple[int, ...]] | None = None,
    data: str | os.PathLike | None = None,
    samples: int | None = None,
    seed: int = 0,
) -> Inputs:
    """The batches to feed ``model`` (and the models derived from it).

    Args:
        model: The (original) model or its path; its graph inputs fix names, ranks and dtypes.
        shapes: Sizes of symbolic dims by input name (see :func:`parse_input_shapes`).
        data: A .npy/.npz file, a folder of them, or a folder of images; random when None.
        samples: Most batches used; random inputs default to ``DEFAULT_SAMPLES``.
        seed: Seed of the random inputs.
    """
    if samples is not None and samples < 1:
        raise UsageError(f"--samples must be at least 1, got {samples}")
    proto = _proto(model)
    specs = resolve_specs(proto, shapes)
    domains = value_domains(proto)
    if data is None:
        batches = random_batches(specs, samples or DEFAULT_SAMPLES, seed, domains)
        return Inputs(specs, tuple(batches), "random", domains)
    batches = load_batches(Path(data), specs, limit=samples)
    return Inputs(specs, tuple(batches[:samples] if samples else batches), str(data), domains)


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
