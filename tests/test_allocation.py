"""Allocation to a budget.

Rounding never removes more than asked, global ranking keeps its floors, and ``--target-macs``
/ ``--target-params`` land within 2% of the target with the mask-equivalence oracle holding.
"""

from __future__ import annotations

import json
import math

import numpy as np
import onnx
import onnx_ir as ir
import pytest

import graphprune
from graphprune.allocation import ALLOCATORS, Budget, global_allocation
from graphprune.allocation.ranking import rank, standardized
from graphprune.allocation.uniform import group_step
from graphprune.analysis import PrunePlan
from graphprune.cli import main
from graphprune.errors import UsageError
from graphprune.importance import SCORERS, ScoringContext
from graphprune.report.costs import CostModel
from models.export import export
from models.zoo import ZOO
from tests.oracle import assert_mask_equivalent, feeds_for, prune_proto
from tests.test_names import conv_chain

WIDTH = 0.25
ROUND_TO = 8  # as in test_zoo_prune: the quarter-wide models have 16-channel layers


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    folder = tmp_path_factory.mktemp("alloc_zoo")
    cache = {}

    def get(name: str) -> onnx.ModelProto:
        if name not in cache:
            path = export(name, folder / f"{name}.onnx", width=WIDTH,
                          input_shape=tuple(ZOO[name].small_input_shape), dynamic_batch=True)
            cache[name] = onnx.load(path)
        return cache[name]

    return get


def _feeds(proto, name):
    shape = list(ZOO[name].small_input_shape)
    shape[0] = 2
    return feeds_for(proto, {proto.graph.input[0].name: tuple(shape)})


def _kept_per_group(analysis, removed) -> list[tuple[int, int]]:
    """``(size, kept)`` in classes for every group of ``analysis``."""
    plan = PrunePlan(analysis, removed)
    return [(len(g.classes), int(plan.keep[g.classes].sum())) for g in analysis.groups]


# --- rounding ---------------------------------------------------------------------------------


def test_ratio_point_one_on_24_channels_keeps_everything_and_says_so():
    """The issue's case: nearest rounding to 16 kept 16 of 24 (a third removed at ratio 0.1)."""
    result = prune_proto(conv_chain(["a", "b"], channels=24), ratio=0.1, round_to=16)
    assert all(g["channels_after"] == 24 for g in result.groups)
    assert [w.detail.get("cause") for w in result.warnings] == ["rounded_to_full"]
    half = prune_proto(conv_chain(["a", "b"], channels=24), ratio=0.5, round_to=16)
    assert [g["channels_after"] for g in half.groups] == [16, 16]  # 12 exact, rounded up


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2"])
@pytest.mark.parametrize("allocation", ["uniform", "global"])
def test_rounding_never_removes_more_than_asked(exported, name, allocation):
    analysis = graphprune.analyze(ir.from_proto(exported(name)))
    scores = SCORERS["l1"](ScoringContext(analysis, analysis.model, None, 0))
    for ratio in (0.1, 0.3, 0.5, 0.7):
        for round_to in (1, 8, 16):
            budget = Budget(ratio, round_to)
            removed = ALLOCATORS[allocation](analysis, scores, None, budget)
            kept = _kept_per_group(analysis, removed)
            if allocation == "uniform":  # per group
                for size, count in kept:
                    assert size - count <= ratio * size + 1e-9, (ratio, round_to, size, count)
            total = sum(size for size, _ in kept)
            assert total - sum(count for _, count in kept) <= ratio * total + 1e-9
            for group, (size, count) in zip(analysis.groups, kept, strict=True):
                step = group_step(analysis, group, round_to)
                assert count == size or count % step == 0


# --- global ranking ---------------------------------------------------------------------------


def test_standardized_scores_ignore_the_scale_of_a_group():
    scores = np.array([1.0, 2.0, 3.0, 4.0])
    classes = np.arange(4)
    np.testing.assert_allclose(standardized(scores * 1000, classes),
                               standardized(scores, classes))
    np.testing.assert_array_equal(standardized(np.ones(4), classes), np.zeros(4))


@pytest.mark.parametrize("criterion", ["l1", "random"])
def test_global_allocation_keeps_floors(exported, criterion):
    proto = exported("mobilenet_v2")
    analysis = graphprune.analyze(ir.from_proto(proto))
    scores = SCORERS[criterion](ScoringContext(analysis, analysis.model, None, 0))
    budget = Budget(0.85, ROUND_TO)
    removed = global_allocation(analysis, scores, None, budget)
    kept = _kept_per_group(analysis, removed)
    for group, (size, count) in zip(analysis.groups, kept, strict=True):
        step = group_step(analysis, group, ROUND_TO)
        assert count >= min(size, max(step, math.ceil(0.1 * size))), (group.name, size, count)
    removed_share = 1 - sum(c for _, c in kept) / sum(s for s, _ in kept)
    assert 0.5 < removed_share <= 0.85  # deep, but within the ask
    floors = rank(analysis, scores, analysis.groups, budget).floors
    assert any(count == floor for (_, count), floor in zip(kept, floors, strict=True))


