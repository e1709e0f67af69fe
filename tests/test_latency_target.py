"""``--target-latency``: the per-layer latency lookup, the search on it, the flag.

The lookup and the search are tested exactly with a fake timer whose latency is linear in every
width (the weights' element count: a conv's MACs at fixed spatial size), so that the multilinear
lookup must reproduce it exactly; one small test measures for real without asserting timings.
"""

from __future__ import annotations

import json
import math

import numpy as np
import onnx
import onnx_ir as ir
import pytest

import graphprune
from graphprune.allocation import ALLOCATORS, Budget
from graphprune.allocation.latency import LatencyModel, NodeTable, _monotone, grid_of
from graphprune.allocation.uniform import group_step
from graphprune.analysis import PrunePlan
from graphprune.bench.node_latency import OrtTimer, Probe
from graphprune.cli import main
from graphprune.errors import InputError, UsageError
from graphprune.importance import SCORERS, ScoringContext
from graphprune.report.costs import CostModel
from models.export import export
from models.zoo import ZOO
from tests.oracle import assert_mask_equivalent, feeds_for, prune_proto
from tests.test_names import conv_chain

ROUND_TO = 8
FIXED = 0.25  # the fake whole model takes 1.25x its nodes alone: the rest is 0.2 of it


def _weights(node: ir.Node, shape_of) -> int:
    """Elements of a node's constant inputs of rank >= 2 (its weights), at ``shape_of``."""
    return sum(math.prod(shape_of(i)) for i, v in enumerate(node.inputs)
               if v is not None and v.const_value is not None and len(shape_of(i)) >= 2)


class FakeTimer:
    """Latency = weight elements (ns); the whole model is ``1 + FIXED`` times its nodes."""

    def __init__(self, untimable: str | None = None) -> None:
        self.timed: list[tuple] = []
        self.untimable = untimable

    def time(self, probe: Probe) -> float:
        if probe.node.op_type == self.untimable:
            return math.nan
        return _weights(probe.node, lambda i: probe.shapes[i]) * 1e-9

    def nodes(self, probes):
        self.timed.extend(p.key for p in probes)
        return [self.time(p) for p in probes]

    def model(self, probes):
        alone = sum(self.time(p) for p in probes)
        return (1 + FIXED) * alone, alone


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    folder, cache = tmp_path_factory.mktemp("latency_zoo"), {}

    def get(name: str):
        if name not in cache:
            path = export(name, folder / f"{name}.onnx", width=0.25,
                          input_shape=tuple(ZOO[name].small_input_shape), dynamic_batch=True)
            proto = onnx.load(path)
            analysis = graphprune.analyze(ir.from_proto(proto))
            costs = CostModel(analysis.model)
            timer = FakeTimer()
            cache[name] = (proto, analysis, costs, LatencyModel(analysis, costs, timer,
                                                                round_to=ROUND_TO), timer)
        return cache[name]

    return get


def _expected_share(model: LatencyModel, costs: CostModel, plan: PrunePlan) -> float:
    """What the fake timer's latency of ``plan`` is, computed from the plan's shapes directly."""
    def weights(dims) -> int:
        return sum(_weights(t.node, lambda i, n=t.node: dims(n.inputs[i])) for t in model.tables)

    share = weights(costs.dims(plan)) / weights(costs.dims())
    return (FIXED + share) / (1 + FIXED)


def _scores(analysis):
    return SCORERS["l1"](ScoringContext(analysis, analysis.model, None, 0))


# --- the lookup -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2"])
def test_lookup_reproduces_latency_linear_in_width(zoo, name):
    _, analysis, costs, model, _ = zoo(name)
    assert model.tables and not model.untimed
    assert model.fixed_s == pytest.approx(FIXED / (1 + FIXED) * model.whole_s)
    assert model.share(PrunePlan(analysis, np.zeros(0, np.int64))) == pytest.approx(1.0)
    scores = _scores(analysis)
    for allocation, ratio in (("uniform", 0.3), ("uniform", 0.7), ("global", 0.5)):
        removed = ALLOCATORS[allocation](analysis, scores, costs, Budget(ratio, ROUND_TO))
        plan = PrunePlan(analysis, removed)
        assert model.share(plan) == pytest.approx(_expected_share(model, costs, plan), rel=1e-9)


def test_widths_off_the_16_channel_grid_interpolate_exactly(zoo):
    """ResNet's convs are bilinear in their two groups: exact off the grid too.

    (MobileNetV2's first block reads and writes one group, quadratic in it: piecewise-linear
    there, not exact.)
    """
    _, analysis, costs, _, _ = zoo("resnet18")
    model = LatencyModel(analysis, costs, FakeTimer(), round_to=1)
    rng = np.random.default_rng(0)
    for ratio in (0.2, 0.45, 0.8):
        removed = ALLOCATORS["uniform"](analysis, rng.random(analysis.table.num_elements), costs,
                                        Budget(ratio, 1))
        plan = PrunePlan(analysis, removed)
        assert model.share(plan) == pytest.approx(_expected_share(model, costs, plan), rel=1e-9)


