"""Quantized op rules, checked with the mask-equivalence oracle.

Tiny models in ONNX text syntax for DynamicQuantizeLinear, ConvInteger, QLinearConv,
MatMulInteger and QLinearMatMul, per tensor and per channel, run through the same checks as
tests/test_rules.py (random selections and an L1 selection against the oracle). The masked
original puts a quantized weight's removed entries at its zero point (the real zero), so the
pruned model and the masked original compute the same integers.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from onnx.reference import ReferenceEvaluator

import graphprune
from graphprune import BlockReason
from graphprune.verify.oracle import mask_fills, masked_model, relative_error
from tests import test_rules
from tests.oracle import assert_mask_equivalent, feeds_for, random_selection
from tests.test_rules import Case, chain_after_prunable, header, model

RNG = np.random.default_rng(7)


def ints(dtype, shape, low=-60, high=60) -> np.ndarray:
    low = max(low, np.iinfo(dtype).min)
    return RNG.integers(low, high if dtype == np.int8 else 200, shape).astype(dtype)


def scalar(value, dtype=np.float32) -> np.ndarray:
    return np.array(value, dtype)


def gemm_chain(body: str, opset: int = 17, **inits) -> tuple[str, dict]:
    """``x[N,16] -> Gemm(8) = a -> body -> Gemm(4)``: ``body`` reads ``a`` and writes ``h[N,6]``."""
    text = f"""{header(opset)}
