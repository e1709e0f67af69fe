"""The OCR task metric of ``benchmarks/fidelity.py``.

Edit-distance similarity, CTC decoding, detection boxes, and (slow) the original PP-OCRv4
pipeline reading a rendered image.
"""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.ocr_pipeline import (
    Run,
    boxes_from_probability,
    ctc_greedy_decode,
    levenshtein,
    render,
    similarity,
    step_agreement,
    text_mask_iou,
)


@pytest.mark.parametrize(("a", "b", "distance"), [
    ("", "", 0), ("abc", "", 3), ("", "ab", 2), ("kitten", "sitting", 3),
    ("flaw", "lawn", 2), ("same", "same", 0), ("abc", "cba", 2), ("a", "b", 1),
])
def test_levenshtein_known_pairs(a, b, distance):
    assert levenshtein(a, b) == distance
    assert levenshtein(b, a) == distance


@pytest.mark.parametrize(("a", "b", "expected"), [
    ("", "", 1.0), ("hello", "hello", 1.0), ("kitten", "sitting", 1 - 3 / 7),
    ("abcd", "", 0.0), ("abcd", "wxyz", 0.0), ("Exit 12", "Exit 13", 1 - 1 / 7),
])
def test_similarity_known_pairs(a, b, expected):
    assert similarity(a, b) == pytest.approx(expected)
    assert similarity(b, a) == pytest.approx(expected)


def _logits(path: list[int], classes: int) -> np.ndarray:
    logits = np.full((len(path), classes), -5.0, dtype=np.float32)
    logits[np.arange(len(path)), path] = 3.0
    return logits


def test_ctc_greedy_decode_merges_repeats_and_drops_blanks():
    characters = ["blank", "a", "b", "c", " "]
    # a a _ a b b _ _ c ' ' c: adjacent repeats merge, a blank separates two equal letters
    path = [1, 1, 0, 1, 2, 2, 0, 0, 3, 4, 3]
    assert ctc_greedy_decode(_logits(path, 5), characters) == "aabc c"
    assert ctc_greedy_decode(_logits([0, 0, 0], 5), characters) == ""
    assert ctc_greedy_decode(_logits([2, 0, 2], 5), characters) == "bb"


def test_ctc_greedy_decode_takes_the_arg_max_per_step():
    characters = ["blank", "x", "y"]
    logits = np.array([[0.1, 0.7, 0.2], [0.1, 0.2, 0.7], [0.8, 0.1, 0.1], [0.3, 0.3, 0.4]])
    assert ctc_greedy_decode(logits, characters) == "xyy"


def test_boxes_from_probability_finds_separate_lines_in_reading_order():
    prob = np.zeros((64, 128), dtype=np.float32)
    prob[40:50, 10:60] = 0.9  # second line
    prob[8:18, 20:100] = 0.8  # first line
    prob[30:32, 100:102] = 0.9  # a speck below MIN_SIZE
    prob[20:30, 110:120] = 0.35  # above DET_THRESH but its mean is below BOX_THRESH
    boxes = boxes_from_probability(prob)
    assert len(boxes) == 2
    (a0, a1, ax0, ax1), (b0, b1, bx0, bx1) = boxes
    assert a0 < 8 and a1 > 17 and ax0 < 20 and ax1 > 99  # grown around the first line
    assert b0 > a1 - 8 and bx0 < 10


def test_render_is_deterministic_and_black_on_white():
    first, again = render(3), render(3)
    assert first.lines == again.lines and np.array_equal(first.image, again.image)
    assert first.image.dtype == np.uint8 and first.image.shape[2] == 3
    assert np.median(first.image) > 200 and first.image.min() < 60
    assert render(4).lines != first.lines or not np.array_equal(render(4).image, first.image)


def _run(maps, outputs):
    return Run(texts=[""] * len(maps), similarities=[0.0] * len(maps), det_maps=maps,
               rec_outputs=outputs)


def test_text_mask_iou_pools_thresholded_maps():
    ref = np.zeros((4, 4), dtype=np.float32)
    ref[:2, :2] = 0.9  # 4 pixels
    out = np.zeros((4, 4), dtype=np.float32)
    out[:2, 1:3] = 0.9  # 4 pixels, 2 shared
    assert text_mask_iou(_run([ref], [[]]), _run([ref], [[]])) == 1.0
    assert text_mask_iou(_run([ref], [[]]), _run([out], [[]])) == pytest.approx(2 / 6)
    assert text_mask_iou(_run([ref], [[]]), _run([ref * 0.3], [[]])) == 0.0  # below DET_THRESH


def test_step_agreement_ignores_blank_blank_steps_and_unmatched_crops():
    ref = _logits([0, 0, 1, 0, 2, 0, 0, 0], 3)
    out = _logits([0, 0, 1, 0, 1, 0, 0, 2], 3)  # non-blank in ref or out: 3 steps, 1 agrees
    empty = np.zeros((4, 4), dtype=np.float32)
    assert step_agreement(_run([empty], [[ref]]), _run([empty], [[ref]])) == 1.0
    assert step_agreement(_run([empty], [[ref]]), _run([empty], [[out]])) == pytest.approx(1 / 3)
    assert step_agreement(_run([empty], [[ref]]), _run([empty], [[ref, out]])) is None


