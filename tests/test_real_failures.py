"""Graph-level failures found on real third-party models, each reduced to a tiny model.

Every case failed on the code before its fix (internal error, an invalid or wrong pruned model)
and must now prune with the mask-equivalence oracle holding, or be left whole with a reason.
"""

from __future__ import annotations

import warnings

import numpy as np
import onnx
import onnx_ir as ir
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import graphprune
from graphprune import cli
from tests.oracle import assert_mask_equivalent, check_random_selections, feeds_for
from tests.test_rules import header, model


def attention(shared_target: str, **inits) -> onnx.ModelProto:
    """One self-attention block whose Q, K and V reshapes read one target ``t``.

    ``t`` is ``[N, L, -1, 4]`` (4-dim heads); ``shared_target`` is the text that computes it.
    """
    text = f"""{header(17)}
g (float[N,L,16] x) => (float[N,L,16] y) {{
  q0 = MatMul (x, wq)
  k0 = MatMul (x, wk)
  v0 = MatMul (x, wv)
  {shared_target}
  q1 = Reshape (q0, t)
  k1 = Reshape (k0, t)
  v1 = Reshape (v0, t)
  q = Transpose <perm=[0,2,1,3]> (q1)
  k = Transpose <perm=[0,2,3,1]> (k1)
  v = Transpose <perm=[0,2,1,3]> (v1)
  s = MatMul (q, k)
  p = Sigmoid (s)
  o = MatMul (p, v)
  o1 = Transpose <perm=[0,2,1,3]> (o)
  m = Constant <value = int64[3] {{0, 0, 16}}> ()
  o2 = Reshape (o1, m)
  y = MatMul (o2, wo)
}}"""
    return model(text, wq=(16, 16), wk=(16, 16), wv=(16, 16), wo=(16, 16), **inits)


CONCAT_TARGET = """n = Shape <start=0, end=1> (x)
  l = Shape <start=1, end=2> (x)
  t = Concat <axis=0> (n, l, minus, dh)"""


def attention_feeds(proto):
    return feeds_for(proto, {"x": (2, 5, 16)})


def test_shared_concat_target_is_copied_per_reshape():
    """Q, K and V read one shared Concat target; pruning must leave each reshape valid.

    Whole heads are one group here (Q, K, V columns of a head together), so every reshape gets
    the same head count.
    """
    proto = attention(CONCAT_TARGET, minus=np.array([-1], np.int64), dh=np.array([4], np.int64))
    analysis = graphprune.analyze(ir.from_proto(proto))
    assert [g.kind for g in analysis.groups] == ["heads"]
    check_random_selections(proto, seeds=(0, 1, 2, 3), feeds=attention_feeds(proto))


def test_shared_constant_target_is_copied_per_reshape():
    """The same block with a constant target (one initializer read by three reshapes)."""
    proto = attention("", t=np.array([0, 0, -1, 4], np.int64))
    check_random_selections(proto, seeds=(0, 1, 2, 3), feeds=attention_feeds(proto))


def test_reshape_zero_with_unknown_input_rank_is_not_a_literal_zero():
    """``Reshape(r, [0, -1])`` after a reshape of unknown rank: dim 0 is unknown, not 0.

    Writing 0 into the value's shape made the full checker reject the untouched model (the Add
    with a ``[2, 60]`` bias then broadcasts 0 against 2).
    """
    text = f"""{header(17)}
g (float[N,3,H,W] x, int64[S] s, float[2,60] b) => (float[2,60] z, float[N,4,H,W] y) {{
  a = Conv <pads=[1,1,1,1]> (x, w1)
  ar = Relu (a)
  y = Conv <pads=[1,1,1,1]> (ar, w2)
  r = Reshape (x, s)
  t = Constant <value = int64[2] {{0, -1}}> ()
  u = Reshape (r, t)
  z = Add (u, b)
}}"""
    proto = model(text, w1=(8, 3, 3, 3), w2=(4, 8, 3, 3))
    result = graphprune.prune(ir.from_proto(proto), 0.5, round_to=1)
    assert result.masks  # the convs still prune
    u = next(n for n in result.model.graph if n.name == "u").outputs[0]
    assert u.shape is None or not isinstance(u.shape[0], int) or u.shape[0] != 0
    feeds = feeds_for(proto, {"x": (2, 3, 4, 5), "s": (2,)})
    feeds["s"] = np.array([2, 60], np.int64)
    assert_mask_equivalent(proto, result, feeds)