g (float[N,16] x) => (float[N,4] y) {{
  a = Gemm <transB=1> (x, w1, b1)
  {body}
  y = Gemm <transB=1> (h, w2, b2)
}}"""
    return text, {"w1": (8, 16), "b1": (8,), "w2": (4, 6), "b2": (4,), **inits}


# onnxruntime quantize_dynamic: DynamicQuantizeLinear -> ConvInteger -> Cast -> Mul -> Add.
_DYNAMIC_CONV = """r = Relu (a)
  q, qs, qz = DynamicQuantizeLinear (r)
  ci = ConvInteger <pads=[1,1,1,1]> (q, wq, qz, wz)
  cf = Cast <to=1> (ci)
  sc = Mul (qs, ws)
  m = Mul (cf, sc)
  bb = Reshape (bias, bshape)
  h = Add (m, bb)"""
_QLINEAR_CONV = """r = Relu (a)
  q = QuantizeLinear (r, xs, xz)
  c = QLinearConv <pads=[1,1,1,1]> (q, xs, xz, wq, ws, wz, ys, yz, bq)
  h = DequantizeLinear (c, ys, yz)"""
_DYNAMIC_MATMUL = """r = Relu (a)
  q, qs, qz = DynamicQuantizeLinear (r)
  mi = MatMulInteger (q, wq, qz, wz)
  cf = Cast <to=1> (mi)
  sc = Mul (qs, ws)
  m = Mul (cf, sc)
  h = Add (m, bias)"""
_QLINEAR_MATMUL = """r = Relu (a)
  q = QuantizeLinear (r, xs, xz)
  mm = QLinearMatMul (q, xs, xz, wq, ws, wz, ys, yz)
  h = DequantizeLinear (mm, ys, yz)"""


def _qlinear_conv(dtype, per_channel: bool) -> tuple[str, dict]:
    shape = (8,) if per_channel else ()
    zp = np.zeros(shape, dtype) if dtype == np.int8 else np.full(shape, 128, dtype)
    scale = np.linspace(0.002, 0.004, 8) if per_channel else 0.003
    return chain_after_prunable(
        _QLINEAR_CONV, xs=scalar(0.02), xz=scalar(0, np.uint8), wq=ints(dtype, (8, 8, 3, 3)),
        ws=np.asarray(scale, np.float32), wz=zp, ys=scalar(0.05), yz=scalar(7, np.uint8),
        bq=ints(np.int32, (8,), -500, 500))


def _contrib_conv_chain() -> tuple[str, dict]:
    text, inits = chain_after_prunable("""q = QuantizeLinear (a, xs, xz)
  c1 = QLinearConv <pads=[1,1,1,1]> (q, xs, xz, qw1, ws, wz, ys, yz, b1q)
  c2 = QLinearConv <pads=[1,1,1,1]> (q, xs, xz, qw2, ws, wz, ys, yz, b2q)
  s = com.microsoft.QLinearAdd (c1, ys, yz, c2, ys, yz, ss, sz)
  cat = com.microsoft.QLinearConcat <axis=1> (ss, sz, s, ss, sz, c1, ys, yz)
  sg = com.microsoft.QLinearSigmoid (cat, ss, sz, ss, sz)
  p = com.microsoft.QLinearAveragePool <kernel_shape=[2,2], strides=[2,2]> (sg, ss, sz, ss, sz)
  h = DequantizeLinear (p, ss, sz)""", opset=17, extra=', "com.microsoft" : 1', mid=16,
        xs=scalar(0.02), xz=scalar(0, np.uint8), qw1=ints(np.int8, (8, 8, 3, 3)),
        qw2=ints(np.int8, (8, 8, 3, 3)), ws=np.linspace(0.002, 0.004, 8).astype(np.float32),
        wz=np.zeros(8, np.int8), ys=scalar(0.05), yz=scalar(7, np.uint8),
        b1q=ints(np.int32, (8,), -500, 500), b2q=ints(np.int32, (8,), -500, 500),
        ss=scalar(0.08), sz=scalar(11, np.uint8))
    return text, inits


_QGEMM = gemm_chain("""q = QuantizeLinear (a, xs, xz)
  g = com.microsoft.QGemm <transB=1> (q, xs, xz, wq, ws, wz, bq, ys, yz)
  h = DequantizeLinear (g, ys, yz)""", xs=scalar(0.02), xz=scalar(0, np.uint8),
    wq=ints(np.int8, (6, 8)), ws=np.linspace(0.002, 0.004, 6).astype(np.float32),
    wz=np.zeros(6, np.int8), bq=ints(np.int32, (6,), -500, 500), ys=scalar(0.05),
    yz=scalar(9, np.uint8))


QUANT_CASES: dict[str, Case] = {
    "DynamicQuantizeLinear-ConvInteger-uint8-weights": Case(*chain_after_prunable(
        _DYNAMIC_CONV, wq=ints(np.uint8, (8, 8, 3, 3), 60, 200), wz=scalar(128, np.uint8),
        ws=scalar(0.003), bias=(8,), bshape=np.array([1, -1, 1, 1], np.int64), mid=8,
    ), shrink=("a", "ci", "h")),
    "DynamicQuantizeLinear-ConvInteger-int8-weights": Case(*chain_after_prunable(
        _DYNAMIC_CONV, wq=ints(np.int8, (8, 8, 3, 3)), wz=scalar(-3, np.int8),
        ws=scalar(0.003), bias=(8,), bshape=np.array([1, -1, 1, 1], np.int64), mid=8,
    ), shrink=("a", "ci", "h")),
    "QLinearConv-per-tensor-uint8": Case(*_qlinear_conv(np.uint8, False), shrink=("a", "c", "h")),
    "QLinearConv-per-channel-int8": Case(*_qlinear_conv(np.int8, True), shrink=("a", "c", "h")),
    "QLinearConv-per-channel-uint8": Case(*_qlinear_conv(np.uint8, True), shrink=("a", "c", "h")),
    "DynamicQuantizeLinear-MatMulInteger-per-column": Case(*gemm_chain(
        _DYNAMIC_MATMUL, wq=ints(np.int8, (8, 6)), wz=np.arange(-3, 3).astype(np.int8),
        ws=scalar(0.004), bias=(6,)), shrink=("a", "mi", "h")),
    "DynamicQuantizeLinear-MatMulInteger-uint8-per-tensor": Case(*gemm_chain(
        _DYNAMIC_MATMUL, wq=ints(np.uint8, (8, 6), 60), wz=scalar(128, np.uint8),
        ws=scalar(0.004), bias=(6,)), shrink=("a", "mi", "h")),
    "QLinearMatMul-per-column": Case(*gemm_chain(
        _QLINEAR_MATMUL, xs=scalar(0.02), xz=scalar(0, np.uint8), wq=ints(np.int8, (8, 6)),
        ws=np.linspace(0.002, 0.004, 6).astype(np.float32), wz=np.zeros(6, np.int8),
        ys=scalar(0.05), yz=scalar(9, np.uint8)), shrink=("a", "mm", "h")),
    "QLinearMatMul-per-tensor-uint8": Case(*gemm_chain(
        _QLINEAR_MATMUL, xs=scalar(0.02), xz=scalar(0, np.uint8), wq=ints(np.uint8, (8, 6), 60),
        ws=scalar(0.003), wz=scalar(131, np.uint8), ys=scalar(0.05), yz=scalar(9, np.uint8)),
        shrink=("a", "mm", "h")),
    # float weights quantized in the graph, per output channel (QAT exports)
    "QuantizeLinear-per-channel-weights": Case(*chain_after_prunable(
        """wq = QuantizeLinear <axis=0> (wf, ws, wz)
  wd = DequantizeLinear <axis=0> (wq, ws, wz)
  h = Conv <pads=[1,1,1,1]> (a, wd)""", wf=(8, 8, 3, 3),
        ws=np.linspace(0.01, 0.02, 8).astype(np.float32), wz=np.arange(-4, 4).astype(np.int8)),
        shrink=("a", "wd", "h")),
    "DequantizeLinear-uint8-weights-per-tensor": Case(*chain_after_prunable(
        """wd = DequantizeLinear (wq, ws, wz)
  h = Conv <pads=[1,1,1,1]> (a, wd)""", wq=ints(np.uint8, (8, 8, 3, 3), 60),
        ws=scalar(0.01), wz=scalar(128, np.uint8)), shrink=("a", "h")),
    # onnxruntime's QOperator contrib ops (quantize_static, QuantFormat.QOperator)
    "contrib-QLinearAdd-Concat-Sigmoid-AveragePool": Case(*_contrib_conv_chain(),
                                                           shrink=("a", "c1", "c2", "h")),
    "contrib-QGemm-per-column": Case(
        _QGEMM[0].replace(header(17), header(17, ', "com.microsoft" : 1')), _QGEMM[1],
        shrink=("a", "g", "h")),
    # a removed channel is sigmoid(0) = 0.5 in the masked original and would widen the range
    "block-DynamicQuantizeLinear-after-Sigmoid": Case(*chain_after_prunable(
        _DYNAMIC_CONV.replace("Relu (a)", "Sigmoid (a)"), wq=ints(np.int8, (8, 8, 3, 3)),
        wz=scalar(-3, np.int8), ws=scalar(0.003), bias=(8,),
        bshape=np.array([1, -1, 1, 1], np.int64)),
        block=BlockReason.AXIS_NOT_PRESERVED, shrink=("zr", "h")),
    # a per-row zero point of A is not per tensor: the MatMulInteger blocks, the rest prunes
    "block-MatMulInteger-per-row-a": Case(*gemm_chain(
        """q = Cast <to=2> (a)
  mi = MatMulInteger (q, wq, qz, wz)
  h = Cast <to=1> (mi)""", wq=ints(np.int8, (8, 6)), qz=np.zeros(2, np.uint8),
        wz=scalar(0, np.int8)),
        block=BlockReason.UNSUPPORTED_ATTRIBUTE, block_at="a", shrink=(), runnable=False),
}


@pytest.mark.parametrize("spec", [pytest.param(c, id=n) for n, c in QUANT_CASES.items()])
def test_quant_rule_case(spec: Case):
    test_rules.test_rule_case(spec)


def test_quantized_weight_masked_to_its_zero_point():
    spec = QUANT_CASES["DynamicQuantizeLinear-ConvInteger-uint8-weights"]
    proto = model(spec.text, **spec.inits)
    fills = mask_fills(ir.from_proto(proto))
    assert fills["wz"] is None and int(fills["wq"]) == 128
    analysis = graphprune.analyze(ir.from_proto(proto))
    result = graphprune.prune(ir.from_proto(proto), removed=random_selection(analysis, 0))
    masked = {t.name: onnx.numpy_helper.to_array(t) for t in masked_model(
        proto, result.masks).graph.initializer}
    (axis, kept), *_ = result.masks["wq"]
    dropped = np.setdiff1d(np.arange(masked["wq"].shape[axis]), kept)
    assert len(dropped) and (np.take(masked["wq"], dropped, axis=axis) == 128).all()


def test_per_channel_conv_integer_with_reference_evaluator():
    """Per-Co ConvInteger zero points (onnxruntime takes scalars only; onnx.reference runs it)."""
    text, inits = chain_after_prunable(
        _DYNAMIC_CONV, wq=ints(np.int8, (8, 8, 3, 3)), wz=np.arange(-4, 4).astype(np.int8),
        ws=scalar(0.003), bias=(8,), bshape=np.array([1, -1, 1, 1], np.int64))
    proto = model(text, **inits)
    feeds = feeds_for(proto, {"x": (1, 3, 5, 6)})
    analysis = graphprune.analyze(ir.from_proto(proto))
    for seed in (0, 1):
        result = graphprune.prune(ir.from_proto(proto), removed=random_selection(analysis, seed))
        pruned = ir.to_proto(result.model)
        assert len(result.masks["wz"]) == 1, "per-channel zero point is not sliced"
        reference = ReferenceEvaluator(masked_model(proto, result.masks)).run(None, feeds)
        assert relative_error(reference, ReferenceEvaluator(pruned).run(None, feeds)) <= 1e-4


def test_dynamic_int8_model_that_cannot_prune_names_its_reason():
    """A ConvInteger whose channels reach the graph output is reported, not silently skipped."""
    text = f"""{header(17)}
