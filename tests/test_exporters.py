"""Models as exporters and tools write them, each pruned and checked with the oracle.

One small torch network (conv/BN/ReLU, a chunk into a depthwise branch, concat, an SE gate,
a strided branch upsampled and added back, padding, a two-layer classifier) goes through the
TorchScript exporter at opsets 11-21, the dynamo exporter (with external data), fp16, symbolic
spatial dims, Constant-node weights (paddle2onnx), onnxruntime's offline optimizer (com.microsoft
FusedConv/FusedGemm) and onnxruntime's static quantization (QDQ and QOperator). Hand-written
graphs cover tf2onnx's NHWC layout, If/Loop/Scan subgraphs and an unknown custom-domain op.
Every pruned model passes the full ONNX checker and the mask-equivalence oracle; every channel
left whole is reported with a reason.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
import pytest
import torch
import torch.nn.functional as F
from onnx import TensorProto, helper, numpy_helper
from torch import nn

import graphprune
from graphprune import BlockReason
from graphprune._io import save_model
from graphprune.verify.oracle import masked_model, relative_error, run
from tests.oracle import (
    TOLERANCE,
    assert_mask_equivalent,
    check_random_selections,
    feeds_for,
    prune_proto,
    random_selection,
)

# fp16 has a unit roundoff of 2**-11 (4.9e-4). The pruned and the masked model round every stored
# activation separately and may sum in another order, so each layer may differ by an ulp or two;
# 5e-3 relative to the largest output is about ten ulps over the network's six layers.
FP16_TOLERANCE = 5e-3
MIX_GROUPS = 5  # stem, pointwise, SE squeeze, up conv, classifier hidden layer


class Mix(nn.Module):
    """The exporters' test network (see the module docstring)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.pw = nn.Conv2d(16, 24, 1)
        self.se1, self.se2 = nn.Conv2d(24, 6, 1), nn.Conv2d(6, 24, 1)
        self.down = nn.Conv2d(24, 24, 3, stride=2, padding=1)
        self.up = nn.Conv2d(24, 16, 3, padding=1)
        self.head = nn.Sequential(nn.Linear(16, 12), nn.ReLU(), nn.Linear(12, 10))
        with torch.no_grad():  # non-trivial BN statistics, as a trained model has
            bn = self.stem[1]
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 1.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        a, b = torch.chunk(x, 2, dim=1)
        x = self.pw(torch.cat([a, F.relu6(self.dw(b))], 1))
        x = x * torch.sigmoid(self.se2(F.relu(self.se1(x.mean((2, 3), keepdim=True)))))
        x = x + F.interpolate(F.relu(self.down(x)), scale_factor=2.0, mode="nearest")
        x = F.pad(self.up(x), (1, 1, 1, 1))
        return self.head(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


SHAPE = (2, 3, 16, 16)


def torchscript(path: Path, opset: int = 17, keep_bn: bool = False, half: bool = False,
                spatial: bool = False, fresh_bn: bool = False) -> onnx.ModelProto:
    """Exports :class:`Mix` with a symbolic batch (and spatial dims when ``spatial``)."""
    model = Mix().eval()
    if fresh_bn:  # freshly built BN: torch ties running_var to the weight (both ones)
        model.stem[1].reset_running_stats()
    x = torch.randn(SHAPE)
    if half:
        model, x = model.half(), x.half()
    kwargs = {"training": torch.onnx.TrainingMode.PRESERVE,
              "do_constant_folding": False} if keep_bn else {}
    axes = {0: "batch", 2: "height", 3: "width"} if spatial else {0: "batch"}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (x,), str(path), dynamo=False, opset_version=opset,
                          input_names=["input"], output_names=["output"],
                          dynamic_axes={"input": axes, "output": {0: "batch"}}, **kwargs)
    return onnx.load(path)


def blocked_reasons(analysis) -> set[BlockReason]:
    return {b.reason for _, b in analysis.blocked_sources}


def check_prunes(proto: onnx.ModelProto, feeds=None, groups: int | None = MIX_GROUPS):
    """Random selections and ratio 0.5 pass the oracle; returns the ratio-0.5 result."""
    feeds = feeds or feeds_for(proto, {proto.graph.input[0].name: SHAPE})
    check_random_selections(proto, seeds=(0, 1), feeds=feeds)
    result = prune_proto(proto, ratio=0.5, round_to=1)
    assert_mask_equivalent(proto, result, feeds)
    if groups is not None:
        assert len(result.analysis.groups) == groups, result.analysis.blocked_sources
    assert result.after.macs < result.before.macs
    return result


