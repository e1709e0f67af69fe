"""Sweep: prune at several ratios, measure side by side, write JSON and HTML."""

from __future__ import annotations

import base64
import html
import json
import re

import numpy as np
import onnx_ir as ir
import pytest

from graphprune.bench.sweep import (
    SweepSetting,
    parse_compensations,
    parse_criteria,
    parse_ratios,
    sweep_settings,
)
from graphprune.cli import main
from graphprune.compensation import COMPENSATIONS
from graphprune.compensation.layers import linear_layers
from graphprune.errors import UsageError
from graphprune.report import plots
from graphprune.report.format import RANDOM_FIDELITY_NOTICE
from models.export import export

FAST = ["--runs", "2", "--warmup", "1", "--samples", "2", "--providers", "cpu"]


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    """Static batch, unlike the shared fixture: a bad --input-shape must be refused."""
    folder = tmp_path_factory.mktemp("sweep")
    return export("resnet18", folder / "net.onnx", width=0.25, input_shape=(1, 3, 32, 32))


def test_parse_ratios():
    assert parse_ratios("0.5, 0.1,0.5") == [0.1, 0.5]
    for bad in ("", "a", "0.2,1", "-0.1"):
        with pytest.raises(UsageError, match="--ratios"):
            parse_ratios(bad)


def test_sweep_writes_json_and_html(model_path, tmp_path, capsys):
    argv = ["sweep", str(model_path), "--ratios", "0.25,0.5,0.75", "-o", str(tmp_path), *FAST]
    assert main(argv) == 0
    report = json.loads((tmp_path / "net.sweep.json").read_text())
    points = report["points"]
    assert [p["ratio"] for p in points] == [0.25, 0.5, 0.75]
    macs = [p["macs"] for p in points]
    assert macs == sorted(macs, reverse=True) and macs[0] < report["original"]["macs"]
    for point in points:
        assert point["model"] is None and point["latency"]["cpu"]["runs"] == 2
        assert 0 < point["macs_ratio"] < 1 and point["latency_ratio"]["cpu"] > 0
        assert point["fidelity"]["outputs"]["output"]["samples"] == 2
    assert report["original"]["latency"]["cpu"]["runs"] == 2
    text = (tmp_path / "net.sweep.html").read_text()
    assert len(re.findall(r'src="data:image/png;base64,', text)) == 3
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", text)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["net.sweep.html", "net.sweep.json"]
    assert "Sweep" in capsys.readouterr().out


def test_keep_models_and_no_bench(model_path, tmp_path):
    argv = ["sweep", str(model_path), "--ratios", "0.5", "-o", str(tmp_path), "--keep-models",
            "--no-bench"]
    assert main(argv) == 0
    report = json.loads((tmp_path / "net.sweep.json").read_text())
    (point,) = report["points"]
    assert point["model"] == str(tmp_path / "net.ratio0.50.onnx")
    assert (tmp_path / "net.ratio0.50.onnx").exists()
    assert point["latency"] == {} and point["fidelity"] is None
    assert "not measured" in (tmp_path / "net.sweep.html").read_text()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--ratios", "0.5,1.2"], "--ratios"),
        (["-o", "/nonexistent/folder"], "no such folder"),
        (["--criterion", "magic"], "criterion"),
        (["--criteria", "l1,magic"], "unknown criterion 'magic'"),
        (["--compensate", "none,magic"], "unknown compensation 'magic'"),
        (["--input-shape", "input=2,3,32,32"], "declares"),
    ],
)
def test_sweep_bad_input_is_one_line(model_path, tmp_path, capsys, args, message):
    argv = ["sweep", str(model_path), "-o", str(tmp_path), *args]
    argv = argv if "-o" not in args else ["sweep", str(model_path), *args]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("graphprune: error:") and len(err.splitlines()) == 1 and message in err
    assert list(tmp_path.iterdir()) == []


class _Shift(ir.passes.InPlacePass):
    """A test compensation: shifts the first linear layer's bias (changes every output)."""

    def __init__(self, context) -> None:
        super().__init__()
        self.context = context
        self.report = {"batches": len(self.context.batches)}

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        layer = linear_layers(model)[0]
        layer.set_bias(layer.bias() + 0.5)
        return ir.passes.PassResult(model, True)


def test_parse_criteria_and_compensations():
    assert parse_criteria("l1, fluctuation,l1") == ["l1", "fluctuation"]
    with pytest.raises(UsageError, match="unknown criterion 'magic'"):
        parse_criteria("l1,magic")
    with pytest.raises(UsageError, match="--criteria"):
        parse_criteria(" , ")
    assert parse_compensations("none") == [()]
    with pytest.raises(UsageError, match="unknown compensation 'magic'"):
        parse_compensations("none,magic")
    plan = sweep_settings(["l1", "l2"], [(), ("x",)])
    assert [s.label for s in plan] == ["l1/none", "l1/x", "l2/none", "l2/x"]