def test_negative_batch_dim_is_dynamic_not_a_size():
    """paddle2onnx writes a dynamic batch as ``dim_value: -1``; it must not size an axis -1.

    Read as a size, every batch axis got -1 elements, the element ids of the analysis overlapped
    and nearly every channel came out blocked (one group left in the PP-OCR classifier).
    """
    text = f"""{header(17)}
g (float[N,3,H,W] x) => (float[N,4,H,W] y) {{
  a = Conv <pads=[1,1,1,1]> (x, w1, b1)
  ar = Relu (a)
  c = Conv <pads=[1,1,1,1]> (ar, w2, b2)
  cr = Relu (c)
  y = Conv <pads=[1,1,1,1]> (cr, w3)
}}"""
    proto = model(text, w1=(8, 3, 3, 3), b1=(8,), w2=(6, 8, 3, 3), b2=(6,), w3=(4, 6, 3, 3))
    for value in (proto.graph.input[0], proto.graph.output[0]):
        value.type.tensor_type.shape.dim[0].dim_value = -1
    onnx.checker.check_model(proto, full_check=True)
    analysis = graphprune.analyze(ir.from_proto(proto))
    assert all(entry.size >= 1 for entry in analysis.table.axes)
    assert len(analysis.groups) == 2
    check_random_selections(proto, feeds=feeds_for(proto, {"x": (2, 3, 5, 6)}))


def _unsorted(text: str, **inits) -> onnx.ModelProto:
    """``model(text)`` with its nodes written in reverse order (onnxruntime still runs it)."""
    proto = model(text, **inits)
    nodes = list(proto.graph.node)
    del proto.graph.node[:]
    proto.graph.node.extend(reversed(nodes))
    return proto


UNSORTED = f"""{header(17)}
g (float[1,3,6,6] x) => (float[1,4,6,6] y) {{
  a = Conv <pads=[1,1,1,1]> (x, w1, b1)
  ar = Relu (a)
  y = Conv <pads=[1,1,1,1]> (ar, w2)
}}"""
UNSORTED_INITS = {"w1": (8, 3, 3, 3), "b1": (8,), "w2": (4, 8, 3, 3)}


def test_unsorted_nodes_are_sorted_on_load_and_in_the_output(tmp_path):
    proto = _unsorted(UNSORTED, **UNSORTED_INITS)
    path, out = tmp_path / "unsorted.onnx", tmp_path / "pruned.onnx"
    onnx.save(proto, path)
    code = cli.main([str(path), "-o", str(out), "--ratio", "0.5", "--round-to", "1",
                     "--no-bench"])
    assert code == 0
    pruned = onnx.load(out)
    onnx.checker.check_model(pruned, full_check=True)  # sorted: the checker requires it
    assert {t.name: t.dims[0] for t in pruned.graph.initializer}["w1"] < 8
    result = graphprune.prune(ir.from_proto(proto), 0.5, round_to=1)
    assert_mask_equivalent(proto, result, feeds_for(proto))


def test_a_cycle_is_refused_with_the_checker_reason(tmp_path, capsys):
    text = f"""{header(17)}
g (float[1,3,6,6] x) => (float[1,3,6,6] y) {{
  a = Add (x, b)
  b = Relu (a)
  y = Identity (b)
}}"""
    proto = onnx.parser.parse_model(text)
    path = tmp_path / "cycle.onnx"
    onnx.save(proto, path)
    assert cli.main([str(path), "-o", str(tmp_path / "out.onnx"), "--no-bench"]) == 2
    assert "topologically sorted" in capsys.readouterr().err


def _resize_net(sizes: str, **inits) -> onnx.ModelProto:
    """Conv(8) -> Resize(sizes) -> Conv(4), H and W dynamic; ``sizes`` computes ``sz``."""
    text = f"""{header(17)}
g (float[N,3,H,W] x, float[N,5,P,Q] ref) => (float[N,4,P,Q] y) {{
  a = Conv <pads=[1,1,1,1]> (x, w1, b1)
  ar = Relu (a)
  {sizes}
  u = Resize <mode="nearest"> (ar, roi, sc, sz)
  y = Conv <pads=[1,1,1,1]> (u, w2, b2)
}}"""
    return model(text, w1=(8, 3, 3, 3), b1=(8,), w2=(4, 8, 3, 3), b2=(4,),
                 roi=np.zeros(0, np.float32), sc=np.zeros(0, np.float32), **inits)


RESIZE_FEEDS = {"x": (2, 3, 4, 5), "ref": (2, 5, 8, 10)}


