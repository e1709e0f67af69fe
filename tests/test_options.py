"""PruneOptions checks every setting in one place; prune_file is the job the CLI and sweep run."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

import graphprune
from graphprune.cli import main
from graphprune.errors import UsageError, VerificationError
from graphprune.inputs import valid_feeds
from graphprune.job import prune_file
from graphprune.options import PruneOptions
from graphprune.verify.runtime import SelfCheck
from tests.test_names import conv_chain

BAD = [
    ({"ratio": 1.0}, ["--ratio", "1.0"], "--ratio must be in [0, 1), got 1.0"),
    ({"heads": -0.1}, ["--heads", "-0.1"], "--heads must be in [0, 1), got -0.1"),
    ({"mlp": 2.0}, ["--mlp", "2"], "--mlp must be in [0, 1), got 2.0"),
    ({"target_macs": 0.0}, ["--target-macs", "0"], "--target-macs must be in (0, 1], got 0.0"),
    ({"target_params": 1.5}, ["--target-params", "1.5"],
     "--target-params must be in (0, 1], got 1.5"),
    ({"target_macs": 0.5, "target_latency": 0.5},
     ["--target-macs", "0.5", "--target-latency", "0.5"],
     "--target-macs and --target-latency exclude each other"),
    ({"round_to": 0}, ["--round-to", "0"], "--round-to must be a positive integer, got 0"),
]


@pytest.fixture
def model_file(tmp_path):
    path = tmp_path / "m.onnx"
    onnx.save(conv_chain(["a", "b"]), path)
    return path


@pytest.mark.parametrize(("options", "argv", "message"), BAD)
def test_the_api_and_the_cli_refuse_a_setting_with_the_same_line(options, argv, message,
                                                                 model_file, capsys):
    with pytest.raises(UsageError) as caught:
        PruneOptions(**options).check()
    assert str(caught.value) == message
    with pytest.raises(UsageError) as caught:
        graphprune.prune(model_file, **{"ratio": 0.5, **options})
    assert str(caught.value) == message
    assert main([str(model_file), "--no-bench", *argv]) == 2
    assert capsys.readouterr().err.strip() == f"graphprune: error: {message}"
    assert not model_file.with_name("m.pruned.onnx").exists()


def test_more_settings_are_checked_before_any_work():
    for options in ({"seed": -1}, {"seed": True}, {"criterion": "magic"},
                    {"allocation": "target"}, {"allocation": "sensitivity"},
                    {"sensitivity": {"groups": []}}, {"steps": 0},
                    {"allocation": "sensitivity", "sensitivity": "t.json",
                     "target_latency": 0.5}):
        with pytest.raises(UsageError):
            PruneOptions(**options).check()
    with pytest.raises(UsageError, match="unknown compensation 'magic'"):
        PruneOptions.of(0.5, compensate="magic")
    options = PruneOptions.of(0.3, compensate="stats,bias", exclude=["a*"], mlp=0.2).check()
    assert options.compensate == ("bias", "stats") and options.exclude == ("a*",)
    assert options.ratios == {"heads": 0.3, "channels": 0.2}
    assert "ratio" not in options.keywords() and "steps" not in options.keywords()


def test_prune_file_writes_what_prune_computes_and_runs_the_oracle(model_file, tmp_path):
    options = PruneOptions.of(0.5, round_to=8)
    feeds = valid_feeds(model_file, count=2)
    check = SelfCheck(model_file, feeds)
    check.check_input()
    out = tmp_path / "p.onnx"
    result = prune_file(model_file, out, options, check=check)
    assert check.oracle is not None and check.oracle.passed and check.fills == result.fills
    direct = graphprune.prune(model_file, 0.5, round_to=8)
    assert result.masks.keys() == direct.masks.keys()
    for name, cuts in result.masks.items():
        for (axis, kept), (axis2, kept2) in zip(cuts, direct.masks[name], strict=True):
            assert axis == axis2 and np.array_equal(kept, kept2)
    assert len(onnx.load(out).graph.node) == len(onnx.load(model_file).graph.node)
    unchecked = prune_file(model_file, tmp_path / "q.onnx", options, check=check, oracle=False)
    assert check.masks is None and unchecked.masks


def test_prune_file_writes_nothing_when_the_check_fails(model_file, tmp_path):
    def failing(staged):
        raise VerificationError("no")

    out = tmp_path / "p.onnx"
    with pytest.raises(VerificationError):
        prune_file(model_file, out, PruneOptions.of(0.5, round_to=8), check=failing)
    assert not out.exists() and [p.name for p in tmp_path.iterdir()] == ["m.onnx"]


def test_prune_file_collects_garbage_less_often_and_restores(model_file, tmp_path, monkeypatch):
    import gc

    from graphprune import job

    seen = []
    real = job.prune_in_steps
    monkeypatch.setattr(job, "prune_in_steps",
                        lambda *a, **k: seen.append(gc.get_threshold()) or real(*a, **k))
    before = gc.get_threshold()
    prune_file(model_file, tmp_path / "p.onnx", PruneOptions.of(0.5, round_to=8))
    assert seen == [job.GC_THRESHOLDS] and gc.get_threshold() == before
