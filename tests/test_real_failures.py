"""Graph-level failures found on real third-party models, each reduced to a tiny model.

Every case failed on the code before its fix (internal error, an invalid or wrong pruned model)
and must now prune with the mask-equivalence oracle holding, or be left whole with a reason.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir

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
    """The V heads prune apart from Q/K: one shared Concat target must not serve both."""
    proto = attention(CONCAT_TARGET, minus=np.array([-1], np.int64), dh=np.array([4], np.int64))
    analysis = graphprune.analyze(ir.from_proto(proto))
    assert len(analysis.groups) >= 2  # Q/K head dims, V head dims (at least)
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
