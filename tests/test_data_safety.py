"""No way to lose data: destinations that are the input, atomic pairs, signals, exit codes.

Each case is one of the ways a user could lose data (or get a misleading exit code) in issue 7;
every test failed before the fix. Commands run ``graphprune`` in-process unless a signal is
involved; then a child process runs it.
"""

from __future__ import annotations

import errno
import json
import os
import re
import signal
import stat
import subprocess
import sys
import textwrap
import time
import tracemalloc
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import graphprune
from graphprune._io import check_output, infer_shapes, save_model
from graphprune.analysis import axes
from graphprune.cli import main
from graphprune.errors import OutputError
from tests.test_bad_input import _error_lines, _snapshot, conv_model

FAST = ["--no-bench", "--ratio", "0.5", "--round-to", "8"]
BENCH = ["--ratio", "0.5", "--round-to", "8", "--runs", "1", "--warmup", "0", "--samples", "2",
         "--providers", "cpu", "--input-shape", "x=1,3,8,8"]
DEAD_PID = 2**31 - 1  # above any pid_max: no process has it


def _sliced_model(seed: int = 0) -> onnx.ModelProto:
    """``conv_model`` without the last bias: every external tensor is sliced by pruning."""
    model = conv_model(seed)
    del model.graph.node[2].input[2]
    kept = [t for t in model.graph.initializer if t.name != "b2"]
    del model.graph.initializer[:]
    model.graph.initializer.extend(kept)
    return model


def _save_external(model: onnx.ModelProto, path: Path, location: str) -> Path:
    onnx.save(model, path, save_as_external_data=True, location=location, size_threshold=0)
    return path


def _outputs(path: Path, seed: int = 0) -> list[np.ndarray]:
    feeds = {"x": np.random.default_rng(seed).standard_normal((2, 3, 8, 8)).astype(np.float32)}
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)


def _one_error(capfd, pattern: str) -> str:
    lines = _error_lines(capfd.readouterr().err)
    assert len(lines) == 1, lines
    assert lines[0].startswith("graphprune: error:") and pattern in lines[0], lines[0]
    return lines[0]


def _staging_left(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if p.name.startswith(".graphprune-")]


# --- destinations that are files the input reads -------------------------------------------


def _case(kind: str, folder: Path) -> list[str]:
    """The command line of one way to name a file the input reads as a destination."""
    if kind == "output is the input's data file":
        model = _save_external(conv_model(), folder / "m.onnx", "m.onnx.data")
        return [str(model), "-o", str(folder / "m.onnx.data")]
    if kind == "output is the input's data file, with --force":
        model = _save_external(conv_model(), folder / "m.onnx", "m.onnx.data")
        return [str(model), "-o", str(folder / "m.onnx.data"), "--force"]
    if kind == "input's data file is named like the output":
        model = _save_external(conv_model(), folder / "m.onnx", "out.onnx")
        return [str(model), "-o", str(folder / "out.onnx")]
    if kind == "input's data file is the report path":
        model = _save_external(conv_model(), folder / "m.onnx", "out.report.json")
        return [str(model), "-o", str(folder / "out.onnx")]
    if kind == "input's data is <out>.data and every tensor is sliced":
        model = _save_external(_sliced_model(), folder / "m.onnx", "out.onnx.data")
        return [str(model), "-o", str(folder / "out.onnx")]
    if kind == "output is a hard link to the input's data":
        model = _save_external(conv_model(), folder / "m.onnx", "m.onnx.data")
        os.link(folder / "m.onnx.data", folder / "out.onnx")
        return [str(model), "-o", str(folder / "out.onnx")]
    if kind == "output is a symlink to the input's data":
        model = _save_external(conv_model(), folder / "m.onnx", "m.onnx.data")
        (folder / "out.onnx").symlink_to(folder / "m.onnx.data")
        return [str(model), "-o", str(folder / "out.onnx")]
    if kind == "data of a Constant node is the output":
        model = conv_model()
        weight = model.graph.initializer[0]
        del model.graph.initializer[0]
        model.graph.node.insert(0, helper.make_node("Constant", [], ["w1"], value=weight))
        path = _save_external(model, folder / "m.onnx", "weights.bin")
        assert "weights.bin" in path.read_bytes().decode("latin-1")
        return [str(path), "-o", str(folder / "weights.bin")]
    raise ValueError(kind)


