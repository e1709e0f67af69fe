"""The cost model: MACs declared by each op's rule, counted at concrete input shapes.

Every expected number is computed by hand from the op's maths in the test itself.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from onnx import numpy_helper

import graphprune
from graphprune import BlockReason
from graphprune._io import infer_shapes
from graphprune.analysis import PrunePlan
from graphprune.cli import main
from graphprune.errors import UsageError
from graphprune.ops import registered
from graphprune.report.costs import CostModel, count_costs
from tests.oracle import random_selection

HEADER = '<ir_version: 8, opset_import: ["" : 17, "com.microsoft" : 1]>'


def build(text: str, **initializers) -> ir.Model:
    """Parses ``HEADER + text``; a shape tuple is a float32 initializer, an array is used as is."""
    proto = onnx.parser.parse_model(f"{HEADER}\n{text}")
    rng = np.random.default_rng(0)
    for name, spec in initializers.items():
        array = rng.standard_normal(spec).astype(np.float32) if isinstance(spec, tuple) else spec
        proto.graph.initializer.append(numpy_helper.from_array(np.asarray(array), name))
    return infer_shapes(ir.from_proto(proto))


# --- convolutions and matrix products ---------------------------------------------------------


def test_grouped_conv_counts_output_times_weight_per_channel():
    m = build("g (float[N,4,8,8] x) => (float[N,6,8,8] y) "
              "{ y = Conv<group=2, pads=[1,1,1,1]>(x, w) }", w=(6, 2, 3, 3))
    # each of N*6*8*8 outputs sums Ci/g * 3 * 3 = 18 products; N defaults to 1
    assert count_costs(m).macs == 1 * 6 * 8 * 8 * 2 * 3 * 3
    assert count_costs(m, {"x": (3, 4, 8, 8)}).macs == 3 * 6 * 8 * 8 * 2 * 3 * 3


def test_conv_transpose_counts_input_times_weight_per_channel():
    m = build("g (float[2,6,5,5] x) => (float[2,4,11,11] y) "
              "{ y = ConvTranspose<group=2, strides=[2,2]>(x, w) }", w=(6, 2, 3, 3))
    # every input element scatters into Co/g * 3 * 3 outputs
    assert count_costs(m).macs == 2 * 6 * 5 * 5 * 2 * 3 * 3


def test_gemm_with_transposed_a():
    m = build("g (float[5,3] a) => (float[3,7] y) { y = Gemm<transA=1>(a, b, c) }",
              b=(5, 7), c=(7,))
    costs = count_costs(m)
    assert costs.macs == 3 * 7 * 5
    assert costs.params == 5 * 7 + 7


@pytest.mark.parametrize(("a", "b", "y", "expected"), [
    ("[2,1,3,5]", "[4,5,6]", "[2,4,3,6]", 2 * 4 * 3 * 6 * 5),  # batch axes broadcast
    ("[3,5]", "[5]", "[3]", 3 * 5),  # matrix times vector
    ("[5]", "[2,5,6]", "[2,6]", 2 * 6 * 5),  # vector times batched matrix
])
def test_matmul_batched_and_one_dimensional(a, b, y, expected):
    m = build(f"g (float{a} a, float{b} b) => (float{y} y) {{ y = MatMul(a, b) }}")
    assert count_costs(m).macs == expected


def test_fused_conv_and_fused_gemm_count_as_conv_and_gemm():
    m = build("g (float[1,3,8,8] x, float[2,4] a) => (float[1,5,6,6] y, float[2,6] z) {"
              ' y = com.microsoft.FusedConv<activation="Relu">(x, w, bc)'
              ' z = com.microsoft.FusedGemm<activation="Relu">(a, b, c) }',
              w=(5, 3, 3, 3), bc=(5,), b=(4, 6), c=(6,))
    costs = count_costs(m)
    assert costs.macs_by_op == {"FusedConv": 5 * 6 * 6 * 3 * 3 * 3, "FusedGemm": 2 * 6 * 4}


def test_fused_conv_at_concrete_shapes_of_a_dynamic_input():
    m = build("g (float[N,3,H,W] x) => (float[N,5,A,B] y) {"
              ' y = com.microsoft.FusedConv<activation="Relu">(x, w, b) }', w=(5, 3, 3, 3), b=(5,))
    assert count_costs(m, {"x": (2, 3, 8, 8)}).macs == 2 * 5 * 6 * 6 * 3 * 3 * 3
    assert count_costs(m).macs == 1 * 5 * 222 * 222 * 3 * 3 * 3  # the 224 x 224 default


# --- einsum, recurrent and attention ops --------------------------------------------------------


@pytest.mark.parametrize(("equation", "shapes", "expected"), [
    ("bij,bjk->bik", ([2, 3, 4], [2, 4, 5], [2, 3, 5]), 2 * 3 * 4 * 5),
    ("...ij,...jk->...ik", ([2, 3, 4], [1, 4, 5], [2, 3, 5]), 2 * 3 * 4 * 5),  # broadcast
    ("bhqd,bhkd->bhqk", ([1, 2, 3, 4], [1, 2, 6, 4], [1, 2, 3, 6]), 1 * 2 * 3 * 4 * 6),
])
def test_einsum_is_the_product_of_every_index(equation, shapes, expected):
    a, b, y = (str(s).replace(" ", "") for s in shapes)
    m = build(f"g (float{a} a, float{b} b) => (float{y} y) "
              f'{{ y = Einsum<equation="{equation}">(a, b) }}')
    assert count_costs(m).macs == expected


def _recurrent(op: str, gates: int, directions: int, layout: int = 0) -> tuple[ir.Model, int]:
    seq, batch, inp, hidden = 5, 2, 3, 4
    x = [batch, seq, inp] if layout else [seq, batch, inp]
    direction = "bidirectional" if directions == 2 else "forward"
    y = [batch, seq, directions, hidden] if layout else [seq, directions, batch, hidden]
    m = build(f"g (float{x} x) => (float{y} y) {{ y, h = {op}<hidden_size={hidden}, "
              f'direction="{direction}", layout={layout}>(x, w, r) }}',
              w=(directions, gates * hidden, inp), r=(directions, gates * hidden, hidden))
    # per step, direction and batch row: gates*H outputs of W x_t (I products) + R h (H products)
    return m, directions * seq * batch * gates * hidden * (inp + hidden)


@pytest.mark.parametrize(("op", "gates", "directions", "layout"), [
    ("LSTM", 4, 2, 0), ("GRU", 3, 1, 0), ("RNN", 1, 1, 0), ("LSTM", 4, 1, 1)])
def test_recurrent_ops(op, gates, directions, layout):
    m, expected = _recurrent(op, gates, directions, layout)
    costs = count_costs(m)
    assert costs.macs_by_op == {op: expected}
    assert costs.params == directions * gates * 4 * (3 + 4)  # W and R


def test_contrib_dynamic_quantize_lstm_and_fused_matmul():
    seq, batch, inp, hidden = 5, 2, 3, 4
    m = build(f"g (float[{seq},{batch},{inp}] x, float[2,6,4] a) => (float y, float z) {{"
              f" y = com.microsoft.DynamicQuantizeLSTM<hidden_size={hidden}>"
              '(x, w, r, "", "", "", "", "", ws, wz, rs, rz)'
              " z = com.microsoft.FusedMatMul<transB=1>(a, b) }",
              w=np.ones((1, inp, 4 * hidden), np.int8), ws=np.float32(0.1), wz=np.int8(0),
              r=np.ones((1, hidden, 4 * hidden), np.int8), rs=np.float32(0.1), rz=np.int8(0),
              b=(3, 4))
    assert count_costs(m).macs_by_op == {
        "DynamicQuantizeLSTM": seq * batch * 4 * hidden * (inp + hidden),
        "FusedMatMul": 2 * 6 * 3 * 4,  # A[2,6,4] @ B^T[4,3]
    }


def test_matmul_integer_after_dynamic_quantize_lstm_is_counted_at_the_given_shape():
    """ONNX infers nothing after the contrib LSTM (no schema): neither shape nor dtype.

    The LSTM's rule fills its output shapes and the sweep types what follows, so the
    MatMulInteger of the classifier is counted (it was 0, with a note).
    """
    seq, batch, inp, hidden, classes = 5, 2, 3, 4, 7
    m = build(f"g (float[S,{batch},{inp}] x) => (int32 z) {{"
              f" y, h, c = com.microsoft.DynamicQuantizeLSTM<hidden_size={hidden}>"
              '(x, w, r, "", "", "", "", "", ws, wz, rs, rz)'
              " shape = Shape(y)"
              " steps = Gather<axis=0>(shape, zero)"
              " rows = Mul(steps, two)"
              " target = Concat<axis=0>(rows1, cols)"
              " flat = Reshape(y, target)"
              " q, qs, qz = DynamicQuantizeLinear(flat)"
              " z = MatMulInteger(q, b, qz, bz) }",
              w=np.ones((1, inp, 4 * hidden), np.int8), ws=np.float32(0.1), wz=np.int8(0),
              r=np.ones((1, hidden, 4 * hidden), np.int8), rs=np.float32(0.1), rz=np.int8(0),
              zero=np.int64(0), two=np.int64(batch), rows1=np.array([-1], np.int64),
              cols=np.array([hidden], np.int64), b=np.ones((hidden, classes), np.int8),
              bz=np.int8(0))
    costs = count_costs(m, {"x": (seq, batch, inp)})
    assert costs.macs_by_op == {
        "DynamicQuantizeLSTM": seq * batch * 4 * hidden * (inp + hidden),
        "MatMulInteger": seq * batch * hidden * classes,  # flat[S*B, H] @ b[H, classes]
    }
    assert not costs.notes


def test_int32_bias_read_by_dequantize_linear_is_a_parameter():
    """A QDQ Conv's bias is stored as int32 and dequantized; it is a weight like the others."""
    w, b = np.ones((4, 3, 1, 1), np.int8), np.arange(4, dtype=np.int32)
    m = build("g (float[1,3,6,6] x) => (float[1,4,6,6] y) {"
              " wf = DequantizeLinear<axis=0>(w, ws, wz)"
              " bf = DequantizeLinear<axis=0>(b, bs, bz)"
              " y = Conv(x, wf, bf) }",
              w=w, ws=np.full(4, 0.1, np.float32), wz=np.zeros(4, np.int8),
              b=b, bs=np.full(4, 0.01, np.float32), bz=np.zeros(4, np.int32))
    costs = count_costs(m)
    assert costs.macs == 4 * 6 * 6 * 3
    # int8 weights and zero points, float scales, and the int32 bias and its zero point
    assert costs.params == w.size + 4 + 4 + b.size + 4 + 4
    assert costs.params_by_op == {"DequantizeLinear": costs.params}


