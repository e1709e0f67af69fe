"""Sweep: prune at several ratios, measure side by side, write JSON and HTML."""

from __future__ import annotations

import json
import re

import pytest

from graphprune.bench.sweep import parse_ratios
from graphprune.cli import main
from graphprune.errors import UsageError
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