DESTINATION_CASES = [
    "output is the input's data file",
    "output is the input's data file, with --force",
    "input's data file is named like the output",
    "input's data file is the report path",
    "input's data is <out>.data and every tensor is sliced",
    "output is a hard link to the input's data",
    "output is a symlink to the input's data",
    "data of a Constant node is the output",
]


@pytest.mark.parametrize("kind", DESTINATION_CASES)
def test_a_file_the_input_reads_is_never_a_destination(tmp_path, capfd, kind):
    argv = _case(kind, tmp_path)
    before = _snapshot(tmp_path)
    assert main([*argv, *FAST]) == 2
    line = _one_error(capfd, "choose another output name")
    assert re.search(r"is external data the input .* reads|would overwrite the input", line), line
    assert _snapshot(tmp_path) == before


def test_force_in_place_with_external_data_keeps_a_valid_pair(tmp_path):
    path = _save_external(conv_model(), tmp_path / "m.onnx", "m.onnx.data")
    assert main([str(path), "-o", str(path), "--force", *FAST]) == 0
    onnx.checker.check_model(str(path), full_check=True)
    data = [p.name for p in tmp_path.iterdir() if p.suffix == ".data"]
    assert len(data) == 1 and data[0].startswith("m.onnx.") and data[0] != "m.onnx.data"
    assert not _staging_left(tmp_path)


# --- destinations that are not regular files -------------------------------------------------


def test_fifo_output_is_refused_and_stays_a_fifo(tmp_path, capfd):
    source = tmp_path / "m.onnx"
    onnx.save(conv_model(), source)
    os.mkfifo(tmp_path / "out.onnx")
    assert main([str(source), "-o", str(tmp_path / "out.onnx"), *FAST]) == 3
    _one_error(capfd, "not a regular file")
    assert stat.S_ISFIFO(os.lstat(tmp_path / "out.onnx").st_mode)


def test_fifo_report_path_is_refused_before_any_work(tmp_path, capfd):
    source = tmp_path / "m.onnx"
    onnx.save(conv_model(), source)
    os.mkfifo(tmp_path / "out.report.html")
    assert main([str(source), "-o", str(tmp_path / "out.onnx"), *FAST]) == 3
    _one_error(capfd, "not a regular file")
    assert not (tmp_path / "out.onnx").exists()
    assert stat.S_ISFIFO(os.lstat(tmp_path / "out.report.html").st_mode)


def test_dev_null_is_refused(tmp_path):
    source = tmp_path / "m.onnx"
    onnx.save(conv_model(), source)
    with pytest.raises(OutputError, match="not a regular file"):
        check_output(Path("/dev/null"), source)
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)


# --- model and data replaced as a pair -------------------------------------------------------


def _external_ir(seed: int) -> ir.Model:
    model = ir.from_proto(conv_model(seed))
    return model


def test_failed_model_rename_keeps_the_old_pair(tmp_path, monkeypatch):
    out = tmp_path / "out.onnx"
    save_model(_external_ir(1), out, external_data=True)
    expected = _outputs(out)
    real = os.replace

    def fail_on_model(src, dst, *args, **kwargs):
        if Path(dst) == out:
            raise OSError(errno.EIO, "simulated crash before the model rename")
        return real(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", fail_on_model)
    with pytest.raises(OutputError):
        save_model(_external_ir(2), out, external_data=True)
    monkeypatch.undo()
    onnx.checker.check_model(str(out), full_check=True)
    for got, want in zip(_outputs(out), expected, strict=True):
        np.testing.assert_array_equal(got, want)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["out.onnx", *(p.name for p in tmp_path.glob("*.data"))])
    assert len(list(tmp_path.glob("*.data"))) == 1


