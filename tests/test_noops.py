"""No silent no-ops: a prune that removes nothing, or an option that does nothing, says so."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import graphprune
from graphprune.cli import main
from tests.test_names import conv_chain

NAMES = ["conv1", "conv2", "conv3"]


@pytest.fixture
def chain(tmp_path):
    path = tmp_path / "chain.onnx"
    onnx.save(conv_chain(NAMES), path)  # three 32-channel groups
    return path


def one_conv() -> onnx.ModelProto:
    """A single Conv whose output is the graph output: no channel can go."""
    weight = numpy_helper.from_array(np.ones((8, 3, 3, 3), np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"], name="only")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 6, 6])], [weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def codes(result) -> list[str]:
    return [w.code for w in result.warnings]


def cause(result) -> str:
    found = [w for w in result.warnings if w.code == "nothing_pruned"]
    assert len(found) == 1, result.warnings
    return found[0].detail["cause"]


def test_a_real_prune_has_no_warnings(chain):
    result = graphprune.prune(chain, 0.5, round_to=8)
    assert result.after.macs < result.before.macs
    assert result.warnings == ()


def test_ratio_zero(chain):
    result = graphprune.prune(chain, 0.0, round_to=8)
    assert codes(result) == ["nothing_pruned"] and cause(result) == "ratio_zero"


def test_round_to_at_or_above_every_group(chain):
    for round_to in (32, 64):
        result = graphprune.prune(chain, 0.5, round_to=round_to)
        assert result.after.macs == result.before.macs
        assert codes(result) == ["round_to_too_large", "nothing_pruned"]
        assert cause(result) == "rounded_to_full"
        assert result.warnings[0].detail == {"round_to": round_to, "largest_group": 32}


def test_rounding_back_to_full_size_without_round_to(chain):
    result = graphprune.prune(chain, 0.01, round_to=1)
    assert codes(result) == ["nothing_pruned"] and cause(result) == "rounded_to_full"


def test_round_to_below_the_largest_group_is_no_warning(chain):
    assert graphprune.prune(chain, 0.5, round_to=16).warnings == ()


def test_exclude_pattern_matching_no_node(chain):
    result = graphprune.prune(chain, 0.5, round_to=8, exclude=["conv1", "nomatch*", "Conv*"])
    assert [(w.code, w.detail["pattern"]) for w in result.warnings] == [
        ("exclude_unmatched", "nomatch*"), ("exclude_unmatched", "Conv*")]  # fnmatch is exact
    assert result.after.macs < result.before.macs


def test_everything_excluded(chain):
    result = graphprune.prune(chain, 0.5, round_to=8, exclude=["conv*"])
    assert codes(result) == ["nothing_pruned"] and cause(result) == "all_excluded"
    assert result.warnings[0].detail["groups_without_exclude"] == 3


def test_no_prunable_group_names_the_blocked_reasons(tmp_path):
    path = tmp_path / "one.onnx"
    onnx.save(one_conv(), path)
    result = graphprune.prune(path, 0.5)
    assert codes(result) == ["nothing_pruned"] and cause(result) == "no_prunable_group"
    warning = result.warnings[0]
    assert warning.detail["blocked"] == {"graph_io": 1}
    assert "graph_io 1" in warning.message and "graph output 'y'" in warning.message


def test_explicit_empty_selection(chain):
    result = graphprune.prune(chain, 0.5, removed=np.zeros(0, np.int64))
    assert cause(result) == "empty_selection"


def _warning_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("warning: ")]


@pytest.mark.parametrize("args, expected", [
    (["--ratio", "0"], ["nothing_pruned"]),
    (["--round-to", "64"], ["round_to_too_large", "nothing_pruned"]),
    (["--exclude", "nomatch", "--round-to", "8"], ["exclude_unmatched"]),
    (["--exclude", "*", "--round-to", "8"], ["nothing_pruned"]),
])
def test_cli_prints_and_records_warnings(chain, capsys, args, expected):
    out = chain.with_name("out.onnx")
    assert main([str(chain), "-o", str(out), "--no-bench", *args]) == 0
    assert out.exists()
    report = json.loads(out.with_name("out.report.json").read_text())
    assert [w["code"] for w in report["warnings"]] == expected
    lines = _warning_lines(capsys.readouterr().err)
    assert lines == [f"warning: {w['message']}" for w in report["warnings"]]
    page = out.with_name("out.report.html").read_text()
    assert all(w["code"] != "nothing_pruned" or "nothing was pruned" in page
               for w in report["warnings"])


def test_cli_without_warnings_prints_none(chain, capsys):
    assert main([str(chain), "-o", str(chain.with_name("o.onnx")), "--no-bench",
                 "--round-to", "8"]) == 0
    assert _warning_lines(capsys.readouterr().err) == []
    assert json.loads(chain.with_name("o.report.json").read_text())["warnings"] == []


def test_sweep_reports_warnings_with_their_ratios(chain, tmp_path, capsys):
    out_dir = tmp_path / "sweep"
    out_dir.mkdir()
    assert main(["sweep", str(chain), "--ratios", "0,0.5", "--no-bench", "--round-to", "8",
                 "--exclude", "nomatch", "-o", str(out_dir)]) == 0
    report = json.loads((out_dir / "chain.sweep.json").read_text())
    merged = {w["code"]: w for w in report["warnings"]}
    assert merged["exclude_unmatched"]["ratios"] == [0.0, 0.5]
    assert merged["nothing_pruned"]["ratios"] == [0.0]
    assert "(at ratio 0)" in merged["nothing_pruned"]["message"]
    assert [[w["code"] for w in p["warnings"]] for p in report["points"]] == [
        ["exclude_unmatched", "nothing_pruned"], ["exclude_unmatched"]]
    assert len(_warning_lines(capsys.readouterr().err)) == 2


def test_analyze_json_to_stdout(chain, capsys):
    assert main(["analyze", str(chain), "--json", "--exclude", "nomatch"]) == 0
    captured = capsys.readouterr()
    report = json.loads(captured.out)  # nothing but the JSON on stdout
    analysis = graphprune.analyze(chain)
    assert report["nodes"] == 7 and report["op_counts"] == {"Conv": 4, "Relu": 3}
    assert [g["name"] for g in report["groups"]] == NAMES
    assert len(report["groups"]) == len(analysis.groups)
    group = report["groups"][0]
    assert group["channels"] == 32 and group["classes"] == 32 and group["segments"] == [32]
    assert {"tensor": "w0", "axis": 0, "kind": "parameter", "size": 32} in group["tensors"]
    assert {"tensor": "w1", "axis": 1, "kind": "parameter", "size": 32} in group["tensors"]
    assert report["blocked"][0]["reason"] == "graph_io"
    assert report["blocked_reasons"] == {"graph_io": 1}
    assert [w["code"] for w in report["warnings"]] == ["exclude_unmatched"]
    assert _warning_lines(captured.err) == ["warning: --exclude 'nomatch' matches no node"]


def test_analyze_json_to_a_file(chain, capsys):
    target = chain.with_name("analysis.json")
    assert main(["analyze", str(chain), "--json", str(target)]) == 0
    report = json.loads(target.read_text())
    assert len(report["groups"]) == 3 and report["input"] == str(chain)
    assert "prunable groups" in capsys.readouterr().out
    assert not list(chain.parent.glob(".graphprune-*"))  # staged, then renamed


def test_analyze_json_refuses_to_overwrite_the_model(chain, capsys):
    before = chain.read_bytes()
    assert main(["analyze", str(chain), "--json", str(chain)]) == 2
    assert chain.read_bytes() == before
    assert "overwrite the input" in capsys.readouterr().err