def test_contrib_attention_counts_projection_and_both_products():
    batch, seq, hidden, heads = 2, 6, 8, 2
    m = build(f"g (float[{batch},{seq},{hidden}] x) => (float[{batch},{seq},{hidden}] y) "
              f"{{ y = com.microsoft.Attention<num_heads={heads}>(x, w, b) }}",
              w=(hidden, 3 * hidden), b=(3 * hidden,))
    projection = batch * seq * hidden * 3 * hidden
    scores_and_values = 2 * batch * seq * seq * hidden  # QK^T and PV, all heads together
    assert count_costs(m).macs == projection + scores_and_values


def test_contrib_multi_head_attention_counts_both_products():
    m = build("g (float[2,6,8] q, float[2,9,8] k, float[2,9,8] v) => (float[2,6,8] y) "
              "{ y = com.microsoft.MultiHeadAttention<num_heads=2>(q, k, v) }")
    assert count_costs(m).macs == 2 * 6 * 9 * 8 * 2


# --- integer and quantized ops ----------------------------------------------------------------


def test_conv_integer_counts_int8_weights_and_zero_points():
    w = np.ones((4, 3, 3, 3), np.int8)
    m = build("g (uint8[1,3,6,6] x) => (int32[1,4,4,4] y) { y = ConvInteger(x, w, xz, wz) }",
              w=w, xz=np.uint8(3), wz=np.zeros(4, np.int8))
    costs = count_costs(m)
    assert costs.macs == 4 * 4 * 4 * 3 * 3 * 3
    assert costs.params == w.size + 1 + 4  # weights and both zero points (8-bit)