# --- exporters ----------------------------------------------------------------------------


@pytest.mark.parametrize("opset", range(11, 22))
def test_torchscript_every_opset(tmp_path, opset):
    keep_bn = opset % 2 == 1  # odd opsets keep BatchNormalization and the Shape arithmetic
    proto = torchscript(tmp_path / "m.onnx", opset, keep_bn=keep_bn)
    assert ("BatchNormalization" in {n.op_type for n in proto.graph.node}) == keep_bn
    result = check_prunes(proto)
    assert blocked_reasons(result.analysis) == {BlockReason.GRAPH_IO}
    assert ir.to_proto(result.model).opset_import[0].version == opset


def test_tied_batchnorm_statistics(tmp_path):
    """A fresh BN's running_var is exported as ``Identity(weight)``: sliced through the Identity."""
    proto = torchscript(tmp_path / "m.onnx", 13, keep_bn=True, fresh_bn=True)
    producers = {o: n.op_type for n in proto.graph.node for o in n.output}
    assert producers.get("stem.1.running_var") == "Identity"
    check_prunes(proto)


@pytest.mark.parametrize("opset", [18, 21])
def test_dynamo_with_external_data(tmp_path, opset):
    path = tmp_path / "m.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(Mix().eval(), (torch.randn(SHAPE),), dynamo=True,
                                    opset_version=opset, verbose=False,
                                    dynamic_shapes=({0: torch.export.Dim("batch")},))
    program.save(str(path), external_data=True)
    stored = onnx.load(path, load_external_data=False)
    assert any(t.data_location == TensorProto.EXTERNAL for t in stored.graph.initializer)
    proto = onnx.load(path)
    assert proto.opset_import[0].version == opset
    result = graphprune.prune(path, 0.5, round_to=1)
    assert len(result.analysis.groups) == MIX_GROUPS
    save_model(result.model, tmp_path / "out.onnx")
    out = onnx.load(tmp_path / "out.onnx", load_external_data=False)
    assert any(t.data_location == TensorProto.EXTERNAL for t in out.graph.initializer)
    onnx.checker.check_model(str(tmp_path / "out.onnx"), full_check=True)
    feeds = feeds_for(proto, {proto.graph.input[0].name: (3, *SHAPE[1:])})
    expected = run(masked_model(proto, result.masks), feeds)
    assert relative_error(expected, run(onnx.load(tmp_path / "out.onnx"), feeds)) <= TOLERANCE
    assert result.after.params < 0.5 * result.before.params


def test_fp16(tmp_path):
    proto = torchscript(tmp_path / "m.onnx", 17, half=True)
    feeds = feeds_for(proto, {"input": SHAPE})
    assert feeds["input"].dtype == np.float16
    analysis = graphprune.analyze(ir.from_proto(proto))
    assert len(analysis.groups) == MIX_GROUPS
    for removed in (random_selection(analysis, 0), None):
        result = prune_proto(proto, removed=removed, ratio=0.5, round_to=1)
        pruned = ir.to_proto(result.model)
        onnx.checker.check_model(pruned, full_check=True)
        assert {t.data_type for t in pruned.graph.initializer if t.data_type in (
            TensorProto.FLOAT, TensorProto.FLOAT16)} == {TensorProto.FLOAT16}
        actual = run(pruned, feeds)
        assert actual[0].dtype == np.float16
        expected = run(masked_model(proto, result.masks), feeds)
        assert relative_error(expected, actual) <= FP16_TOLERANCE


@pytest.mark.parametrize("keep_bn", [False, True], ids=["bn_folded", "bn_kept"])
def test_symbolic_batch_and_spatial_dims_are_kept(tmp_path, keep_bn):
    proto = torchscript(tmp_path / "m.onnx", 17, keep_bn=keep_bn, spatial=True)
    for shape in [(2, 3, 16, 16), (3, 3, 24, 20)]:
        check_prunes(proto, feeds_for(proto, {"input": shape}))
    pruned = ir.to_proto(prune_proto(proto, ratio=0.5, round_to=1).model)

    def dims(values):
        return [[d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim] for v in values]

    assert dims(pruned.graph.input) == dims(proto.graph.input) == [["batch", 3, "height", "width"]]
    assert dims(pruned.graph.output) == dims(proto.graph.output) == [["batch", 10]]


