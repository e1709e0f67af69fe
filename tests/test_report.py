"""Reports: cost counting, the JSON before/after/fidelity objects, the self-contained HTML."""

from __future__ import annotations

import base64
import html
import json
import re

import numpy as np
import onnx
import onnx_ir as ir
import pytest

from graphprune.cli import main
from graphprune.report.costs import count_costs, file_size
from graphprune.report.files import write_json
from graphprune.report.format import RANDOM_FIDELITY_NOTICE

FAST = ["--runs", "3", "--warmup", "1", "--samples", "4", "--providers", "cpu"]


@pytest.fixture(scope="module")
def pruned(model_path):
    assert main([str(model_path), "--ratio", "0.5", *FAST]) == 0
    report = json.loads(model_path.with_name("net.pruned.report.json").read_text())
    return report, model_path.with_name("net.pruned.report.html")


def _linear_ops_model() -> ir.Model:
    """Conv (grouped), ConvTranspose, MatMul and Gemm; b is read by two nodes."""
    h = onnx.helper
    weights = {"w": (6, 2, 3, 3), "wt": (4, 6, 3, 3), "b": (5, 7)}
    nodes = [
        h.make_node("Conv", ["x", "w"], ["y"], group=2, pads=[1, 1, 1, 1]),
        h.make_node("ConvTranspose", ["x", "wt"], ["t"], strides=[2, 2]),
        h.make_node("MatMul", ["a", "b"], ["m"]),
        h.make_node("Gemm", ["a", "b"], ["n"]),
    ]
    value = onnx.helper.make_tensor_value_info
    graph = h.make_graph(
        nodes, "g",
        [value("x", onnx.TensorProto.FLOAT, [2, 4, 8, 8]),
         value("a", onnx.TensorProto.FLOAT, [3, 5])],
        [value("y", onnx.TensorProto.FLOAT, [2, 6, 8, 8]),
         value("t", onnx.TensorProto.FLOAT, [2, 6, 17, 17]),
         value("m", onnx.TensorProto.FLOAT, [3, 7]), value("n", onnx.TensorProto.FLOAT, [3, 7])],
        [onnx.numpy_helper.from_array(np.ones(s, np.float32), n) for n, s in weights.items()],
    )
    return ir.from_proto(h.make_model(graph, opset_imports=[h.make_opsetid("", 17)]))


def test_macs_per_op_and_node():
    costs = count_costs(_linear_ops_model())
    assert costs.macs_by_op == {
        "Conv": 2 * 6 * 8 * 8 * 2 * 3 * 3,
        "ConvTranspose": 2 * 4 * 8 * 8 * 6 * 3 * 3,
        "MatMul": 3 * 7 * 5,
        "Gemm": 3 * 7 * 5,
    }
    assert costs.params == 6 * 2 * 9 + 4 * 6 * 9 + 5 * 7  # b counted once, for MatMul
    assert costs.params_by_op == {"Conv": 108, "ConvTranspose": 216, "MatMul": 35}
    assert [n.op_type for n in costs.nodes] == ["Conv", "ConvTranspose", "MatMul", "Gemm"]
    assert sum(n.macs for n in costs.nodes) == costs.macs
    assert costs.as_dict()["nodes"][3] == {"name": "Gemm_3", "op_type": "Gemm", "params": 0,
                                           "macs": 105}


def test_file_size_counts_external_data(model_path, tmp_path):
    proto = onnx.load(model_path)
    target = tmp_path / "ext.onnx"
    onnx.save(proto, target, save_as_external_data=True, location="ext.bin", size_threshold=0)
    assert file_size(target) == target.stat().st_size + (tmp_path / "ext.bin").stat().st_size
    assert file_size(model_path) == model_path.stat().st_size


def test_json_report_has_before_after_and_fidelity(pruned):
    report, _ = pruned
    before, after = report["before"], report["after"]
    for side in (before, after):
        assert {"params", "macs", "macs_by_op", "params_by_op", "nodes", "file_size",
                "latency"} <= set(side)
        cpu = side["latency"]["cpu"]
        assert cpu["runs"] == 3 and len(cpu["samples_ms"]) == 3
        assert cpu["p90_ms"] >= cpu["median_ms"]
        assert sum(n["macs"] for n in side["nodes"]) == side["macs"]
    assert after["macs"] < before["macs"] and after["file_size"] < before["file_size"]
    assert after["macs_by_op"]["Conv"] < before["macs_by_op"]["Conv"]
    assert report["ratios"]["macs"] == pytest.approx(after["macs"] / before["macs"])
    assert report["ratios"]["latency_cpu"] > 0
    fidelity = report["fidelity"]
    assert 0 < fidelity["rel_l2"] and -1 <= fidelity["cosine"] <= 1
    assert 0 <= fidelity["top1_agreement"] <= 1
    assert fidelity["outputs"]["output"]["samples"] == 4
    env = report["environment"]
    assert env["cpu"] and env["onnxruntime"] and env["intra_op_threads"] >= 1