def test_qlinear_conv_reads_its_weight_at_position_three_and_counts_the_int32_bias():
    m = build("g (uint8[1,3,6,6] x) => (uint8[1,4,6,6] y) "
              "{ y = QLinearConv<pads=[1,1,1,1]>(x, xs, xz, w, ws, wz, ys, yz, b) }",
              xs=np.float32(0.1), xz=np.uint8(0), w=np.ones((4, 3, 3, 3), np.int8),
              ws=np.full(4, 0.2, np.float32), wz=np.zeros(4, np.int8), ys=np.float32(0.3),
              yz=np.uint8(0), b=np.zeros(4, np.int32))
    costs = count_costs(m)
    assert costs.macs == 4 * 6 * 6 * 3 * 3 * 3
    assert costs.params == 1 + 1 + 108 + 4 + 4 + 1 + 1 + 4


def test_matmul_integer_and_qlinear_matmul():
    m = build("g (uint8[3,5] a) => (int32[3,7] y, uint8[3,7] z) {"
              " y = MatMulInteger(a, b, az, bz)"
              " z = QLinearMatMul(a, s, az, b, s, bz, s, az) }",
              b=np.ones((5, 7), np.int8), az=np.uint8(0), bz=np.int8(0), s=np.float32(0.1))
    assert count_costs(m).macs_by_op == {"MatMulInteger": 3 * 7 * 5, "QLinearMatMul": 3 * 7 * 5}


