"""Invariants of the channel analysis, the allocation and the pipeline around them."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import numpy_helper

import graphprune
from graphprune import BlockReason
from graphprune.allocation.uniform import keep_count
from graphprune.analysis.dependency import NOT_BLOCKED
from graphprune.analysis.unionfind import components
from graphprune.errors import UsageError
from graphprune.verify.oracle import run
from tests.oracle import (
    assert_mask_equivalent,
    check_random_selections,
    feeds_for,
    prune_proto,
    random_selection,
)

HEADER = '<ir_version: 8, opset_import: ["" : 17]>'
HEADER13 = '<ir_version: 8, opset_import: ["" : 13]>'
FEEDS_SHAPE = {"x": (2, 3, 10, 12)}


def model(text: str, seed: int = 0, **initializers) -> onnx.ModelProto:
    """Parses ``text`` and adds initializers (random float32 of a shape tuple, or an array).

    Names starting with ``var`` get positive values; each node is named after its first output.
    """
    proto = onnx.parser.parse_model(text)
    rng = np.random.default_rng(seed)
    for name, spec in initializers.items():
        if isinstance(spec, tuple):
            array = (rng.standard_normal(spec) * 0.3).astype(np.float32)
            if name.startswith("var"):
                array = np.abs(array) + 0.5
        else:
            array = np.asarray(spec)
        proto.graph.initializer.append(numpy_helper.from_array(array, name))
    for node in proto.graph.node:
        node.name = node.name or node.output[0]
    onnx.checker.check_model(proto)
    return proto


def residual3() -> onnx.ModelProto:
    """Three convs whose outputs meet in two residual Adds, then a head conv."""
    return model(f"""{HEADER}
g (float[N,3,H,W] x) => (float[N,4,Ho,Wo] y) {{
  conv1 = Conv <pads=[1,1,1,1]> (x, w1, b1)
  r1 = Relu (conv1)
  conv2 = Conv <pads=[1,1,1,1]> (r1, w2, b2)
  d = Add (conv2, conv1)
  bn = BatchNormalization (d, sc, sh, mean, var)
  r2 = Relu (bn)
  conv3 = Conv <pads=[1,1,1,1]> (r2, w3, b3)
  e = Add (conv3, d)
  y = Conv <pads=[1,1,1,1]> (e, w4, b4)
}}""", w1=(8, 3, 3, 3), b1=(8,), w2=(8, 8, 3, 3), b2=(8,), sc=(8,), sh=(8,), mean=(8,),
                 var=(8,), w3=(8, 8, 3, 3), b3=(8,), w4=(4, 8, 3, 3), b4=(4,))


def chain4() -> onnx.ModelProto:
    """``x -> conv1 -> conv2 -> conv3 -> conv4 -> y``."""
    return model(f"""{HEADER}
g (float[N,3,H,W] x) => (float[N,4,Ho,Wo] y) {{
  conv1 = Conv <pads=[1,1,1,1]> (x, w1, b1)
  r1 = Relu (conv1)
  conv2 = Conv <pads=[1,1,1,1]> (r1, w2, b2)
  r2 = Relu (conv2)
  conv3 = Conv <pads=[1,1,1,1]> (r2, w3, b3)
  r3 = Relu (conv3)
  y = Conv <pads=[1,1,1,1]> (r3, w4, b4)
}}""", w1=(8, 3, 3, 3), b1=(8,), w2=(8, 8, 3, 3), b2=(8,), w3=(8, 8, 3, 3), b3=(8,),
                 w4=(4, 8, 3, 3), b4=(4,))


def grouped() -> onnx.ModelProto:
    """``conv1 (8) -> grouped conv (group 4, Ci/g 2, Co 8) -> conv3``."""
    return model(f"""{HEADER}