def test_prune_args_and_calibration_placeholder():
    from pathlib import Path

    from benchmarks.fidelity import CALIB, Setting, parse_prune_arg

    assert parse_prune_arg("compensate=stats") == ("compensate", "stats")
    assert parse_prune_arg("steps=3") == ("steps", 3)
    assert parse_prune_arg("exclude=[\"a*\"]") == ("exclude", ["a*"])
    with pytest.raises(SystemExit):
        parse_prune_arg("no-equals-sign")
    setting = Setting("rec", "l1", 0.3, 16, (("data", CALIB), ("seed", 1)))
    kwargs = setting.kwargs({"det": Path("d.npy"), "rec": Path("r.npy")})
    assert kwargs == {"criterion": "l1", "ratio": 0.3, "round_to": 16, "data": "r.npy",
                      "seed": 1, "input_shapes": {"x": (1, 3, 48, 320)}}


@pytest.mark.slow
def test_original_pipeline_reads_a_rendered_image():
    import dataclasses

    from benchmarks.ocr_pipeline import OCR, evaluate, recognizer_characters
    from tests import corpus

    det = corpus.fetch(corpus.BY_ID["ppocr4_det"])
    rec = corpus.fetch(corpus.BY_ID["ppocr4_rec"])
    sample = render(2)
    text = OCR(det, rec, recognizer_characters(rec), threads=1)(sample.image)
    assert text == sample.text
    assert evaluate(det, rec, [sample], threads=1) == 1.0
    assert evaluate(det, rec, [render(2), dataclasses.replace(sample, lines=("xyz",))],
                    threads=1) < 0.7


@pytest.mark.slow
def test_calibration_inputs_fit_the_models(tmp_path):
    from benchmarks.fidelity import CORPUS_IDS, SHAPES
    from benchmarks.ocr_pipeline import IMAGE_HW, calibration_inputs, render_set
    from graphprune.inputs.load import load_inputs
    from tests import corpus

    samples = render_set(2, first=10_000)
    arrays = calibration_inputs(samples, corpus.fetch(corpus.BY_ID["ppocr4_det"]), threads=1)
    assert arrays["det"].shape == (2, 3, *IMAGE_HW)
    lines = sum(len(s.lines) for s in samples)
    assert arrays["rec"].shape == (lines, 3, 48, 320)  # one crop per rendered line
    assert arrays["det"].dtype == arrays["rec"].dtype == np.float32
    for target, array in arrays.items():  # graphprune's --data reads them as they are
        np.save(tmp_path / f"{target}.npy", array)
        model = corpus.fetch(corpus.BY_ID[CORPUS_IDS[target]])
        inputs = load_inputs(model, SHAPES[target], data=tmp_path / f"{target}.npy")
        assert len(inputs.batches) == len(array)


@pytest.mark.slow
def test_orientation_set_turns_every_crop_and_the_classifier_reads_it():
    from benchmarks.ocr_pipeline import classify, orientation_set, render_set
    from tests import corpus

    samples = render_set(3)
    inputs, labels = orientation_set(samples, corpus.fetch(corpus.BY_ID["ppocr4_det"]), 1)
    assert inputs.shape == (2 * sum(len(s.lines) for s in samples), 3, 48, 192)
    assert labels.tolist() == [0, 1] * (len(labels) // 2)
    for upright, turned in zip(inputs[0::2], inputs[1::2], strict=True):
        width = int(np.sum(np.any(upright != 0, axis=(0, 1))))  # padding is exactly 0
        assert np.allclose(turned[:, ::-1, width - 1::-1], upright[:, :, :width])
        assert not np.allclose(upright[:, ::-1, :width], upright[:, :, :width])  # not symmetric
    classes = classify(corpus.fetch(corpus.BY_ID["ppocr2_cls"]), inputs, threads=1)
    assert np.mean(classes == labels) >= 0.75


@pytest.mark.slow
def test_benchmark_at_ratio_zero_reproduces_the_originals():
    from benchmarks.fidelity import main

    rows = main(["--images", "3", "--criteria", "l1", "--round-to", "1", "--ratios", "0"])
    assert [r["target"] for r in rows] == ["det+rec", "cls", "det", "rec", "cls"]
    ocr, cls = rows[0]["score"], rows[1]["score"]
    assert ocr > 0.9 and cls > 0.8
    assert [r["score"] for r in rows[2:]] == [ocr, ocr, cls]
    assert rows[2]["det_iou"] == rows[3]["rec_agree"] == rows[4]["cls_agree"] == 1.0
    assert all(r["macs_ratio"] == 1.0 for r in rows)
    assert "error" in main(["--images", "1", "--criteria", "no-such-criterion", "--ratios",
                            "0.1", "--targets", "det"])[1]