def test_cost_only_rules_block_every_axis_they_touch():
    m, _ = _recurrent("LSTM", 4, 1)
    analysis = graphprune.analyze(m)
    reasons = {(b.op_type, b.reason, b.detail) for b in analysis.blocked}
    assert ("LSTM", BlockReason.UNKNOWN_OP, "no channel rule for LSTM; cost only") in reasons
    cost_only = {op for _, op, rule in registered() if rule.cost_only}
    assert {"LSTM", "GRU", "RNN", "If", "Loop", "Scan"} <= cost_only


def test_a_channel_rule_wins_over_a_cost_only_rule_whatever_the_import_order():
    from graphprune.ops import registry
    from graphprune.ops.base import Rule
    from graphprune.ops.costs_only import CostOnlyRule

    class Channels(Rule):
        op_types = ("GraphpruneTestOp",)

    class CostOnly(CostOnlyRule):
        op_types = ("GraphpruneTestOp",)

    try:
        registry.register(CostOnly)
        registry.register(Channels)
        node = ir.Node("", "GraphpruneTestOp", [], version=1)
        assert type(registry.lookup(node)) is Channels
    finally:
        registry._RULES.pop(("", "GraphpruneTestOp"), None)


# --- parameters ---------------------------------------------------------------------------------


def test_params_include_weights_listed_as_graph_inputs_but_not_shape_constants():
    m = build("g (float[2,6] a, float[6,4] w) => (float[2,2,2] y) "
              "{ m = MatMul(a, w) y = Reshape(m, shape) }",
              w=(6, 4), shape=np.array([2, 2, 2], np.int64))
    costs = count_costs(m)
    assert costs.params == 6 * 4
    assert costs.shapes == {"a": [2, 6]}  # w is an initializer, not an input to feed


# --- subgraphs ----------------------------------------------------------------------------------


LOOP = """g (float[2,4] x, int64 trips) => (float[2,4] y) {{
  cond = Constant<value = bool {{1}}>()
  y = Loop({trips}, cond, x) <body = body (int64 i, bool c, float[2,4] s)
                                        => (bool co, float[2,4] so) {{
      co = Identity(c)
      so = MatMul(s, w)
  }}>
}}"""


