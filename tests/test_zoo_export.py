"""Exports every zoo model to ONNX and checks onnxruntime against torch."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

from models.export import example_input, export, main
from models.zoo import ZOO

WIDTH = 0.25
# (name, keep_bn, dynamic_batch); dynamo exports take seconds each, so only a few.
DYNAMO_CASES = [("resnet18", False, False), ("c2f", True, True)]


@pytest.fixture(autouse=True, scope="module")
def _single_thread():
    """Tiny models gain nothing from threads; one thread avoids contention stalls."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@functools.cache
def _build(name: str) -> nn.Module:
    """The zoo model at test width; builds are deterministic, so cache them."""
    return ZOO[name].build(width=WIDTH, seed=0)


def _torch_outputs(name: str, x: torch.Tensor) -> list[np.ndarray]:
    """Runs the same (deterministically built) zoo model in torch."""
    with torch.no_grad():
        out = _build(name)(x)
    outs = [out] if isinstance(out, torch.Tensor) else list(out)
    return [o.numpy() for o in outs]


def _export_and_compare(name: str, path: Path, batch: int = 1, **kwargs) -> onnx.ModelProto:
    """Exports at small width/input, runs checker + onnxruntime, compares to torch."""
    shape = ZOO[name].small_input_shape
    export(name, path, width=WIDTH, input_shape=shape, **kwargs)
    onnx.checker.check_model(str(path), full_check=True)
    x = example_input((batch, *shape[1:]), seed=1)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    got = sess.run(None, {"input": x.numpy()})
    want = _torch_outputs(name, x)
    assert len(got) == len(want) == ZOO[name].num_outputs
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-3, atol=1e-4)
    return onnx.load(str(path))


def _count_bn(model: onnx.ModelProto | nn.Module) -> int:
    """BatchNormalization nodes in an ONNX graph, or BN modules in a torch model."""
    if isinstance(model, nn.Module):
        return sum(isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d) for m in model.modules())
    return sum(n.op_type == "BatchNormalization" for n in model.graph.node)


@pytest.mark.parametrize("keep_bn", [False, True], ids=["folded", "keep_bn"])
@pytest.mark.parametrize("name", list(ZOO))
def test_torchscript_export(name: str, keep_bn: bool, tmp_path: Path) -> None:
    model = _export_and_compare(name, tmp_path / f"{name}.onnx", keep_bn=keep_bn)
    n_modules = _count_bn(_build(name))
    assert n_modules > 0
    if keep_bn:
        assert _count_bn(model) == n_modules
    else:  # BNs after a Conv are folded; DenseNet's pre-activation BNs stay.
        assert _count_bn(model) < n_modules


@pytest.mark.parametrize("name,keep_bn,dynamic", DYNAMO_CASES)
def test_dynamo_export(name: str, keep_bn: bool, dynamic: bool, tmp_path: Path) -> None:
    model = _export_and_compare(
        name,
        tmp_path / f"{name}.onnx",
        batch=3 if dynamic else 1,
        exporter="dynamo",
        keep_bn=keep_bn,
        dynamic_batch=dynamic,
    )
    assert (_count_bn(model) > 0) == keep_bn


def test_torchscript_dynamic_batch(tmp_path: Path) -> None:
    model = _export_and_compare("shufflenet_v2", tmp_path / "s.onnx", batch=3, dynamic_batch=True)
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"


def test_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--list"]) == 0
    listing = capsys.readouterr().out
    assert all(name in listing for name in ZOO)
    out = tmp_path / "a.onnx"
    args = ["audio1d", "-o", str(out), "--width", "0.25", "--keep-bn"]
    assert main([*args, "--input-shape", "1,1,4000", "--opset", "18"]) == 0
    model = onnx.load(str(out))
    assert model.opset_import[0].version == 18 and _count_bn(model) > 0


def test_build_is_deterministic() -> None:
    state = torch.random.get_rng_state()
    a = ZOO["resnet18"].build(width=WIDTH, seed=3).state_dict()
    b = ZOO["resnet18"].build(width=WIDTH, seed=3).state_dict()
    c = ZOO["resnet18"].build(width=WIDTH, seed=4).state_dict()
    assert torch.equal(state, torch.random.get_rng_state())
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["bn1.running_var"], c["bn1.running_var"])


def test_resnet50_param_count() -> None:
    model = ZOO["resnet50"].build(width=1.0)
    assert sum(p.numel() for p in model.parameters()) == 25_557_032