def test_combined_methods_are_one_setting(monkeypatch):
    monkeypatch.setitem(COMPENSATIONS, "bias", _Shift)
    monkeypatch.setitem(COMPENSATIONS, "stats", _Shift)
    assert parse_compensations("none,stats+bias,bias") == [(), ("bias", "stats"), ("bias",)]
    assert SweepSetting("l1", ("bias", "stats")).label == "l1/bias+stats"


def test_criteria_times_compensation(model_path, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(COMPENSATIONS, "stats", _Shift)
    rng = np.random.default_rng(5)
    np.save(tmp_path / "calib.npy", rng.standard_normal((3, 3, 32, 32)).astype(np.float32))
    np.save(tmp_path / "test.npy", rng.standard_normal((2, 3, 32, 32)).astype(np.float32))
    out = tmp_path / "out"
    out.mkdir()
    argv = ["sweep", str(model_path), "--ratios", "0.25,0.5", "-o", str(out),
            "--criteria", "l1,activation", "--compensate", "none,stats",
            "--data", str(tmp_path / "test.npy"), "--calib-data", str(tmp_path / "calib.npy"),
            "--calib-samples", "2", "--keep-models", *FAST[:4], "--providers", "cpu"]
    assert main(argv) == 0
    report = json.loads((out / "net.sweep.json").read_text())
    rows = [(p["criterion"], tuple(p["compensate"]), p["ratio"]) for p in report["points"]]
    assert rows == [(c, m, r) for c in ("l1", "activation") for m in ((), ("stats",))
                    for r in (0.25, 0.5)]
    assert report["settings"]["points"] == ["l1/none", "l1/stats", "activation/none",
                                            "activation/stats"]
    assert report["settings"]["calibration"] == {"origin": str(tmp_path / "calib.npy"),
                                                 "batches": 2}
    by = {(p["setting"], p["ratio"]): p for p in report["points"]}
    for ratio in (0.25, 0.5):
        plain, shifted = by[("l1/none", ratio)], by[("l1/stats", ratio)]
        assert plain["macs"] == shifted["macs"]
        assert shifted["fidelity"]["rel_l2"] != pytest.approx(plain["fidelity"]["rel_l2"])
        assert plain["model"] == str(out / f"net.l1-none.ratio{ratio:.2f}.onnx")
        assert (out / f"net.activation-stats.ratio{ratio:.2f}.onnx").exists()
    assert report["notices"] == []  # held-out --data: no random-input or same-data notice
    assert report["points"][0]["fidelity"]["outputs"]["output"]["samples"] == 2
    text = (out / "net.sweep.html").read_text()
    assert len(re.findall(r'src="data:image/png;base64,', text)) == 3
    assert "activation/stats" in text and "not task accuracy" in text
    out_text = capsys.readouterr().out
    assert "l1/stats" in out_text and str(tmp_path / "test.npy") in out_text


def test_calibrating_on_the_measured_inputs_is_said(model_path, tmp_path):
    data = tmp_path / "data.npy"
    np.save(data, np.random.default_rng(6).standard_normal((2, 3, 32, 32)).astype(np.float32))
    out = tmp_path / "out"
    out.mkdir()
    argv = ["sweep", str(model_path), "--ratios", "0.5", "-o", str(out), "--criteria",
            "l1,activation", "--data", str(data), *FAST[:4], "--providers", "cpu"]
    assert main(argv) == 0
    (notice,) = json.loads((out / "net.sweep.json").read_text())["notices"]
    assert notice.startswith(f"calibrated on the inputs fidelity is measured on ({data})")


def test_random_inputs_say_it_is_not_accuracy(model_path, tmp_path, capsys):
    argv = ["sweep", str(model_path), "--ratios", "0.5", "-o", str(tmp_path), *FAST]
    assert main(argv) == 0
    report = json.loads((tmp_path / "net.sweep.json").read_text())
    assert report["notices"] == [RANDOM_FIDELITY_NOTICE]
    assert report["points"][0]["setting"] == "l1/none"
    assert html.escape(RANDOM_FIDELITY_NOTICE) in (tmp_path / "net.sweep.html").read_text()
    assert RANDOM_FIDELITY_NOTICE in capsys.readouterr().out


def test_fidelity_plot_names_are_literal():
    point = {"ratio": 0.5, "macs_ratio": 0.5, "fidelity": {"rel_l2": 0.1, "cosine": 0.9,
                                                           "top1_agreement": None}}
    png = plots.sweep_fidelity({"l1/$\\x{$": [point], "l2/none": [point]})
    assert base64.b64decode(png)[:8] == b"\x89PNG\r\n\x1a\n"


def test_criteria_and_criterion_exclude_each_other(model_path, tmp_path, capsys):
    argv = ["sweep", str(model_path), "-o", str(tmp_path), "--criteria", "l1",
            "--criterion", "l2"]
    assert main(argv) == 2
    assert "exclude each other" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
