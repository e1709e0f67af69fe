"""Sensitivity analysis (graphprune.sensitivity) and the sensitivity allocator."""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import graphprune
from graphprune.allocation import Budget
from graphprune.allocation.sensitivity import sensitivity_allocation
from graphprune.analysis import PrunePlan
from graphprune.bench.fidelity import compare_outputs
from graphprune.cli import main
from graphprune.errors import UsageError
from graphprune.importance import ScoringContext, score
from graphprune.report.costs import CostModel
from graphprune.sensitivity import FORMAT, load_table, sensitivity
from graphprune.sensitivity.worker import Job, Worker, run_outputs

ROOT = Path(__file__).resolve().parents[1]
WIDTHS = (8, 16, 24)


def _tiny_net(path: Path) -> Path:
    """Conv(8)-Relu-Conv(16)-Relu-Conv(24)-Relu-GAP-Flatten-Gemm(10): three prunable groups."""
    rng = np.random.default_rng(0)
    nodes, inits, prev, cin = [], [], "x", 3
    for k, width in enumerate(WIDTHS):
        inits += [numpy_helper.from_array(rng.standard_normal((width, cin, 3, 3))
                                          .astype(np.float32), f"w{k}"),
                  numpy_helper.from_array(rng.standard_normal(width).astype(np.float32),
                                          f"b{k}")]
        nodes += [helper.make_node("Conv", [prev, f"w{k}", f"b{k}"], [f"c{k}"], name=f"conv{k}",
                                   pads=[1, 1, 1, 1]),
                  helper.make_node("Relu", [f"c{k}"], [f"r{k}"], name=f"relu{k}")]
        prev, cin = f"r{k}", width
    inits += [numpy_helper.from_array(rng.standard_normal((10, cin)).astype(np.float32), "fc"),
              numpy_helper.from_array(np.zeros(10, np.float32), "fcb")]
    nodes += [helper.make_node("GlobalAveragePool", [prev], ["g"], name="gap"),
              helper.make_node("Flatten", ["g"], ["f"], name="flatten"),
              helper.make_node("Gemm", ["f", "fc", "fcb"], ["y"], name="fc", transB=1)]
    graph = helper.make_graph(
        nodes, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, path)
    return path


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return _tiny_net(tmp_path_factory.mktemp("sensitivity") / "tiny.onnx")


OPTIONS = {"samples": 4, "round_to": 1, "input_shapes": {"x": (2, 3, 8, 8)}}


@pytest.fixture(scope="module")
def table(tiny) -> dict:
    return sensitivity(tiny, (0.25, 0.5), workers=1, **OPTIONS)


def test_table_has_one_record_per_group_and_ratio_in_order(table):
    assert table["format"] == FORMAT
    assert [(t["index"], t["ratio"]) for t in table["trials"]] == [
        (g, r) for g in range(len(WIDTHS)) for r in (0.25, 0.5)]
    for trial in table["trials"]:
        n = WIDTHS[trial["index"]]
        assert trial["channels_before"] == n
        assert trial["channels_after"] == n - round(n * trial["ratio"])
        assert trial["macs"] < table["macs"] and trial["rel_l2"] > 0
        assert trial["top1_agreement"] is not None  # [N, 10]: class scores


def test_a_trial_prunes_its_group_alone_by_the_scorer_and_measures_the_change(tiny, table):
    model = graphprune.pipeline._as_model(tiny)
    analysis = graphprune.analyze(model)
    scores = score("l1", ScoringContext(analysis, model))
    worker = Worker(Job(str(tiny), scores, None, 4, 0, 1, (), OPTIONS["input_shapes"]))
    labels = worker.removal((1, 0.5))
    group = analysis.groups[1]
    assert set(labels) <= set(group.classes.tolist()) and len(labels) == WIDTHS[1] // 2
    lowest = group.classes[np.argsort(scores[group.classes], kind="stable")[: len(labels)]]
    assert sorted(labels.tolist()) == sorted(lowest.tolist())
    result = graphprune.prune(model.clone(), removed=labels, round_to=1)
    names, outputs = run_outputs(result.model, worker.batches)
    expected = compare_outputs(names, worker.reference, outputs)
    trial = table["trials"][3]
    assert (trial["index"], trial["ratio"]) == (1, 0.5)
    assert trial["rel_l2"] == pytest.approx(expected["rel_l2"], rel=1e-12)
    assert trial["cosine"] == pytest.approx(expected["cosine"], rel=1e-12)
    assert [g["channels_after"] for g in result.groups] == [8, 8, 24]