def test_rewrite_replaces_the_data_under_a_new_name_and_drops_the_old(tmp_path):
    out = tmp_path / "out.onnx"
    save_model(_external_ir(1), out, external_data=True)
    first = {p.name for p in tmp_path.glob("*.data")}
    save_model(_external_ir(2), out, external_data=True)
    second = {p.name for p in tmp_path.glob("*.data")}
    assert len(first) == len(second) == 1 and first != second
    reference = tmp_path / "ref.onnx"
    onnx.save(conv_model(2), reference)
    for got, want in zip(_outputs(out), _outputs(reference), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_old_data_that_is_not_ours_is_left_alone(tmp_path):
    """An old output whose data file is shared under another name keeps that file."""
    out = tmp_path / "out.onnx"
    _save_external(conv_model(1), out, "shared.bin")
    save_model(_external_ir(2), out, external_data=True)
    assert (tmp_path / "shared.bin").exists()


_SIGTERM_BETWEEN_RENAMES = textwrap.dedent("""
    import os, signal, sys
    from graphprune.cli import main
    real = os.replace
    def replace(src, dst, *args, **kwargs):
        if str(dst).endswith("out.onnx") or str(dst).endswith(".data"):
            os.replace = real
            os.kill(os.getpid(), signal.SIGTERM)  # lands between the data and the model
        return real(src, dst, *args, **kwargs)
    os.replace = replace
    sys.exit(main(sys.argv[1:]))
""")


def test_sigterm_while_replacing_never_leaves_a_mismatched_pair(tmp_path):
    source = _save_external(conv_model(), tmp_path / "m.onnx", "m.onnx.data")
    out = tmp_path / "out.onnx"
    common = [str(source), "-o", str(out), "--criterion", "random", *FAST]
    refs = []
    for seed in (1, 2):
        ref = tmp_path / f"ref{seed}.onnx"
        assert main([str(source), "-o", str(ref), "--criterion", "random", "--seed", str(seed),
                     *FAST]) == 0
        refs.append(_outputs(ref))
    assert main([*common, "--seed", "1"]) == 0
    done = subprocess.run([sys.executable, "-c", _SIGTERM_BETWEEN_RENAMES, *common, "--seed", "2"],
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 128 + signal.SIGTERM, done.stderr
    onnx.checker.check_model(str(out), full_check=True)
    got = _outputs(out)
    assert any(all(np.allclose(g, w, rtol=1e-5, atol=1e-6) for g, w in zip(got, ref, strict=True))
               for ref in refs)
    assert not _staging_left(tmp_path)


# --- signals and stale staging ---------------------------------------------------------------

_SIGTERM_WHILE_STAGING = textwrap.dedent("""
    import os, signal, sys
    import onnx_ir as ir
    from graphprune.cli import main
    real = ir.save
    def save(*args, **kwargs):
        real(*args, **kwargs)
        os.kill(os.getpid(), signal.SIGTERM)
    ir.save = save
    sys.exit(main(sys.argv[1:]))
""")


def test_sigterm_removes_staging_and_exits_143(tmp_path):
    source = _save_external(conv_model(), tmp_path / "m.onnx", "m.onnx.data")
    before = _snapshot(tmp_path)
    done = subprocess.run([sys.executable, "-c", _SIGTERM_WHILE_STAGING, str(source),
                           "-o", str(tmp_path / "out.onnx"), *FAST],
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 143, done.stderr
    assert _error_lines(done.stderr) == ["graphprune: terminated by signal SIGTERM"]
    assert _snapshot(tmp_path) == before


def test_sigint_removes_staging_and_exits_130(tmp_path, monkeypatch, capfd):
    source = tmp_path / "m.onnx"
    onnx.save(conv_model(), source)

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(ir, "save", interrupt)
    assert main([str(source), "-o", str(tmp_path / "out.onnx"), *FAST]) == 130
    assert not _staging_left(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]


def test_stale_staging_of_dead_processes_is_swept(tmp_path):
    from graphprune import staging

    source = tmp_path / "m.onnx"
    onnx.save(conv_model(), source)
    old = time.time() - 2 * staging.STALE_AFTER_S
    names = {"dead_old": f".graphprune-{DEAD_PID}-abc",
             "dead_new": f".graphprune-{DEAD_PID}-def",
             "alive_old": f".graphprune-{os.getppid()}-ghi",
             "file": f".graphprune-{DEAD_PID}-j.json"}
    for key, name in names.items():
        path = tmp_path / name
        if key == "file":
            path.write_text("{}")
        else:
            path.mkdir()
            (path / "out.onnx").write_bytes(b"partial")
        if key != "dead_new":
            os.utime(path, (old, old))
    assert main([str(source), "-o", str(tmp_path / "out.onnx"), *FAST]) == 0
    assert sorted(_staging_left(tmp_path)) == sorted([names["dead_new"], names["alive_old"]])


def test_legacy_staging_without_a_pid_is_swept_only_when_ours_and_old(tmp_path):
    """Staging of earlier versions (tempfile names, no pid) was never swept."""
    from graphprune import staging

    source = tmp_path / "m.onnx"
    onnx.save(conv_model(), source)
    old = time.time() - 2 * staging.LEGACY_STALE_AFTER_S
    swept = [".graphprune-k2_9zq0x", ".graphprune-sweep-abcdefgh", ".graphprune-oracle-0a1b2c3d",
             ".graphprune-q1w2e3r4.json"]
    kept = [".graphprune-young123",  # too young: may still be in use
            ".graphprune-notes",  # not a name tempfile makes: the user's
            ".graphprune-nested12"]  # holds a folder: not what staging held
    for name in swept + kept:
        path = tmp_path / name
        if name.endswith(".json"):
            path.write_text("{}")
        else:
            path.mkdir()
            (path / "out.onnx").write_bytes(b"partial")
            os.utime(path / "out.onnx", (old, old))
        if name == ".graphprune-nested12":
            (path / "inner").mkdir()
            os.utime(path / "inner", (old, old))
        if name != ".graphprune-young123":
            os.utime(path, (old, old))
    assert main([str(source), "-o", str(tmp_path / "out.onnx"), *FAST]) == 0
    assert sorted(_staging_left(tmp_path)) == sorted(kept)


_SIGKILL_BETWEEN_RENAMES = textwrap.dedent("""
    import os, signal, sys
    from pathlib import Path
    import onnx_ir as ir
    from graphprune._io import save_model
    from tests.test_bad_input import conv_model
    real = os.replace
    def replace(src, dst, *args, **kwargs):
        if str(dst).endswith("out.onnx"):
            os.kill(os.getpid(), signal.SIGKILL)  # the new data is in place, the model is not
        return real(src, dst, *args, **kwargs)
    os.replace = replace
    save_model(ir.from_proto(conv_model(2)), Path(sys.argv[1]), external_data=True)
""")


def test_sigkill_between_the_renames_leaves_an_orphan_that_a_later_write_sweeps(
        tmp_path, monkeypatch):
    from graphprune import staging

    out = tmp_path / "out.onnx"
    save_model(_external_ir(1), out, external_data=True)
    first = {p.name for p in tmp_path.glob("*.data")}
    done = subprocess.run([sys.executable, "-c", _SIGKILL_BETWEEN_RENAMES, str(out)],
                          capture_output=True, text=True, timeout=300, check=False,
                          cwd=Path(__file__).resolve().parent.parent)
    assert done.returncode == -signal.SIGKILL, done.stderr
    orphans = {p.name for p in tmp_path.glob("*.data")} - first
    assert len(orphans) == 1 and _staging_left(tmp_path)  # what SIGKILL leaves behind
    named = f"out.onnx.{'0' * 8}.data"  # named like ours, but another model reads it: kept
    _save_external(conv_model(3), tmp_path / "copy.onnx", named)
    save_model(_external_ir(3), out, external_data=True)  # young: nothing is swept yet
    assert orphans <= {p.name for p in tmp_path.glob("*.data")}
    monkeypatch.setattr(staging, "STALE_AFTER_S", 0.0)
    save_model(_external_ir(4), out, external_data=True)
    left = {p.name for p in tmp_path.glob("*.data")}
    assert not orphans & left and not _staging_left(tmp_path)
    assert named in left and len(left) == 2  # copy.onnx's data and out.onnx's own
    onnx.checker.check_model(str(tmp_path / "copy.onnx"), full_check=True)
    onnx.checker.check_model(str(out), full_check=True)


# --- --force in place measures against the real original -------------------------------------


def test_force_in_place_benchmarks_against_the_original(tmp_path):
    path = _save_external(conv_model(), tmp_path / "m.onnx", "m.onnx.data")
    original_size = sum(p.stat().st_size for p in tmp_path.iterdir())
    assert main([str(path), "-o", str(path), "--force", *BENCH]) == 0
    report = json.loads((tmp_path / "m.report.json").read_text())
    assert report["fidelity"]["rel_l2"] > 1e-3  # half the channels gone: not the file vs itself
    assert report["before"]["params"] > report["after"]["params"]
    assert report["before"]["file_size"] == original_size
    assert report["input"] == str(path)
    assert not _staging_left(tmp_path)


# --- exit codes ------------------------------------------------------------------------------


def test_full_disk_while_writing_reports_exits_3(tmp_path, monkeypatch, capfd):
    source = tmp_path / "m.onnx"
    onnx.save(conv_model(), source)
    real = os.fdopen

    class _Full:
        def __init__(self, handle):
            self.handle = handle

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.handle.close()

        def write(self, text):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fdopen", lambda fd, *a, **k: _Full(real(fd, *a, **k)))
    assert main([str(source), "-o", str(tmp_path / "out.onnx"), *FAST]) == 3
    _one_error(capfd, "No space left on device")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx", "out.onnx"]


def test_sweep_into_a_read_only_folder_exits_3_before_any_work(tmp_path, monkeypatch, capfd):
    """``/proc`` takes no new files, even for root (permission bits would not stop root)."""
    source = tmp_path / "m.onnx"
    onnx.save(conv_model(), source)

    def no_work(*args, **kwargs):
        raise AssertionError("pruned before the output folder was checked")

    monkeypatch.setattr(graphprune, "prune", no_work)
    assert main(["sweep", str(source), "-o", "/proc", "--ratios", "0.5", "--no-bench"]) == 3
    _one_error(capfd, "cannot write here")


def test_sweep_into_a_folder_that_refuses_writes_exits_3(tmp_path, monkeypatch, capfd):
    """A read-only mount, simulated: creating any file in the folder fails with EROFS."""
    import tempfile

    source = tmp_path / "m.onnx"
    onnx.save(conv_model(), source)
    (tmp_path / "ro").mkdir()
    real = tempfile.TemporaryFile

    def read_only(*args, dir=None, **kwargs):
        if dir is not None and Path(dir) == tmp_path / "ro":
            raise OSError(errno.EROFS, os.strerror(errno.EROFS))
        return real(*args, dir=dir, **kwargs)

    monkeypatch.setattr(tempfile, "TemporaryFile", read_only)
    before = _snapshot(tmp_path)
    assert main(["sweep", str(source), "-o", str(tmp_path / "ro"), "--ratios", "0.5",
                 "--no-bench"]) == 3
    _one_error(capfd, "Read-only file system")
    assert _snapshot(tmp_path) == before


def test_bench_json_never_replaces_an_input(tmp_path, capfd):
    source = _save_external(conv_model(), tmp_path / "m.onnx", "m.onnx.data")
    before = _snapshot(tmp_path)
    assert main(["bench", str(source), "--json", str(tmp_path / "m.onnx.data"), "--runs", "1",
                 "--input-shape", "x=1,3,8,8", "--providers", "cpu"]) == 2
    _one_error(capfd, "choose another output name")
    assert _snapshot(tmp_path) == before


@pytest.mark.parametrize("command", ["prune", "bench", "sweep"])
def test_negative_seed_is_a_usage_error(tmp_path, capfd, command):
    source = tmp_path / "m.onnx"
    onnx.save(conv_model(), source)
    before = _snapshot(tmp_path)
    assert main([command, str(source), "--seed", "-1", "--runs", "1", "--input-shape",
                 "x=1,3,8,8"]) == 2
    _one_error(capfd, "--seed")
    assert _snapshot(tmp_path) == before


# --- bounded memory --------------------------------------------------------------------------


def _range_model(limit: float) -> onnx.ModelProto:
    """``conv_model`` scaled by ``max(Range(0, limit))``: a tiny file naming a huge tensor."""
    model = conv_model()
    for name, value in (("start", 0), ("limit", int(limit)), ("delta", 1)):
        model.graph.initializer.append(numpy_helper.from_array(np.array(value, np.int64), name))
    nodes = [onnx.NodeProto.FromString(n.SerializeToString()) for n in model.graph.node]
    nodes[0].output[0] = "a0"
    extra = [helper.make_node("Range", ["start", "limit", "delta"], ["span"], name="range"),
             helper.make_node("ReduceMax", ["span"], ["m"], name="max", keepdims=0),
             helper.make_node("Cast", ["m"], ["mf"], name="cast", to=TensorProto.FLOAT),
             helper.make_node("Mul", ["a0", "mf"], ["a"], name="scale")]
    del model.graph.node[:]
    model.graph.node.extend([nodes[0], *extra, *nodes[1:]])
    return model


@pytest.mark.parametrize("limit", [2e7, 6e8])
def test_static_value_folding_never_builds_a_huge_range(limit):
    model = ir.from_proto(_range_model(limit))
    tracemalloc.start()
    try:
        infer_shapes(model)
        result = graphprune.prune(model, 0.5, round_to=1)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 32 * 2**20, f"peak {peak / 2**20:.0f} MiB"
    assert result.after.params < result.before.params


def test_a_range_of_a_trillion_is_analyzed_not_an_internal_error(tmp_path, capfd):
    path = tmp_path / "range.onnx"
    onnx.save(_range_model(1e12), path)
    assert main(["analyze", str(path)]) == 0
    analysis = graphprune.analyze(path)
    assert analysis.groups
    details = [b.detail for b in analysis.blocked]
    assert any("more than the analysis follows" in d for d in details), details


def test_analysis_over_the_element_cap_is_refused(tmp_path, capfd, monkeypatch):
    path = tmp_path / "m.onnx"
    onnx.save(conv_model(), path)
    monkeypatch.setattr(axes, "MAX_ELEMENTS", 100)
    assert main(["analyze", str(path)]) == 2
    _one_error(capfd, "the channel analysis needs more than 100 elements")


@pytest.mark.parametrize("seed", [-1, 1.5, "3", True])
def test_api_seed_that_is_not_a_non_negative_int_is_a_usage_error(seed):
    """``graphprune.prune(seed=-1)`` failed inside numpy (ValueError) instead of a UsageError."""
    from graphprune.errors import UsageError

    model = ir.from_proto(conv_model())
    with pytest.raises(UsageError, match="seed must be a non-negative integer"):
        graphprune.prune(model, 0.5, criterion="random", seed=seed)
