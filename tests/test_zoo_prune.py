"""Every zoo model through both BN forms of the TorchScript exporter and the dynamo exporter.

The mask-equivalence oracle holds for random selections and for ratio 0.5, ratio 0 changes
nothing, and the pruned model runs at a batch and spatial size other than the exported one.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import pytest

import graphprune
from models.export import export
from models.zoo import ZOO
from tests.oracle import assert_mask_equivalent, check_random_selections, feeds_for, prune_proto

WIDTH = 0.25
ROUND_TO = 8  # the test models are a quarter wide: 16-channel layers would keep all at 16


def _small_shape(name: str) -> tuple[int, ...]:
    return tuple(ZOO[name].small_input_shape)


@pytest.fixture(scope="module", params=[False, True], ids=["bn_folded", "bn_kept"])
def keep_bn(request):
    return request.param


@pytest.fixture(scope="module")
def exported(tmp_path_factory, keep_bn):
    folder = tmp_path_factory.mktemp("zoo_bn" if keep_bn else "zoo")
    cache = {}

    def get(name: str) -> onnx.ModelProto:
        if name not in cache:
            path = export(name, folder / f"{name}.onnx", width=WIDTH, keep_bn=keep_bn,
                          input_shape=_small_shape(name), dynamic_batch=True)
            cache[name] = onnx.load(path)
        return cache[name]

    return get


def _feeds(proto, name, batch=3):
    shape = list(_small_shape(name))
    shape[0] = batch
    return feeds_for(proto, {proto.graph.input[0].name: tuple(shape)})


@pytest.mark.parametrize("name", sorted(ZOO))
def test_zoo_random_selections_are_mask_equivalent(exported, name):
    proto = exported(name)
    results = check_random_selections(proto, seeds=(0, 1), feeds=_feeds(proto, name))
    assert any(r.after.params < r.before.params for r in results)


@pytest.mark.parametrize("name", sorted(ZOO))
def test_zoo_ratio_half_prunes_every_model_exactly(exported, name):
    proto = exported(name)
    result = prune_proto(proto, ratio=0.5, round_to=ROUND_TO)
    assert result.after.macs < 0.8 * result.before.macs
    assert_mask_equivalent(proto, result, _feeds(proto, name, batch=2))
    blocked = {b.reason for _, b in result.analysis.blocked_sources}
    assert blocked <= {graphprune.BlockReason.GRAPH_IO}, result.analysis.blocked_sources


@pytest.mark.parametrize("name", ["resnet18", "shufflenet_v2", "c2f"])
def test_ratio_zero_leaves_model_unchanged(exported, name):
    proto = exported(name)
    result = prune_proto(proto, ratio=0.0)
    pruned = ir.to_proto(result.model)
    assert [n.op_type for n in pruned.graph.node] == [n.op_type for n in proto.graph.node]
    before = {t.name: t.raw_data for t in proto.graph.initializer}
    after = {t.name: t.raw_data for t in pruned.graph.initializer}
    assert before == after
    assert result.after == result.before


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2", "c2f"])
def test_dynamo_export_prunes_exactly(tmp_path, name):
    path = export(name, tmp_path / f"{name}.onnx", exporter="dynamo", width=WIDTH,
                  input_shape=_small_shape(name))
    proto = onnx.load(path)
    result = prune_proto(proto, ratio=0.5, round_to=ROUND_TO)
    assert result.after.params < 0.6 * result.before.params
    assert_mask_equivalent(proto, result, feeds_for(proto))


def test_pruned_model_keeps_initializer_names(exported):
    proto = exported("resnet18")
    result = prune_proto(proto, ratio=0.5, round_to=ROUND_TO)
    names = {t.name for t in ir.to_proto(result.model).graph.initializer}
    original = {t.name for t in proto.graph.initializer}
    assert names <= original | {n for n in names if "_static" in n}
    assert np.mean([n in names for n in original]) > 0.9


# vgg16_bn's 7x7 adaptive pool only exports at a fixed spatial size.
_SPATIAL = sorted(set(ZOO) - {"vgg16_bn"})


@pytest.mark.parametrize("name", _SPATIAL)
def test_pruned_model_runs_at_other_batch_and_spatial_size(tmp_path, name):
    path = export(name, tmp_path / f"{name}.onnx", width=WIDTH, input_shape=_small_shape(name),
                  dynamic_batch=True, dynamic_spatial=True)
    proto = onnx.load(path)
    result = prune_proto(proto, ratio=0.5, round_to=ROUND_TO)
    assert result.after.macs < 0.8 * result.before.macs
    shape = list(_small_shape(name))
    shape[0] = 3
    shape[2:] = [d + 32 for d in shape[2:]]
    feeds = feeds_for(proto, {proto.graph.input[0].name: tuple(shape)})
    assert_mask_equivalent(proto, result, feeds)
    pruned_input = ir.to_proto(result.model).graph.input[0].type.tensor_type.shape.dim
    original_input = proto.graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param for d in pruned_input] == [d.dim_param for d in original_input]
