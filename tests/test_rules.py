"""Every registered op rule, exercised between prunable layers and checked with the oracle.

Each case is a tiny model in ONNX text syntax. A *transparent* case must prune (fewer parameters,
the named activations lose channels) and pass the mask-equivalence oracle for random selections
and for an L1 selection at ratio 0.5. A *blocking* case must report the expected
:class:`graphprune.BlockReason` on the named source axis, and the rest of the model must still
prune correctly.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from onnx import numpy_helper

import graphprune
from graphprune import BlockReason
from graphprune.ops import registered
from tests.oracle import assert_mask_equivalent, check_random_selections, feeds_for, prune_proto

SYMBOLS = {"N": 2, "H": 10, "W": 12, "L": 11, "D": 5, "T": 5}
I64_MAX = np.iinfo(np.int64).max


# --- builders ---------------------------------------------------------------------------------


def i64(*values) -> np.ndarray:
    return np.array(values, dtype=np.int64)


def f32(*values) -> np.ndarray:
    return np.array(values, dtype=np.float32)


def model(
    text: str, seed: int = 0, constants: tuple[str, ...] = (), **initializers
) -> onnx.ModelProto:
    """Parses ``text`` and adds initializers, then runs the ONNX checker.

    A shape tuple gives random float32 values (positive, at least 0.5, for names starting with
    ``var`` or ``pos``); an array is used as is. Names in ``constants`` become ``Constant`` nodes
    instead (as exporters write them). Unnamed nodes are named after their first output.
    """
    proto = onnx.parser.parse_model(text)
    rng = np.random.default_rng(seed)
    nodes = []
    for name, spec in initializers.items():
        if isinstance(spec, tuple):
            array = (rng.standard_normal(spec) * 0.3).astype(np.float32)
            if name.startswith(("var", "pos")):
                array = np.abs(array) + 0.5
        else:
            array = np.asarray(spec)
        tensor = numpy_helper.from_array(array, name)
        if name in constants:
            nodes.append(onnx.helper.make_node("Constant", [], [name], value=tensor))
        else:
            proto.graph.initializer.append(tensor)
    if nodes:
        nodes += list(proto.graph.node)
        del proto.graph.node[:]
        proto.graph.node.extend(nodes)
    for node in proto.graph.node:
        if not node.name:
            node.name = node.output[0]
    onnx.checker.check_model(proto)
    return proto


def header(opset: int, extra: str = "") -> str:
    ir_version = 9 if opset >= 19 else 8
    return f'<ir_version: {ir_version}, opset_import: ["" : {opset}{extra}]>'


def chain(body: str, opset: int = 17, mid: int = 8, **inits) -> tuple[str, dict]:
    """``x -> Conv(8) -> body -> Conv(4) -> y``: ``body`` reads ``a`` and writes ``h``."""
    text = f"""{header(opset)}
g (float[N,3,H,W] x) => (float[N,4,Ho,Wo] y) {{
  a = Conv <pads=[1,1,1,1]> (x, w1, b1)
  {body}
  y = Conv <pads=[1,1,1,1]> (h, w2, b2)
}}"""
    base = {"w1": (8, 3, 3, 3), "b1": (8,), "w2": (4, mid, 3, 3), "b2": (4,)}
    return text, {**base, **inits}


def chain_after_prunable(body: str, opset: int = 17, mid: int = 8, extra: str = "", outs: str = "",
                         **inits) -> tuple[str, dict]:
    """``x -> Conv(6) -> Relu -> Conv(8) = a -> body -> Conv(4)``: the first conv stays prunable."""
    text = f"""{header(opset, extra)}