def test_paddle_style_constant_weights_and_batchnorm(tmp_path):
    proto = torchscript(tmp_path / "m.onnx", 13, keep_bn=True)
    constants = [helper.make_node("Constant", [], [t.name], name=f"const_{t.name}", value=t)
                 for t in proto.graph.initializer]
    nodes = constants + list(proto.graph.node)
    del proto.graph.initializer[:], proto.graph.node[:]
    proto.graph.node.extend(nodes)
    onnx.checker.check_model(proto, full_check=True)
    result = check_prunes(proto)
    pruned = ir.to_proto(result.model)
    assert all("_static" in t.name for t in pruned.graph.initializer)  # frozen shape values
    sizes = {n.output[0]: tuple(n.attribute[0].t.dims) for n in pruned.graph.node
             if n.op_type == "Constant"}
    assert sizes["stem.0.weight"][0] < 16 and sizes["stem.1.running_var"][0] < 16


def test_onnxruntime_fused_contrib_ops(tmp_path):
    import onnxruntime as ort

    torchscript(tmp_path / "m.onnx", 17)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(tmp_path / "fused.onnx")
    ort.InferenceSession(str(tmp_path / "m.onnx"), options, providers=["CPUExecutionProvider"])
    proto = onnx.load(tmp_path / "fused.onnx")
    ops = {(n.domain, n.op_type) for n in proto.graph.node}
    assert {("com.microsoft", "FusedConv"), ("com.microsoft", "FusedGemm")} <= ops
    result = check_prunes(proto)
    assert blocked_reasons(result.analysis) == {BlockReason.GRAPH_IO}


# --- quantized models -----------------------------------------------------------------------


def _quantize(tmp_path: Path, fmt: str, per_channel: bool) -> onnx.ModelProto:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            rng = np.random.default_rng(0)
            self.batches = iter([{"input": rng.standard_normal(SHAPE, np.float32)}
                                 for _ in range(4)])

        def get_next(self):
            return next(self.batches, None)

    torchscript(tmp_path / "m.onnx", 17)
    out = tmp_path / "q.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quantize_static(str(tmp_path / "m.onnx"), str(out), Reader(),
                        quant_format=getattr(QuantFormat, fmt), per_channel=per_channel)
    return onnx.load(out)


@pytest.mark.parametrize("per_channel", [True, False], ids=["per_channel", "per_tensor"])
def test_qdq_model_prunes_with_its_scales(tmp_path, per_channel):
    proto = _quantize(tmp_path, "QDQ", per_channel)
    assert "DequantizeLinear" in {n.op_type for n in proto.graph.node}
    result = check_prunes(proto)
    assert blocked_reasons(result.analysis) == {BlockReason.GRAPH_IO}
    before = {t.name: tuple(t.dims) for t in proto.graph.initializer}
    after = {t.name: tuple(t.dims) for t in ir.to_proto(result.model).graph.initializer}
    weight = "pw.weight"  # BN folding renames the stem's weight; the pointwise conv keeps it
    assert after[f"{weight}_quantized"][0] < before[f"{weight}_quantized"][0]
    if per_channel:
        assert after[f"{weight}_scale"][0] == after[f"{weight}_quantized"][0]
        assert after[f"{weight}_zero_point"][0] == after[f"{weight}_quantized"][0]


@pytest.mark.parametrize("per_channel", [True, False], ids=["per_channel", "per_tensor"])
def test_qoperator_model_prunes_with_its_scales(tmp_path, per_channel):
    proto = _quantize(tmp_path, "QOperator", per_channel)
    assert "QLinearConv" in {n.op_type for n in proto.graph.node}
    feeds = feeds_for(proto, {"input": SHAPE})
    check_random_selections(proto, seeds=(0, 1), feeds=feeds)
    result = prune_proto(proto, ratio=0.5, round_to=1)  # check_prunes minus MACs (not counted)
    assert_mask_equivalent(proto, result, feeds)
    assert len(result.analysis.groups) == MIX_GROUPS
    assert blocked_reasons(result.analysis) == {BlockReason.GRAPH_IO}
    before = {t.name: tuple(t.dims) for t in proto.graph.initializer}
    after = {t.name: tuple(t.dims) for t in ir.to_proto(result.model).graph.initializer}
    weight = "pw.weight"
    assert after[f"{weight}_quantized"][0] < before[f"{weight}_quantized"][0]
    if per_channel:
        assert after[f"{weight}_scale"][0] == after[f"{weight}_quantized"][0]


