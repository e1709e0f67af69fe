"""Property-based fuzzing: random CNN-shaped graphs, pruned with random selections.

Hypothesis draws a graph from the supported op set (dense, grouped and depthwise convs and
transposed convs, BN and InstanceNorm, activations, residual adds, variadic sums, per-channel and
scalar broadcasts, concats, splits, channel and spatial slices, SE gates, pools, channel
shuffles, resizes, pads, NHWC MatMuls between Transposes, an op without a rule, extra graph
outputs) and a seed.
For every graph:

1. every channel of every Conv/Gemm output is either in a prunable group or blocked with a
   recorded reason;
2. pruning two random selections and the L1 selection at ratio 0.5 (rounded to 1, 2, 4 or 8
   channels) gives a model that passes
   the full ONNX checker and the mask-equivalence oracle (an invalid model is a failure).

The budget is ``--fuzz-examples`` (small by default; a larger budget also draws fresh examples
instead of the fixed sequence CI runs). The numbers of graphs and of pruned and blocked channels
are recorded as test properties (``--junitxml``).
"""

from __future__ import annotations

import dataclasses
from collections import Counter

import numpy as np
import onnx
import onnx_ir as ir
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

import graphprune
from graphprune.analysis.dependency import NOT_BLOCKED
from tests.conftest import DEFAULT_FUZZ_EXAMPLES
from tests.oracle import assert_mask_equivalent, feeds_for, prune_proto, random_selection

KINDS = ("conv", "conv", "conv", "bn", "act", "residual", "add2", "broadcast", "concat", "split",
         "slice", "se", "pool", "shuffle", "resize", "pad", "unknown", "deconv", "instancenorm",
         "sum3", "nhwc_matmul", "gate", "spatial_slice")
ACTIVATIONS = ("Relu", "LeakyRelu", "Sigmoid", "Tanh", "HardSwish", "Clip", "Identity", "Elu")
BROADCAST_SHAPES = ("C11", "1C11", "scalar", "1", "1111")


@dataclasses.dataclass
class Tensor:
    """An NCHW activation of the graph being built: ``[N, c, s, s]``."""

    name: str
    c: int
    s: int


