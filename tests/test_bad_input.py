"""Bad input on the command line: one line on stderr, a non-zero exit code, nothing written.

Every case runs ``graphprune`` in-process on a folder holding a small valid model (and its
external data), and checks: the exit code, the one non-blank line on stderr (no traceback, also
not from C++ code: the capture is at the file-descriptor level), and that the folder's files are
byte-for-byte what they were, with nothing added (no output, no staging folder).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import ml_dtypes
import numpy as np
import onnx
import onnx_ir as ir
import pytest
from onnx import TensorProto, helper, numpy_helper

import graphprune
from graphprune._io import check_output, iter_blocks, load_model, save_model
from graphprune.cli import main
from graphprune.errors import InputError, OutputError, UsageError
from graphprune.verify.oracle import masked_model, relative_error, run
from tests.oracle import TOLERANCE, feeds_for


def conv_model(seed: int = 0) -> onnx.ModelProto:
    """``x -> Conv(16) -> Relu -> Conv(4) -> y`` with a symbolic batch (IR 8, opset 17)."""
    rng = np.random.default_rng(seed)
    weights = {"w1": (16, 3, 3, 3), "b1": (16,), "w2": (4, 16, 3, 3), "b2": (4,)}
    inits = [numpy_helper.from_array(rng.standard_normal(s).astype(np.float32), n)
             for n, s in weights.items()]
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["a"], name="c1", pads=[1] * 4),
             helper.make_node("Relu", ["a"], ["r"], name="relu"),
             helper.make_node("Conv", ["r", "w2", "b2"], ["y"], name="c2", pads=[1] * 4)]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4, 8, 8])], inits)
    return helper.make_model(graph, ir_version=8, opset_imports=[helper.make_opsetid("", 17)])


def _external(folder: Path, name: str, data: str | None = None) -> Path:
    path = folder / name
    onnx.save(conv_model(), path, save_as_external_data=True, location=data or f"{name}.data",
              size_threshold=0)
    return path


def _edit_locations(path: Path, location: str) -> None:
    proto = onnx.load(path, load_external_data=False)
    for tensor in proto.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = location
    onnx.save(proto, path)


def _make(kind: str, folder: Path) -> list[str]:
    """Writes the files of case ``kind`` into ``folder``; returns the command line."""
    good = folder / "model.onnx"
    onnx.save(conv_model(), good)
    raw = good.read_bytes()
    m = str(good)
    if kind == "missing path":
        return [str(folder / "missing.onnx")]
    if kind == "a directory":
        (folder / "dir.onnx").mkdir()
        return [str(folder / "dir.onnx")]
    if kind == "empty file":
        (folder / "empty.onnx").touch()
        return [str(folder / "empty.onnx")]
    if kind == "text file":
        (folder / "text.onnx").write_text("graph g (float[1] x) => (float[1] y) { y = Relu(x) }\n")
        return [str(folder / "text.onnx")]
    if kind == "truncated model":
        (folder / "cut.onnx").write_bytes(raw[: len(raw) // 2])
        return [str(folder / "cut.onnx")]
    if kind == "random bytes":
        (folder / "noise.onnx").write_bytes(np.random.default_rng(1).bytes(4096))
        return [str(folder / "noise.onnx")]
    if kind == "model without nodes":
        empty = helper.make_model(helper.make_graph([], "g", [], []), ir_version=8)
        onnx.save(empty, folder / "nodes.onnx")
        return [str(folder / "nodes.onnx")]
    if kind == "fails checker: dangling input":
        bad = conv_model()
        bad.graph.node[1].input[0] = "nowhere"
        onnx.save(bad, folder / "dangling.onnx")
        return [str(folder / "dangling.onnx")]
    if kind == "fails checker: unknown op":
        bad = conv_model()
        bad.graph.node[1].op_type = "NoSuchOp"
        onnx.save(bad, folder / "unknown.onnx")
        return [str(folder / "unknown.onnx")]
    if kind == "fails checker: wrong shapes":
        bad = conv_model()
        bad.graph.output[0].type.tensor_type.shape.dim[1].dim_value = 5
        onnx.save(bad, folder / "shapes.onnx")
        return [str(folder / "shapes.onnx")]
    if kind == "external data missing":
        path = _external(folder, "ext.onnx")
        (folder / "ext.onnx.data").unlink()
        return [str(path)]
    if kind == "external data truncated":
        path = _external(folder, "ext.onnx")
        with open(folder / "ext.onnx.data", "r+b") as handle:
            handle.truncate(100)
        return [str(path)]
    if kind == "external data outside the folder":
        inner = folder / "inner"
        inner.mkdir()
        path = _external(inner, "ext.onnx")
        os.replace(inner / "ext.onnx.data", folder / "ext.onnx.data")
        _edit_locations(path, "../ext.onnx.data")
        return [str(path)]
    if kind == "ratio above 1":
        return [m, "--ratio", "1.5"]
    if kind == "ratio 1":
        return [m, "--ratio", "1"]
    if kind == "ratio negative":
        return [m, "--ratio=-0.2"]
    if kind == "ratio nan":
        return [m, "--ratio", "nan"]
    if kind == "ratio not a number":
        return [m, "--ratio", "half"]
    if kind == "round-to 0":
        return [m, "--round-to", "0"]
    if kind == "unknown criterion":
        return [m, "--criterion", "magic"]
    if kind == "unknown option":
        return [m, "--no-such-option"]
    if kind == "output folder missing":
        return [m, "-o", str(folder / "nowhere" / "out.onnx")]
    if kind == "output not writable":
        return [m, "-o", "/proc/graphprune-out.onnx"]
    if kind == "output is a directory":
        (folder / "out.onnx").mkdir()
        return [m, "-o", str(folder / "out.onnx")]
    if kind == "output is the input":
        return [m, "-o", m]
    if kind == "output is the input via a symlink":
        (folder / "link.onnx").symlink_to(good)
        return [m, "-o", str(folder / "link.onnx")]
    if kind == "output data file is the input's data":
        path = _external(folder, "ext.onnx", data="out.onnx.data")
        return [str(path), "-o", str(folder / "out.onnx"), "--no-bench"]
    raise ValueError(kind)


CASES = [  # (case, exit code, a regular expression the message matches)
    ("missing path", 2, "no such file"),
    ("a directory", 2, "is a directory|no such file"),
    ("empty file", 2, "empty file"),
    ("text file", 2, "not a readable ONNX model"),
    ("truncated model", 2, "not a readable ONNX model"),
    ("random bytes", 2, "not a readable ONNX model"),
    ("model without nodes", 2, "has no nodes"),
    ("fails checker: dangling input", 2, "fails the ONNX checker"),
    ("fails checker: unknown op", 2, "fails the ONNX checker"),
    ("fails checker: wrong shapes", 2, "fails the ONNX checker"),
    ("external data missing", 2, "ext.onnx.data"),
    ("external data truncated", 2, "truncated"),
    ("external data outside the folder", 2, "outside"),
    ("ratio above 1", 2, "ratio"),
    ("ratio 1", 2, "ratio"),
    ("ratio negative", 2, "ratio"),
    ("ratio nan", 2, "ratio"),
    ("ratio not a number", 2, "ratio"),
    ("round-to 0", 2, "round-to"),
    ("unknown criterion", 2, "criterion"),
    ("unknown option", 2, "no-such-option"),
    ("output folder missing", 3, "cannot write"),
    ("output not writable", 3, "cannot write"),
    ("output is a directory", 3, "is a directory"),
    ("output is the input", 2, "overwrite the input"),
    ("output is the input via a symlink", 2, "overwrite the input"),
    ("output data file is the input's data", 2, "external data"),
]


def _snapshot(folder: Path) -> dict[str, bytes | None]:
    """Every path under ``folder`` with its bytes (None for folders and links)."""
    found = {}
    for path in sorted(folder.rglob("*")):
        plain = path.is_file() and not path.is_symlink()
        found[str(path.relative_to(folder))] = path.read_bytes() if plain else None
    return found


def _error_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


@pytest.mark.parametrize("kind, code, message", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, capfd, kind, code, message):
    argv = _make(kind, tmp_path)
    before = _snapshot(tmp_path)
    assert main(argv) == code
    lines = _error_lines(capfd.readouterr().err)
    assert len(lines) == 1, lines
    assert lines[0].startswith("graphprune: error:") and re.search(message, lines[0]), lines[0]
    assert _snapshot(tmp_path) == before


def test_analyze_refuses_bad_input_the_same_way(tmp_path, capfd):
    argv = _make("truncated model", tmp_path)
    assert main(["analyze", *argv]) == 2
    lines = _error_lines(capfd.readouterr().err)
    assert len(lines) == 1 and "not a readable ONNX model" in lines[0]


def test_debug_shows_the_traceback(tmp_path, capfd):
    argv = _make("fails checker: dangling input", tmp_path)
    assert main([*argv, "--debug"]) == 2
    err = capfd.readouterr().err
    assert "Traceback" in err and err.rstrip().splitlines()[-1].startswith("graphprune: error:")


def test_a_process_prints_no_traceback(tmp_path):
    argv = _make("random bytes", tmp_path)
    done = subprocess.run([sys.executable, "-m", "graphprune.cli", *argv], capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 2
    assert _error_lines(done.stderr) == [
        f"graphprune: error: {argv[0]}: not a readable ONNX model (DecodeError)"]


def test_force_overwrites_the_input_with_a_valid_model(tmp_path):
    path = _external(tmp_path, "ext.onnx")
    original = onnx.load(path)
    assert main([str(path), "-o", str(path), "--force", "--no-bench", "--ratio", "0.5",
                 "--round-to", "8"]) == 0
    pruned = onnx.load(path)
    onnx.checker.check_model(str(path), full_check=True)
    assert sum(np.prod(t.dims) for t in pruned.graph.initializer) < sum(
        np.prod(t.dims) for t in original.graph.initializer)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".graphprune-")]


# --- the I/O layer directly -----------------------------------------------------------------


def test_load_model_keeps_external_data_mapped(tmp_path):
    model = load_model(_external(tmp_path, "ext.onnx"))
    assert all(isinstance(v.const_value, ir.ExternalTensor)
               for v in model.graph.initializers.values())


def test_failed_check_leaves_the_old_output_in_place(tmp_path):
    out = tmp_path / "out.onnx"
    out.write_bytes(b"previous")

    def refuse(staged: Path) -> None:
        assert staged.exists() and staged.parent != tmp_path
        raise graphprune.GraphpruneError("refused")

    result = graphprune.prune(ir.from_proto(conv_model()), 0.5, round_to=1)
    with pytest.raises(graphprune.GraphpruneError):
        save_model(result.model, out, check=refuse)
    assert [p.name for p in tmp_path.iterdir()] == ["out.onnx"]
    assert out.read_bytes() == b"previous"


def test_interrupted_write_leaves_nothing(tmp_path, monkeypatch):
    def fail(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(ir, "save", fail)
    with pytest.raises(KeyboardInterrupt):
        save_model(ir.from_proto(conv_model()), tmp_path / "out.onnx")
    assert list(tmp_path.iterdir()) == []


def test_save_refuses_bad_destinations(tmp_path):
    model = ir.from_proto(conv_model())
    (tmp_path / "folder.onnx").mkdir()
    with pytest.raises(OutputError, match="is a directory"):
        save_model(model, tmp_path / "folder.onnx")
    with pytest.raises(OutputError, match="cannot write"):
        save_model(model, tmp_path / "missing" / "out.onnx")
    source = load_model(_external(tmp_path, "ext.onnx", data="out.onnx.data"))
    with pytest.raises(UsageError, match="external data"):
        save_model(source, tmp_path / "out.onnx")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ext.onnx", "folder.onnx",
                                                          "out.onnx.data"]


def test_output_is_checked_before_any_work(tmp_path):
    source = tmp_path / "model.onnx"
    onnx.save(conv_model(), source)
    (tmp_path / "link.onnx").symlink_to(source)
    (tmp_path / "folder.onnx").mkdir()
    with pytest.raises(UsageError, match="overwrite the input"):
        check_output(tmp_path / "link.onnx", source)
    check_output(source, source, force=True)
    with pytest.raises(OutputError, match="is a directory"):
        check_output(tmp_path / "folder.onnx", source)
    for bad in (tmp_path / "missing" / "out.onnx", Path("/proc/out.onnx")):
        with pytest.raises(OutputError, match="cannot write here"):
            check_output(bad, source)
    check_output(tmp_path / "out.onnx", source)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder.onnx", "link.onnx", "model.onnx"]


def test_pruned_external_data_model_round_trips(tmp_path):
    path = _external(tmp_path, "ext.onnx")
    result = graphprune.prune(path, 0.5, round_to=1)
    save_model(result.model, tmp_path / "out.onnx")
    stored = onnx.load(tmp_path / "out.onnx", load_external_data=False)
    locations = {t.name: t.data_location for t in stored.graph.initializer}
    assert locations["w1"] == locations["w2"] == TensorProto.EXTERNAL
    original = conv_model()
    feeds = feeds_for(original, {"x": (2, 3, 8, 8)})
    masked = run(masked_model(original, result.masks), feeds)
    assert relative_error(masked, run(onnx.load(tmp_path / "out.onnx"), feeds)) <= TOLERANCE
    assert result.after.params < result.before.params


def test_iter_blocks_reads_external_data_block_by_block(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {"f32": rng.standard_normal((37, 5, 3)).astype(np.float32),
              "f16": rng.standard_normal((9, 4)).astype(np.float16),
              "i8": rng.integers(-128, 127, (11, 2)).astype(np.int8),
              "bf16": rng.standard_normal((6, 3)).astype(np.float32)}
    tensors = [numpy_helper.from_array(a, n) for n, a in arrays.items() if n != "bf16"]
    bf16 = arrays["bf16"].astype(ml_dtypes.bfloat16).tobytes()  # no numpy kind: read mapped
    tensors.append(helper.make_tensor("bf16", TensorProto.BFLOAT16, (6, 3), bf16, raw=True))
    graph = helper.make_graph([helper.make_node("Identity", [n], [f"{n}_out"]) for n in arrays],
                              "g", [], [helper.make_tensor_value_info(f"{n}_out", t.data_type,
                                                                      t.dims)
                                        for n, t in zip(arrays, tensors, strict=True)], tensors)
    onnx.save(helper.make_model(graph), tmp_path / "t.onnx", save_as_external_data=True,
              location="t.data", size_threshold=0)
    model = ir.load(tmp_path / "t.onnx")
    for value in model.graph.initializers.values():
        assert isinstance(value.const_value, ir.ExternalTensor)
        blocks = list(iter_blocks(value, block_bytes=8))
        assert len(blocks) > 1 and [s for s, _ in blocks] == sorted({s for s, _ in blocks})
        joined = np.concatenate([b for _, b in blocks])
        np.testing.assert_array_equal(joined, value.const_value.numpy())


def test_load_model_error_types(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        load_model(tmp_path / "nothing.onnx")
    argv = _make("fails checker: unknown op", tmp_path)
    with pytest.raises(InputError, match="No Op registered for NoSuchOp"):
        load_model(argv[0])
