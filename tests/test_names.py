"""Names from the model are printed literally: no rich markup, no mathtext, no terminal escapes."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from graphprune.cli import main
from graphprune.report import plots

ESC_NAME = "e\x1b[2Jx\x07y"
CRAFTED = ["conv1[/b]", "conv$\\x{$", ESC_NAME, "[bold]x[/bold]", "<b>&amp;"]
PRINTED = {name: name for name in CRAFTED} | {ESC_NAME: "e\\x1b[2Jx\\x07y"}
LONG = "/backbone/" + "stage_with_a_very_long_name/" * 6 + "Conv"


def conv_chain(names: list[str], channels: int = 32) -> onnx.ModelProto:
    """``x -> (Conv named names[i] -> Relu)* -> 1x1 Conv 'head' -> y`` on 8x8 images."""
    rng = np.random.default_rng(0)
    initializers, nodes, previous, c_in = [], [], "x", 3
    for i, name in enumerate(names):
        weight = (rng.standard_normal((channels, c_in, 3, 3)) * 0.3).astype(np.float32)
        initializers.append(numpy_helper.from_array(weight, f"w{i}"))
        nodes.append(helper.make_node("Conv", [previous, f"w{i}"], [f"t{i}"], name=name,
                                      pads=[1, 1, 1, 1]))
        nodes.append(helper.make_node("Relu", [f"t{i}"], [f"r{i}"], name=f"{name}_relu"))
        previous, c_in = f"r{i}", channels
    head = (rng.standard_normal((4, c_in, 1, 1)) * 0.3).astype(np.float32)
    initializers.append(numpy_helper.from_array(head, "wh"))
    nodes.append(helper.make_node("Conv", [previous, "wh"], ["y"], name="head"))
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])], initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


@pytest.fixture
def crafted(tmp_path):
    path = tmp_path / "crafted.onnx"
    onnx.save(conv_chain(CRAFTED), path)
    return path


def _assert_literal(text: str, names: list[str]) -> None:
    assert "\x1b" not in text and "\x07" not in text
    for name in names:
        assert PRINTED[name] in text, name


def test_printable_escapes_control_characters_only():
    from graphprune.report.format import printable

    assert printable("conv1[/b]") == "conv1[/b]"
    assert printable("conv$\\x{$") == "conv$\\x{$"
    assert printable("名前/é x") == "名前/é x"
    assert printable(ESC_NAME) == "e\\x1b[2Jx\\x07y"
    assert printable("a\u202eb\nc\x00") == "a\\u202eb\\x0ac\\x00"


def test_prune_with_crafted_names_writes_model_and_reports(crafted, capsys):
    out = crafted.with_name("out[bold].onnx")
    assert main([str(crafted), "-o", str(out), "--round-to", "8", "--no-bench"]) == 0
    onnx.checker.check_model(onnx.load(out), full_check=True)
    report = json.loads(out.with_name("out[bold].report.json").read_text())
    assert {g["name"] for g in report["groups"]} == set(CRAFTED)  # raw names in the data
    assert all(g["channels_after"] < g["channels_before"] for g in report["groups"])
    captured = capsys.readouterr()
    text = captured.out + captured.err
    _assert_literal(text, CRAFTED)
    assert f"wrote {out}" in text
    page = out.with_name("out[bold].report.html").read_text()
    assert "\x1b" not in page and "<b>&amp;" not in page


def test_html_report_escapes_names(crafted, capsys):
    out = crafted.with_name("out.onnx")
    assert main([str(crafted), "-o", str(out), "--round-to", "8", "--no-bench",
                 "--exclude", "<b>*"]) == 0
    page = out.with_name("out.report.html").read_text()
    assert "&lt;b&gt;&amp;amp;" in page  # the excluded node is named in the blocked table
    assert "<b>&amp;" not in page and "\x1b" not in page
    capsys.readouterr()


def test_analyze_with_crafted_names(crafted, capsys):
    assert main(["analyze", str(crafted)]) == 0
    captured = capsys.readouterr()
    _assert_literal(captured.out + captured.err, CRAFTED)


def test_long_analysis_tables_are_plain_literal_text(crafted, capsys, monkeypatch):
    """Above PLAIN_ROWS rows the tables are aligned plain text, names still literal."""
    from graphprune.report import table

    monkeypatch.setattr(table, "PLAIN_ROWS", 0)
    assert main(["analyze", str(crafted)]) == 0
    text = capsys.readouterr().out
    _assert_literal(text, CRAFTED)
    assert "┃" not in text and "│" not in text  # no rich table drawn
    lines = text.splitlines()
    header = next(k for k, line in enumerate(lines) if line.split()[:2] == ["#", "group"])
    rows = lines[header + 1: header + 1 + len(CRAFTED)]
    assert [r.split()[0] for r in rows] == [str(k) for k in range(len(CRAFTED))]
    assert len({r.index(PRINTED[name]) for r, name in zip(rows, CRAFTED, strict=True)}) == 1


def test_long_names_are_not_cut_when_piped(tmp_path, capsys):
    path = tmp_path / "long.onnx"
    onnx.save(conv_chain([LONG, LONG + "2"]), path)
    assert main(["analyze", str(path)]) == 0
    text = capsys.readouterr().out
    assert LONG in text and LONG + "2" in text and "…" not in text
    assert main([str(path), "-o", str(tmp_path / "o.onnx"), "--round-to", "8", "--no-bench"]) == 0
    text = capsys.readouterr().out
    assert LONG in text and "…" not in text


def test_error_lines_escape_control_characters(tmp_path, capsys):
    missing = tmp_path / f"{ESC_NAME}[b].onnx"
    assert main([str(missing)]) == 2
    err = capsys.readouterr().err
    assert "\x1b" not in err and "e\\x1b[2Jx\\x07y[b].onnx" in err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("name", ["conv$\\x{$", "$\\frac{$", "a$b", "x\x1by"])
def test_plots_never_parse_names_as_mathtext(name):
    groups = [{"name": name, "channels_before": 8, "channels_after": 4}]
    assert plots.channels_per_group(groups)
    assert plots.macs_by_op({name: 10}, {name: 5})


def test_internal_error_line_is_one_printable_line(crafted, capsys, monkeypatch):
    def fail(*args, **kwargs):
        raise ValueError(f"bad\n{ESC_NAME}")

    monkeypatch.setattr("graphprune.cli.graphprune.analyze", fail)
    assert main(["analyze", str(crafted)]) == 1
    err = capsys.readouterr().err
    assert err == "graphprune: internal error: ValueError: bad e\\x1b[2Jx\\x07y\n"