def test_resize_sizes_from_the_inputs_own_shape_prune():
    """``interpolate(x, size=ref.shape[2:])``: sizes = concat(shape(x)[:2], shape(ref)[2:])."""
    proto = _resize_net("""nc = Shape <start=0, end=2> (ar)
  hw = Shape <start=2> (ref)
  sz = Concat <axis=0> (nc, hw)""")
    analysis = graphprune.analyze(ir.from_proto(proto))
    assert len(analysis.groups) == 1
    check_random_selections(proto, feeds=feeds_for(proto, RESIZE_FEEDS))


def test_resize_sizes_through_slice_and_gather_prune():
    """The same sizes read with Slice and Gather (TorchScript's form), channel at position 1."""
    proto = _resize_net("""s = Shape (ar)
  n = Slice (s, zero, one)
  c = Gather (s, index)
  cu = Unsqueeze (c, zero)
  hw = Shape <start=2> (ref)
  sz = Concat <axis=0> (n, cu, hw)""", zero=np.array([0], np.int64), one=np.array([1], np.int64),
                       index=np.array(1, np.int64))
    analysis = graphprune.analyze(ir.from_proto(proto))
    assert len(analysis.groups) == 1
    check_random_selections(proto, feeds=feeds_for(proto, RESIZE_FEEDS))


def test_resize_sizes_with_a_dim_at_another_position_stay_whole():
    """sizes[1] = dim 0 of x resizes the channel axis at run time: it must not prune."""
    proto = _resize_net("""n = Shape <start=0, end=1> (ar)
  hw = Shape <start=2> (ref)
  sz = Concat <axis=0> (n, n, hw)""")
    analysis = graphprune.analyze(ir.from_proto(proto))
    assert not analysis.groups