class Builder:
    """Accumulates nodes and initializers with fresh names and random float32 values."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.count = 0

    def name(self, stem: str) -> str:
        self.count += 1
        return f"{stem}{self.count}"

    def const(self, shape, positive: bool = False, array: np.ndarray | None = None) -> str:
        name = self.name("k")
        if array is None:
            array = (self.rng.standard_normal(shape) * 0.5).astype(np.float32)
            array = np.abs(array) + 0.5 if positive else array
        self.inits.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def node(self, op: str, inputs, outputs: int = 1, **attrs) -> list[str]:
        names = [self.name(op.lower()) for _ in range(outputs)]
        self.nodes.append(helper.make_node(op, list(inputs), names, name=names[0], **attrs))
        return names

    def conv(self, t: Tensor, out: int, kernel: int = 1, group: int = 1, bias: bool = True,
             stride: int = 1) -> Tensor:
        w = self.const((out, t.c // group, kernel, kernel))
        inputs = [t.name, w] + ([self.const((out,))] if bias else [])
        pad = kernel // 2
        (y,) = self.node("Conv", inputs, kernel_shape=[kernel, kernel], pads=[pad] * 4,
                         group=group, strides=[stride, stride])
        return Tensor(y, out, (t.s + 2 * pad - kernel) // stride + 1)


def _conv(draw, b: Builder, t: Tensor) -> list[Tensor]:
    kernel = draw(st.sampled_from([1, 3]))
    mode = draw(st.sampled_from(["dense", "depthwise", "grouped"]))
    divisors = [g for g in range(2, t.c) if t.c % g == 0]
    if mode == "depthwise" and t.c <= 12:
        out, group = t.c * draw(st.integers(1, 2)), t.c
    elif mode == "grouped" and divisors:
        group = draw(st.sampled_from(divisors))
        out = group * draw(st.integers(1, 3))
    else:
        out, group = draw(st.integers(1, 12)), 1
    return [b.conv(t, out, kernel, group, bias=draw(st.booleans()))]


def _activation(draw, b: Builder, t: Tensor) -> list[Tensor]:
    op = draw(st.sampled_from(ACTIVATIONS))
    if op == "Clip":
        lo, hi = sorted(draw(st.lists(st.floats(-1, 1), min_size=2, max_size=2)))
        inputs = [t.name, b.const((), array=np.float32(lo)), b.const((), array=np.float32(hi))]
        return [Tensor(b.node("Clip", inputs)[0], t.c, t.s)]
    attrs = {"alpha": 0.1} if op == "LeakyRelu" else {}
    return [Tensor(b.node(op, [t.name], **attrs)[0], t.c, t.s)]


def _broadcast(draw, b: Builder, t: Tensor) -> list[Tensor]:
    op = draw(st.sampled_from(["Mul", "Add", "Sub", "Div"]))
    shape = {"C11": (t.c, 1, 1), "1C11": (1, t.c, 1, 1), "scalar": (), "1": (1,),
             "1111": (1, 1, 1, 1)}[draw(st.sampled_from(BROADCAST_SHAPES))]
    k = b.const(shape, positive=op == "Div")
    # a constant divided by an activation is left out: a removed channel is 0 in the masked
    # original, which the oracle cannot divide by
    first = op != "Div" and draw(st.booleans())
    return [Tensor(b.node(op, [k, t.name] if first else [t.name, k])[0], t.c, t.s)]


def _split(draw, b: Builder, t: Tensor) -> list[Tensor]:
    if t.c < 2:
        return []
    parts = draw(st.integers(2, min(3, t.c)))
    cuts = sorted(draw(st.lists(st.integers(1, t.c - 1), min_size=parts - 1,
                                max_size=parts - 1, unique=True)))
    sizes = np.diff([0, *cuts, t.c])
    names = b.node("Split", [t.name, b.const((), array=sizes.astype(np.int64))],
                   outputs=len(sizes), axis=1)
    return [Tensor(n, int(c), t.s) for n, c in zip(names, sizes, strict=True)]


def _slice(draw, b: Builder, t: Tensor) -> list[Tensor]:
    if t.c < 2:
        return []
    start = draw(st.integers(0, t.c - 1))
    end = draw(st.integers(start + 1, t.c))
    consts = [b.const((), array=np.array([v], np.int64)) for v in (start, end, 1)]
    return [Tensor(b.node("Slice", [t.name, *consts])[0], end - start, t.s)]


def _se(draw, b: Builder, t: Tensor) -> list[Tensor]:
    (pooled,) = b.node("GlobalAveragePool", [t.name])
    squeeze = b.conv(Tensor(pooled, t.c, 1), draw(st.integers(1, 4)))
    (relu,) = b.node("Relu", [squeeze.name])
    (gate,) = b.node("Sigmoid", [b.conv(Tensor(relu, squeeze.c, 1), t.c).name])
    return [Tensor(b.node("Mul", [t.name, gate])[0], t.c, t.s)]


def _shuffle(draw, b: Builder, t: Tensor) -> list[Tensor]:
    if t.c % 2 or t.c < 4:
        return []
    target = b.const((), array=np.array([0, 2, t.c // 2, t.s, t.s], np.int64))
    (grouped,) = b.node("Reshape", [t.name, target])
    (swapped,) = b.node("Transpose", [grouped], perm=[0, 2, 1, 3, 4])
    back = b.const((), array=np.array([0, t.c, t.s, t.s], np.int64))
    return [Tensor(b.node("Reshape", [swapped, back])[0], t.c, t.s)]


def _step(draw, b: Builder, kind: str, tensors: list[Tensor]) -> list[Tensor]:
    t = tensors[draw(st.integers(0, len(tensors) - 1))]
    same = [u for u in tensors if (u.c, u.s) == (t.c, t.s) and u is not t]
    if kind == "conv":
        return _conv(draw, b, t)
    if kind == "bn":
        params = [b.const((t.c,)), b.const((t.c,)), b.const((t.c,)), b.const((t.c,), True)]
        return [Tensor(b.node("BatchNormalization", [t.name, *params])[0], t.c, t.s)]
    if kind == "act":
        return _activation(draw, b, t)
    if kind == "residual" or (kind == "add2" and not same):
        branch = b.conv(t, t.c, 3)
        return [Tensor(b.node("Add", [t.name, branch.name])[0], t.c, t.s)]
    if kind == "add2":
        other = draw(st.sampled_from(same))
        return [Tensor(b.node(draw(st.sampled_from(["Add", "Mul", "Max"])),
                              [t.name, other.name])[0], t.c, t.s)]
    if kind == "broadcast":
        return _broadcast(draw, b, t)
    if kind == "concat":
        peers = [u for u in tensors if u.s == t.s]
        other = draw(st.sampled_from(peers))
        return [Tensor(b.node("Concat", [t.name, other.name], axis=1)[0], t.c + other.c, t.s)]
    if kind == "split":
        return _split(draw, b, t)
    if kind == "slice":
        return _slice(draw, b, t)
    if kind == "se":
        return _se(draw, b, t)
    if kind == "pool":
        if t.s % 2 == 0 and t.s >= 4:
            return [Tensor(b.node("MaxPool", [t.name], kernel_shape=[2, 2], strides=[2, 2])[0],
                           t.c, t.s // 2)]
        return [Tensor(b.node("AveragePool", [t.name], kernel_shape=[3, 3], pads=[1] * 4)[0],
                       t.c, t.s)]
    if kind == "shuffle":
        return _shuffle(draw, b, t)
    if kind == "resize" and t.s <= 8:
        scales = b.const((), array=np.array([1, 1, 2, 2], np.float32))
        return [Tensor(b.node("Resize", [t.name, "", scales], mode="nearest")[0], t.c, 2 * t.s)]
    if kind == "pad" and t.s <= 10:
        pads = b.const((), array=np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64))
        return [Tensor(b.node("Pad", [t.name, pads])[0], t.c, t.s + 2)]
    if kind == "unknown":
        return [Tensor(b.node("LRN", [t.name], size=3)[0], t.c, t.s)]
    return _more_steps(draw, b, kind, t, same)


def _more_steps(draw, b: Builder, kind: str, t: Tensor, same: list[Tensor]) -> list[Tensor]:
    if kind == "deconv":
        group = t.c if draw(st.booleans()) else 1
        out = group * draw(st.integers(1, 2)) if group > 1 else draw(st.integers(1, 8))
        w = b.const((t.c, out // group, 2, 2))
        (y,) = b.node("ConvTranspose", [t.name, w, b.const((out,))], kernel_shape=[2, 2],
                      strides=[2, 2], group=group)
        return [Tensor(y, out, 2 * t.s)] if t.s <= 8 else []
    if kind == "instancenorm":
        params = [b.const((t.c,)), b.const((t.c,))]
        return [Tensor(b.node("InstanceNormalization", [t.name, *params])[0], t.c, t.s)]
    if kind == "sum3":
        if not same:
            return []
        other = draw(st.sampled_from(same))
        op = draw(st.sampled_from(["Sum", "Mean", "Max"]))
        return [Tensor(b.node(op, [t.name, other.name, b.const((t.c, 1, 1))])[0], t.c, t.s)]
    if kind == "nhwc_matmul":  # a 1x1 conv written as MatMul in NHWC, as tf2onnx does
        (nhwc,) = b.node("Transpose", [t.name], perm=[0, 2, 3, 1])
        out = draw(st.integers(1, 8))
        (mm,) = b.node("MatMul", [nhwc, b.const((t.c, out))])
        (biased,) = b.node("Add", [mm, b.const((out,))])
        return [Tensor(b.node("Transpose", [biased], perm=[0, 3, 1, 2])[0], out, t.s)]
    if kind == "gate":
        (mean,) = b.node("ReduceMean", [t.name], axes=[2, 3], keepdims=1)
        (gate,) = b.node("Sigmoid", [mean])
        return [Tensor(b.node("Mul", [gate, t.name])[0], t.c, t.s)]
    if kind == "spatial_slice" and t.s >= 3:
        bounds = ([1, 0], [t.s, t.s - 1], [2, 3])
        consts = [b.const((), array=np.array(v, np.int64)) for v in bounds]
        return [Tensor(b.node("Slice", [t.name, *consts])[0], t.c, t.s - 1)]
    return []


@st.composite
def cnn_graphs(draw) -> onnx.ModelProto:
    """A random CNN-shaped model: input ``[N, c, s, s]``, 1-12 steps, a head, maybe more outputs."""
    b = Builder(draw(st.integers(0, 2**31 - 1)))
    batch = draw(st.sampled_from(["N", 2]))
    x = Tensor("x", draw(st.integers(1, 4)), draw(st.sampled_from([4, 5, 6, 8])))
    tensors = [b.conv(x, draw(st.integers(2, 12)), 3)]
    for _ in range(draw(st.integers(1, 12))):
        tensors += _step(draw, b, draw(st.sampled_from(KINDS)), tensors)
    last = tensors[-1]
    head = draw(st.sampled_from(["conv", "conv", "gemm", "gemm", "plain"]))
    if head == "conv":
        last = b.conv(last, 4, 3)
    elif head == "gemm":
        (pooled,) = b.node("GlobalAveragePool", [last.name])
        (flat,) = b.node("Flatten", [pooled])
        (y,) = b.node("Gemm", [flat, b.const((10, last.c)), b.const((10,))], transB=1)
        last = Tensor(y, 10, 0)
    outputs = [last]
    if draw(st.integers(0, 3)) == 0:  # an intermediate tensor is also an output
        outputs.append(draw(st.sampled_from(tensors[:-1] or tensors)))

    def info(t: Tensor) -> onnx.ValueInfoProto:
        dims = [batch, t.c] + ([t.s, t.s] if t.s else [])
        return helper.make_tensor_value_info(t.name, TensorProto.FLOAT, dims)

    unique = list({t.name: t for t in outputs}.values())
    graph = helper.make_graph(b.nodes, "fuzz", [info(x)], [info(t) for t in unique], b.inits)
    proto = helper.make_model(graph, ir_version=8, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(proto, full_check=True)
    return proto


def _layer_channels(proto: onnx.ModelProto, analysis) -> tuple[int, int]:
    """``(prunable, blocked)`` channels over every Conv/Gemm output; asserts nothing is neither."""
    grouped = np.concatenate([g.classes for g in analysis.groups] or [np.zeros(0, np.int64)])
    layers = {n.output[0] for n in proto.graph.node if n.op_type in ("Conv", "Gemm")}
    prunable = blocked = 0
    for entry in analysis.table.axes:
        if entry.value.name not in layers or entry.axis != 1:
            continue
        labels = analysis.axis_labels(entry)
        in_group = np.isin(labels, grouped)
        is_blocked = analysis.class_block[labels] != NOT_BLOCKED
        assert np.all(in_group | is_blocked), f"{entry.name}: channels neither pruned nor blocked"
        prunable += int(in_group.sum())
        blocked += int((~in_group).sum())
    return prunable, blocked


def _check(proto: onnx.ModelProto, seed: int, stats: Counter) -> None:
    analysis = graphprune.analyze(ir.from_proto(proto))
    prunable, blocked = _layer_channels(proto, analysis)
    feeds = feeds_for(proto, {"x": tuple(d.dim_value or 2 for d in
                                         proto.graph.input[0].type.tensor_type.shape.dim)},
                      seed=seed)
    for k in range(2):
        removed = random_selection(graphprune.analyze(ir.from_proto(proto)), seed + k)
        assert_mask_equivalent(proto, prune_proto(proto, removed=removed), feeds)
    result = prune_proto(proto, ratio=0.5, round_to=(1, 2, 4, 8)[seed % 4])
    assert_mask_equivalent(proto, result, feeds)
    stats["graphs"] += 1
    stats["graphs_pruned"] += bool(analysis.groups)
    stats["channels_prunable"] += prunable
    stats["channels_blocked"] += blocked
    stats["nodes"] += len(proto.graph.node)


def test_random_graphs_prune_exactly_or_block(fuzz_examples, record_property):
    stats: Counter = Counter()

    @settings(max_examples=fuzz_examples, deadline=None, database=None,
              derandomize=fuzz_examples <= DEFAULT_FUZZ_EXAMPLES,
              suppress_health_check=list(HealthCheck))
    @given(proto=cnn_graphs(), seed=st.integers(0, 2**20))
    def prune_one(proto: onnx.ModelProto, seed: int) -> None:
        _check(proto, seed, stats)

    prune_one()
    for key, value in sorted(stats.items()):
        record_property(key, value)
    assert stats["graphs"] >= min(fuzz_examples, 10)
    assert stats["graphs_pruned"] >= 0.5 * stats["graphs"]
    total = stats["channels_prunable"] + stats["channels_blocked"]
    assert stats["channels_prunable"] >= 0.3 * total