# --- hand-written graphs ---------------------------------------------------------------------


NHWC = """<ir_version: 8, opset_import: ["" : 13]>
g (float[N,16,16,3] x) => (float[N,10] y) {
  xt = Transpose <perm=[0,3,1,2]> (x)
  c1 = Conv <pads=[1,1,1,1]> (xt, w1)
  t1 = Transpose <perm=[0,2,3,1]> (c1)
  bn1 = Mul (t1, scale1)
  a1 = Add (bn1, shift1)
  r1 = Relu (a1)
  s1, s2 = Split <axis=-1> (r1, sp)
  s2t = Transpose <perm=[0,3,1,2]> (s2)
  dw = Conv <pads=[1,1,1,1], group=8> (s2t, wdw, bdw)
  dwt = Transpose <perm=[0,2,3,1]> (dw)
  d6 = Clip (dwt, lo, hi)
  cat = Concat <axis=3> (s1, d6)
  ct = Transpose <perm=[0,3,1,2]> (cat)
  c2 = Conv <pads=[1,1,1,1], strides=[2,2]> (ct, w2, b2)
  t2 = Transpose <perm=[0,2,3,1]> (c2)
  r2 = Relu (t2)
  gap = ReduceMean <axes=[1,2], keepdims=0> (r2)
  mm = MatMul (gap, wfc)
  y = Add (mm, bfc)
}"""


def _parse(text: str, **arrays) -> onnx.ModelProto:
    proto = onnx.parser.parse_model(text)
    rng = np.random.default_rng(0)
    for name, spec in arrays.items():
        array = spec if isinstance(spec, np.ndarray) else rng.standard_normal(spec).astype(
            np.float32)
        proto.graph.initializer.append(numpy_helper.from_array(array, name))
    for k, node in enumerate(proto.graph.node):
        node.name = node.name or f"{node.op_type}_{k}"
    onnx.checker.check_model(proto, full_check=True)
    return proto


def test_tf2onnx_style_nhwc_transposes():
    proto = _parse(NHWC, w1=(16, 3, 3, 3), scale1=(16,), shift1=(16,), sp=np.array([8, 8]),
                   wdw=(8, 1, 3, 3), bdw=(8,), lo=np.array(0, np.float32),
                   hi=np.array(6, np.float32), w2=(24, 16, 3, 3), b2=(24,), wfc=(24, 10),
                   bfc=(10,))
    result = check_prunes(proto, feeds_for(proto, {"x": (2, 16, 16, 3)}), groups=2)
    shapes = {t.name: tuple(t.dims) for t in ir.to_proto(result.model).graph.initializer}
    assert shapes["scale1"][0] == shapes["w1"][0] < 16 and shapes["wfc"][0] == shapes["w2"][0] < 24
    assert blocked_reasons(result.analysis) == {BlockReason.GRAPH_IO}


def _subgraph(name: str, nodes, inputs, outputs) -> onnx.GraphProto:
    return helper.make_graph(nodes, name, inputs, outputs)


