"""One node alone in onnxruntime: what the per-layer latency lookup times.

A :class:`Probe` is one node of a model at concrete input shapes. :class:`OrtTimer` builds a
one-node model for it (the node's attributes, random constant weights of the probe's shapes as
initializers, its other inputs as graph inputs fed random data), runs it on the CPU execution
provider with one intra-op thread, and times several probes interleaved
(:func:`graphprune.bench.latency.interleave`), so a slow spell of the machine hits them alike.
With one thread onnxruntime computes on the calling thread, so runs are timed in that thread's
CPU time (``time.thread_time``): on a shared machine wall time also counts the other processes'
turns (measured on 2 loaded cores: a ResNet-50 stem conv took 4.5 ms wall, 1.7 ms CPU, run to
run steady only in CPU time), which is what an idle machine's latency would be.
Every interleaved set also times an empty run (a one-element Identity model): its median, the
fixed cost of a ``session.run`` call, is taken off every probe's median, so that a small layer
is not mostly call overhead. Probes that onnxruntime cannot build or run time as NaN. The same
timer measures the whole model
side by side with its nodes run alone one after another (what the rest of the graph costs) and
a pruned model side by side with its original.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from collections.abc import Mapping, Sequence

import numpy as np
import onnx
import onnx_ir as ir

from graphprune.bench.latency import interleave, measurement_options
from graphprune.errors import InputError

cpu_interleave = functools.partial(interleave, clock=time.thread_time)

DEFAULT_RUNS = 5
DEFAULT_WARMUP = 1
Feeds = dict[str, np.ndarray]


@dataclasses.dataclass(frozen=True)
class Probe:
    """One node at concrete input shapes.

    Attributes:
        node: The node (of the original model; not changed).
        shapes: Concrete shape of every input (None where the input is absent).
        attributes: The node's attributes at these shapes (a depthwise conv's ``group``).
        key: What makes two probes time alike: domain, op type, attributes, and every input's
            dtype, shape and constness. Real models repeat layers: equal keys are timed once.
    """

    node: ir.Node
    shapes: tuple[tuple[int, ...] | None, ...]
    attributes: tuple[onnx.AttributeProto, ...] = dataclasses.field(compare=False)
    key: tuple = dataclasses.field(compare=False)

    @classmethod
    def of(cls, node: ir.Node, shapes: Sequence[tuple[int, ...] | None],
           attributes: Mapping[str, ir.Attr] | None = None) -> Probe:
        """The probe of ``node`` at ``shapes`` (``attributes``: default the node's own)."""
        attributes = node.attributes if attributes is None else attributes
        protos = tuple(ir.serde.serialize_attribute(a) for _, a in sorted(attributes.items()))
        inputs = tuple(None if v is None else (int(v.dtype or 0), is_constant(v), s)
                       for v, s in zip(node.inputs, shapes, strict=True))
        key = (node.domain, node.op_type,
               tuple(a.SerializeToString(deterministic=True) for a in protos), inputs,
               len(node.outputs))
        return cls(node, tuple(shapes), protos, key)


def is_constant(value: ir.Value) -> bool:
    """An initializer or a ``Constant`` node's output."""
    producer = value.producer()
    return value.const_value is not None or (producer is not None and producer.op_type == "Constant"
                                             and producer.domain in ("", "ai.onnx"))


def _random(rng: np.random.Generator, dtype: ir.DataType, shape: tuple[int, ...]) -> np.ndarray:
    """Random data of ``dtype``.

    Floats in [-1, 1] (scalars in [0.5, 1]: scales stay positive), small 8-bit integers, zeros
    for wider integers and bools (safe indices).
    """
    np_dtype = dtype.numpy()
    if np.issubdtype(np_dtype, np.floating):
        low = 0.5 if math.prod(shape) == 1 else -1.0
        return rng.uniform(low, 1.0, shape).astype(np_dtype)
    if np_dtype.itemsize == 1 and np.issubdtype(np_dtype, np.integer):
        info = np.iinfo(np_dtype)
        return rng.integers(info.min // 8, info.max // 8 + 1, shape).astype(np_dtype)
    return np.zeros(shape, dtype=np_dtype)


def one_node_model(probe: Probe, opsets: dict[str, int], ir_version: int,
                   seed: int = 0) -> tuple[onnx.ModelProto, Feeds]:
    """The probe's node alone in a model, and random feeds for its non-constant inputs."""
    rng = np.random.default_rng(seed)
    node = onnx.helper.make_node(probe.node.op_type, [], [], domain=probe.node.domain or None)
    node.attribute.extend(probe.attributes)
    initializers, graph_inputs, feeds = [], [], {}
    for index, (value, shape) in enumerate(zip(probe.node.inputs, probe.shapes, strict=True)):
        name = "" if value is None else f"in{index}"
        node.input.append(name)
        if value is None:
            continue
        data = _random(rng, value.dtype, shape)
        if is_constant(value):
            initializers.append(onnx.numpy_helper.from_array(data, name))
        else:
            graph_inputs.append(onnx.helper.make_tensor_value_info(name, int(value.dtype), shape))
            feeds[name] = data
    outputs = []
    for index, value in enumerate(probe.node.outputs):
        node.output.append(f"out{index}")
        outputs.append(onnx.helper.make_tensor_value_info(f"out{index}", int(value.dtype or 1),
                                                          None))
    graph = onnx.helper.make_graph([node], "probe", graph_inputs, outputs, initializers)
    imports = [onnx.helper.make_opsetid(d, v) for d, v in opsets.items()]
    return onnx.helper.make_model(graph, opset_imports=imports, ir_version=ir_version), feeds


def _session(proto: onnx.ModelProto):
    import onnxruntime as ort

    options = measurement_options(1)
    options.log_severity_level = 4  # a probe onnxruntime refuses is a NaN, not a log line
    return ort.InferenceSession(proto.SerializeToString(), options,
                                providers=["CPUExecutionProvider"])


def _median_s(samples_ms: Sequence[float]) -> float:
    return float(np.median(samples_ms)) / 1e3


class OrtTimer:
    """Times probes of one model, and the model itself, on onnxruntime CPU with one thread.

    Args:
        model: The model the probes come from (its opsets; :meth:`model` runs it).
        feeds: Inputs of the whole model at the shapes the probes were taken at.
        runs: Timed rounds per interleaved set; ``warmup`` untimed ones first.
    """

    def __init__(self, model: onnx.ModelProto, feeds: Feeds, runs: int = DEFAULT_RUNS,
                 warmup: int = DEFAULT_WARMUP) -> None:
        self.proto = model
        self.feeds = feeds
        self.opsets = {o.domain: o.version for o in model.opset_import}
        self.runs, self.warmup = runs, warmup

    def _runner(self, probe: Probe):
        try:
            proto, feeds = one_node_model(probe, self.opsets, self.proto.ir_version)
            session = _session(proto)
            session.run(None, feeds)
        except Exception:  # onnxruntime refuses this node alone: it is not timed
            return None
        return lambda: session.run(None, feeds)

    def _empty(self):
        identity = onnx.helper.make_node("Identity", ["x"], ["y"])
        value = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])
        out = onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])
        graph = onnx.helper.make_graph([identity], "empty", [value], [out])
        session = _session(onnx.helper.make_model(graph, opset_imports=[
            onnx.helper.make_opsetid("", 13)], ir_version=self.proto.ir_version))
        feeds = {"x": np.zeros(1, np.float32)}
        return lambda: session.run(None, feeds)

    def nodes(self, probes: Sequence[Probe]) -> list[float]:
        """Seconds per run of every probe alone, timed interleaved, less the call overhead.

        NaN where onnxruntime cannot run the probe.
        """
        runners = [self._runner(p) for p in probes]
        live = [r for r in runners if r is not None]
        if not live:
            return [math.nan] * len(probes)
        times = cpu_interleave([[self._empty()], *([r] for r in live)], self.runs, self.warmup)
        overhead = _median_s(times[0])
        found = iter(max(_median_s(t) - overhead, 0.0) for t in times[1:])
        return [math.nan if r is None else next(found) for r in runners]

    def model(self, probes: Sequence[Probe]) -> tuple[float, float]:
        """Seconds of a run of the whole model and of ``probes`` run alone in turn, side by side.

        Both less the call overhead (once per call).
        """
        whole = _session(self.proto)
        try:
            whole.run(None, self.feeds)
        except Exception as exc:  # onnxruntime's errors: one line for the user
            shapes = ", ".join(f"{k}{list(v.shape)}" for k, v in self.feeds.items())
            raise InputError(f"--target-latency: onnxruntime cannot run the model on inputs "
                             f"{shapes} ({str(exc).splitlines()[0]}); set them with "
                             f"--input-shape") from exc
        runners = [r for r in (self._runner(p) for p in probes) if r is not None]

        def alone() -> None:
            for run in runners:
                run()

        times = cpu_interleave([[self._empty()], [lambda: whole.run(None, self.feeds)], [alone]],
                               self.runs, self.warmup)
        overhead = _median_s(times[0])
        return (max(_median_s(times[1]) - overhead, 0.0),
                max(_median_s(times[2]) - overhead * len(runners), 0.0))


def compare_models(original: onnx.ModelProto, pruned: onnx.ModelProto, feeds: Feeds,
                   pruned_feeds: Feeds, runs: int = 20, warmup: int = 3) -> tuple[float, float]:
    """Median CPU seconds per run of ``original`` and ``pruned``, interleaved, one thread."""
    sessions = [_session(original), _session(pruned)]
    times = cpu_interleave([[lambda: sessions[0].run(None, feeds)],
                        [lambda: sessions[1].run(None, pruned_feeds)]], runs, warmup)
    return _median_s(times[0]), _median_s(times[1])
