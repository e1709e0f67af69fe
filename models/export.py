"""Export zoo models to ONNX with the TorchScript or dynamo exporter.

Example:
    python -m models.export resnet18 -o resnet18.onnx --width 0.5
    python -m models.export --list
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import torch
from torch import nn

from models.zoo import ZOO

EXPORTERS = ("torchscript", "dynamo")
TORCHSCRIPT_OPSET = 17


def example_input(shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    """Deterministic standard-normal input tensor of ``shape``."""
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def output_names(num_outputs: int) -> list[str]:
    """``["output"]`` for single-output models, else ``["output0", ...]``."""
    return ["output"] if num_outputs == 1 else [f"output{i}" for i in range(num_outputs)]


def _export_torchscript(
    model: nn.Module,
    x: torch.Tensor,
    path: Path,
    outs: list[str],
    keep_bn: bool,
    dynamic_batch: bool,
    opset: int,
    dynamic_spatial: bool = False,
) -> None:
    """TorchScript exporter; ``keep_bn`` disables BN folding and constant folding."""
    kwargs = {}
    if keep_bn:
        kwargs = {"training": torch.onnx.TrainingMode.PRESERVE, "do_constant_folding": False}
    axes = {n: {0: "batch"} for n in ["input", *outs]} if dynamic_batch else {}
    if dynamic_spatial:
        spatial = {k: f"dim{k}" for k in range(2, x.dim())}
        axes["input"] = {**axes.get("input", {}), **spatial}
    if axes:
        kwargs["dynamic_axes"] = axes
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            model,
            x,
            str(path),
            dynamo=False,
            opset_version=opset,
            input_names=["input"],
            output_names=outs,
            **kwargs,
        )


def _optimize_keep_bn(program: torch.onnx.ONNXProgram) -> None:
    """Runs the onnxscript default cleanup minus its BN-into-Conv fusion rules.

    Runs constant folding, dead-node removal, constant lifting, initializer
    deduplication and common-subexpression elimination.
    """
    import onnx_ir.passes
    import onnx_ir.passes.common as passes
    import onnxscript.optimizer

    onnxscript.optimizer.fold_constants(program.model)
    pipeline = onnx_ir.passes.Sequential(
        passes.RemoveUnusedNodesPass(),
        passes.LiftConstantsToInitializersPass(lift_all_constants=True, size_limit=0),
        passes.DeduplicateInitializersPass(),
        passes.CommonSubexpressionEliminationPass(),
        passes.RemoveUnusedNodesPass(),
    )
    pipeline(program.model)


def _export_dynamo(
    model: nn.Module,
    x: torch.Tensor,
    path: Path,
    outs: list[str],
    keep_bn: bool,
    dynamic_batch: bool,
    opset: int | None,
) -> None:
    """torch.export-based exporter (onnxscript); see :func:`export` for BN notes."""
    dyn = ({0: torch.export.Dim("batch")},) if dynamic_batch else None
    if dynamic_batch and x.shape[0] == 1:
        x = torch.cat([x, x])  # batch 1 would be specialized by torch.export
    program = torch.onnx.export(
        model,
        (x,),
        dynamo=True,
        opset_version=opset,
        input_names=["input"],
        output_names=outs,
        dynamic_shapes=dyn,
        optimize=not keep_bn,
        verbose=False,
    )
    if keep_bn:
        _optimize_keep_bn(program)
    program.save(str(path), external_data=False)


def export(
    name: str,
    path: str | Path,
    *,
    exporter: str = "torchscript",
    keep_bn: bool = False,
    width: float = 1.0,
    input_shape: tuple[int, ...] | None = None,
    dynamic_batch: bool = False,
    dynamic_spatial: bool = False,
    opset: int | None = None,
    seed: int = 0,
) -> Path:
    """Builds zoo model ``name`` and exports it to ONNX.

    With the TorchScript exporter, BatchNorm is folded into the preceding
    Conv unless ``keep_bn`` (then ``TrainingMode.PRESERVE`` on an eval-mode
    model and no constant folding keep ``BatchNormalization`` nodes). With the
    dynamo exporter, ``keep_bn=False`` runs the default onnxscript optimizer
    (which fuses BN into Conv/ConvTranspose/Gemm) and ``keep_bn=True`` skips
    it, applying only onnxscript constant folding, dead-node removal, constant
    lifting, initializer deduplication and CSE, so ``BatchNormalization``
    nodes stay. Dynamo weights are stored inside the
    .onnx file (onnx falls back to external data only above 2 GB).

    Args:
        name: Zoo key (see ``models.zoo.ZOO``).
        path: Output .onnx path (parent directories are created).
        exporter: "torchscript" or "dynamo".
        keep_bn: Keep BatchNormalization nodes instead of folding them.
        width: Channel width multiplier.
        input_shape: Export input shape; defaults to the entry's ``input_shape``.
        dynamic_batch: Make dim 0 of the input and outputs dynamic.
        dynamic_spatial: Make the input's spatial dims dynamic (torchscript only).
        opset: ONNX opset (default 17 for torchscript, torch's default for
            dynamo: 20 with torch 2.13).
        seed: Seed for weights (and the example input).

    Returns:
        The path of the written model.

    Raises:
        ValueError: Unknown model name or exporter.
    """
    if name not in ZOO:
        raise ValueError(f"unknown model {name!r}; choose from {sorted(ZOO)}")
    if exporter not in EXPORTERS:
        raise ValueError(f"unknown exporter {exporter!r}; choose from {EXPORTERS}")
    entry = ZOO[name]
    model = entry.build(width=width, seed=seed).eval()
    x = example_input(tuple(input_shape or entry.input_shape), seed)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    outs = output_names(entry.num_outputs)
    with torch.no_grad():
        if exporter == "torchscript":
            _export_torchscript(
                model, x, path, outs, keep_bn, dynamic_batch, opset or TORCHSCRIPT_OPSET,
                dynamic_spatial,
            )
        else:
            _export_dynamo(model, x, path, outs, keep_bn, dynamic_batch, opset)
    return path


def parse_shape(text: str) -> tuple[int, ...]:
    """Parses ``"1,3,224,224"`` into a tuple of ints."""
    return tuple(int(v) for v in text.replace("x", ",").split(",") if v)


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; returns the process exit code."""
    p = argparse.ArgumentParser(
        prog="python -m models.export",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("name", nargs="?", choices=list(ZOO), help="zoo model name")
    p.add_argument("-o", "--output", help="output path (default NAME.onnx)")
    p.add_argument("--exporter", choices=EXPORTERS, default="torchscript")
    p.add_argument("--keep-bn", action="store_true", help="keep BatchNormalization nodes")
    p.add_argument("--width", type=float, default=1.0)
    p.add_argument("--input-shape", type=parse_shape, help="e.g. 1,3,224,224")
    p.add_argument("--dynamic-batch", action="store_true")
    p.add_argument("--dynamic-spatial", action="store_true", help="dynamic H/W (torchscript)")
    p.add_argument("--opset", type=int)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--list", action="store_true", help="list zoo models and exit")
    args = p.parse_args(argv)
    if args.list:
        for key, e in ZOO.items():
            print(
                f"{key:15s} input={e.input_shape} small={e.small_input_shape} "
                f"outputs={e.num_outputs}"
            )
        return 0
    if not args.name:
        p.error("NAME is required unless --list is given")
    out = export(
        args.name,
        args.output or f"{args.name}.onnx",
        exporter=args.exporter,
        keep_bn=args.keep_bn,
        width=args.width,
        input_shape=args.input_shape,
        dynamic_batch=args.dynamic_batch,
        dynamic_spatial=args.dynamic_spatial,
        opset=args.opset,
        seed=args.seed,
    )
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