def _subgraph_model() -> onnx.ModelProto:
    """Channels of ``a`` reach an If, of ``b`` a Loop (with an outer weight), of ``d`` a Scan.

    The Loop's output (whose shape ONNX inference leaves unknown) is a second graph output.
    """
    f = TensorProto.FLOAT
    info = helper.make_tensor_value_info
    dims = ["N", 8, 8, 8]
    then = _subgraph("then", [helper.make_node("Relu", ["a"], ["t"])], [], [info("t", f, dims)])
    other = _subgraph("else", [helper.make_node("Neg", ["a"], ["e"])], [], [info("e", f, dims)])
    body = _subgraph("loop", [helper.make_node("Identity", ["cond_in"], ["cond_out"]),
                              helper.make_node("Mul", ["v_in", "k"], ["v_out"])],
                     [info("i", TensorProto.INT64, []), info("cond_in", TensorProto.BOOL, []),
                      info("v_in", f, dims)],
                     [info("cond_out", TensorProto.BOOL, []), info("v_out", f, dims)])
    scan = _subgraph("scan", [helper.make_node("Relu", ["slice"], ["out"])],
                     [info("slice", f, [8, 8, 8])], [info("out", f, [8, 8, 8])])
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1] * 4),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2"], ["a"], pads=[1] * 4),
        helper.make_node("If", ["cond"], ["h1"], then_branch=then, else_branch=other),
        helper.make_node("Conv", ["r1", "w3"], ["b"], pads=[1] * 4),
        helper.make_node("Loop", ["trips", "", "b"], ["h2"], body=body),
        helper.make_node("Conv", ["r1", "w4"], ["d"], pads=[1] * 4),
        helper.make_node("Scan", ["d"], ["h3"], body=scan, num_scan_inputs=1),
        helper.make_node("Mul", ["r1", "k2"], ["rk"]),
        helper.make_node("Concat", ["h1", "h3", "rk"], ["cat"], axis=1),
        helper.make_node("Conv", ["cat", "w5"], ["y"], pads=[1] * 4),
    ]
    for k, node in enumerate(nodes):
        node.name = f"{node.op_type}_{k}"
    rng = np.random.default_rng(0)
    inits = {"w1": (8, 3, 3, 3), "b1": (8,), "w2": (8, 8, 3, 3), "w3": (8, 8, 3, 3),
             "w4": (8, 8, 3, 3), "k": (8, 1, 1), "k2": (8, 1, 1), "w5": (4, 24, 3, 3)}
    tensors = [numpy_helper.from_array(rng.standard_normal(s).astype(np.float32), n)
               for n, s in inits.items()]
    tensors.append(numpy_helper.from_array(np.array(2, np.int64), "trips"))
    graph = helper.make_graph(nodes, "g", [info("x", f, [None, 3, 8, 8]),
                                           info("cond", TensorProto.BOOL, [])],
                              [info("y", f, [None, 4, 8, 8]), info("h2", f, dims)], tensors)
    graph.input[0].type.tensor_type.shape.dim[0].dim_param = "N"
    graph.output[0].type.tensor_type.shape.dim[0].dim_param = "N"
    proto = helper.make_model(graph, ir_version=8, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(proto, full_check=True)
    return proto


@pytest.mark.parametrize("cond", [True, False])
def test_channels_reaching_subgraphs_are_blocked(cond):
    proto = _subgraph_model()
    analysis = graphprune.analyze(ir.from_proto(proto))
    reasons = {e.value.name: b.reason for e, b in analysis.blocked_sources}
    assert reasons == {"a": BlockReason.SUBGRAPH, "b": BlockReason.SUBGRAPH,
                       "d": BlockReason.SUBGRAPH, "y": BlockReason.GRAPH_IO}
    feeds = feeds_for(proto, {"x": (2, 3, 8, 8)})
    feeds["cond"] = np.array(cond)
    result = check_prunes(proto, feeds, groups=1)
    shapes = {t.name: tuple(t.dims) for t in ir.to_proto(result.model).graph.initializer}
    assert shapes["w1"][0] == shapes["k2"][0] < 8 and shapes["k"] == (8, 1, 1)
    assert shapes["w2"][0] == shapes["w3"][0] == shapes["w4"][0] == 8


def test_unknown_custom_domain_op_blocks_only_its_channels():
    text = """<ir_version: 8, opset_import: ["" : 17, "com.microsoft" : 1]>
g (float[N,3,8,8] x) => (float[N,4,8,8] y) {
  c1 = Conv <pads=[1,1,1,1]> (x, w1, b1)
  r1 = Relu (c1)
  c2 = Conv <pads=[1,1,1,1]> (r1, w2, b2)
  g2 = com.microsoft.FusedMatMul <alpha=0.5> (c2, c2)
  y = Conv <pads=[1,1,1,1]> (g2, w3, b3)
}"""
    proto = _parse(text, w1=(8, 3, 3, 3), b1=(8,), w2=(8, 8, 3, 3), b2=(8,), w3=(4, 8, 3, 3),
                   b3=(4,))
    analysis = graphprune.analyze(ir.from_proto(proto))
    blocked = {e.value.name: b for e, b in analysis.blocked_sources}
    assert blocked["c2"].reason == BlockReason.UNKNOWN_OP and "com.microsoft" in blocked[
        "c2"].detail
    check_prunes(proto, feeds_for(proto, {"x": (2, 3, 8, 8)}), groups=1)