g (float[N,3,H,W] x) => (float[N,4,Ho,Wo] y) {{
  conv1 = Conv <pads=[1,1,1,1]> (x, w1, b1)
  r1 = Relu (conv1)
  gconv = Conv <pads=[1,1,1,1], group=4> (r1, wg, bg)
  r2 = Relu (gconv)
  y = Conv <pads=[1,1,1,1]> (r2, w3, b3)
}}""", w1=(8, 3, 3, 3), b1=(8,), wg=(8, 2, 3, 3), bg=(8,), w3=(4, 8, 3, 3), b3=(4,))


def concat_split() -> onnx.ModelProto:
    """Two branches concatenated, split at another boundary, flattened into a classifier."""
    return model(f"""{HEADER13}
g (float[N,3,4,4] x) => (float[N,10] y) {{
  ca = Conv <pads=[1,1,1,1], strides=[2,2]> (x, wa, ba)
  cb = Conv <pads=[1,1,1,1], strides=[2,2]> (x, wb, bb)
  cat = Concat <axis=1> (ca, cb)
  s1, s2 = Split <axis=1> (cat, sp)
  c1 = Conv <pads=[1,1,1,1]> (s1, w1)
  c2 = Conv <pads=[1,1,1,1]> (s2, w2)
  m = Add (c1, c2)
  f = Flatten (m)
  y = Gemm <transB=1> (f, wf, bf)
}}""", wa=(8, 3, 3, 3), ba=(8,), wb=(6, 3, 3, 3), bb=(6,), sp=np.array([5, 9], np.int64),
                 w1=(6, 5, 3, 3), w2=(6, 9, 3, 3), wf=(10, 24), bf=(10,))


def shuffle() -> onnx.ModelProto:
    return model(f"""{HEADER13}
