"""The fidelity benchmark's grid, classifier images, baselines and tables (no real model needed)."""

from __future__ import annotations

import base64
import shutil
from pathlib import Path

import numpy as np
import pytest

from benchmarks import classifier_pipeline as classifier
from benchmarks import fidelity, fidelity_baselines, fidelity_report
from benchmarks.fidelity import CALIB, Calibration, Setting, settings, uniform_at_macs


def test_setting_keywords_calibrate_what_reads_data():
    calib = {"effnet": Path("e.npy"), "minilm": Path("m.npz")}
    plain = Setting("effnet", "l1", 0.3, 8).kwargs(calib)
    assert plain == {"criterion": "l1", "ratio": 0.3, "round_to": 8,
                     "input_shapes": {"input": (1, 3, 224, 224)}}
    stats = Setting("effnet", "l1", 0.3, 8, compensate="bias+stats").kwargs(calib)
    assert stats["compensate"] == "bias,stats" and stats["calibration"] == "e.npy"
    data = Setting("minilm", "activation", 0.25, 1).kwargs(calib)
    assert data["calibration"] == "m.npz" and data["input_shapes"]["input_ids"] == (1, 128)
    mine = Setting("effnet", "activation", 0.3, 8, (("calibration", "x.npy"),)).kwargs(calib)
    assert mine["calibration"] == "x.npy"  # an explicit --prune-arg wins
    target = Setting("effnet", "l1", 0.0, 8, (), "none", 0.5, False)
    assert target.kwargs(calib)["target_macs"] == 0.5 and target.allocation == "target_macs"
    uniform = Setting("effnet", "l1", 0.0, 8, (), "none", 0.5, True)
    assert "target_macs" not in uniform.kwargs(calib) and uniform.allocation == "uniform@macs"
    assert Setting("det", "l1", 0.1, 1, (("data", CALIB),)).kwargs({"det": Path("d")})["data"] \
        == "d"


def test_grid_has_l1_uniform_at_every_mac_level():
    grid = list(settings(["effnet"], ["l1", "fluctuation"], [8], {"effnet": (0.2,)},
                         compensations=["none", "stats"], macs=(0.7, 0.5)))
    ratio_rows = [(s.criterion, s.compensate) for s in grid if s.macs is None]
    assert ratio_rows == [("l1", "none"), ("l1", "stats"), ("fluctuation", "none"),
                          ("fluctuation", "stats")]
    for level in (0.7, 0.5):
        at = [s for s in grid if s.macs == level]
        assert [(s.criterion, s.compensate, s.uniform) for s in at] == [
            ("l1", "none", True), ("l1", "none", False), ("l1", "stats", False),
            ("fluctuation", "none", False), ("fluctuation", "stats", False)]


def test_uniform_ratio_is_searched_to_the_mac_level(model_path):
    kwargs = {"criterion": "l1", "ratio": 0.0, "round_to": 1,
              "input_shapes": {"input": (1, 3, 32, 32)}}
    result, ratio = uniform_at_macs(model_path, kwargs, 0.6)
    assert 0 < ratio < 0.95
    assert result.after.macs / result.before.macs == pytest.approx(0.6, abs=0.03)


class _FakeTask:
    name, metric = "effnet", "top1_agreement"
    shapes = {"input": (1, 3, 32, 32)}

    def __init__(self, model: Path) -> None:
        self.model = model
        self.calibrations = 0

    def score(self, path=None) -> dict:
        return {"metric": self.metric, "score": 1.0 if path in (None, self.model) else 0.5}

    def calibration(self, folder: Path, count: int) -> Path:
        self.calibrations += 1
        return folder / f"calib{count}.npy"


def test_calibration_files_are_written_once_per_target(model_path, tmp_path):
    task = _FakeTask(model_path)
    calib = Calibration({"effnet": task}, tmp_path, 4)
    assert calib["effnet"] == calib["effnet"] == tmp_path / "calib4.npy"
    assert task.calibrations == 1 and list(calib) == ["effnet"]


def test_run_setting_scores_the_pruned_model_or_names_the_error(model_path, tmp_path):
    task = _FakeTask(model_path)
    row = fidelity.run_setting(Setting("effnet", "l1", 0.5, 1), task, tmp_path, latency=True)
    assert 0 < row["macs_ratio"] < 1 and row["score"] == 0.5 and row["latency_ratio"] > 0
    assert row["allocation"] == "uniform" and row["macs_target"] is None
    bad = fidelity.run_setting(Setting("effnet", "no-such", 0.5, 1), task, tmp_path)
    assert "no-such" in bad["error"] and "score" not in bad
    assert list(tmp_path.iterdir()) == []


