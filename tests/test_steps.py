"""Gradual pruning (graphprune.steps): composed masks keep the mask-equivalence oracle."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnx_ir as ir
import pytest

import graphprune
import graphprune.importance
from graphprune.cli import main
from graphprune.compensation import COMPENSATIONS
from graphprune.errors import UsageError
from graphprune.steps import prune_in_steps
from tests.oracle import assert_mask_equivalent, feeds_for


@pytest.fixture(scope="module")
def proto(model_path) -> onnx.ModelProto:
    return onnx.load(model_path)


@pytest.fixture(scope="module")
def feeds(proto):
    return feeds_for(proto)


CASES = [
    {"round_to": 1},
    {"round_to": 8},
    {"allocation": "global", "round_to": 1},
    {"target_macs": 0.5, "round_to": 1},
]


@pytest.mark.parametrize("options", CASES, ids=lambda o: ",".join(f"{k}={v}" for k, v in
                                                                    o.items()))
def test_composed_masks_pass_the_oracle(model_path, proto, feeds, options):
    result = prune_in_steps(model_path, 0.5, steps=3, **options)
    assert result.after.macs < 0.75 * result.before.macs
    assert_mask_equivalent(proto, result, feeds)
    initializers = {t.name: t.dims for t in proto.graph.initializer}
    for name, cuts in result.masks.items():  # indices into the ORIGINAL tensors
        for axis, kept in cuts:
            assert np.all(np.diff(kept) > 0) and kept[-1] < initializers[name][axis]


def test_groups_refer_to_the_original_and_end_where_one_shot_ends(model_path):
    one = graphprune.prune(model_path, 0.5, round_to=8)
    steps = prune_in_steps(model_path, 0.5, steps=2, round_to=8)
    assert [g["channels_after"] for g in steps.groups] == [g["channels_after"]
                                                          for g in one.groups]
    for group in steps.groups:
        kept = np.asarray(group["kept"])
        assert len(kept) == group["channels_after"]
        assert np.all(np.diff(kept) > 0) and kept[-1] < group["channels_before"]
    assert steps.before == one.before and steps.after.macs == one.after.macs


def test_every_step_rescores_the_pruned_model(model_path, monkeypatch):
    sizes = []
    real = graphprune.importance.score

    def spy(criterion, context):
        sizes.append(sum(len(g.classes) for g in context.analysis.groups))
        return real(criterion, context)

    monkeypatch.setattr(graphprune.importance, "score", spy)
    prune_in_steps(model_path, 0.5, steps=3, round_to=1)
    assert len(sizes) == 3 and sizes[0] > sizes[1] > sizes[2]


class _CountingPass:
    """A stand-in compensation that changes nothing and says how wide the model was."""

    def __init__(self, context) -> None:
        self.context = context

    def __call__(self, model):
        self.report = {"nodes": len(list(model.graph))}
        return ir.passes.PassResult(model, False)


def test_compensation_runs_after_every_step(model_path, monkeypatch):
    monkeypatch.setitem(COMPENSATIONS, "bias", _CountingPass)
    result = prune_in_steps(model_path, 0.5, steps=3, round_to=1, compensate="bias")
    assert [r["step"] for r in result.compensation] == [1, 2, 3]
    assert all(r["name"] == "bias" for r in result.compensation)


def test_cli_steps_passes_the_oracle(model_path, tmp_path, capsys):
    out = tmp_path / "steps.onnx"
    code = main(["prune", str(model_path), "--steps", "3", "--ratio", "0.5", "--round-to", "1",
                 "--no-bench", "-o", str(out)])
    assert code == 0, capsys.readouterr().err
    report = json.loads(out.with_suffix(".report.json").read_text())
    assert report["oracle"]["passed"] and report["settings"]["steps"] == 3
    assert report["ratios"]["macs"] < 0.5


@pytest.mark.parametrize("options", [{"steps": 0}, {"steps": 2, "removed": np.array([0])},
                                     {"steps": 2, "allocation": "sensitivity"},
                                     {"steps": 2, "resize_io": ["*"]}])
def test_bad_step_options(model_path, options):
    with pytest.raises(UsageError):
        prune_in_steps(model_path, 0.5, **options)