def test_loop_body_counts_per_iteration_times_a_static_trip_count():
    text = LOOP.format(trips="three").replace(
        "cond = Constant", "three = Constant<value = int64 {3}>()\n  cond = Constant")
    costs = count_costs(build(text, w=(4, 4)))
    assert costs.macs_by_op == {"MatMul": 3 * 2 * 4 * 4}
    assert costs.params == 16  # the body's weight, read from the outer scope, once
    assert costs.notes == ()


def test_loop_without_a_static_trip_count_counts_one_iteration_and_says_so():
    costs = count_costs(build(LOOP.format(trips="trips"), w=(4, 4)))
    assert costs.macs == 2 * 4 * 4
    assert any("trip count not static" in n for n in costs.notes)


def test_if_counts_the_larger_branch_and_weights_of_both():
    text = """g (float[2,4] x, bool c) => (float[2,8] y) {
      y = If(c) <then_branch = t () => (float[2,8] a) { a = MatMul(x, small) },
                 else_branch = e () => (float[2,8] b) { h = MatMul(x, big1) b = MatMul(h, big2) }>
    }"""
    costs = count_costs(build(text, small=(4, 8), big1=(4, 16), big2=(16, 8)))
    assert costs.macs == 2 * 16 * 4 + 2 * 8 * 16
    assert costs.params == 4 * 8 + 4 * 16 + 16 * 8
    assert any("larger branch (else_branch)" in n for n in costs.notes)
    assert [n.op_type for n in costs.nodes] == ["If"]
    assert costs.nodes[0].macs == costs.macs


def test_scan_body_counts_once_per_scanned_element():
    text = """g (float[4] h0, float[7,3] xs) => (float[4] h, float[7,4] ys) {
      h, ys = Scan<num_scan_inputs = 1,
                   body = b (float[4] hi, float[3] xi) => (float[4] ho, float[4] yo) {
                       p = MatMul(xi, w) ho = Add(hi, p) yo = Identity(ho) }>(h0, xs)
    }"""
    costs = count_costs(build(text, w=(3, 4)))
    assert costs.macs == 7 * 4 * 3


# --- concrete shapes ----------------------------------------------------------------------------


def test_symbolic_dims_take_input_shapes_and_defaults():
    m = build("g (float[N,T,8] x) => (float[N,T,4] y) { y = MatMul(x, w) }", w=(8, 4))
    costs = count_costs(m)  # the input module's defaults: batch 1, a sequence of 128
    assert costs.shapes == {"x": [1, 128, 8]}
    given = count_costs(m, {"x": (2, 5, 8)})
    assert (given.macs, given.shapes, given.notes) == (2 * 5 * 4 * 8, {"x": [2, 5, 8]}, ())
    with pytest.raises(UsageError):
        count_costs(m, {"nope": (1, 2, 8)})
    with pytest.raises(UsageError):
        count_costs(m, {"x": (1, 2, 9)})


def test_computing_nodes_with_unknown_shapes_are_noted():
    m = build("g (float[1,3,T] x) => (float[1,4,U] y) { y = Conv(x, w) }", w=(4, 3, 3))
    assert count_costs(m).macs == 4 * 126 * 3 * 3  # T = 128 by default
    costs = count_costs(m, {"x": (1, 3, 2)})  # a 3-tap conv on 2 samples has no output
    assert costs.macs == 0
    assert "counted 0 MACs: 1 Conv" in costs.notes[-1]
    assert count_costs(m, {"x": (1, 3, 10)}).macs == 4 * 8 * 3 * 3


def test_an_input_of_unknown_rank_takes_its_shape_from_input_shapes():
    text = "g (float[2,3] a) => (float y) { y = MatMul(a, w) }"
    proto = onnx.parser.parse_model(f"{HEADER}\n{text}")
    proto.graph.initializer.append(numpy_helper.from_array(np.ones((3, 4), np.float32), "w"))
    proto.graph.input[0].type.tensor_type.ClearField("shape")
    m = infer_shapes(ir.from_proto(proto))
    assert count_costs(m).notes[0] == "input 'a': rank unknown (give --input-shape)"
    assert count_costs(m, {"a": (5, 3)}).macs == 5 * 4 * 3