g (float[N,3,6,6] x) => (float[N,4,6,6] y) {{
  a = Conv <pads=[1,1,1,1]> (x, w1, b1)
  r = Reshape (a, t1)
  tr = Transpose <perm=[0,2,1,3,4]> (r)
  h = Reshape (tr, t2)
  y = Conv <pads=[1,1,1,1]> (h, w2, b2)
}}""", w1=(8, 3, 3, 3), b1=(8,), w2=(4, 8, 3, 3), b2=(4,),
                 t1=np.array([0, 2, 4, 6, 6], np.int64), t2=np.array([0, 8, 6, 6], np.int64))


MODELS = {"residual3": residual3, "chain4": chain4, "grouped": grouped,
          "concat_split": concat_split, "shuffle": shuffle}


def analyze(proto: onnx.ModelProto):
    return graphprune.analyze(ir.from_proto(proto))


def group_of(analysis, name: str, axis: int = 1) -> set[int]:
    return {
        g.id for g in analysis.groups for i in g.axes
        if analysis.table.axes[i].value.name == name and analysis.table.axes[i].axis == axis
    }


# --- ratio 0 ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["residual3", "concat_split"])
def test_ratio_zero_leaves_model_unchanged(name):
    proto = MODELS[name]()
    result = prune_proto(proto, ratio=0.0)
    pruned = ir.to_proto(result.model)
    assert [n.op_type for n in pruned.graph.node] == [n.op_type for n in proto.graph.node]
    before = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
    after = {t.name: numpy_helper.to_array(t) for t in pruned.graph.initializer}
    assert before.keys() == after.keys()
    for key, array in before.items():
        assert after[key].dtype == array.dtype and after[key].tobytes() == array.tobytes(), key
    assert result.after == result.before and not result.masks
    feeds = feeds_for(proto, FEEDS_SHAPE if name != "concat_split" else {"x": (2, 3, 4, 4)})
    for want, got in zip(run(proto, feeds), run(pruned, feeds), strict=True):
        np.testing.assert_array_equal(got, want)


def test_invalid_ratio_and_round_to():
    with pytest.raises(UsageError):
        prune_proto(chain4(), ratio=1.0)
    with pytest.raises(UsageError):
        prune_proto(chain4(), ratio=-0.1)
    with pytest.raises(UsageError):
        prune_proto(chain4(), ratio=0.5, round_to=0)
    with pytest.raises(UsageError):
        prune_proto(chain4(), ratio=0.5, criterion="taylor")


# --- keep_count -------------------------------------------------------------------------------


@pytest.mark.parametrize(("n", "ratio", "round_to", "kept"), [
    (64, 0.5, 8, 32), (64, 0.0, 8, 64), (10, 0.99, 1, 1), (3, 0.5, 8, 3), (20, 0.5, 8, 16),
    (20, 0.3, 8, 16), (16, 0.9, 8, 8), (1, 0.9, 1, 1), (7, 0.5, 1, 4), (100, 0.25, 16, 80),
    (24, 0.1, 16, 24), (100, 0.7, 1, 30), (24, 0.5, 16, 16),
])
def test_keep_count_examples(n, ratio, round_to, kept):
    assert keep_count(n, ratio, round_to) == kept


@settings(max_examples=300, deadline=None)
@given(n=st.integers(1, 512), ratio=st.floats(0, 0.999), round_to=st.sampled_from([1, 2, 4, 8, 16]))
def test_keep_count_properties(n, ratio, round_to):
    kept = keep_count(n, ratio, round_to)
    assert 1 <= kept <= n
    assert kept % round_to == 0 or kept == n  # a multiple, unless n itself is the cap
    exact = n * (1 - ratio)
    assert kept >= exact - 1e-6  # rounded up: never more removed than asked
    if n >= round_to:
        assert kept >= round_to
        # the smallest multiple at or above the exact count, unless clamped to one multiple or n
        assert kept - exact < round_to or kept in (round_to, n)
    assert keep_count(n, 0.0, round_to) == n
    assert keep_count(n, min(ratio + 0.1, 0.999), round_to) <= kept  # monotone in ratio


# --- groups and segments ----------------------------------------------------------------------


@pytest.mark.parametrize("name", list(MODELS))
def test_segments_partition_classes(name):
    analysis = analyze(MODELS[name]())
    assert analysis.groups
    seen: set[int] = set()
    for group in analysis.groups:
        classes = [int(c) for c in group.classes]
        assert len(set(classes)) == len(classes), "a class listed twice"
        parts = [int(c) for segment in group.segments for c in segment]
        assert all(len(segment) for segment in group.segments)
        assert sorted(parts) == sorted(classes), "segments do not partition the classes"
        assert not seen & set(classes), "a class in two groups"
        seen |= set(classes)
        labels = np.asarray(classes)
        assert (analysis.labels[labels] == labels).all(), "a class label is not its own root"
        assert (analysis.class_block[labels] == NOT_BLOCKED).all(), "a blocked class in a group"
        assert analysis.table.index_of(group.root) in group.axes
    assert [g.id for g in analysis.groups] == list(range(len(analysis.groups)))


@pytest.mark.parametrize("name", list(MODELS))
def test_analysis_is_deterministic(name):
    first, second = analyze(MODELS[name]()), analyze(MODELS[name]())
    np.testing.assert_array_equal(first.labels, second.labels)
    assert [g.classes.tolist() for g in first.groups] == [g.classes.tolist() for g in second.groups]
    assert [r.reason for r in first.blocked] == [r.reason for r in second.blocked]


def test_residual_add_across_three_convs_is_one_group():
    proto = residual3()
    analysis = analyze(proto)
    ids = group_of(analysis, "conv1") | group_of(analysis, "conv2") | group_of(analysis, "conv3")
    assert len(ids) == 1
    group = analysis.groups[ids.pop()]
    assert len(group.classes) == 8
    result = prune_proto(proto, ratio=0.5, round_to=1)
    shapes = {n: tuple(v.const_value.shape) for n, v in result.model.graph.initializers.items()}
    assert shapes["w1"][0] == shapes["w2"][0] == shapes["w3"][0] == shapes["sc"][0] == 4
    assert shapes["w2"][1] == shapes["w3"][1] == shapes["w4"][1] == 4
    assert_mask_equivalent(proto, result, feeds_for(proto, FEEDS_SHAPE))


def test_concat_branches_are_separate_groups():
    analysis = analyze(concat_split())
    a, b = group_of(analysis, "ca"), group_of(analysis, "cb")
    assert a and b and not a & b


# --- exclude ----------------------------------------------------------------------------------


def test_exclude_keeps_the_excluded_conv_whole():
    proto = chain4()
    result = prune_proto(proto, ratio=0.5, round_to=1, exclude=["conv2*"])
    shapes = {n: tuple(v.const_value.shape) for n, v in result.model.graph.initializers.items()}
    assert shapes["w2"] == (8, 8, 3, 3) and shapes["b2"] == (8,)
    assert shapes["w1"] == (8, 3, 3, 3)  # conv1's channels reach the excluded conv
    assert shapes["w3"] == (4, 8, 3, 3) and shapes["w4"] == (4, 4, 3, 3)
    assert result.after.params < result.before.params
    reasons = {b.reason for _, b in result.analysis.blocked_sources}
    assert BlockReason.EXCLUDED in reasons
    assert_mask_equivalent(proto, result, feeds_for(proto, FEEDS_SHAPE))


def test_exclude_matches_nothing_changes_nothing():
    proto = chain4()
    plain = prune_proto(proto, ratio=0.5, round_to=1)
    excluded = prune_proto(proto, ratio=0.5, round_to=1, exclude=["no_such_node*"])
    assert plain.after == excluded.after


# --- union-find -------------------------------------------------------------------------------


def reference_components(n: int, edges: list[tuple[int, int]]) -> list[int]:
    parent = list(range(n))

    def find(i):
        while parent[i] != i:
            i = parent[i]
        return i

    for a, b in edges:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    return [find(i) for i in range(n)]


@settings(max_examples=150, deadline=None)
@given(st.integers(1, 40).flatmap(lambda n: st.tuples(
    st.just(n),
    st.lists(st.tuples(st.integers(0, n - 1), st.integers(0, n - 1)), max_size=60),
)))
def test_components_match_reference(case):
    n, edges = case
    a = np.array([e[0] for e in edges], np.int64)
    b = np.array([e[1] for e in edges], np.int64)
    assert components(n, a, b).tolist() == reference_components(n, edges)


@pytest.mark.parametrize("n", [1, 2, 50, 257])
def test_components_long_chains(n):
    rng = np.random.default_rng(n)
    order = rng.permutation(n)  # one path visiting the ids in random order, edges shuffled
    edges = list(zip(order[:-1], order[1:], strict=True))
    rng.shuffle(edges)
    a = np.array([e[0] for e in edges], np.int64)
    b = np.array([e[1] for e in edges], np.int64)
    assert (components(n, a, b) == 0).all()
    assert components(n, np.zeros(0, np.int64), np.zeros(0, np.int64)).tolist() == list(range(n))


# --- criteria ---------------------------------------------------------------------------------


@pytest.mark.parametrize("criterion", ["l1", "l2", "random"])
@pytest.mark.parametrize("name", ["residual3", "concat_split"])
def test_criteria_pass_the_oracle(criterion, name):
    proto = MODELS[name]()
    shapes = FEEDS_SHAPE if name != "concat_split" else {"x": (2, 3, 4, 4)}
    result = prune_proto(proto, ratio=0.5, round_to=1, criterion=criterion, seed=3)
    assert result.after.params < result.before.params
    assert_mask_equivalent(proto, result, feeds_for(proto, shapes))


@pytest.mark.parametrize(("criterion", "power"), [("l1", 1), ("l2", 2)])
def test_magnitude_keeps_the_largest_channels(criterion, power):
    """On ``conv1 -> conv2``, a channel's score is its slice of w1, b1 and w2's input columns."""
    proto = model(f"""{HEADER}