def test_html_is_self_contained_with_plots(pruned):
    _, html_path = pruned
    text = html_path.read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", text)  # nothing fetched
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', text)
    assert len(images) == 4  # channels per layer, MACs per op, MACs per node, latency
    assert all(base64.b64decode(i)[:8] == b"\x89PNG\r\n\x1a\n" for i in images)
    for heading in ("Before and after", "Fidelity", "Channels kept per layer", "MACs",
                    "Latency distributions"):
        assert heading in text


def test_terminal_summary(model_path, tmp_path, capsys):
    out = tmp_path / "s.onnx"
    assert main([str(model_path), "--ratio", "0.3", "-o", str(out), *FAST]) == 0
    text = capsys.readouterr().out
    for word in ("params", "macs", "file size", "cpu latency median", "relative L2 error",
                 "top-1 agreement", "onnxruntime", "s.report.html"):
        assert word in text
    assert (tmp_path / "s.report.json").exists() and (tmp_path / "s.report.html").exists()


def test_no_bench_skips_measurement(model_path, tmp_path):
    out = tmp_path / "nb.onnx"
    assert main([str(model_path), "--ratio", "0.5", "-o", str(out), "--no-bench"]) == 0
    report = json.loads((tmp_path / "nb.report.json").read_text())
    assert report["before"]["latency"] == {} and report["fidelity"] is None
    assert report["after"]["params"] < report["before"]["params"]
    assert "not measured" in (tmp_path / "nb.report.html").read_text()


def test_user_data_feeds_fidelity(model_path, tmp_path):
    data = np.random.default_rng(3).standard_normal((5, 3, 32, 32)).astype(np.float32)
    np.save(tmp_path / "x.npy", data)
    out = tmp_path / "d.onnx"
    argv = [str(model_path), "-o", str(out), "--data", str(tmp_path / "x.npy"), *FAST[:4],
            "--providers", "cpu"]
    assert main(argv) == 0
    report = json.loads((tmp_path / "d.report.json").read_text())
    assert report["fidelity"]["outputs"]["output"]["samples"] == 5
    assert report["environment"]["inputs"]["origin"] == str(tmp_path / "x.npy")
    assert RANDOM_FIDELITY_NOTICE not in report["notices"]  # the user's data
    # --criterion/--compensate auto with data: a data-driven criterion and compensation,
    # calibrated on the same samples fidelity is measured on (the report says so)
    assert report["settings"]["criterion"] == "fluctuation"
    assert report["settings"]["compensate"] == ["refit", "stats"]
    assert any("calibrated" in n for n in report["notices"])
    assert report["fidelity_meaning"].startswith(f"output change against the original on "
                                                 f"{tmp_path / 'x.npy'} (5 batches)")
    assert "relative L2" in (tmp_path / "d.report.html").read_text()


def test_random_inputs_say_fidelity_is_not_accuracy(pruned, model_path, tmp_path, capsys):
    report, html_file = pruned
    assert RANDOM_FIDELITY_NOTICE in report["notices"]
    assert "random inputs: not task accuracy" in report["fidelity_meaning"]
    assert html.escape(RANDOM_FIDELITY_NOTICE) in html_file.read_text()
    out = tmp_path / "r.onnx"
    assert main([str(model_path), "--ratio", "0.3", "-o", str(out), *FAST]) == 0
    text = capsys.readouterr().out
    assert f"note: {RANDOM_FIDELITY_NOTICE}" in text
    assert "fidelity: output change against the original on random inputs" in text
    bench_json = tmp_path / "bench.json"
    assert main(["bench", str(model_path), str(out), "--json", str(bench_json), *FAST]) == 0
    assert json.loads(bench_json.read_text())["notices"] == [RANDOM_FIDELITY_NOTICE]
    assert RANDOM_FIDELITY_NOTICE in capsys.readouterr().out