def test_loop_body_shapes_follow_a_symbolic_batch():
    text = LOOP.format(trips="three").replace(
        "cond = Constant", "three = Constant<value = int64 {3}>()\n  cond = Constant")
    text = text.replace("float[2,4]", "float[N,4]")
    costs = count_costs(build(text, w=(4, 4)), {"x": (6, 4)})
    assert costs.macs_by_op == {"MatMul": 3 * 6 * 4 * 4}


def test_shapes_propagate_through_shape_computations():
    text = """g (float[N,3,H,W] x) => (float[N,5] y) {
      c = Conv<pads=[1,1,1,1]>(x, w)
      s = Shape(c)
      n = Slice(s, zero, one)
      t = Concat<axis=0>(n, minus)
      f = Reshape(c, t)
      y = MatMul(f, fc)
    }"""
    m = build(text, w=(2, 3, 3, 3), fc=(2 * 6 * 6, 5), zero=np.array([0]), one=np.array([1]),
              minus=np.array([-1]))
    before = ir.to_proto(m).SerializeToString()
    costs = count_costs(m, {"x": (1, 3, 6, 6)})
    assert costs.macs_by_op == {"Conv": 2 * 6 * 6 * 27, "MatMul": 5 * 72}
    assert ir.to_proto(m).SerializeToString() == before  # counted on a copy


@pytest.mark.slow
def test_dynamic_mobilenet_v2_counts_as_the_static_export(tmp_path):
    pytest.importorskip("torch")
    from models.export import export

    static = export("mobilenet_v2", tmp_path / "static.onnx")
    dynamic = export("mobilenet_v2", tmp_path / "dynamic.onnx", dynamic_batch=True,
                     dynamic_spatial=True)
    want = count_costs(graphprune.analyze(static).model)
    got = count_costs(graphprune.analyze(dynamic).model)
    assert got.macs == want.macs and got.params == want.params
    assert 300e6 < got.macs < 301e6  # MobileNetV2 1.0 at 224: 300.8M
    out = tmp_path / "small.onnx"
    assert main([str(dynamic), "--no-bench", "-o", str(out), "--ratio", "0.3",
                 "--input-shape", "input=1,3,112,112"]) == 0
    before = json.loads(out.with_name("small.report.json").read_text())["before"]
    assert before["shapes"] == {"input": [1, 3, 112, 112]}
    assert 3.5 < want.macs / before["macs"] < 4.1  # a quarter of the pixels (7x7 -> 4x4 at the end)


# --- a candidate plan ---------------------------------------------------------------------------


PLAN_MODEL = """g (float[N,4,H,W] x) => (float[N,5] y) {
  a = Conv<pads=[1,1,1,1]>(x, w1, b1)
  r = Relu(a)
  d = Conv<group=8, pads=[1,1,1,1]>(r, w2)
  e = Conv(d, w3)
  c = Conv(r, w4)
  s = Add(e, c)
  p = GlobalAveragePool(s)
  f = Flatten(p)
  y = Gemm(f, fc, bias)
}"""


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_costs_of_a_plan_are_those_of_the_model_it_writes(seed):
    def load():
        return build(PLAN_MODEL, w1=(8, 4, 3, 3), b1=(8,), w2=(8, 1, 3, 3), w3=(6, 8, 1, 1),
                     w4=(6, 8, 1, 1), fc=(6, 5), bias=(5,))

    model = load()
    analysis = graphprune.analyze(model)
    removed = random_selection(analysis, seed)
    shapes = {"x": (2, 4, 10, 12)}
    predicted = count_costs(model, shapes, plan=PrunePlan(analysis, removed))
    result = graphprune.prune(load(), removed=removed, input_shapes=shapes)
    assert predicted.macs < result.before.macs
    assert (predicted.macs, predicted.params) == (result.after.macs, result.after.params)
    assert predicted.macs_by_op == result.after.macs_by_op
    shared = CostModel(model, shapes)  # one shape inference, any number of plans
    assert shared.costs() == result.before
    assert shared.costs(PrunePlan(analysis, removed)) == predicted
    assert shared.costs() == result.before