def test_simplifier_row_measures_the_simplified_model(model_path, tmp_path, monkeypatch):
    def copy(tool, source, out):
        shutil.copy(source, out)
        return f"{tool}==test"

    monkeypatch.setattr(fidelity_baselines, "simplify", copy)
    row = fidelity_baselines.simplifier_row("onnxsim", _FakeTask(model_path), tmp_path)
    assert row["macs_ratio"] == row["params_ratio"] == row["nodes_ratio"] == 1.0
    assert row["tool"] == "onnxsim==test" and row["latency_ratio"] > 0
    assert row["allocation"] == "simplifier" and row["score"] == 0.5  # scored from its own file
    monkeypatch.undo()
    failed = fidelity_baselines.simplifier_row("magic", _FakeTask(model_path), tmp_path)
    assert "unknown simplifier" in failed["error"]


def test_classifier_images_are_fixed_and_disjoint():
    images, kinds = classifier.image_set(8)
    assert images.shape == (8, 3, 224, 224) and images.dtype == np.float32
    assert kinds == ["photo", "scene", "scene", "scene"] * 2
    again, _ = classifier.image_set(8)
    np.testing.assert_array_equal(images, again)
    calib, _ = classifier.image_set(2, first=classifier.CALIBRATION_SEEDS)
    assert not any(np.allclose(c, i) for c in calib for i in images)
    assert -3 < images.mean() < 3 and images.std() > 0.3  # normalized, not flat


def test_agreement_counts_top1_and_top5():
    reference = np.eye(6)[[0, 1, 2, 3]] * 5
    pruned = reference.copy()
    pruned[1] = [0, 4, 5, 0, 0, 0]  # top-1 moved, the original class still 2nd
    pruned[2] = [9, 8, 0, 7, 6, 5]  # class 2 last
    assert classifier.agreement(reference, pruned) == {"top1": 0.5, "top5": 0.75}


def _rows() -> list[dict]:
    base = {"target": "effnet", "compensate": "none", "round_to": 8, "extra": {},
            "metric": "top1_agreement", "params_ratio": 0.8}
    return [
        {**base, "criterion": "original", "allocation": "original", "ratio": 0.0,
         "macs_ratio": 1.0, "params_ratio": 1.0, "score": 1.0},
        {**base, "criterion": "onnxsim", "tool": "onnxsim==0.8.1", "allocation": "simplifier",
         "ratio": 0.0, "macs_ratio": 1.0, "latency_ratio": 0.95, "score": 1.0},
        {**base, "criterion": "l1", "allocation": "uniform@macs", "ratio": 0.2,
         "macs_ratio": 0.7, "score": 0.25, "top5": 0.5},
        {**base, "criterion": "l1", "compensate": "stats", "allocation": "target_macs",
         "ratio": 0.0, "macs_ratio": 0.7, "score": 0.75},
        {**base, "criterion": "$\\x{$", "allocation": "uniform", "ratio": 0.3, "error": "a|b"},
    ]


def test_markdown_and_text_tables():
    text = fidelity_report.markdown(_rows()).splitlines()
    assert text[0].startswith("| model |") and len(text) == 2 + len(_rows())
    assert all(line.count("|") == text[0].count("|") for line in text)  # "|" in errors escaped
    assert "| effnet | onnxsim==0.8.1 | simplifier |" in text[3]
    assert "| l1 / stats | target_macs | 8 | 0 | 0.700 |" in text[5] and "0.750" in text[5]
    assert "top5=0.500" in text[4]
    lines = fidelity_report.table(_rows()).splitlines()
    assert "l1/stats target_macs rt=8" in lines[4] and "error: a|b" in lines[5]


def test_plot_writes_a_png_with_literal_names(tmp_path):
    rows = _rows()
    rows.append({**rows[2], "criterion": "$\\x{$", "macs_ratio": 0.5, "score": 0.1})
    fidelity_report.plot(rows, tmp_path / "p.png")
    png = (tmp_path / "p.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(base64.b64encode(png)) > 1000