def test_two_local_workers_give_the_same_table(tiny, table):
    two = sensitivity(tiny, (0.25, 0.5), workers=2, **OPTIONS)
    assert two["trials"] == table["trials"]
    assert two["executor"]["workers"] == 2


@pytest.mark.slow
def test_ray_gives_the_same_table(tiny, table):
    import ray

    handler = signal.getsignal(signal.SIGTERM)  # ray.init replaces it in this process
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=80 * 2**20,
             log_to_driver=False, runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}})
    try:
        found = sensitivity(tiny, (0.25, 0.5), ray="auto", workers=2, **OPTIONS)
    finally:
        ray.shutdown()
        signal.signal(signal.SIGTERM, handler)
    assert found["trials"] == table["trials"]
    assert found["executor"]["kind"] == "ray"


@pytest.mark.slow
def test_cli_ray_auto_starts_a_local_instance_and_keeps_the_sigterm_handler(tiny, tmp_path,
                                                                           capsys):
    local, path = tmp_path / "local.json", tmp_path / "ray.json"
    common = ["analyze", str(tiny), "--sensitivity", "--round-to", "1", "--calib-samples", "2"]
    assert main([*common, "--workers", "1", "--json", str(local)]) == 0
    handler = signal.getsignal(signal.SIGTERM)
    assert main([*common, "--ray", "auto", "--workers", "2", "--json", str(path)]) == 0, \
        capsys.readouterr().err
    assert signal.getsignal(signal.SIGTERM) is handler
    found, expected = load_table(path), load_table(local)
    assert found["trials"] == expected["trials"]
    assert found["executor"] == {**found["executor"], "kind": "ray", "workers": 2}