g (float[N,3,H,W] x) => (float[N,8,H,W] y) {{
  q, qs, qz = DynamicQuantizeLinear (x)
  ci = ConvInteger <pads=[1,1,1,1]> (q, wq, qz, wz)
  cf = Cast <to=1> (ci)
  y = Mul (cf, qs)
}}"""
    proto = model(text, wq=ints(np.int8, (8, 3, 3, 3)), wz=scalar(0, np.int8))
    analysis = graphprune.analyze(ir.from_proto(proto))
    assert not analysis.groups
    reasons = {(entry.value.name, b.reason) for entry, b in analysis.blocked_sources}
    assert ("ci", BlockReason.GRAPH_IO) in reasons


# --- zoo models quantized by onnxruntime ---------------------------------------------------------

ZOO_WIDTH = 0.25
FORMATS = {  # format -> op types the quantized model must contain
    "dynamic-uint8": {"DynamicQuantizeLinear", "ConvInteger", "MatMulInteger"},
    "dynamic-int8": {"DynamicQuantizeLinear", "ConvInteger", "MatMulInteger"},
    "static-qdq": {"QuantizeLinear", "DequantizeLinear", "Conv"},
    "static-qoperator": {"QLinearConv"},
}


def quantize_zoo_model(name: str, fmt: str, folder) -> onnx.ModelProto:
    """Exports the zoo model at small width and quantizes it with onnxruntime.quantization."""
    from onnxruntime import quantization as q

    from models.export import export
    from models.zoo import ZOO

    shape = ZOO[name].small_input_shape
    src, dst = folder / f"{name}.onnx", folder / f"{name}-{fmt}.onnx"
    if not src.exists():
        export(name, src, width=ZOO_WIDTH, input_shape=shape)
    if fmt.startswith("dynamic"):
        weight = q.QuantType.QUInt8 if fmt == "dynamic-uint8" else q.QuantType.QInt8
        q.quantize_dynamic(str(src), str(dst), weight_type=weight,
                           op_types_to_quantize=["Conv", "MatMul", "Gemm"])
    else:
        batches = iter([{"input": np.random.default_rng(i).standard_normal(shape).astype(
            np.float32)} for i in range(4)])

        class Reader(q.CalibrationDataReader):
            def get_next(self):
                return next(batches, None)

        layout = q.QuantFormat.QDQ if fmt == "static-qdq" else q.QuantFormat.QOperator
        q.quantize_static(str(src), str(dst), Reader(), quant_format=layout, per_channel=True)
    return onnx.load(str(dst))


ZOO_CASES = [(name, fmt) for name in ("resnet18", "mobilenet_v3") for fmt in FORMATS] + [
    ("densenet", "static-qoperator"),  # QLinearConcat, QLinearAveragePool
    ("c2f", "static-qoperator"),  # QLinearSigmoid, QLinearMul, QLinearConcat
]


@pytest.mark.slow
@pytest.mark.parametrize(("name", "fmt"), ZOO_CASES)
def test_quantized_zoo_model_prunes_exactly(name: str, fmt: str, tmp_path_factory):
    from models.zoo import ZOO

    proto = quantize_zoo_model(name, fmt, tmp_path_factory.getbasetemp())
    assert FORMATS[fmt] <= {n.op_type for n in proto.graph.node}
    feeds = feeds_for(proto, {"input": ZOO[name].small_input_shape}, seed=3)
    # quarter-wide layers of 8-41 channels: kept counts round up, so round to 4, not 16
    result = graphprune.prune(ir.from_proto(proto), ratio=0.5, round_to=4)
    assert len(result.analysis.groups) >= 10, [b.describe() for _, b in
                                               result.analysis.blocked_sources]
    pruned = ir.to_proto(result.model)
    assert _elements(pruned) < 0.6 * _elements(proto)  # int8 weights and scales included
    assert_mask_equivalent(proto, result, feeds)


def _elements(proto: onnx.ModelProto) -> int:
    """Elements of every initializer (report/costs.py does not count integer weights yet)."""
    return sum(int(np.prod(t.dims)) for t in proto.graph.initializer)


ATTENTION = f"""{header(17)}
g (float[N,T,16] x) => (float[N,T,16] y) {{
  h1 = MatMul (x, w1)
  a1 = Add (h1, b1)
  g1 = Relu (a1)
  q = MatMul (g1, wq)
  k = MatMul (g1, wk)
  kt = Transpose <perm=[0,2,1]> (k)
  s = MatMul (q, kt)
  sm = Softmax <axis=-1> (s)
  v = MatMul (g1, wv)
  o = MatMul (sm, v)
  h2 = MatMul (o, w2)
  y = Add (h2, b2)
}}"""


@pytest.mark.parametrize("per_channel", [False, True], ids=["per_tensor", "per_column"])
def test_dynamic_int8_attention_prunes_exactly(tmp_path, per_channel: bool):
    """quantize_dynamic on 3-D MatMuls, Q @ K^T and attention @ V included (MatMulInteger)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    proto = model(ATTENTION, w1=(16, 32), b1=(32,), wq=(32, 8), wk=(32, 8), wv=(32, 24),
                  w2=(24, 16), b2=(16,))
    onnx.save(proto, tmp_path / "f.onnx")
    quantize_dynamic(str(tmp_path / "f.onnx"), str(tmp_path / "q.onnx"),
                     weight_type=QuantType.QInt8, per_channel=per_channel)
    quantized = onnx.load(tmp_path / "q.onnx")
    assert sum(n.op_type == "MatMulInteger" for n in quantized.graph.node) >= 5
    feeds = feeds_for(quantized, {"x": (2, 5, 16)})
    results = test_rules.check_random_selections(quantized, feeds=feeds)
    sizes = {len(g.classes) for g in results[0].analysis.groups}
    assert sizes == {32, 8, 24}  # FFN hidden, shared Q/K head dim, V
    result = graphprune.prune(ir.from_proto(quantized), ratio=0.5, round_to=1)
    assert_mask_equivalent(quantized, result, feeds)
