"""Calibration activations: per-channel statistics of intermediate values, streamed over batches.

A scorer (or a compensation pass) asks for values by name with the axis that holds their
channels. :func:`collect_stats` runs a copy of the model whose graph outputs include those
values, in onnxruntime on CPU, one batch at a time, and folds every batch into running sums
(sum, sum of squares, count over every axis but the channel axis): memory stays one batch of
activations plus a few numbers per channel, however many batches there are.

The copy is an ONNX proto edited in memory; tensors in external data stay where they are
(onnxruntime reads them from the model's folder), so no weight is copied to disk.
:class:`CalibrationProvider` is the lazy, caching front scorers see.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir

from graphprune.errors import InputError, UsageError, one_line

Batch = dict[str, np.ndarray]
Requests = Mapping[str, int]  # value name -> its channel axis (negative counts from the end)
DEFAULT_CALIB_SAMPLES = 16  # --calib-samples
_FOLDER_KEY = "session.model_external_initializers_file_folder_path"


@dataclasses.dataclass(frozen=True)
class Stats:
    """Per-channel statistics of one value over the calibration set.

    Attributes:
        sum: Sum of the value over every axis but the channel axis, over all batches.
        sq_sum: Sum of squares, likewise (the squared L2 norm of each channel: ``sq_norm``).
        count: Elements summed per channel (batch x positions, over all batches).
    """

    sum: np.ndarray
    sq_sum: np.ndarray
    count: int

    @property
    def mean(self) -> np.ndarray:
        return self.sum / max(self.count, 1)

    @property
    def var(self) -> np.ndarray:
        """Population variance per channel (``E[x^2] - E[x]^2``, never negative)."""
        return np.maximum(self.sq_sum / max(self.count, 1) - self.mean ** 2, 0.0)

    @property
    def sq_norm(self) -> np.ndarray:
        """``||X_c||_2^2``: the squared L2 norm of each channel over the calibration set."""
        return self.sq_sum

    @property
    def norm(self) -> np.ndarray:
        return np.sqrt(self.sq_sum)


class _Accumulator:
    def __init__(self, axis: int) -> None:
        self.axis = axis
        self.sum: np.ndarray | None = None
        self.sq_sum: np.ndarray | None = None
        self.count = 0

    def add(self, array: np.ndarray, name: str) -> None:
        array = np.asarray(array)
        if array.ndim == 0 or not -array.ndim <= self.axis < array.ndim:
            raise UsageError(f"calibration: '{name}' has no axis {self.axis} "
                             f"(shape {list(array.shape)})")
        x = np.moveaxis(array.astype(np.float64, copy=False), self.axis, 0)
        x = x.reshape(x.shape[0], -1)
        part, sq = x.sum(axis=1), np.einsum("ij,ij->i", x, x)
        if self.sum is None:
            self.sum, self.sq_sum = part, sq
        elif part.shape != self.sum.shape:
            raise UsageError(f"calibration: '{name}' changes its channel count between batches")
        else:
            self.sum, self.sq_sum = self.sum + part, self.sq_sum + sq
        self.count += x.shape[1]

    def stats(self) -> Stats:
        return Stats(self.sum, self.sq_sum, self.count)


@dataclasses.dataclass(frozen=True)
class ProtoModel:
    """A model proto whose external data lies in ``folder`` (None: none), as runnable here."""

    proto: onnx.ModelProto
    folder: Path | None = None


def model_proto(model) -> tuple[onnx.ModelProto, Path | None]:
    """The model (onnx-ir, :class:`ProtoModel` or a path) as a proto and its data folder.

    External data is left on disk (a proto of an onnx-ir model references it).
    """
    if isinstance(model, ProtoModel):
        return model.proto, model.folder
    if isinstance(model, ir.Model):
        proto = ir.to_proto(model)  # external tensors are written as references
        source = model.meta.get("graphprune.source")
        folder = None
        for value in model.graph.initializers.values():
            if isinstance(value.const_value, ir.ExternalTensor):
                folder = Path(value.const_value.base_dir or
                              (Path(source).parent if source else "."))
                break
        return proto, folder
    path = Path(model)
    return onnx.load(str(path), load_external_data=False), path.resolve().parent


def _with_outputs(proto: onnx.ModelProto, names: Iterable[str]) -> onnx.ModelProto:
    """``proto`` with ``names`` added to its graph outputs (typed where value_info knows)."""
    graph = proto.graph
    present = {o.name for o in graph.output}
    infos = {v.name: v for v in graph.value_info}
    produced = {o for node in graph.node for o in node.output}
    for name in names:
        if name in present:
            continue
        if name not in produced:
            raise UsageError(f"calibration: no value '{name}' computed in the model")
        info = onnx.ValueInfoProto()
        if name in infos:
            info.CopyFrom(infos[name])
        else:
            info.name = name
        graph.output.append(info)
    return proto


def _session(proto: onnx.ModelProto, folder: Path | None):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 4
    if folder is not None:
        options.add_session_config_entry(_FOLDER_KEY, str(folder))
    return ort.InferenceSession(proto.SerializeToString(), options,
                                providers=["CPUExecutionProvider"])


def stream_values(model, batches: Iterable[Batch],
                  names: Iterable[str]) -> Iterator[dict[str, np.ndarray]]:
    """The values ``names`` on each batch, one batch at a time (memory: one batch's values).

    Args:
        model: A model path (loaded without its external data), an onnx-ir model or a
            :class:`ProtoModel`.
        batches: Feeds of every graph input; consumed one at a time.
        names: Values to fetch; graph inputs are read from the feeds.

    Raises:
        UsageError: A name the model does not compute, or no batch at all.
        InputError: onnxruntime cannot load the model or run it on a batch.
    """
    names = list(dict.fromkeys(names))
    proto, folder = model_proto(model)
    inputs = {i.name for i in proto.graph.input}
    computed = [n for n in names if n not in inputs]
    proto = _with_outputs(proto, computed)
    try:
        session = _session(proto, folder)
    except Exception as exc:  # onnxruntime raises its own kinds for models it cannot load
        raise InputError(f"calibration: onnxruntime cannot load the model ({one_line(exc)})") \
            from exc
    seen = 0
    for batch in batches:
        feed = {k: v for k, v in batch.items() if k in inputs}
        try:
            results = session.run(computed, feed) if computed else []
        except Exception as exc:
            raise InputError(f"calibration: the model does not run on batch {seen} "
                             f"({one_line(exc)})") from exc
        found = dict(zip(computed, results, strict=True))
        yield {n: found[n] if n in found else batch[n] for n in names}
        seen += 1
    if not seen:
        raise UsageError("calibration: no batches to collect activations from")


def collect_stats(model: ir.Model | str | os.PathLike, batches: Iterable[Batch],
                  requests: Requests) -> dict[str, Stats]:
    """Per-channel :class:`Stats` of every requested value, in one streamed pass.

    ``requests`` maps value names to their channel axis; see :func:`stream_values` for the rest.
    """
    if not requests:
        return {}
    sums = {name: _Accumulator(axis) for name, axis in requests.items()}
    for values in stream_values(model, batches, requests):
        for name, array in values.items():
            sums[name].add(array, name)
    return {name: acc.stats() for name, acc in sums.items()}


@dataclasses.dataclass(frozen=True)
class Gram:
    """Second moments across channels of one value (for least-squares refits).

    Attributes:
        xtx: ``sum over positions of x x^T`` (channels x channels), float64.
        sum: Per-channel sums.
        count: Positions summed (batch x every axis but the channel axis).
    """

    xtx: np.ndarray
    sum: np.ndarray
    count: int


def collect_gram(model: ir.Model | str | os.PathLike, batches: Iterable[Batch],
                 requests: Requests) -> dict[str, Gram]:
    """:class:`Gram` of every requested value (name -> channel axis), in one streamed pass."""
    grams: dict[str, list] = {}
    for values in stream_values(model, batches, requests):
        for name, array in values.items():
            x = np.moveaxis(np.asarray(array, np.float64), requests[name], -1)
            x = x.reshape(-1, x.shape[-1])
            part = grams.setdefault(name, [0.0, 0.0, 0])
            part[0], part[1], part[2] = part[0] + x.T @ x, part[1] + x.sum(0), part[2] + len(x)
    return {n: Gram(np.asarray(g[0]), np.asarray(g[1]), g[2]) for n, g in grams.items()}


class ActivationStats:
    """Namespace of the one-shot collector (``ActivationStats.collect(...)``)."""

    collect = staticmethod(collect_stats)


class CalibrationProvider:
    """Lazy, caching activation statistics for one model and one set of batches.

    Nothing runs until a caller asks; each ``(name, axis)`` is collected once (a request for
    new values runs one more pass over the batches, for those values only).

    Args:
        model: The model the analysis was built on (onnx-ir) or its path.
        batches: The calibration batches (``Inputs.batches``), or a callable returning them
            (called on first use: random feeds are drawn only when a scorer needs data).
        origin: ``"random"`` or the ``--data`` path, for reports.
    """

    def __init__(self, model: ir.Model | str | os.PathLike,
                 batches: Sequence[Batch] | None = None, origin: str = "data",
                 make_batches=None) -> None:
        self.model = model
        self._batches = None if batches is None else tuple(batches)
        self._make_batches = make_batches
        self.origin = origin
        self._cache: dict[tuple[str, int], Stats] = {}

    @property
    def batches(self) -> tuple[Batch, ...]:
        if self._batches is None:
            if self._make_batches is None:
                raise UsageError("calibration: no batches given")
            self._batches = tuple(self._make_batches())
        return self._batches

    def stats(self, requests: Requests) -> dict[str, Stats]:
        """:class:`Stats` for every ``name -> channel axis`` in ``requests``."""
        missing = {n: a for n, a in requests.items() if (n, a) not in self._cache}
        if missing:
            for name, found in collect_stats(self.model, self.batches, missing).items():
                self._cache[(name, missing[name])] = found
        return {n: self._cache[(n, a)] for n, a in requests.items()}

    def gram(self, requests: Requests) -> dict[str, Gram]:
        """:class:`Gram` for every ``name -> channel axis`` (not cached: they are large)."""
        return collect_gram(self.model, self.batches, requests)

    def stream(self, names: Iterable[str]) -> Iterator[dict[str, np.ndarray]]:
        """The raw values ``names``, one calibration batch at a time."""
        return stream_values(self.model, self.batches, names)


def random_calibration_notice() -> str:
    """What the CLI says when a data-driven criterion runs on random inputs."""
    return ("calibration on random inputs (no --data): scores follow random activations, "
            "not real calibration data")