g (float[N,3,H,W] x) => (float[N,4,Ho,Wo] y{outs}) {{
  z = Conv <pads=[1,1,1,1]> (x, w0, b0)
  zr = Relu (z)
  a = Conv <pads=[1,1,1,1]> (zr, w1, b1)
  {body}
  y = Conv <pads=[1,1,1,1]> (h, w2, b2)
}}"""
    base = {"w0": (6, 3, 3, 3), "b0": (6,), "w1": (8, 6, 3, 3), "b1": (8,),
            "w2": (4, mid, 3, 3), "b2": (4,)}
    return text, {**base, **inits}


def feed_shapes(proto: onnx.ModelProto) -> dict[str, tuple[int, ...]]:
    """Batch 2 and spatial sizes other than any declared ones, for every symbolic dim."""
    shapes = {}
    for value in proto.graph.input:
        dims = value.type.tensor_type.shape.dim
        shapes[value.name] = tuple(
            d.dim_value if d.HasField("dim_value") else SYMBOLS[d.dim_param] for d in dims
        )
    return shapes


def shrunk(result: graphprune.PruneResult, name: str) -> bool:
    """True when some axis of the activation ``name`` lost channels."""
    return any(
        t["tensor"] == name and t["after"] < t["before"]
        for g in result.groups
        for t in g["tensors"]
    )


def group_ids(analysis, name: str, axis: int | None = 1) -> set[int]:
    """Groups that touch ``name[axis]`` (any axis of ``name`` when ``axis`` is None)."""
    found = set()
    for group in analysis.groups:
        for index in group.axes:
            entry = analysis.table.axes[index]
            if entry.value.name == name and axis in (None, entry.axis):
                found.add(group.id)
    return found


def initializer_shapes(result: graphprune.PruneResult) -> dict[str, tuple[int, ...]]:
    return {n: tuple(v.const_value.shape) for n, v in result.model.graph.initializers.items()}


# --- cases ------------------------------------------------------------------------------------


@dataclasses.dataclass
class Case:
    """One tiny model; ``block`` set means ``block_at[1]`` must be a blocked source."""

    text: str
    inits: dict
    shrink: tuple[str, ...] = ("h",)
    block: BlockReason | None = None
    block_at: str = "a"
    runnable: bool = True  # False: custom-domain ops, analysis only
    check: Callable | None = None  # extra assertions: check(proto, analysis, result)
    constants: tuple[str, ...] = ()  # initializers written as Constant nodes instead
    annotate: dict = dataclasses.field(default_factory=dict)  # value_info: name -> float dims


CASES: dict[str, Case] = {}


def case(name: str, spec: tuple[str, dict], marks=(), **kwargs) -> None:
    assert name not in CASES
    CASES[name] = (Case(spec[0], spec[1], **kwargs), marks)


# unary activations: every op type of UnaryRule
UNARY = {
    "Relu": ("h = Relu (a)", 17),
    "LeakyRelu": ("h = LeakyRelu <alpha=0.1> (a)", 17),
    "Sigmoid": ("h = Sigmoid (a)", 17),
    "HardSigmoid": ("h = HardSigmoid <alpha=0.3, beta=0.4> (a)", 17),
    "HardSwish": ("h = HardSwish (a)", 17),
    "Tanh": ("h = Tanh (a)", 17),
    "Elu": ("h = Elu <alpha=0.7> (a)", 17),
    "Selu": ("h = Selu (a)", 17),
    "Celu": ("h = Celu <alpha=0.8> (a)", 17),
    "Softplus": ("h = Softplus (a)", 17),
    "Softsign": ("h = Softsign (a)", 17),
    "Erf": ("h = Erf (a)", 17),
    "Gelu": ("h = Gelu <approximate=\"tanh\"> (a)", 20),
    "Mish": ("h = Mish (a)", 18),
    "ThresholdedRelu": ("h = ThresholdedRelu <alpha=0.2> (a)", 17),
    "Identity": ("h = Identity (a)", 17),
    "Dropout": ("h = Dropout (a, ratio)", 17),
    "Dropout_mask": ("h, mask = Dropout (a)", 17),
    "Dropout_opset7": ("h = Dropout <ratio=0.3> (a)", 7),
    "Cast": ("h = Cast <to=1> (a)", 17),
    "Neg": ("h = Neg (a)", 17),
    "Abs": ("h = Abs (a)", 17),
    "Exp": ("h = Exp (a)", 17),
    "Sqrt": ("s = Abs (a)\n  h = Sqrt (s)", 17),
    "Floor": ("h = Floor (a)", 17),
    "Ceil": ("h = Ceil (a)", 17),
    "Round": ("h = Round (a)", 17),
    "Sign": ("h = Sign (a)", 17),
    "Clip_inputs": ("h = Clip (a, lo, hi)", 13),
    "Clip_max_only": ("h = Clip (a, , hi)", 13),
    "Clip_attributes": ("h = Clip <min=-0.3, max=0.4> (a)", 6),
}
for _name, (_body, _opset) in UNARY.items():
    case(f"unary-{_name}", chain(_body, _opset, ratio=np.array(0.3, np.float32),
                                 lo=np.array(-0.3, np.float32), hi=np.array(0.4, np.float32)))

# broadcast binary ops with per-channel constants
BINARY = {
    "Add": "h = Add (a, k)",
    "Add_const_first": "h = Add (k, a)",
    "Sub": "h = Sub (a, k)",
    "Sub_const_first": "h = Sub (k, a)",
    "Mul": "h = Mul (a, k)",
    "Div": "h = Div (a, posk)",
    "PRelu": "h = PRelu (a, k)",
    "Mul_rank4_const": "h = Mul (a, k4)",
    "Mul_scalar": "h = Mul (a, s)",
    "Max_const": "h = Max (a, k)",
}
for _name, _body in BINARY.items():
    case(f"binary-{_name}", chain(_body, k=(8, 1, 1), posk=(8, 1, 1), k4=(1, 8, 1, 1),
                                  s=np.array(1.5, np.float32)))

TWO_BRANCHES = "c = Conv <pads=[1,1,1,1]> (x, w3, b3)\n  h = {op} (a, c)"
for _op in ("Sum", "Max", "Min", "Mean", "Add", "Sub", "Mul"):
    case(f"branches-{_op}", chain(TWO_BRANCHES.format(op=_op), w3=(8, 3, 3, 3), b3=(8,)),
         shrink=("h", "c"))
case("branches-Sum3", chain(
    "c = Conv <pads=[1,1,1,1]> (x, w3, b3)\n  h = Sum (a, c, k)", w3=(8, 3, 3, 3), b3=(8,),
    k=(8, 1, 1)), shrink=("h", "c"))

case("se-gate", chain(
    """p = GlobalAveragePool (a)
  s1 = Conv (p, ws1, bs1)
  r = Relu (s1)
  s2 = Conv (r, ws2, bs2)
  gate = Sigmoid (s2)
  h = Mul (a, gate)""", ws1=(2, 8, 1, 1), bs1=(2,), ws2=(8, 2, 1, 1), bs2=(8,)),
     shrink=("h", "gate"))
case("se-gate-hardsigmoid", chain(
    """p = ReduceMean <axes=[2,3], keepdims=1> (a)
  s1 = Conv (p, ws1)
  r = Relu (s1)
  s2 = Conv (r, ws2, bs2)
  gate = HardSigmoid (s2)
  h = Mul (gate, a)""", opset=13, ws1=(3, 8, 1, 1), ws2=(8, 3, 1, 1), bs2=(8,)),
     shrink=("h", "r"))

# convolutions
case("conv-1d", (f"""{header(17)}
g (float[N,3,L] x) => (float[N,4,Lo] y) {{
  a = Conv <pads=[1,1]> (x, w1, b1)
  h = Relu (a)
  y = Conv <pads=[1,1]> (h, w2, b2)
}}""", {"w1": (8, 3, 3), "b1": (8,), "w2": (4, 8, 3), "b2": (4,)}))
case("conv-3d", (f"""{header(17)}
g (float[N,3,D,H,W] x) => (float[N,4,Do,Ho,Wo] y) {{
  a = Conv <pads=[1,1,1,1,1,1]> (x, w1, b1)
  h = Relu (a)
  y = Conv <kernel_shape=[3,3,3], pads=[1,1,1,1,1,1]> (h, w2, b2)
}}""", {"w1": (8, 3, 3, 3, 3), "b1": (8,), "w2": (4, 8, 3, 3, 3), "b2": (4,)}))
case("conv-2d-strided-dilated-nobias", chain(
    "h = Conv <strides=[2,2], dilations=[2,2], pads=[2,2,2,2]> (a, wc)", mid=6,
    wc=(6, 8, 3, 3)), shrink=("a", "h"))


def _group_attribute(expected: int | str, op: str = "Conv"):
    """Extra check on the middle conv ``h``: ``group`` and weight agree with the new channels.

    ``expected`` is the group count, or "in"/"out" for the conv's new input/output channel count.
    """

    def check(proto, analysis, result):
        node = next(n for n in result.model.graph if n.op_type == op and n.name == "h")
        groups = node.attributes["group"].value
        w = node.inputs[1].const_value.shape
        channels = {"in": node.inputs[0].shape[1], "out": node.outputs[0].shape[1]}
        assert groups == channels.get(expected, expected)
        # Conv: W[Co, Ci/g]; ConvTranspose: W[Ci, Co/g]
        assert (w[1] * groups if op == "Conv" else w[0]) == channels["in"]
        assert (w[0] if op == "Conv" else w[1] * groups) == channels["out"]

    return check


case("conv-grouped-4", chain("h = Conv <pads=[1,1,1,1], group=4> (a, wg, bg)",
                             wg=(8, 2, 3, 3), bg=(8,)),
     shrink=("a", "h"), check=_group_attribute(4))
case("conv-depthwise", chain("d = Conv <pads=[1,1,1,1], group=8> (a, wd, bd)\n  h = Relu (d)",
                             wd=(8, 1, 3, 3), bd=(8,)), shrink=("a", "d", "h"))
case("conv-depthwise-mult2", chain("h = Conv <pads=[1,1,1,1], group=8> (a, wd, bd)",
                                   mid=16, wd=(16, 1, 3, 3), bd=(16,)),
     shrink=("a", "h"), check=_group_attribute("in"))
case("conv-depthwise-direct", chain("h = Conv <pads=[1,1,1,1], group=8> (a, wd, bd)",
                                    wd=(8, 1, 3, 3), bd=(8,)),
     check=_group_attribute("in"))
case("convtranspose-g1", chain("h = ConvTranspose <strides=[2,2]> (a, wt, bt)",
                               mid=6, wt=(8, 6, 2, 2), bt=(6,)),
     shrink=("a", "h"))
case("convtranspose-depthwise", chain(
    "h = ConvTranspose <pads=[1,1,1,1], group=8> (a, wt, bt)", wt=(8, 1, 3, 3), bt=(8,)),
     check=_group_attribute("in", "ConvTranspose"))
case("convtranspose-grouped-2", chain(
    "h = ConvTranspose <pads=[1,1,1,1], group=2> (a, wt, bt)", mid=6, wt=(8, 3, 3, 3),
    bt=(6,)), shrink=("a", "h"), check=_group_attribute(2, "ConvTranspose"))

# matrix products
GEMM = """{hdr}
g (float[N,3,H,W] x) => (float[N,10] y) {{
  a = Conv <pads=[1,1,1,1]> (x, w1, b1)
  p = GlobalAveragePool (a)
  f = Flatten (p)
  g1 = Gemm <transB={tb}{ab}> (f, wg1, bg1)
  h = Relu (g1)
  y = Gemm <transB={tb}> (h, wg2, bg2)
}}"""
for _tb in (0, 1):
    for _bias in ((16,), (1, 16)):
        _flip = bool(_tb)
        _ab = ", alpha=0.5, beta=2.0" if len(_bias) == 2 else ""
        case(f"gemm-transB{_tb}-bias{'x'.join(map(str, _bias))}", (
            GEMM.format(hdr=header(17), tb=_tb, ab=_ab),
            {"w1": (8, 3, 3, 3), "b1": (8,), "wg1": (16, 8) if _flip else (8, 16), "bg1": _bias,
             "wg2": (10, 16) if _flip else (16, 10), "bg2": (10,)}), shrink=("f", "h"))
case("matmul-NTC", (f"""{header(17)}
g (float[N,T,16] x) => (float[N,T,4] y) {{
  m = MatMul (x, wm1)
  a = Add (m, bm1)
  h = Relu (a)
  y = MatMul (h, wm2)
}}""", {"wm1": (16, 8), "bm1": (8,), "wm2": (8, 4)}), shrink=("m", "h"))

# normalizations
case("batchnorm", chain(
    "bn = BatchNormalization (a, sc, sh, mean, var)\n  h = Relu (bn)",
    sc=(8,), sh=(8,), mean=(8,), var=(8,)))
case("batchnorm-no-conv-bias", chain_after_prunable(
    "bn = BatchNormalization <epsilon=0.001> (a, sc, sh, mean, var)\n  h = Relu (bn)",
    sc=(8,), sh=(8,), mean=(8,), var=(8,)), shrink=("h", "zr"))
case("instancenorm", chain("h = InstanceNormalization (a, sc, sh)", sc=(8,), sh=(8,)))
case("layernorm-spatial", chain("h, m, r = LayerNormalization <axis=2> (a, sc, sh)",
                                sc=(10, 12), sh=(10, 12)))
case("layernorm-last-axis", chain("h = LayerNormalization <axis=-1, epsilon=0.001> (a, sc, sh)",
                                  sc=(12,), sh=(12,)))
case("layernorm-channel-blocks",
     chain_after_prunable("h = LayerNormalization <axis=1> (a, sc, sh)",
                          sc=(8, 10, 12), sh=(8, 10, 12)),
     block=BlockReason.AXIS_NOT_PRESERVED, shrink=("zr",))
case("softmax-spatial", chain("h = Softmax <axis=3> (a)"))
SCALARS = {"z0": np.array(0, np.float32), "one": np.array(1, np.float32),
           "two": np.array(2, np.float32)}
MORE_ELEMENTWISE = {
    "Reciprocal": "s = Abs (a)\n  p = Add (s, one)\n  h = Reciprocal (p)",
    "Log": "s = Abs (a)\n  p = Add (s, one)\n  h = Log (p)",
    "Sin": "h = Sin (a)",
    "Cos": "h = Cos (a)",
    "Pow": "s = Abs (a)\n  h = Pow (s, two)",
    "Not-Equal-Where": "e = Equal (a, a)\n  n = Not (e)\n  h = Where (n, z0, a)",
    "IsNaN": "q = IsNaN (a)\n  h = Where (q, z0, a)",
    "IsInf": "q = IsInf (a)\n  h = Where (q, z0, a)",
    "Less": "c = Less (a, z0)\n  h = Where (c, z0, a)",
    "Greater": "c = Greater (a, one)\n  h = Where (c, one, a)",
    "LessOrEqual": "c = LessOrEqual (a, z0)\n  h = Where (c, z0, a)",
    "GreaterOrEqual": "c = GreaterOrEqual (a, one)\n  h = Where (c, one, a)",
    "And": "c1 = Less (a, one)\n  c2 = Greater (a, z0)\n  c = And (c1, c2)\n  h = Where (c, z0, a)",
    "Or": "c1 = Less (a, z0)\n  c2 = Greater (a, one)\n  c = Or (c1, c2)\n  h = Where (c, z0, a)",
    "Xor": "c1 = Less (a, z0)\n  c2 = Greater (a, one)\n  c = Xor (c1, c2)\n  h = Where (c, z0, a)",
}
for _name, _body in MORE_ELEMENTWISE.items():
    case(f"elementwise-{_name}", chain(_body, **SCALARS))
case("expand-broadcast-spatial", chain(
    "r = ReduceMean <axes=[2,3], keepdims=1> (a)\n  h = Expand (r, shp)",
    shp=i64(1, 1, 10, 12)), annotate={"h": ["N", 8, 10, 12]})
case("expand-channel-entry-restated", chain(
    "r = ReduceMean <axes=[2,3], keepdims=1> (a)\n  h = Expand (r, shp)",
    shp=i64(1, 8, 10, 12)), annotate={"h": ["N", 8, 10, 12]})
case("einsum-1x1-conv", chain('h = Einsum <equation="nchw,oc->nohw"> (a, we)', opset=12,
                              mid=6, we=(6, 8)))
case("einsum-channel-scale", chain('h = Einsum <equation="nchw,c->nchw"> (a, sc)', opset=12,
                                   sc=(8,)))
case("gather-rows", chain("h = Gather <axis=2> (a, idx)", idx=i64(0, 2, 4, 6, 8)),
     annotate={"h": ["N", 8, 5, "W"]})
case("tile-channels", chain("h = Tile (a, reps)", mid=16, reps=i64(1, 2, 1, 1)))
case("tile-spatial", chain("h = Tile (a, reps)", reps=i64(1, 1, 2, 1)))
case("tile-repeat-kv-heads", chain(
    "u = Unsqueeze (a, ax2)\n  t = Tile (u, reps)\n  h = Reshape (t, shp)", mid=16,
    ax2=i64(2), reps=i64(1, 1, 2, 1, 1), shp=i64(0, 16, 10, 12)),
    annotate={"h": ["N", 16, 10, 12]})
case("logsoftmax-default-axis", chain("h = LogSoftmax (a)"))
case("hardmax-axis2", chain("h = Hardmax <axis=2> (a)"))
case("softmax-opset11-coerced", chain("h = Softmax <axis=2> (a)", opset=11))
case("softmax-opset11-channel-blocks",
     chain_after_prunable("h = Softmax <axis=1> (a)", opset=11),
     block=BlockReason.AXIS_NOT_PRESERVED, shrink=("zr",))
# softmax and layer norm: the normalized axes stay whole, the others pass through
case("softmax-spatial-opset13", chain("h = Softmax <axis=3> (a)", 13))
case("logsoftmax-opset11-spatial", chain("h = LogSoftmax <axis=2> (a)", 11))
case("hardmax-last-axis", chain("h = Hardmax <axis=-1> (a)", 13))
case("layernorm-last-axis-static-width", (f"""{header(17)}
g (float[N,3,H,6] x) => (float[N,4,H,6] y) {{
  a = Conv <pads=[1,1,1,1]> (x, w1, b1)
  h = LayerNormalization <axis=-1> (a, lns, lnb)
  y = Conv <pads=[1,1,1,1]> (h, w2, b2)
}}""", {"w1": (8, 3, 3, 3), "b1": (8,), "lns": (6,), "lnb": (6,), "w2": (4, 8, 3, 3),
        "b2": (4,)}))
case("block-layernorm-channels-nhwc", chain_after_prunable(
    """t = Transpose <perm=[0,2,3,1]> (a)
  n = LayerNormalization (t, lns, lnb)
  h = Transpose <perm=[0,3,1,2]> (n)""", opset=17, lns=(8,), lnb=(8,)),
     block=BlockReason.AXIS_NOT_PRESERVED, shrink=("zr",))

# layout


def _separate_concat_groups(proto, analysis, result):
    ga, gc = group_ids(analysis, "a"), group_ids(analysis, "c")
    assert ga and gc and not ga & gc, (ga, gc)


case("concat", chain("c = Conv <pads=[1,1,1,1]> (x, w3, b3)\n  h = Concat <axis=1> (a, c)",
                     mid=14, w3=(6, 3, 3, 3), b3=(6,)),
     shrink=("a", "c", "h"), check=_separate_concat_groups)
case("concat-negative-axis", chain(
    "c = Conv <pads=[1,1,1,1]> (x, w3, b3)\n  r = Relu (c)\n  h = Concat <axis=-3> (r, a)",
    mid=14, w3=(6, 3, 3, 3), b3=(6,)), shrink=("a", "c", "h"), check=_separate_concat_groups)

SPLIT2 = """{hdr}
g (float[N,3,H,W] x) => (float[N,4,Ho,Wo] y) {{
  a = Conv <pads=[1,1,1,1]> (x, w1, b1)
  {split}
  c1 = Conv <pads=[1,1,1,1]> (s1, wa, ba)
  c2 = Conv <pads=[1,1,1,1]> (s2, wb, bb)
  y = Add (c1, c2)
}}"""
SPLIT3 = """{hdr}
g (float[N,3,H,W] x) => (float[N,4,Ho,Wo] y) {{
  a = Conv <pads=[1,1,1,1]> (x, w1, b1)
  {split}
  c1 = Conv <pads=[1,1,1,1]> (s1, wa, ba)
  c2 = Conv <pads=[1,1,1,1]> (s2, wb, bb)
  c3 = Conv <pads=[1,1,1,1]> (s3, wc, bc)
  y = Sum (c1, c2, c3)
}}"""


def _split_inits(*sizes):
    inits = {"w1": (sum(sizes), 3, 3, 3), "b1": (sum(sizes),)}
    for k, n in zip("abc", sizes, strict=False):
        inits[f"w{k}"], inits[f"b{k}"] = (4, n, 3, 3), (4,)
    return inits


case("split2-opset13-sizes", (SPLIT2.format(
    hdr=header(13), split="s1, s2 = Split <axis=1> (a, sp)"),
    {**_split_inits(3, 5), "sp": i64(3, 5)}), shrink=("s1", "s2"))
case("split2-opset13-equal", (SPLIT2.format(
    hdr=header(13), split="s1, s2 = Split <axis=1> (a)"), _split_inits(4, 4)),
     shrink=("s1", "s2"))
case("split3-opset13-sizes", (SPLIT3.format(
    hdr=header(13), split="s1, s2, s3 = Split <axis=1> (a, sp)"),
    {**_split_inits(2, 2, 4), "sp": i64(2, 2, 4)}), shrink=("s1", "s2", "s3"))
case("split2-opset18-num_outputs", (SPLIT2.format(
    hdr=header(18), split="s1, s2 = Split <axis=1, num_outputs=2> (a)"), _split_inits(4, 4)),
     shrink=("s1", "s2"))
case("split3-opset18-num_outputs-uneven", (SPLIT3.format(
    hdr=header(18), split="s1, s2, s3 = Split <axis=1, num_outputs=3> (a)"),
    _split_inits(3, 3, 2)), shrink=("s1", "s2"))
case("split3-opset18-num_outputs", (SPLIT3.format(
    hdr=header(18), split="s1, s2, s3 = Split <axis=1, num_outputs=3> (a)"),
    _split_inits(3, 3, 3)), shrink=("s1", "s2", "s3"))
case("split2-opset11-attribute", (SPLIT2.format(
    hdr=header(11), split="s1, s2 = Split <axis=1, split=[3,5]> (a)"), _split_inits(3, 5)),
     shrink=("s1", "s2"))
case("split3-opset11-attribute", (SPLIT3.format(
    hdr=header(11), split="s1, s2, s3 = Split <axis=1, split=[2,4,2]> (a)"),
    _split_inits(2, 4, 2)), shrink=("s1", "s2", "s3"))
case("split2-opset11-equal", (SPLIT2.format(
    hdr=header(11), split="s1, s2 = Split <axis=1> (a)"), _split_inits(4, 4)),
     shrink=("s1", "s2"))
case("split-concat-csp", chain(
    """s1, s2 = Split <axis=1> (a, sp)
  c = Conv <pads=[1,1,1,1]> (s2, wc, bc)
  r = Relu (c)
  h = Concat <axis=1> (s1, r, s2)""", opset=13, mid=12, sp=i64(4, 4), wc=(4, 4, 3, 3),
    bc=(4,)), shrink=("s1", "s2", "r", "h"))

for _name, _body, _mid, _opset in (
    ("slice-opset13", "h = Slice (a, st, en, ax)", 5, 13),
    ("slice-opset13-steps", "h = Slice (a, st, en, ax, one)", 5, 13),
    ("slice-opset13-negative", "h = Slice (a, neg, big, ax)", 6, 13),
    ("slice-opset13-two-axes", "h = Slice (a, st2, en2, ax2)", 5, 13),
    ("slice-opset9-attributes", "h = Slice <starts=[2], ends=[7], axes=[1]> (a)", 5, 9),
):
    case(_name, chain(_body, _opset, mid=_mid, st=i64(2), en=i64(7), ax=i64(1), one=i64(1),
                      neg=i64(-6), big=i64(I64_MAX), st2=i64(2, 1), en2=i64(7, I64_MAX),
                      ax2=i64(1, 2)))

case("transpose-nhwc-tf2onnx", (f"""{header(13)}
g (float[N,H,W,3] x) => (float[N,Ho,Wo,4] y) {{
  xt = Transpose <perm=[0,3,1,2]> (x)
  c = Conv <pads=[1,1,1,1]> (xt, w1)
  a = Transpose <perm=[0,2,3,1]> (c)
  ab = Add (a, b1)
  h = Relu (ab)
  ht = Transpose <perm=[0,3,1,2]> (h)
  c2 = Conv <pads=[1,1,1,1]> (ht, w2)
  y = Transpose <perm=[0,2,3,1]> (c2)
}}""", {"w1": (8, 3, 3, 3), "b1": (8,), "w2": (4, 8, 3, 3)}), shrink=("c", "a", "h", "ht"))

SQUEEZE = """{hdr}
g (float[N,3,H,W] x) => (float[N,4,1,1] y) {{
  a = Conv <pads=[1,1,1,1]> (x, w1, b1)
  p = GlobalAveragePool (a)
  {sq}
  r = Relu (s)
  {unsq}
  y = Conv (h, w2, b2)
}}"""
_sq_inits = {"w1": (8, 3, 3, 3), "b1": (8,), "w2": (4, 8, 1, 1), "b2": (4,), "ax": i64(2, 3)}
case("squeeze-unsqueeze-opset13", (SQUEEZE.format(
    hdr=header(13), sq="s = Squeeze (p, ax)", unsq="h = Unsqueeze (r, ax)"), _sq_inits),
     shrink=("s", "h"))
case("squeeze-unsqueeze-opset11", (SQUEEZE.format(
    hdr=header(11), sq="s = Squeeze <axes=[2,3]> (p)", unsq="h = Unsqueeze <axes=[-1,-2]> (r)"),
    _sq_inits), shrink=("s", "h"))


def _block_of_four(proto, analysis, result):
    shapes = initializer_shapes(result)
    assert shapes["wf"][1] == 4 * shapes["w1"][0], shapes


CLASSIFIER = """{hdr}
g (float[N,3,4,4] x) => (float[N,10] y) {{
  a = Conv <pads=[1,1,1,1], strides=[2,2]> (x, w1, b1)
  r = Relu (a)
  {body}
  y = Gemm <transB=1> (f, wf, bf)
}}"""
_cls_inits = {"w1": (8, 3, 3, 3), "b1": (8,), "wf": (10, 32), "bf": (10,)}
_classifiers = {}
for _name, _body, _opset in (
    ("flatten-2x2", "f = Flatten (r)", 13),
    ("flatten-opset9", "f = Flatten <axis=1> (r)", 9),
    ("reshape-0-minus1", "f = Reshape (r, t)", 13),
    ("reshape-minus1-32", "f = Reshape (r, t2)", 13),
    ("reshape-0-32", "f = Reshape (r, t3)", 13),
    ("reshape-shape-gather-batch", """s = Shape (r)
  n = Gather <axis=0> (s, i0)
  nu = Unsqueeze (n, ax0)
  tc = Concat <axis=0> (nu, m1)
  f = Reshape (r, tc)""", 13),
    # tf2onnx: NHWC before the classifier; the channel axis is the minor one of the merge
    ("flatten-nhwc", """rt = Transpose <perm=[0,2,3,1]> (r)
  f = Flatten (rt)""", 13),
    ("reshape-nhwc", """rt = Transpose <perm=[0,2,3,1]> (r)
  f = Reshape (rt, t)""", 13),
    ("reshape-shape-gather-chw", """s = Shape (r)
  c = Gather <axis=0> (s, i1)
  hh = Gather <axis=0> (s, i2)
  ww = Gather <axis=0> (s, i3)
  chw1 = Mul (c, hh)
  chw = Mul (chw1, ww)
  cu = Unsqueeze (chw, ax0)
  tc = Concat <axis=0> (m1, cu)
  f = Reshape (r, tc)""", 13),
):
    _cls = (CLASSIFIER.format(hdr=header(_opset), body=_body), {
        **_cls_inits, "t": i64(0, -1), "t2": i64(-1, 32), "t3": i64(0, 32), "i0": i64(0)[0],
        "i1": i64(1)[0], "i2": i64(2)[0], "i3": i64(3)[0], "ax0": i64(0), "m1": i64(-1)})
    _classifiers[_name] = _cls
    case(_name, _cls, shrink=("r", "f"), check=_block_of_four)
    case(f"{_name}-constant-nodes", _cls, shrink=("r", "f"), check=_block_of_four,
         constants=("t", "t2", "t3", "i0", "i1", "i2", "i3", "ax0", "m1", "b1"))
# The same model with the Reshape output's shape stated, as some exporters write it: the rule
# itself handles the run-time batch piece of the target.
case("reshape-shape-gather-batch-annotated", _classifiers["reshape-shape-gather-batch"],
     shrink=("r", "f"), check=_block_of_four,
     annotate={"f": ["N", 32]})

SHUFFLE = """{hdr}
g (float[{n},3,6,6] x) => (float[{n},4,6,6] y) {{
  a = Conv <pads=[1,1,1,1]> (x, w1, b1)
  r = Reshape (a, t1)
  tr = Transpose <perm=[0,2,1,3,4]> (r)
  h = Reshape (tr, t2)
  y = Conv <pads=[1,1,1,1]> (h, w2, b2)
}}"""
for _name, _n, _t1, _t2 in (
    ("shuffle-static", "2", i64(2, 2, 4, 6, 6), i64(2, 8, 6, 6)),
    ("shuffle-zero-batch", "N", i64(0, 2, 4, 6, 6), i64(0, -1, 6, 6)),
):
    case(_name, (SHUFFLE.format(hdr=header(13), n=_n), {
        "w1": (8, 3, 3, 3), "b1": (8,), "w2": (4, 8, 3, 3), "b2": (4,), "t1": _t1, "t2": _t2}),
        shrink=("a", "r", "tr", "h"))

# spatial ops
SPATIAL = {
    "MaxPool": ("h = MaxPool <kernel_shape=[2,2], strides=[2,2]> (a)", 17),
    "MaxPool-pads": ("h = MaxPool <kernel_shape=[3,3], pads=[1,1,1,1]> (a)", 12),
    "AveragePool": ("h = AveragePool <kernel_shape=[3,3], pads=[1,1,1,1]> (a)", 17),
    "LpPool": ("h = LpPool <kernel_shape=[2,2], p=2> (a)", 17),
    "GlobalMaxPool": ("h = GlobalMaxPool (a)", 17),
    "GlobalAveragePool": ("h = GlobalAveragePool (a)", 17),
    "GlobalLpPool": ("h = GlobalLpPool <p=2> (a)", 17),
    "ReduceMean-keepdims-opset13": ("h = ReduceMean <axes=[2,3], keepdims=1> (a)", 13),
    "ReduceMean-keepdims-opset18": ("h = ReduceMean <keepdims=1> (a, ax23)", 18),
    "ReduceMax-opset13": ("h = ReduceMax <axes=[-2,-1]> (a)", 13),
    "ReduceMin-opset18": ("h = ReduceMin (a, ax23)", 18),
    "ReduceSum-opset13": ("h = ReduceSum (a, ax23)", 13),
    "ReduceL1-opset13": ("h = ReduceL1 <axes=[2,3]> (a)", 13),
    "ReduceL2-opset18": ("h = ReduceL2 (a, ax23)", 18),
    "Resize-scales-nearest": ("h = Resize <mode=\"nearest\"> (a, , sc)", 13),
    "Resize-scales-linear": ("h = Resize <mode=\"linear\"> (a, roi, sc)", 11),
    "Resize-sizes": ("h = Resize <mode=\"nearest\"> (a, , , sz)", 13),
    "Resize-sizes-axes-opset18": ("h = Resize <mode=\"nearest\", axes=[2,3]> (a, , , sz2)", 18),
    "Upsample-opset9": ("h = Upsample <mode=\"nearest\"> (a, sc)", 9),
    "Pad-opset11": ("h = Pad (a, pads)", 11),
    "Pad-opset13-value": ("h = Pad <mode=\"constant\"> (a, pads, cv)", 13),
    "Pad-opset13-reflect": ("h = Pad <mode=\"reflect\"> (a, pads)", 13),
    "Pad-opset18-axes": ("h = Pad (a, pads2, , ax23)", 18),
    "Pad-opset2-attribute": ("h = Pad <pads=[0,0,1,2,0,0,2,1]> (a)", 2),
}
_spatial_inits = {
    "ax23": i64(2, 3), "sc": f32(1, 1, 2, 2), "roi": np.zeros(0, np.float32),
    "sz": i64(2, 8, 7, 9), "sz2": i64(7, 9), "pads": i64(0, 0, 1, 2, 0, 0, 2, 1),
    "pads2": i64(1, 2, 2, 1), "cv": np.array(0.5, np.float32),
}
for _name, (_body, _opset) in SPATIAL.items():
    case(f"spatial-{_name}", chain(_body, _opset, **_spatial_inits))
case("reducemean-keepdims0-gemm-opset13", (f"""{header(13)}
g (float[N,3,H,W] x) => (float[N,10] y) {{
  a = Conv <pads=[1,1,1,1]> (x, w1, b1)
  h = ReduceMean <axes=[2,3], keepdims=0> (a)
  y = Gemm <transB=1> (h, wf, bf)
}}""", {"w1": (8, 3, 3, 3), "b1": (8,), "wf": (10, 8), "bf": (10,)}))
case("reducemean-keepdims0-gemm-opset18", (f"""{header(18)}
g (float[N,3,H,W] x) => (float[N,10] y) {{
  a = Conv <pads=[1,1,1,1]> (x, w1, b1)
  h = ReduceMean <keepdims=0> (a, ax)
  y = Gemm <transB=1> (h, wf, bf)
}}""", {"w1": (8, 3, 3, 3), "b1": (8,), "wf": (10, 8), "bf": (10,), "ax": i64(-1, -2)}))

# blocking cases: ``a`` (the second conv's output) cannot be pruned; the first conv still is
BLOCKING = {
    "LRN": ("h = LRN <size=3> (a)", BlockReason.UNKNOWN_OP, 8, {}),
    "Softmax-channel": ("h = Softmax <axis=1> (a)", BlockReason.AXIS_NOT_PRESERVED, 8, {}),
    "graph-output-mid": ("h = Relu (a)", BlockReason.GRAPH_IO, 8, {"outs": ", float[N,8,H,W] h"}),
    "Pad-channel": ("h = Pad (a, pads)", BlockReason.AXIS_NOT_PRESERVED, 10,
                    {"pads": i64(0, 1, 0, 0, 0, 1, 0, 0)}),
    "ReduceMean-channel": ("h = ReduceMean <axes=[1]> (a)", BlockReason.AXIS_NOT_PRESERVED, 1,
                           {}),
    "ReduceSum-all": ("h = ReduceSum <keepdims=1> (a)", BlockReason.AXIS_NOT_PRESERVED, 1, {}),
    "Slice-step2": ("h = Slice (a, st, en, ax, two)", BlockReason.AXIS_NOT_PRESERVED, 4,
                    {"st": i64(0), "en": i64(8), "ax": i64(1), "two": i64(2)}),
    "Slice-step-minus1": ("h = Slice (a, st, en, ax, m1)", BlockReason.AXIS_NOT_PRESERVED, 8,
                          {"st": i64(-1), "en": i64(-I64_MAX), "ax": i64(1), "m1": i64(-1)}),
    "If-subgraph": ("""h = If (cond) <
    then_branch = g1 () => (float[N,8,H,W] o1) { o1 = Relu (a) },
    else_branch = g2 () => (float[N,8,H,W] o2) { o2 = Identity (a) }>""",
                    BlockReason.SUBGRAPH, 8, {}),
    "MaxPool-indices-used": ("""mp, idx = MaxPool <kernel_shape=[2,2], strides=[2,2]> (a)
  fi = Cast <to=1> (idx)
  z0 = Mul (fi, zero)
  h = Add (mp, z0)""", BlockReason.UNSUPPORTED_ATTRIBUTE, 8, {"zero": np.array(0, np.float32)}),
}
for _name, (_body, _reason, _mid, _extra) in BLOCKING.items():
    _outs = _extra.pop("outs", "")
    _text, _inits = chain_after_prunable(_body, mid=_mid, outs=_outs, **_extra)
    if _name == "If-subgraph":
        _text = _text.replace("float[N,3,H,W] x)", "float[N,3,H,W] x, bool cond)")
    case(f"block-{_name}", (_text, _inits), block=_reason, shrink=("zr",))
case("block-custom-domain", chain_after_prunable(
    "h = ai.example.Frobnicate (a)", extra=', "ai.example" : 1'),
     block=BlockReason.UNKNOWN_OP, shrink=(), runnable=False)

# MaxPool's indices depend on the channel count (flat NCHW offsets): as a graph output they must
# block the channels just as a use does.
_text, _inits = chain_after_prunable(
    "h, idx = MaxPool <kernel_shape=[2,2], strides=[2,2]> (a)",
    outs=", int64[N,8,Hi,Wi] idx")
case("block-MaxPool-indices-graph-output", (_text, _inits),
     block=BlockReason.UNSUPPORTED_ATTRIBUTE, shrink=("zr",))


# exporter forms and shared constants
case("constant-nodes-conv-params", chain("h = Mul (a, k)", k=(8, 1, 1)),
     constants=("w1", "b1", "k", "w2"))
case("constant-node-split-sizes", (SPLIT2.format(
    hdr=header(13), split="s1, s2 = Split <axis=1> (a, sp)"),
    {**_split_inits(3, 5), "sp": i64(3, 5)}), shrink=("s1", "s2"), constants=("sp",))
# torch writes tied/deduplicated weights as Identity(initializer): the conv's output channels
# stay prunable: the Identity output counts as a constant when deciding what feeds the conv.
case("conv-weight-through-Identity", chain(
    "wi = Identity (wc)\n  h = Conv <pads=[1,1,1,1]> (a, wi)", wc=(8, 8, 3, 3)),
     shrink=("a", "h"))
case("shared-weight-two-convs", chain(
    """c = Conv <pads=[1,1,1,1]> (x, w1, b1)
  r = Relu (c)
  s = Conv <pads=[1,1,1,1]> (a, wc)
  t = Conv <pads=[1,1,1,1]> (r, wc)
  h = Concat <axis=1> (s, t)""", mid=16, wc=(8, 8, 3, 3)), shrink=("a", "c", "s", "t"))
case("shared-per-channel-constant", chain(
    """c = Conv <pads=[1,1,1,1]> (x, w3, b3)
  ak = Add (a, k)
  ck = Add (c, k)
  h = Concat <axis=1> (ak, ck)""", mid=16, w3=(8, 3, 3, 3), b3=(8,), k=(8, 1, 1)),
     shrink=("a", "c"))
case("slice-shared-bounds", chain(
    """c = Conv <pads=[1,1,1,1]> (x, w3, b3)
  sa = Slice (a, st, en, ax)
  sc = Slice (c, st, en, ax)
  h = Add (sa, sc)""", opset=13, mid=5, w3=(8, 3, 3, 3), b3=(8,), st=i64(2), en=i64(7),
    ax=i64(1)), shrink=("a", "c", "h"))
case("reshape-shared-target", (SHUFFLE.format(hdr=header(13), n="N").replace(
    "y = Conv <pads=[1,1,1,1]> (h, w2, b2)",
    "c = Conv <pads=[1,1,1,1]> (h, w2, b2)\n  rc = Reshape (c, t1)\n  trc = Transpose "
    "<perm=[0,2,1,3,4]> (rc)\n  y = Reshape (trc, t2)"), {
    "w1": (8, 3, 3, 3), "b1": (8,), "w2": (8, 8, 3, 3), "b2": (8,), "t1": i64(0, 2, 4, 6, 6),
    "t2": i64(0, 8, 6, 6)}), shrink=("a", "h"))
CASES["reshape-shared-target"][0].text = CASES["reshape-shared-target"][0].text.replace(
    "float[N,4,6,6] y", "float[N,8,6,6] y")
case("concat-split-misaligned", chain(
    """c = Conv <pads=[1,1,1,1]> (x, w3, b3)
  cat = Concat <axis=1> (a, c)
  s1, s2 = Split <axis=1> (cat, sp)
  c1 = Conv <pads=[1,1,1,1]> (s1, wa)
  c2 = Conv <pads=[1,1,1,1]> (s2, wb)
  h = Add (c1, c2)""", opset=13, mid=4, w3=(6, 3, 3, 3), b3=(6,), sp=i64(5, 9),
    wa=(4, 5, 3, 3), wb=(4, 9, 3, 3)), shrink=("a", "c", "s1", "s2"))
case("residual-add-chain", chain(
    """r = Relu (a)
  c = Conv <pads=[1,1,1,1]> (r, w3, b3)
  d = Add (c, a)
  rd = Relu (d)
  e = Conv <pads=[1,1,1,1]> (rd, w4, b4)
  h = Add (e, d)""", w3=(8, 8, 3, 3), b3=(8,), w4=(8, 8, 3, 3), b4=(8,)), shrink=("a", "c", "e"))
case("matmul-weight-left", (f"""{header(17)}
g (float[N,16,T] x) => (float[N,4,T] y) {{
  m = MatMul (wl, x)
  h = Relu (m)
  y = MatMul (wl2, h)
}}""", {"wl": (8, 16), "wl2": (4, 8)}), shrink=("m", "h"))
case("convtranspose-depthwise-mult2-inputs", chain(
    "h = ConvTranspose <pads=[1,1,1,1], group=8> (a, wt, bt)", w1=(16, 3, 3, 3), b1=(16,),
    wt=(16, 1, 3, 3), bt=(8,)), shrink=("a", "h"), check=_group_attribute("out", "ConvTranspose"))
case("upsample-opset7-attribute", chain(
    "h = Upsample <mode=\"nearest\", scales=[1.0, 1.0, 2.0, 2.0]> (a)", 7))
case("block-Shape-read-at-runtime", chain_after_prunable(
    """s = Shape (a)
  m = ReduceMax <keepdims=0> (s)
  mf = Cast <to=1> (m)
  h = Mul (a, mf)""", opset=13), block=BlockReason.AXIS_NOT_PRESERVED, shrink=("zr",))


# more layouts seen in exported models
case("gemm-transA", (f"""{header(13)}
g (float[N,3,H,W] x) => (float[N,10] y) {{
  a = Conv <pads=[1,1,1,1]> (x, w1, b1)
  p = GlobalAveragePool (a)
  f = Flatten (p)
  ft = Transpose (f)
  h = Gemm <transA=1, transB=1> (ft, wg, bg)
  y = Gemm <transB=1> (h, wg2, bg2)
}}""", {"w1": (8, 3, 3, 3), "b1": (8,), "wg": (16, 8), "bg": (16,), "wg2": (10, 16),
        "bg2": (10,)}), shrink=("f", "ft", "h"))
case("slice-negative-axis", chain("h = Slice (a, st, en, ax)", 13, mid=5, st=i64(2), en=i64(7),
                                  ax=i64(-3)))
case("static-batch1-reshape", (f"""{header(13)}
g (float[1,3,4,4] x) => (float[1,10] y) {{
  a = Conv <pads=[1,1,1,1], strides=[2,2]> (x, w1, b1)
  r = Relu (a)
  f = Reshape (r, t)
  y = Gemm <transB=1> (f, wf, bf)
}}""", {"w1": (8, 3, 3, 3), "b1": (8,), "wf": (10, 32), "bf": (1, 10), "t": i64(1, -1)}),
     shrink=("r", "f"), check=_block_of_four)
SE_LINEAR = """{hdr}
g (float[N,3,H,W] x) => (float[N,4,Ho,Wo] y) {{
  a = Conv <pads=[1,1,1,1]> (x, w1, b1)
  p = GlobalAveragePool (a)
  f = Flatten (p)
  l1 = Gemm <transB=1> (f, wl1, bl1)
  r = Relu (l1)
  l2 = Gemm <transB=1> (r, wl2, bl2)
  sg = Sigmoid (l2)
  {view}
  h = Mul (a, gate)
  y = Conv <pads=[1,1,1,1]> (h, w2, b2)
}}"""
_se_inits = {"w1": (8, 3, 3, 3), "b1": (8,), "wl1": (2, 8), "bl1": (2,), "wl2": (8, 2),
             "bl2": (8,), "w2": (4, 8, 3, 3), "b2": (4,), "t": i64(-1, 8, 1, 1), "i0": i64(0)[0],
             "i1": i64(1)[0], "ax0": i64(0), "one": i64(1)}
case("se-linear-view-constant", (SE_LINEAR.format(
    hdr=header(13), view="gate = Reshape (sg, t)"), _se_inits), shrink=("h", "gate", "r"))
case("se-linear-view-shape-gather", (SE_LINEAR.format(hdr=header(13), view="""s = Shape (a)
  n = Gather <axis=0> (s, i0)
  c = Gather <axis=0> (s, i1)
  nu = Unsqueeze (n, ax0)
  cu = Unsqueeze (c, ax0)
  tc = Concat <axis=0> (nu, cu, one, one)
  gate = Reshape (sg, tc)"""), _se_inits), shrink=("h", "gate", "r"))
case("concat-spatial-static", (chain(
    "c = Conv <pads=[1,1,1,1]> (x, w3, b3)\n  h = Concat <axis=2> (a, c)")[0].replace(
    "float[N,3,H,W] x", "float[N,3,6,6] x"), {**chain("")[1], "w3": (8, 3, 3, 3), "b3": (8,)}),
     shrink=("h", "c"))
# A spatial concat of a dynamic height: the offsets are unknown, the channels still pass through.
case("concat-spatial-dynamic", (chain(
    "c = Conv <pads=[1,1,1,1]> (x, w3, b3)\n  h = Concat <axis=2> (a, c)")[0],
    {**chain("")[1], "w3": (8, 3, 3, 3), "b3": (8,)}), shrink=("h", "c"))
case("split-spatial-static", (f"""{header(13)}
g (float[N,3,8,8] x) => (float[N,4,4,8] y) {{
  a = Conv <pads=[1,1,1,1]> (x, w1, b1)
  s1, s2 = Split <axis=2> (a, sp)
  h = Add (s1, s2)
  y = Conv <pads=[1,1,1,1]> (h, w2, b2)
}}""", {"w1": (8, 3, 3, 3), "b1": (8,), "w2": (4, 8, 3, 3), "b2": (4,), "sp": i64(4, 4)}),
     shrink=("h", "s1", "s2"))
case("ntc-transpose-conv1d", (f"""{header(13)}
g (float[N,T,16] x) => (float[N,T,4] y) {{
  m = MatMul (x, wm)
  mt = Transpose <perm=[0,2,1]> (m)
  c = Conv <pads=[1,1]> (mt, wc, bc)
  r = Relu (c)
  h = Transpose <perm=[0,2,1]> (r)
  y = MatMul (h, wm2)
}}""", {"wm": (16, 8), "wc": (8, 8, 3), "bc": (8,), "wm2": (8, 4)}), shrink=("m", "h"))
case("batchnorm1d-after-gemm", (f"""{header(13)}
g (float[N,16] x) => (float[N,4] y) {{
  l = Gemm <transB=1> (x, w1, b1)
  bn = BatchNormalization (l, sc, sh, mean, var)
  h = Relu (bn)
  y = Gemm <transB=1> (h, w2, b2)
}}""", {"w1": (8, 16), "b1": (8,), "sc": (8,), "sh": (8,), "mean": (8,), "var": (8,),
        "w2": (4, 8), "b2": (4,)}))
case("concat-same-input-twice", chain("h = Concat <axis=1> (a, a)", mid=16))
case("resize-sizes-two-nodes", chain(
    """c = Conv <pads=[1,1,1,1]> (x, w3, b3)
  ra = Resize <mode="nearest"> (a, , , sz)
  rc = Resize <mode="nearest"> (c, , , sz)
  h = Add (ra, rc)""", 13, w3=(8, 3, 3, 3), b3=(8,), sz=i64(2, 8, 7, 9)), shrink=("h", "c"))

# exporter forms found by tests/test_exporters.py
# TorchScript writes F.pad's pads as ConstantOfShape -> Concat -> Reshape -> Slice -> Transpose.
case("pad-pads-computed-from-constants", chain(
    """k = ConstantOfShape <value = int64[1] {0}> (four)
  cat = Concat <axis=0> (ones, k)
  r = Reshape (cat, m12)
  sl = Slice (r, st, en, ax, stp)
  tr = Transpose <perm=[1,0]> (sl)
  rr = Reshape (tr, m1)
  pc = Cast <to=7> (rr)
  h = Pad (a, pc)""", 13, four=i64(4), ones=i64(1, 1, 1, 1), m12=i64(-1, 2), st=i64(-1),
    en=i64(-I64_MAX), ax=i64(0), stp=i64(-1), m1=i64(-1)))
# A freshly built BatchNorm has running_var == weight (ones) and running_mean == bias (zeros);
# torch ties them, writing the statistics as Identity of the parameters.
case("batchnorm-stats-through-Identity", chain(
    """mi = Identity (sh)
  vi = Identity (posv)
  h = BatchNormalization (a, posv, sh, mi, vi)""", sh=(8,), posv=(8,)))

# QDQ quantization (onnxruntime's quantize_static): int8 weights with per-channel scales and zero
# points, an int32 bias, activations quantized per tensor.
case("qdq-per-channel-weights", chain(
    """q = QuantizeLinear (a, sa, za)
  dq = DequantizeLinear (q, sa, za)
  wd = DequantizeLinear <axis=0> (wq, ws, wz)
  bd = DequantizeLinear <axis=0> (bq, bs)
  c = Conv <pads=[1,1,1,1]> (dq, wd, bd)
  h = Relu (c)""", sa=np.array(0.05, np.float32), za=np.array(128, np.uint8),
    wq=np.random.default_rng(3).integers(-100, 100, (8, 8, 3, 3)).astype(np.int8),
    ws=f32(*np.linspace(0.002, 0.004, 8)), wz=np.arange(-4, 4).astype(np.int8),
    bq=np.arange(-40, 40, 10).astype(np.int32), bs=f32(*np.linspace(1e-4, 2e-4, 8))),
     shrink=("a", "c", "h"))
# integer and per-channel quantization: tests/test_quant_rules.py

# onnxruntime's offline optimizer: com.microsoft FusedConv (with a sum input) and FusedGemm.
_fused_text, _fused_inits = chain(
    """z = Conv <pads=[1,1,1,1]> (x, w3, b3)
  h = com.microsoft.FusedConv <activation="LeakyRelu", activation_params=[0.1], pads=[1,1,1,1]>
      (a, wf, bf, z)""", w3=(8, 3, 3, 3), b3=(8,), wf=(8, 8, 3, 3), bf=(8,))
case("contrib-FusedConv-sum-input", (_fused_text.replace(
    header(17), header(17, ', "com.microsoft" : 1')), _fused_inits), shrink=("a", "h", "z"))
case("contrib-FusedGemm", (f"""{header(13, ', "com.microsoft" : 1')}
g (float[N,16] x) => (float[N,4] y) {{
  a = Gemm <transB=1> (x, w1, b1)
  h = com.microsoft.FusedGemm <transB=1, activation="Relu"> (a, w2, b2)
  y = Gemm <transB=1> (h, w3, b3)
}}""", {"w1": (8, 16), "b1": (8,), "w2": (6, 8), "b2": (6,), "w3": (4, 6), "b3": (4,)}),
     shrink=("a", "h"))


# --- tests ------------------------------------------------------------------------------------


def _params():
    return [pytest.param(c, id=name, marks=marks) for name, (c, marks) in CASES.items()]


@pytest.mark.parametrize("spec", _params())
def test_rule_case(spec: Case):
    proto = model(spec.text, constants=spec.constants, **spec.inits)
    for name, dims in spec.annotate.items():
        proto.graph.value_info.append(
            onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, dims))
    analysis = graphprune.analyze(ir.from_proto(proto))
    if spec.block is not None:
        reasons = [b.reason for entry, b in analysis.blocked_sources
                   if entry.value.name == spec.block_at and entry.axis == 1]
        assert spec.block in reasons, [(e.name, b.describe()) for e, b in analysis.blocked_sources]
        assert not group_ids(analysis, spec.block_at)
    else:
        assert group_ids(analysis, spec.shrink[0], None), "the op's channels are not in any group"
    if not spec.runnable:
        return
    feeds = feeds_for(proto, feed_shapes(proto))
    check_random_selections(proto, seeds=(0, 1, 2), feeds=feeds)
    result = prune_proto(proto, ratio=0.5, round_to=1)
    assert_mask_equivalent(proto, result, feeds)
    assert result.after.params < result.before.params
    for name in spec.shrink:
        assert shrunk(result, name), f"{name} kept all its channels"
    if spec.block is not None:
        assert not shrunk(result, spec.block_at)
    if spec.check is not None:
        spec.check(proto, analysis, result)


def test_every_registered_op_has_a_case():
    from tests.test_quant_rules import QUANT_CASES

    covered = set()
    for spec in [c for c, _ in CASES.values()] + list(QUANT_CASES.values()):
        proto = model(spec.text, constants=spec.constants, **spec.inits)
        covered |= {n.op_type for n in proto.graph.node}
    channel_rules = {op for domain, op, r in registered() if domain == "" and not r.cost_only}
    missing = channel_rules - covered  # cost-only rules block everything (tests/test_costs.py)
    assert not missing, sorted(missing)


def test_einsum_equations():
    from graphprune.ops.einsum import parse_equation

    assert parse_equation("bhid, bhjd -> bhij", 2) == (["bhid", "bhjd"], "bhij")
    assert parse_equation("ij,jk", 2) == (["ij", "jk"], "ik")
    assert parse_equation("...ij,jk->...ik", 2) is None
    assert parse_equation("ii->i", 1) is None
