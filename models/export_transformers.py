"""Export the transformer zoo to ONNX (TorchScript or dynamo), and the ORT-fused form of BERT.

Example:
    python -m models.export_transformers bert -o bert.onnx
    python -m models.export_transformers gpt2 --exporter dynamo -o gpt2.onnx
    python -m models.export_transformers bert --fused -o bert.fused.onnx
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import numpy as np
import torch

from models.transformers import TINY, TINY_GQA, TRANSFORMERS, Config

EXPORTERS = ("torchscript", "dynamo")
OPSET = 17
SEQ, PAST, BATCH = 8, 4, 2


def config_of(name: str) -> Config:
    return TINY_GQA if name == "llama" else TINY


def io_names(name: str, cfg: Config) -> tuple[list[str], list[str]]:
    """Graph input and output names of zoo transformer ``name``."""
    if name == "bert":
        return ["input_ids", "attention_mask", "token_type_ids"], ["last_hidden_state"]
    if name == "vit":
        return ["pixel_values"], ["logits"]
    cache = [f"{kind}_{kv}_{i}" for i in range(cfg.layers) for kv in ("key", "value")
             for kind in ("past",)]
    present = [c.replace("past", "present") for c in cache]
    return ["input_ids", *cache], ["logits", *present]


def example_inputs(name: str, cfg: Config, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Valid inputs: token ids inside the vocabulary, a 0/1 mask with padding, 2 token types."""
    gen = torch.Generator().manual_seed(seed)
    if name == "vit":
        return (torch.randn(BATCH, 3, 32, 32, generator=gen),)
    ids = torch.randint(0, cfg.vocab, (BATCH, SEQ), generator=gen)
    if name == "bert":
        mask = torch.ones(BATCH, SEQ, dtype=torch.int64)
        mask[1, -2:] = 0
        types = torch.zeros(BATCH, SEQ, dtype=torch.int64)
        types[:, SEQ // 2:] = 1
        return ids, mask, types
    shape = (BATCH, cfg.kv_heads, PAST, cfg.head_dim)
    past = [torch.randn(shape, generator=gen) for _ in range(2 * cfg.layers)]
    return (ids, *past)


def _dynamic_axes(name: str, inputs: list[str], outputs: list[str]) -> dict:
    if name == "vit":
        return {"pixel_values": {0: "batch"}, "logits": {0: "batch"}}
    axes = {n: {0: "batch", 1: "sequence"} for n in inputs if not n.startswith("past")}
    axes.update({n: {0: "batch", 2: "past"} for n in inputs if n.startswith("past")})
    axes.update({n: {0: "batch", 2: "total"} for n in outputs if n.startswith("present")})
    axes.update({n: {0: "batch", 1: "sequence"} for n in outputs if not n.startswith("present")})
    return axes


def export(name: str, path: str | Path, *, exporter: str = "torchscript", seed: int = 0,
           dynamic: bool = True) -> Path:
    """Builds zoo transformer ``name`` at its tiny size and exports it to ``path``."""
    if name not in TRANSFORMERS:
        raise ValueError(f"unknown model {name!r}; choose from {sorted(TRANSFORMERS)}")
    if exporter not in EXPORTERS:
        raise ValueError(f"unknown exporter {exporter!r}; choose from {EXPORTERS}")
    cfg = config_of(name)
    model = TRANSFORMERS[name](cfg, seed=seed)
    inputs, outputs = io_names(name, cfg)
    args = example_inputs(name, cfg, seed)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if exporter == "torchscript":
            torch.onnx.export(model, args, str(path), dynamo=False, opset_version=OPSET,
                              input_names=inputs, output_names=outputs,
                              dynamic_axes=_dynamic_axes(name, inputs, outputs) if dynamic
                              else None)
        else:
            program = torch.onnx.export(model, args, dynamo=True, input_names=inputs,
                                        output_names=outputs, verbose=False)
            program.save(str(path), external_data=False)
    return path


def fuse(source: str | Path, path: str | Path, name: str = "bert") -> Path:
    """The onnxruntime transformer optimizer's fused form of an exported zoo encoder.

    It has Attention, SkipLayerNormalization, BiasGelu and EmbedLayerNormalization nodes.
    """
    from onnxruntime.transformers import optimizer

    cfg = config_of(name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fused = optimizer.optimize_model(str(source), model_type="bert", num_heads=cfg.heads,
                                         hidden_size=cfg.hidden, opt_level=0)
    fused.save_model_to_file(str(path))
    return Path(path)


def feeds(name: str, seed: int = 0) -> dict[str, np.ndarray]:
    """The example inputs as onnxruntime feeds."""
    cfg = config_of(name)
    inputs, _ = io_names(name, cfg)
    return {n: t.numpy() for n, t in zip(inputs, example_inputs(name, cfg, seed), strict=True)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m models.export_transformers", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("name", choices=sorted(TRANSFORMERS))
    p.add_argument("-o", "--output", help="output path (default NAME.onnx)")
    p.add_argument("--exporter", choices=EXPORTERS, default="torchscript")
    p.add_argument("--fused", action="store_true",
                   help="write the onnxruntime transformer optimizer's fused form (bert only)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    out = Path(args.output or f"{args.name}.onnx")
    if args.fused:
        if args.name != "bert":
            p.error("--fused is for bert")
        plain = out.with_name(out.stem + ".unfused.onnx")
        export(args.name, plain, exporter=args.exporter, seed=args.seed)
        fuse(plain, out, args.name)
        plain.unlink()
    else:
        export(args.name, out, exporter=args.exporter, seed=args.seed)
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
