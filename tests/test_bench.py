"""Measurement: inputs (shapes, random, files, images), latency, fidelity, CUDA, bench CLI."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

from graphprune.bench import cuda, latency
from graphprune.bench.fidelity import compare_output, compare_outputs
from graphprune.bench.measure import BenchSettings, measure
from graphprune.bench.system import cpu_model, physical_cores
from graphprune.cli import main
from graphprune.errors import InputError, UsageError
from graphprune.inputs import load_inputs, parse_input_shapes, resolve_specs

FAST = ["--runs", "3", "--warmup", "1", "--samples", "4"]


@pytest.fixture(scope="module")
def pruned_path(model_path):
    assert main([str(model_path), "--ratio", "0.5", "--no-bench"]) == 0
    return model_path.with_name("net.pruned.onnx")


def _symbolic_model(tmp_path):
    text = """
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[N, 3, H, W] x, float[N, 4] y) => (float[N, 3, H, W] z) { z = Relu(x) }
    """
    path = tmp_path / "sym.onnx"
    onnx.save(onnx.parser.parse_model(text), path)
    return path


def test_parse_input_shapes():
    assert parse_input_shapes(["x=1,3,224,224", "2x3"]) == {"x": (1, 3, 224, 224), "": (2, 3)}
    for bad in ("x=", "x=1,a", "x=0,3", ""):
        with pytest.raises(UsageError, match="--input-shape"):
            parse_input_shapes([bad])


def test_symbolic_dims_default_and_given(tmp_path):
    path = _symbolic_model(tmp_path)
    specs = {s.name: s for s in resolve_specs(path)}
    assert specs["x"].shape == (1, 3, 224, 224) and specs["x"].declared == ("N", 3, "H", "W")
    assert specs["y"].shape == (1, 4)
    specs = {s.name: s for s in resolve_specs(path, {"x": (2, 3, 8, 8)})}
    assert specs["x"].shape == (2, 3, 8, 8)
    with pytest.raises(UsageError, match="declares"):
        resolve_specs(path, {"x": (1, 4, 8, 8)})
    with pytest.raises(UsageError, match="names no input"):
        resolve_specs(path, {"nope": (1,)})
    with pytest.raises(UsageError, match="exactly one input"):
        resolve_specs(path, {"": (1, 3, 8, 8)})


def test_random_inputs_are_deterministic(model_path):
    a, b = load_inputs(model_path, samples=3), load_inputs(model_path, samples=3)
    assert a.origin == "random" and len(a.batches) == 3
    pairs = zip(a.batches, b.batches, strict=True)
    assert all(np.array_equal(x["input"], y["input"]) for x, y in pairs)
    assert a.batches[0]["input"].shape == (1, 3, 32, 32)
    four = load_inputs(model_path, {"": (4, 3, 32, 32)}, samples=1)
    assert four.batches[0]["input"].shape[0] == 4


def test_npy_npz_and_folders(model_path, tmp_path):
    rng = np.random.default_rng(1)
    stack = rng.standard_normal((6, 3, 32, 32)).astype(np.float32)
    np.save(tmp_path / "stack.npy", stack)
    np.save(tmp_path / "one.npy", stack[0])
    np.savez(tmp_path / "named.npz", input=stack[:2])
    assert len(load_inputs(model_path, data=tmp_path / "stack.npy").batches) == 6
    two = load_inputs(model_path, {"input": (2, 3, 32, 32)}, data=tmp_path / "stack.npy")
    assert len(two.batches) == 3 and np.array_equal(two.batches[1]["input"], stack[2:4])
    one = load_inputs(model_path, data=tmp_path / "one.npy")
    assert one.batches[0]["input"].shape == (1, 3, 32, 32)
    assert len(load_inputs(model_path, data=tmp_path / "named.npz").batches) == 2
    folder = load_inputs(model_path, data=tmp_path, samples=5)
    assert len(folder.batches) == 5 and folder.origin == str(tmp_path)


def test_image_folder(model_path, tmp_path):
    from PIL import Image

    for k in range(3):
        pixels = np.random.default_rng(k).integers(0, 255, (40, 50, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(tmp_path / f"img{k}.png")
    inputs = load_inputs(model_path, data=tmp_path)
    assert len(inputs.batches) == 3
    array = inputs.batches[0]["input"]
    assert array.shape == (1, 3, 32, 32) and array.dtype == np.float32
    assert -2.2 < array.min() and array.max() < 2.7  # ImageNet-normalized


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda d: np.save(d / "bad.npy", np.zeros((2, 5), np.float32)), "does not fit"),
        (lambda d: (d / "bad.npy").write_bytes(b"garbage"), "not a readable .npy"),
        (lambda d: np.savez(d / "bad.npz", other=np.zeros((1, 3, 32, 32), np.float32),
                            more=np.zeros(1)), "no array for input"),
        (lambda d: (d / "notes.txt").write_text("x"), "no .npy, .npz or image files"),
        (lambda d: (d / "img.png").write_bytes(b"not a png"), "not a readable image"),
    ],
)
def test_bad_data_is_an_input_error(model_path, tmp_path, make, message):
    make(tmp_path)
    files = list(tmp_path.iterdir())
    target = files[0] if files[0].suffix in (".npy", ".npz") else tmp_path
    with pytest.raises(InputError, match=message):
        load_inputs(model_path, data=target)


def test_fidelity_metrics():
    rng = np.random.default_rng(0)
    ref = [rng.standard_normal((4, 10)) for _ in range(3)]
    same = compare_output(ref, ref)
    assert same["rel_l2"] == 0 and same["cosine"] == pytest.approx(1)
    assert same["top1_agreement"] == 1
    assert same["samples"] == 12
    flipped = compare_output(ref, [-r for r in ref])
    assert flipped["rel_l2"] == pytest.approx(2) and flipped["cosine"] == pytest.approx(-1)
    assert flipped["top1_agreement"] < 0.5
    noisy = [r + 0.1 * rng.standard_normal(r.shape) for r in ref]
    assert 0.05 < compare_output(ref, noisy)["rel_l2"] < 0.2
    image = [rng.standard_normal((2, 3, 4, 4))]
    assert compare_output(image, image)["top1_agreement"] is None  # not classifier-shaped
    assert "error" in compare_output(image, [np.zeros((2, 3, 4, 5))])
    both = compare_outputs(["a", "b"], [[ref[0], image[0]]], [[ref[0], image[0] * 2]])
    assert both["rel_l2"] == pytest.approx(1) and both["top1_agreement"] == 1


def test_interleave_alternates_order_and_counts_runs():
    calls = []
    runners = [[lambda: calls.append("a")], [lambda: calls.append("b")]]
    times = latency.interleave(runners, runs=4, warmup=1)
    assert [len(t) for t in times] == [4, 4]
    assert "".join(calls) == "ab" + "ab" + "ba" + "ab" + "ba"
    assert latency._rounds(None, 1.0, 5.0) == latency.MIN_RUNS
    assert latency._rounds(None, 1e-6, 5.0) == latency.MAX_RUNS
    assert latency._rounds(None, None, 5.0) == latency.MIN_RUNS


def test_cpu_latency_and_stats(model_path, pruned_path):
    inputs = load_inputs(model_path, samples=2)
    stats = latency.cpu_latency([model_path, pruned_path], inputs.batches, runs=3, warmup=1,
                                threads=1)
    assert [len(s.samples_ms) for s in stats] == [3, 3]
    record = stats[0].as_dict()
    assert record["threads"] == 1 and record["provider"] == "cpu" and record["runs"] == 3
    assert record["min_ms"] <= record["median_ms"] <= record["p90_ms"] <= record["max_ms"]
    assert latency.interleaved_latency([model_path], runs=2, warmup=1)[0]["runs"] == 2
    options = latency.cpu_session(model_path, 1).get_session_options()
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"


def test_measure_fidelity_and_environment(model_path, pruned_path):
    inputs = load_inputs(model_path, samples=4)
    result = measure([model_path, pruned_path], inputs,
                     BenchSettings(runs=2, warmup=1, providers=("cpu",)))
    assert result.fidelity[0] is None and 0 < result.fidelity[1]["rel_l2"] < 2
    assert result.fidelity[1]["outputs"]["output"]["samples"] == 4
    assert set(result.latency[1]) == {"cpu"}
    env = result.environment
    assert env["cpu"] == cpu_model() and env["onnxruntime"]
    assert env["intra_op_threads"] == physical_cores()
    assert env["inputs"]["origin"] == "random" and env["inputs"]["batches"] == 4


def test_settings_are_validated():
    for kwargs, message in [({"runs": 0}, "--runs"), ({"threads": 0}, "--threads"),
                            ({"warmup": -1}, "--warmup"), ({"providers": ("tpu",)}, "provider")]:
        with pytest.raises(UsageError, match=message):
            BenchSettings(**kwargs)


@pytest.mark.skipif(cuda.cuda_unavailable() is None, reason="a CUDA GPU is present")
def test_cuda_absent_is_one_notice(model_path, pruned_path, capsys):
    result = measure([model_path, pruned_path], load_inputs(model_path, samples=1),
                     BenchSettings(runs=2, warmup=1))
    assert result.notices == (f"CUDA latency skipped: {cuda.cuda_unavailable()}",)
    assert all(set(stats) == {"cpu"} for stats in result.latency)
    assert main(["bench", str(model_path), *FAST]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if "CUDA" in line]
    assert len(lines) == 1 and lines[0].startswith("note: CUDA latency skipped")


@pytest.mark.skipif(cuda.cuda_unavailable() is not None, reason="no CUDA GPU / onnxruntime-gpu")
def test_cuda_latency_with_io_binding(model_path, pruned_path):
    result = measure([model_path, pruned_path], load_inputs(model_path, samples=1),
                     BenchSettings(runs=3, warmup=2))
    assert not result.notices
    assert all(len(stats["cuda"].samples_ms) == 3 for stats in result.latency)


def test_bench_cli_writes_json(model_path, pruned_path, tmp_path, capsys):
    out = tmp_path / "bench.json"
    argv = ["bench", str(model_path), str(pruned_path), *FAST, "--threads", "1", "--json", str(out)]
    assert main(argv) == 0
    report = json.loads(out.read_text())
    first, second = report["models"]
    assert first["fidelity_to_first"] is None and second["fidelity_to_first"]["cosine"] <= 1
    assert second["macs"] < first["macs"] and second["file_size"] < first["file_size"]
    assert first["latency"]["cpu"]["runs"] == 3 and first["latency"]["cpu"]["threads"] == 1
    assert report["environment"]["onnxruntime"]
    assert "Models" in capsys.readouterr().out


@pytest.mark.parametrize(
    "args, message",
    [
        (["bench", "missing.onnx"], "no such file"),
        (["bench", "{model}", "--input-shape", "input=1,3"], "declares"),
        (["bench", "{model}", "--input-shape", "bad"], "--input-shape"),
        (["bench", "{model}", "--providers", "tpu"], "provider"),
        (["bench", "{model}", "--runs", "0"], "--runs"),
        (["bench", "{model}", "--data", "/nonexistent/x.npy"], "no such file"),
        (["bench"], "Missing argument"),
    ],
)
def test_bench_cli_bad_input_is_one_line(model_path, capsys, args, message):
    argv = [a.replace("{model}", str(model_path)) for a in args]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("graphprune: error:") and len(err.splitlines()) == 1
    assert message in err
