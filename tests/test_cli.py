"""The command line end to end: outputs, report, exit codes, external data, atomic writes."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

from graphprune.cli import main
from graphprune.verify.oracle import relative_error, run
from tests.oracle import feeds_for


def test_main_job_writes_model_and_report(model_path, capsys):
    # the model is tiny (16-channel layers), so round to 8 rather than the default 16
    assert main([str(model_path), "--ratio", "0.5", "--round-to", "8"]) == 0
    out = model_path.with_name("net.pruned.onnx")
    report = json.loads(model_path.with_name("net.pruned.report.json").read_text())
    onnx.checker.check_model(onnx.load(out), full_check=True)
    assert report["after"]["macs"] < 0.4 * report["before"]["macs"]
    assert report["after"]["params"] < report["before"]["params"]
    group = report["groups"][0]
    assert {"name", "tensors", "channels_before", "channels_after", "kept"} <= set(group)
    assert len(group["kept"]) == group["channels_after"] < group["channels_before"]
    assert all(t["after"] <= t["before"] for t in group["tensors"])
    assert "params" in capsys.readouterr().out


def test_output_option_and_criteria(model_path, tmp_path):
    for criterion in ("l1", "l2", "random"):
        out = tmp_path / f"{criterion}.onnx"
        args = ["--ratio", "0.3", "--criterion", criterion, "-o", str(out), "--no-bench"]
        assert main([str(model_path), *args]) == 0
        assert out.exists() and (tmp_path / f"{criterion}.report.json").exists()


def test_analyze_prints_groups_and_writes_nothing(model_path, capsys):
    before = set(model_path.parent.iterdir())
    assert main(["analyze", str(model_path)]) == 0
    text = capsys.readouterr().out
    assert "prunable groups" in text and "blocked channel axes" in text and "graph_io" in text
    assert set(model_path.parent.iterdir()) == before


@pytest.mark.parametrize(
    "args, code, message",
    [
        (["missing.onnx"], 2, "no such file"),
        (["{model}", "--ratio", "1.5"], 2, "ratio"),
        (["{model}", "--ratio", "abc"], 2, "ratio"),
        (["{model}", "--criterion", "magic"], 2, "criterion"),
        (["{model}", "-o", "{model}"], 2, "overwrite the input"),
        (["{model}", "--no-such-option"], 2, "no-such-option"),
        (["{model}", "-o", "/proc/nope/out.onnx"], 3, "cannot write"),
    ],
)
def test_bad_input_is_one_line_and_nonzero(model_path, capsys, args, code, message):
    before = {p: p.stat().st_mtime_ns for p in model_path.parent.iterdir()}
    argv = [a.replace("{model}", str(model_path)) for a in args]
    assert main(argv) == code
    err = capsys.readouterr().err.strip()
    assert err.startswith("graphprune: error:") and len(err.splitlines()) == 1
    assert message in err
    assert {p: p.stat().st_mtime_ns for p in model_path.parent.iterdir()} == before


def test_not_a_model_is_refused(tmp_path, capsys):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(np.random.default_rng(0).bytes(300))
    assert main([str(bad)]) == 2
    assert "not a readable ONNX model" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.onnx"]


def test_external_data_round_trip(model_path, tmp_path):
    proto = onnx.load(model_path)
    source = tmp_path / "ext.onnx"
    onnx.save(proto, source, save_as_external_data=True, location="ext.onnx.data", size_threshold=0)
    assert main([str(source), "--ratio", "0.5"]) == 0
    out = tmp_path / "ext.pruned.onnx"
    assert len(list(tmp_path.glob("ext.pruned.onnx.*.data"))) == 1  # a fresh name per write
    pruned = onnx.load(out, load_external_data=False)
    assert any(t.data_location == onnx.TensorProto.EXTERNAL for t in pruned.graph.initializer)
    pruned = onnx.load(out)
    report = json.loads((tmp_path / "ext.pruned.report.json").read_text())
    assert report["after"]["params"] < report["before"]["params"]
    original = onnx.load(model_path)  # onnx.save above moved proto's tensors out of the message
    feeds = feeds_for(original, {"input": (2, 3, 32, 32)})
    assert run(pruned, feeds)[0].shape == run(original, feeds)[0].shape


def test_ratio_zero_output_matches_input(model_path, tmp_path):
    out = tmp_path / "same.onnx"
    assert main([str(model_path), "--ratio", "0", "-o", str(out)]) == 0
    proto, pruned = onnx.load(model_path), onnx.load(out)
    feeds = feeds_for(proto)
    assert relative_error(run(proto, feeds), run(pruned, feeds)) == 0.0


def test_oracle_error_is_reported_and_can_be_skipped(model_path, tmp_path, capsys):
    out = tmp_path / "oracle.onnx"
    assert main([str(model_path), "--round-to", "8", "--no-bench", "-o", str(out)]) == 0
    oracle = json.loads((tmp_path / "oracle.report.json").read_text())["oracle"]
    assert 0 <= oracle["relative_error"] <= oracle["tolerance"] == 1e-4
    assert oracle["passed"] and oracle["batches"] == 2 and set(oracle["outputs"]) == {"output"}
    assert "mask-equivalence oracle" in capsys.readouterr().out
    assert main([str(model_path), "--round-to", "8", "--no-bench", "--no-oracle",
                 "-o", str(out)]) == 0
    assert json.loads((tmp_path / "oracle.report.json").read_text())["oracle"] is None


def test_the_cli_collects_garbage_less_often_and_restores_the_thresholds(model_path, tmp_path,
                                                                          monkeypatch):
    import gc

    from graphprune import cli as cli_module

    seen = []
    real = cli_module.cli.main
    monkeypatch.setattr(cli_module.cli, "main",
                        lambda *a, **k: seen.append(gc.get_threshold()) or real(*a, **k))
    before = gc.get_threshold()
    assert main(["analyze", str(model_path)]) == 0
    from graphprune.job import GC_THRESHOLDS

    assert seen == [GC_THRESHOLDS] and gc.get_threshold() == before