g (float[N,3,H,W] x) => (float[N,4,Ho,Wo] y) {{
  conv1 = Conv <pads=[1,1,1,1]> (x, w1, b1)
  r = Relu (conv1)
  y = Conv <pads=[1,1,1,1]> (r, w2, b2)
}}""", seed=5, w1=(8, 3, 3, 3), b1=(8,), w2=(4, 8, 3, 3), b2=(4,))
    arrays = {t.name: np.abs(numpy_helper.to_array(t)).astype(np.float64) ** power
              for t in proto.graph.initializer}
    score = arrays["w1"].sum(axis=(1, 2, 3)) + arrays["b1"] + arrays["w2"].sum(axis=(0, 2, 3))
    result = prune_proto(proto, ratio=0.5, round_to=1, criterion=criterion)
    (group,) = result.groups
    assert sorted(group["kept"]) == sorted(np.argsort(-score)[:4].tolist())


def test_random_criterion_is_seeded():
    proto = chain4()
    first = prune_proto(proto, ratio=0.5, round_to=1, criterion="random", seed=1)
    again = prune_proto(proto, ratio=0.5, round_to=1, criterion="random", seed=1)
    assert [g["kept"] for g in first.groups] == [g["kept"] for g in again.groups]
    others = [prune_proto(proto, ratio=0.5, round_to=1, criterion="random", seed=s) for s in (2, 3)]
    assert any([g["kept"] for g in o.groups] != [g["kept"] for g in first.groups] for o in others)


# --- grouped convolutions ---------------------------------------------------------------------


def test_grouped_conv_keeps_group_and_equal_counts_per_group():
    proto = grouped()
    feeds = feeds_for(proto, FEEDS_SHAPE)
    results = check_random_selections(proto, seeds=(0, 1, 2, 3), feeds=feeds)
    results.append(prune_proto(proto, ratio=0.5, round_to=1))
    assert_mask_equivalent(proto, results[-1], feeds)
    assert any(r.after.params < r.before.params for r in results)
    for result in results:
        node = next(n for n in result.model.graph if n.name == "gconv")
        assert node.attributes["group"].value == 4
        w = node.inputs[1].const_value.shape
        assert node.inputs[0].shape[1] == 4 * w[1]
        assert w[0] % 4 == 0
        for name, axis, per_group in (("w1", 0, 2), ("wg", 0, 2), ("w3", 1, 2)):
            for cut_axis, kept in result.masks.get(name, []):
                if cut_axis == axis:
                    counts = np.bincount(np.asarray(kept) // per_group, minlength=4)
                    assert (counts == counts[0]).all(), (name, kept)


def test_random_selection_respects_segments():
    """The oracle's own helper never removes a whole segment."""
    analysis = analyze(concat_split())
    for seed in range(5):
        removed = set(random_selection(analysis, seed).tolist())
        for group in analysis.groups:
            for segment in group.segments:
                assert not set(segment.tolist()) <= removed