def test_identical_configurations_are_timed_once(zoo):
    _, _, _, model, timer = zoo("resnet18")
    assert len(timer.timed) == len(set(timer.timed)) == len(model.timed)
    assert len(model.timed) < model.probes  # repeated blocks share their probes


def test_grid_runs_from_the_floor_to_full_width_in_16_channel_steps(zoo):
    _, analysis, _, _, _ = zoo("resnet18")
    for index, group in enumerate(analysis.groups):
        n = len(group.classes)
        grid = grid_of(analysis, index, 5, floor=0.1, round_to=ROUND_TO)
        fine = group_step(analysis, group, ROUND_TO)
        assert grid[-1] == n and grid[0] == min(n, max(fine, math.ceil(0.1 * n / fine) * fine))
        step = group_step(analysis, group, 16)
        assert all(k % step == 0 or k == n for k in grid[1:])
        assert list(grid) == sorted(set(grid.tolist()))


def test_interpolation_is_multilinear_and_timings_only_shrink_with_width():
    grids = (np.array([16, 32, 64]), np.array([8, 24]))
    seconds = np.array([[1.0, 3.0], [2.0, 5.0], [4.0, 9.0]])
    table = NodeTable(None, (0, 1), grids, seconds, 1)
    assert table.at(np.array([32, 24])) == 5.0
    assert table.at(np.array([48, 16])) == pytest.approx(0.5 * (2 + 5) / 2 + 0.5 * (4 + 9) / 2)
    assert table.at(np.array([8, 8])) == pytest.approx(1.5 * 1.0 - 0.5 * 2.0)  # extrapolated
    assert table.at(np.array([-16, 8])) == 0.0  # clipped at zero
    noisy = np.array([[2.0, 1.0], [1.5, 3.0], [1.0, 4.0]])
    np.testing.assert_array_equal(_monotone(noisy), [[1.0, 1.0], [1.0, 3.0], [1.0, 4.0]])


def test_untimable_nodes_count_in_the_fixed_rest():
    proto = conv_chain(["a", "b", "c"], channels=32)
    analysis = graphprune.analyze(ir.from_proto(proto))
    costs = CostModel(analysis.model)
    timer = FakeTimer()
    full = LatencyModel(analysis, costs, timer)
    timer = FakeTimer(untimable="Conv")
    model = LatencyModel(analysis, costs, timer)
    assert len(model.untimed) == len(full.tables) == 4 and not model.tables
    plan = PrunePlan(analysis, ALLOCATORS["uniform"](analysis, _scores(analysis), costs,
                                                     Budget(0.5, 1)))
    assert model.share(plan) == 1.0 and full.share(plan) < 0.6


def test_a_depthwise_probe_has_the_group_of_its_width_and_runs(zoo):
    proto, analysis, costs, model, _ = zoo("mobilenet_v2")
    table = next(t for t in model.tables if len(t.grids[0]) > 1 and t.node.attributes.get(
        "group") and t.node.attributes["group"].value > 1)
    group = table.groups[0]
    plan = model._plan([group], [table.grids[0][0]])
    probe = model._probe(table.node, plan)
    weight = probe.shapes[1]
    assert {a.name: a.i for a in probe.attributes}["group"] == weight[0] < len(
        analysis.groups[group].classes)
    assert table.node.attributes["group"].value == len(analysis.groups[group].classes)
    seconds = OrtTimer(proto, feeds_for(proto), runs=1, warmup=0).nodes([probe])
    assert np.isfinite(seconds).all()


def test_calibration_goes_through_both_measurements(zoo):
    _, analysis, costs, _, _ = zoo("resnet18")
    model = LatencyModel(analysis, costs, FakeTimer(), round_to=ROUND_TO)
    full = PrunePlan(analysis, np.zeros(0, np.int64))
    assert not model.calibrate(full, 1.0, 0.5)  # nothing pruned: nothing to fit
    plan = PrunePlan(analysis, ALLOCATORS["uniform"](analysis, _scores(analysis), costs,
                                                     Budget(0.3, ROUND_TO)))
    assert not model.calibrate(plan, 1.0, 1.5)  # slower when pruned: not a latency
    assert model.calibrate(plan, 2e-3, 0.9e-3)
    assert model.seconds(plan) == pytest.approx(0.9e-3) and model.share(plan) == pytest.approx(0.45)
    assert model.share(full) == pytest.approx(1.0)
    assert model.calibration["plan_share"] == pytest.approx(0.45)