def test_calibration_on_the_measured_data_is_said(model_path, tmp_path):
    np.save(tmp_path / "x.npy", np.random.default_rng(4).standard_normal((3, 3, 32, 32))
            .astype(np.float32))
    out = tmp_path / "c.onnx"
    argv = [str(model_path), "-o", str(out), "--data", str(tmp_path / "x.npy"), "--criterion",
            "activation", *FAST[:4], "--providers", "cpu"]
    assert main(argv) == 0
    (notice,) = json.loads((tmp_path / "c.report.json").read_text())["notices"]
    assert "fidelity of data-driven criteria and compensation is optimistic" in notice


def test_no_fidelity_no_notice(model_path, tmp_path):
    out = tmp_path / "nb.onnx"
    assert main([str(model_path), "--ratio", "0.5", "-o", str(out), "--no-bench",
                 "--criterion", "l1", "--compensate", "none"]) == 0
    report = json.loads((tmp_path / "nb.report.json").read_text())
    assert report["notices"] == [] and report["fidelity_meaning"] is None


def test_auto_defaults_without_data_say_what_they_chose(model_path, tmp_path):
    out = tmp_path / "auto.onnx"
    assert main([str(model_path), "--ratio", "0.5", "-o", str(out), "--no-bench"]) == 0
    report = json.loads((tmp_path / "auto.report.json").read_text())
    assert report["settings"]["criterion"] == "l1" and report["settings"]["compensate"] == []
    assert report["oracle"] is not None  # nothing compensated: the oracle ran
    assert [n for n in report["notices"] if n.startswith("no --data: pruning by l1")]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--data", "{dir}/missing.npz"], "no such file"),
        (["--input-shape", "input=1,3,32"], "declares"),
        (["--samples", "0"], "--samples"),
        (["--threads", "0"], "--threads"),
    ],
)
def test_bad_measurement_options_write_nothing(model_path, tmp_path, capsys, args, message):
    out = tmp_path / "bad.onnx"
    argv = [str(model_path), "-o", str(out), *[a.replace("{dir}", str(tmp_path)) for a in args]]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("graphprune: error:") and len(err.splitlines()) == 1 and message in err
    assert list(tmp_path.iterdir()) == []


def test_write_json_is_atomic_and_finite(tmp_path):
    target = tmp_path / "r.json"
    write_json({"a": float("nan"), "b": [1.0, float("inf")]}, target)
    assert json.loads(target.read_text()) == {"a": None, "b": [1.0, None]}
    with pytest.raises(TypeError):
        write_json({"a": object()}, target)
    assert json.loads(target.read_text())["a"] is None  # the old file is intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json"]


def test_compensation_lines_summarize_per_layer_lists():
    from graphprune.report.table import _compensation_details

    entry = {"name": "refit", "layers": 2, "fitted": [{"node": "a"}, {"node": "b"}],
             "skipped": [], "seconds": 0.123456}
    assert _compensation_details(entry) == "layers 2, fitted 2, skipped [], seconds 0.123"


def test_long_json_reports_are_outlined(tmp_path, monkeypatch):
    """Above INDENT_BELOW bytes a report is an outline: the same data, one entry per line."""
    import graphprune.report.files as files

    data = {"input": "m.onnx", "score": float("nan"),
            "groups": [{"name": f"g{k}", "kept": [0, 1], "tensors": [{"t": k}]} for k in range(3)],
            "before": {"nodes": [{"name": "a", "macs": 1}, {"name": "b", "macs": float("inf")}]}}
    want = {**data, "score": None, "before": {"nodes": [{"name": "a", "macs": 1},
                                                        {"name": "b", "macs": None}]}}
    small = tmp_path / "small.json"
    write_json(data, small)
    assert json.loads(small.read_text()) == want
    assert small.read_text() == json.dumps(want, indent=1)
    monkeypatch.setattr(files, "INDENT_BELOW", 10)
    big = tmp_path / "big.json"
    write_json(data, big)
    text = big.read_text()
    assert json.loads(text) == want
    lines = text.splitlines()
    assert ' {"name": "g1", "kept": [0, 1], "tensors": [{"t": 1}]},' not in lines  # level 2
    assert '   {"name": "g1", "kept": [0, 1], "tensors": [{"t": 1}]}' not in lines
    assert '   "kept": [0, 1],' in lines  # the third level has a line per entry, deeper is one
    assert '   {"name": "b", "macs": null}' in lines