class _Neck(nn.Module):
    """A YOLOv8-style neck: the stride-4 map upsampled to stride 2 and concatenated."""

    def __init__(self, by_sizes: bool) -> None:
        super().__init__()
        self.by_sizes = by_sizes
        self.c1 = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.SiLU())
        self.c2 = nn.Sequential(nn.Conv2d(8, 16, 3, 2, 1), nn.SiLU())
        self.up = nn.Upsample(None, 2, "nearest")  # ultralytics' form: constant scales
        self.c3 = nn.Conv2d(24, 8, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p3 = self.c1(x)
        p4 = self.c2(p3)
        # sizes computed at run time from Shape -> ... -> Concat
        u = F.interpolate(p4, size=p3.shape[2:], mode="nearest") if self.by_sizes else self.up(p4)
        return self.c3(torch.cat([u, p3], 1))


@pytest.mark.parametrize("by_sizes", [False, True], ids=["scales", "sizes"])
@pytest.mark.parametrize("exporter", ["torchscript", "dynamo"])
def test_upsampling_neck_exports_prune_exactly(tmp_path, exporter, by_sizes):
    torch.manual_seed(0)
    net, x = _Neck(by_sizes).eval(), torch.randn(1, 3, 32, 32)
    path = tmp_path / "neck.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if exporter == "torchscript":
            axes = {"x": {0: "b", 2: "h", 3: "w"}}
            torch.onnx.export(net, x, str(path), dynamo=False, input_names=["x"],
                              opset_version=17, dynamic_axes=axes)
        else:
            dims = ({0: torch.export.Dim("b"), 2: torch.export.Dim("h", min=16, max=512),
                     3: torch.export.Dim("w", min=16, max=512)},)
            torch.onnx.export(net, (x,), str(path), dynamo=True, input_names=["x"],
                              dynamic_shapes=dims, verbose=False).save(str(path))
    proto = onnx.load(path)
    analysis = graphprune.analyze(ir.from_proto(proto))
    assert len(analysis.groups) == 2  # c1 and c2 (c3 is the output): Resize passes channels
    x_feed = np.random.default_rng(0).standard_normal((2, 3, 64, 32)).astype(np.float32)
    check_random_selections(proto, feeds={"x": x_feed})


def test_shared_split_sizes_and_slice_bounds_are_copied_per_use():
    """Two independent branches read one Split-sizes and one Slice-bounds Constant node each."""
    text = f"""{header(13)}
g (float[N,3,H,W] x) => (float[N,4,H,W] y) {{
  a = Conv <pads=[1,1,1,1]> (x, wa, ba)
  b = Conv <pads=[1,1,1,1]> (x, wb, bb)
  a0, a1 = Split <axis=1> (a, sp)
  b0, b1 = Split <axis=1> (b, sp)
  as = Slice (a1, st, en, ax)
  bs = Slice (b1, st, en, ax)
  c = Concat <axis=1> (a0, as, b0, bs)
  y = Conv <pads=[1,1,1,1]> (c, wy, by)
}}"""
    proto = model(text, constants=("sp", "st", "en", "ax"), wa=(8, 3, 3, 3), ba=(8,),
                  wb=(8, 3, 3, 3), bb=(8,), wy=(4, 16, 3, 3), by=(4,),
                  sp=np.array([4, 4], np.int64), st=np.array([0], np.int64),
                  en=np.array([4], np.int64), ax=np.array([1], np.int64))
    analysis = graphprune.analyze(ir.from_proto(proto))
    assert len(analysis.groups) == 2
    check_random_selections(proto, seeds=(0, 1, 2, 3), feeds=feeds_for(proto, {"x": (2, 3, 5, 6)}))


def test_reshape_keeps_the_trailing_channel_axis_behind_symbolic_dims():
    """``[N, H, W, C] -> [N, -1, C]``: tokens from an NHWC map with dynamic H and W.

    The channel axis is last on both sides and holds the same elements whatever comes before.
    """
    text = f"""{header(17)}
g (float[N,3,H,W] x) => (float[N,T,4] y) {{
  a = Conv <pads=[1,1,1,1]> (x, w1, b1)
  ar = Relu (a)
  t = Transpose <perm=[0,2,3,1]> (ar)
  n = Shape <start=0, end=1> (t)
  s = Concat <axis=0> (n, minus, c)
  r = Reshape (t, s)
  y = MatMul (r, wm)
}}"""
    proto = model(text, w1=(8, 3, 3, 3), b1=(8,), wm=(8, 4), minus=np.array([-1], np.int64),
                  c=np.array([8], np.int64))
    analysis = graphprune.analyze(ir.from_proto(proto))
    assert len(analysis.groups) == 1
    check_random_selections(proto, feeds=feeds_for(proto, {"x": (2, 3, 4, 5)}))


SDPA_KEY_PATH = """ks = Shape (k)
  k_dh = Slice (ks, minus, big)
  k_l = Slice (ks, minus2, minus)
  k_nh = Slice (ks, small, minus2)
  kt1 = Concat <axis=0> (minus, k_l, k_dh)
  k3 = Reshape (k, kt1)
  k3t = Transpose <perm=[0,2,1]> (k3)
  kt2 = Concat <axis=0> (k_nh, k_dh, k_l)
  kk = Reshape (k3t, kt2)"""


def test_dynamo_attention_key_path_keeps_the_head_dim():
    """Torch dynamo's SDPA key path keeps the head dim coupled, so the Q/K heads prune.

    K goes ``[N,H,L,d] -> [-1,L,d] -> [-1,d,L] -> [N,H,d,L]`` with dims read through
    ``Shape -> Slice`` (``d`` static, ``N`` and ``L`` symbolic).
    """
    text = f"""{header(17)}
g (float[N,L,16] x) => (float[N,L,16] y) {{
  q0 = MatMul (x, wq)
  k0 = MatMul (x, wk)
  v0 = MatMul (x, wv)
  n = Shape <start=0, end=1> (x)
  l = Shape <start=1, end=2> (x)
  t = Concat <axis=0> (n, l, minus, dh)
  q1 = Reshape (q0, t)
  k1 = Reshape (k0, t)
  v1 = Reshape (v0, t)
  q = Transpose <perm=[0,2,1,3]> (q1)
  k = Transpose <perm=[0,2,1,3]> (k1)
  v = Transpose <perm=[0,2,1,3]> (v1)
  {SDPA_KEY_PATH}
  s = MatMul (q, kk)
  p = Sigmoid (s)
  o = MatMul (p, v)
  o1 = Transpose <perm=[0,2,1,3]> (o)
  m = Constant <value = int64[3] {{0, 0, 16}}> ()
  o2 = Reshape (o1, m)
  y = MatMul (o2, wo)
}}"""
    one = lambda v: np.array([v], np.int64)  # noqa: E731
    proto = model(text, wq=(16, 16), wk=(16, 16), wv=(16, 16), wo=(16, 16), minus=one(-1),
                  dh=one(4), big=one(2**62), minus2=one(-2), small=one(-(2**62)))
    analysis = graphprune.analyze(ir.from_proto(proto))
    assert group_ids_of(analysis, "q0") and group_ids_of(analysis, "q0") == group_ids_of(
        analysis, "k0")
    check_random_selections(proto, seeds=(0, 1, 2, 3), feeds=attention_feeds(proto))


def group_ids_of(analysis, name: str) -> set[int]:
    return {g.id for g in analysis.groups for i in g.axes
            if analysis.table.axes[i].value.name == name}