def uneven_split() -> onnx.ModelProto:
    """A conv output split 1/7: the one-channel part must keep its channel at any ratio."""
    return model(f"""{HEADER13}
g (float[N,3,H,W] x) => (float[N,4,H,W] y) {{
  c = Conv <pads=[1,1,1,1]> (x, w1, b1)
  s1, s2 = Split <axis=1> (c, sp)
  d1 = Conv <pads=[1,1,1,1]> (s1, wa)
  d2 = Conv <pads=[1,1,1,1]> (s2, wb)
  y = Add (d1, d2)
}}""", w1=(8, 3, 3, 3), b1=(8,), sp=np.array([1, 7], np.int64), wa=(4, 1, 3, 3),
                 wb=(4, 7, 3, 3))


@pytest.mark.parametrize("ratio", [0.5, 0.9])
def test_every_axis_keeps_an_element(ratio):
    proto = uneven_split()
    result = prune_proto(proto, ratio=ratio, round_to=1)
    shapes = {t.name: tuple(t.dims) for t in ir.to_proto(result.model).graph.initializer}
    assert shapes["wa"][1] == 1 and 1 <= shapes["wb"][1] < 7
    assert_mask_equivalent(proto, result, feeds_for(proto, FEEDS_SHAPE))


def test_round_to_counts_channels_not_classes():
    """Round-to counts channels: a grouped conv's class is 4 channels (one offset per group).

    So round_to 4 lets half of the 8 channels go; counting classes, 1 of 2 would round up to 4
    and keep both.
    """
    proto = grouped()
    result = prune_proto(proto, ratio=0.5, round_to=4)
    shapes = {t.name: tuple(t.dims) for t in ir.to_proto(result.model).graph.initializer}
    assert shapes["w1"][0] == 4 and shapes["wg"][1] == 1
    assert_mask_equivalent(proto, result, feeds_for(proto, FEEDS_SHAPE))