def test_ray_missing_is_one_line(tiny, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray raises ImportError
    code = main(["analyze", str(tiny), "--sensitivity", "--ray", "auto", "--calib-samples", "2"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.count("\n") == 0 and "--ray needs Ray" in err and "pip install" in err


def test_cli_writes_the_table_and_prune_uses_it(tiny, tmp_path, capsys):
    path = tmp_path / "sens.json"
    code = main(["analyze", str(tiny), "--sensitivity", "--round-to", "1", "--calib-samples",
                 "3", "--workers", "1", "--ratios", "0.5", "--json", str(path)])
    assert code == 0, capsys.readouterr().err
    written = load_table(path)
    assert [t["ratio"] for t in written["trials"]] == [0.5] * len(WIDTHS)
    out = tmp_path / "pruned.onnx"
    code = main(["prune", str(tiny), "--allocation", "sensitivity", "--sensitivity-json",
                 str(path), "--round-to", "1", "--ratio", "0.2", "--no-bench", "-o", str(out)])
    assert code == 0, capsys.readouterr().err
    report = json.loads(out.with_suffix(".report.json").read_text())
    assert report["oracle"]["passed"]
    assert report["settings"]["sensitivity"] == str(path)


def test_usage_errors_are_one_line(tiny, tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    for args in (["analyze", str(tiny), "--workers", "2"],
                 ["analyze", str(tiny), "--sensitivity", "--ratios", "0,1.5"],
                 ["prune", str(tiny), "--allocation", "sensitivity", "--no-bench"],
                 ["prune", str(tiny), "--allocation", "sensitivity", "--sensitivity-json",
                  str(bad), "--no-bench", "-o", str(tmp_path / "p.onnx")]):
        assert main(args) == 2, args
        err = capsys.readouterr().err.strip()
        assert err.startswith("graphprune: error:") and "\n" not in err


# ---- the allocator, on made-up tables -------------------------------------------------------

def _made_up(tiny, changes: dict[int, tuple[float, float]]) -> tuple[dict, object]:
    """A table of ``tiny`` whose trials at 0.25 and 0.5 have the given changes per group."""
    model = graphprune.pipeline._as_model(tiny)
    analysis = graphprune.analyze(model)
    costs = CostModel(model, OPTIONS["input_shapes"])
    base = costs.costs()
    trials = []
    for group in analysis.groups:
        for ratio, change in zip((0.25, 0.5), changes[group.id], strict=True):
            n = len(group.classes)
            removed = group.classes[: round(n * ratio)]
            after = costs.costs(PrunePlan(analysis, removed))
            trials.append({"group": group.name, "index": group.id, "ratio": ratio,
                           "classes": n, "removed": len(removed), "macs": after.macs,
                           "params": after.params, "rel_l2": change, "cosine": 1 - change})
    table = {"format": FORMAT, "macs": base.macs, "params": base.params, "trials": trials,
             "groups": [{"name": g.name, "classes": len(g.classes)} for g in analysis.groups]}
    return table, (model, analysis, costs)


def _kept(analysis, removed) -> list[int]:
    gone = set(np.asarray(removed).tolist())
    return [sum(c not in gone for c in g.classes.tolist()) for g in analysis.groups]


def test_ratio_takes_the_least_sensitive_group_first(tiny):
    table, (model, analysis, costs) = _made_up(tiny, {0: (5.0, 9.0), 1: (0.01, 0.02),
                                                      2: (3.0, 6.0)})
    scores = score("l1", ScoringContext(analysis, model))
    removed = sensitivity_allocation(analysis, scores, costs, Budget(0.15, 1), table)
    assert _kept(analysis, removed) == [8, 9, 24]  # 7.2 of 48 allowed: 7 from group 1
    removed = sensitivity_allocation(analysis, scores, costs, Budget(0.35, 1), table)
    # 16.8 allowed: group 1 to its 0.5 (8), then 8 from group 2 (0.5 per class against 2.25)
    assert _kept(analysis, removed) == [8, 8, 16]


def test_never_cuts_past_the_largest_measured_ratio(tiny):
    table, (model, analysis, costs) = _made_up(tiny, {g: (0.0, 0.0) for g in range(3)})
    scores = score("l1", ScoringContext(analysis, model))
    removed = sensitivity_allocation(analysis, scores, costs, Budget(0.9, 1), table)
    assert _kept(analysis, removed) == [4, 8, 12]


@pytest.mark.parametrize("what", ["macs", "params"])
def test_cost_target_is_met_within_two_percent(tiny, what):
    table, (model, analysis, costs) = _made_up(tiny, {0: (0.3, 0.7), 1: (0.1, 0.3),
                                                      2: (0.2, 0.25)})
    result = graphprune.prune(tiny, allocation="sensitivity", sensitivity=table, round_to=1,
                              input_shapes=OPTIONS["input_shapes"], **{f"target_{what}": 0.7})
    share = getattr(result.after, what) / getattr(result.before, what)
    assert abs(share - 0.7) <= 0.02 * 0.7, share
    assert not [w for w in result.warnings if w.code == "target_missed"]


def test_a_table_of_another_model_is_refused(tiny):
    table, (model, analysis, costs) = _made_up(tiny, {g: (0.1, 0.2) for g in range(3)})
    for trial in table["trials"]:
        trial["group"] = "elsewhere"
    with pytest.raises(UsageError, match="none of the model's groups"):
        graphprune.prune(tiny, allocation="sensitivity", sensitivity=table)
    table, _ = _made_up(tiny, {g: (0.1, 0.2) for g in range(3)})
    table["groups"][0]["classes"] = 99
    with pytest.raises(UsageError, match="does not match"):
        graphprune.prune(tiny, allocation="sensitivity", sensitivity=table)
    with pytest.raises(UsageError, match="go together"):
        graphprune.prune(tiny, allocation="uniform", sensitivity=table)