# --- the search -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2"])
@pytest.mark.parametrize("target", [0.3, 0.5, 0.75])
def test_search_hits_the_latency_target_within_2_percent(zoo, name, target):
    _, analysis, costs, model, _ = zoo(name)
    budget = Budget(round_to=ROUND_TO, target_latency=target, objective=model.share)
    removed = ALLOCATORS["target"](analysis, _scores(analysis), costs, budget)
    achieved = _expected_share(model, costs, PrunePlan(analysis, removed))
    assert abs(achieved - target) <= 0.02 * target, (name, target, achieved)


def test_target_latency_without_a_latency_model_is_a_usage_error(zoo):
    _, analysis, costs, _, _ = zoo("resnet18")
    with pytest.raises(UsageError, match="--target-latency"):
        ALLOCATORS["target"](analysis, _scores(analysis), costs, Budget(target_latency=0.5))


def test_prune_to_a_latency_target_with_a_fake_timer_is_exact_and_reported():
    proto = conv_chain(["a", "b", "c"], channels=64)
    result = prune_proto(proto, target_latency=0.5, round_to=1, latency_timer=FakeTimer())
    entry = result.latency
    assert abs(entry["predicted"] - 0.5) <= 0.01
    assert entry["achieved"] > 0 and entry["pruned_ms"] > 0  # measured, not asserted
    assert "this machine" in entry["machine"] and entry["lookup"]["nodes"] == 4
    assert all(w.code != "target_missed" or w.detail["what"] == "latency"
               for w in result.warnings)
    assert_mask_equivalent(proto, result, feeds_for(proto))


def test_latency_target_one_keeps_everything():
    result = prune_proto(conv_chain(["a", "b"]), target_latency=1.0, round_to=1,
                         latency_timer=FakeTimer())
    assert all(g["channels_after"] == g["channels_before"] for g in result.groups)
    assert result.latency["predicted"] == pytest.approx(1.0)
    assert [w.detail.get("cause") for w in result.warnings] == ["target_unpruned"]


# --- measured for real (no timing asserted) ---------------------------------------------------


def test_real_lookup_and_check_on_a_small_model():
    proto = conv_chain(["a", "b"], channels=32)
    analysis = graphprune.analyze(ir.from_proto(proto))
    costs = CostModel(analysis.model)
    feeds = feeds_for(proto)
    model = LatencyModel(analysis, costs, OrtTimer(proto, feeds, runs=2, warmup=1), round_to=1)
    assert len(model.tables) == 3 and not model.untimed
    for table in model.tables:
        assert np.isfinite(table.seconds).all() and (table.seconds >= 0).all()
    assert model.whole_s > 0 and model.share(PrunePlan(analysis, np.zeros(0, np.int64))) == 1
    result = prune_proto(proto, target_latency=0.6, round_to=1)
    assert 0 < result.latency["predicted"] <= 1 and result.latency["achieved"] > 0
    assert_mask_equivalent(proto, result, feeds)


def test_a_model_onnxruntime_cannot_run_is_one_input_error():
    proto = conv_chain(["a"])
    timer = OrtTimer(proto, {"x": np.zeros((1, 5, 8, 8), np.float32)}, runs=1, warmup=0)
    with pytest.raises(InputError, match="--input-shape") as caught:
        timer.model([])
    assert "\n" not in str(caught.value)


# --- arguments --------------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs", [
    {"target_latency": 0.0}, {"target_latency": 1.5}, {"target_latency": -0.5},
    {"target_latency": 0.5, "target_macs": 0.5}, {"target_latency": 0.5, "target_params": 0.5},
])
def test_bad_latency_target_arguments(kwargs):
    with pytest.raises(UsageError):
        prune_proto(conv_chain(["a"]), **kwargs)


@pytest.mark.parametrize("argv", [
    ["--target-latency", "0"], ["--target-latency", "1.01"], ["--target-latency", "abc"],
    ["--target-latency", "0.5", "--target-macs", "0.5"],
    ["--target-params", "0.5", "--target-latency", "0.5"],
])
def test_cli_bad_latency_target_exits_2_with_one_line(tmp_path, capsys, argv):
    source = tmp_path / "chain.onnx"
    onnx.save(conv_chain(["a"]), source)
    assert main([str(source), "--no-bench", "-o", str(tmp_path / "o.onnx"), *argv]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert "target" in err


def test_cli_target_latency_reports_predicted_and_measured(tmp_path, capsys):
    source = tmp_path / "chain.onnx"
    onnx.save(conv_chain(["a", "b"], channels=32), source)
    out = tmp_path / "out.onnx"
    assert main([str(source), "--target-latency", "0.6", "--round-to", "1", "--no-bench",
                 "-o", str(out)]) == 0
    report = json.loads((tmp_path / "out.report.json").read_text())
    assert report["settings"]["target_latency"] == 0.6
    assert report["settings"]["allocation"] == "target"
    assert report["latency_target"]["achieved"] > 0
    assert any("this machine" in n for n in report["notices"])
    assert report["oracle"]["passed"]
    assert "latency target 0.6 on this machine" in capsys.readouterr().out