def test_global_allocation_is_not_uniform_and_is_mask_equivalent(exported):
    proto = exported("resnet18")
    result = prune_proto(proto, ratio=0.5, round_to=1, allocation="global")
    shares = {round(g["channels_after"] / g["channels_before"], 3) for g in result.groups}
    assert len(shares) > 2  # groups lose different shares
    kept = sum(g["channels_after"] for g in result.groups)
    total = sum(g["channels_before"] for g in result.groups)
    assert 0.49 <= 1 - kept / total <= 0.5
    assert_mask_equivalent(proto, result, _feeds(proto, "resnet18"))


# --- targets ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2"])
def test_target_macs_half_is_met_and_exact(exported, name):
    proto = exported(name)
    result = prune_proto(proto, target_macs=0.5, round_to=ROUND_TO)
    achieved = result.after.macs / result.before.macs
    assert abs(achieved - 0.5) <= 0.02 * 0.5, achieved
    assert not result.warnings
    assert_mask_equivalent(proto, result, _feeds(proto, name))


def test_target_params_is_met_and_exact(exported):
    proto = exported("resnet18")
    result = prune_proto(proto, target_params=0.4, round_to=ROUND_TO)
    achieved = result.after.params / result.before.params
    assert abs(achieved - 0.4) <= 0.02 * 0.4, achieved
    assert_mask_equivalent(proto, result, _feeds(proto, "resnet18"))


def test_target_macs_on_an_encoder_ranks_heads_and_neurons_together(tmp_path):
    from models.export_transformers import export as export_transformer
    from models.export_transformers import feeds as transformer_feeds

    proto = onnx.load(export_transformer("bert", tmp_path / "bert.onnx"))
    result = prune_proto(proto, target_macs=0.6, round_to=1)
    assert abs(result.after.macs / result.before.macs - 0.6) <= 0.02 * 0.6
    heads = [g for g in result.groups if g["kind"] == "heads"]
    assert heads and all(1 <= g["heads_after"] <= g["heads_before"] for g in heads)
    assert_mask_equivalent(proto, result, transformer_feeds("bert"))


def test_candidate_plan_costs_match_the_rewritten_model(exported):
    proto = exported("mobilenet_v2")
    model = ir.from_proto(proto)
    analysis = graphprune.analyze(model)
    scores = SCORERS["l1"](ScoringContext(analysis, analysis.model, None, 0))
    costs = CostModel(model)
    removed = ALLOCATORS["target"](analysis, scores, costs, Budget(round_to=ROUND_TO,
                                                                   target_macs=0.5))
    estimate = costs.costs(PrunePlan(analysis, removed))
    result = prune_proto(proto, removed=removed)
    assert (estimate.macs, estimate.params) == (result.after.macs, result.after.params)


def test_unreachable_target_returns_the_closest_with_a_warning(exported):
    result = prune_proto(exported("resnet18"), target_macs=0.01, round_to=ROUND_TO)
    [warning] = result.warnings
    assert warning.code == "target_missed"
    achieved = result.after.macs / result.before.macs
    assert warning.detail["achieved"] == pytest.approx(achieved)
    assert 0.02 < achieved < 0.2  # as deep as the floors allow


def test_target_one_keeps_everything(exported):
    result = prune_proto(exported("resnet18"), target_macs=1.0, round_to=ROUND_TO)
    assert result.after.macs == result.before.macs
    [warning] = result.warnings
    assert warning.detail["cause"] == "target_unpruned" and "--target-macs 1" in warning.message


@pytest.mark.parametrize("kwargs", [
    {"target_macs": 0.5, "target_params": 0.5}, {"target_macs": 0.0}, {"target_params": 1.5},
    {"allocation": "best"}, {"allocation": "target"},
])
def test_bad_allocation_arguments(kwargs):
    with pytest.raises(UsageError):
        prune_proto(conv_chain(["a"]), **kwargs)


# --- command line -----------------------------------------------------------------------------


def test_cli_target_macs_records_settings(tmp_path):
    source = tmp_path / "chain.onnx"
    onnx.save(conv_chain(["a", "b", "c"], channels=64), source)
    out = tmp_path / "out.onnx"
    assert main([str(source), "--target-macs", "0.5", "--round-to", "1", "--no-bench",
                 "-o", str(out)]) == 0
    report = json.loads((tmp_path / "out.report.json").read_text())
    assert report["settings"]["target_macs"] == 0.5
    assert report["settings"]["allocation"] == "target"
    assert abs(report["after"]["macs"] / report["before"]["macs"] - 0.5) <= 0.01
    assert report["oracle"]["passed"]
    assert main([str(source), "--allocation", "global", "--ratio", "0.3", "--round-to", "1",
                 "--no-bench", "-o", str(out)]) == 0
    assert json.loads((tmp_path / "out.report.json").read_text())["settings"]["allocation"] \
        == "global"


@pytest.mark.parametrize("argv", [
    ["--target-macs", "0.5", "--target-params", "0.5"], ["--target-macs", "0"],
    ["--target-params", "2"], ["--allocation", "target"],
])
def test_cli_bad_allocation_options_exit_2(tmp_path, capsys, argv):
    source = tmp_path / "chain.onnx"
    onnx.save(conv_chain(["a"]), source)
    assert main([str(source), "--no-bench", "-o", str(tmp_path / "o.onnx"), *argv]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.strip()
