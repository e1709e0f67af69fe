"""Runtime checks: the saved model loads and runs in onnxruntime on valid inputs.

The inputs are the job's own (``--input-shape``, ``--data``, valid random feeds from
:mod:`graphprune.inputs`). When the pruned model fails, the original is run on the same inputs:
if it fails too, the input model is to blame (InputError, exit 2), not the pruning.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from graphprune._io import load_model
from graphprune.errors import InputError, VerificationError, one_line
from graphprune.inputs import read_interface, valid_feeds
from graphprune.verify.oracle import Masks, OracleResult, check_oracle, run_model
from graphprune.verify.resized_io import Cuts, sliced_feeds, sliced_outputs
from graphprune.verify.structural import check_file

Feeds = Sequence[Mapping[str, np.ndarray]]
Outputs = list[list[np.ndarray]]  # per batch, per output

_ORT_TYPES = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(bool)": np.bool_,
}


def random_feeds(session, seed: int = 0, dim: int = 1) -> dict[str, np.ndarray]:
    """Random inputs for ``session``; symbolic dims become ``dim`` (latency benchmarks only)."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for arg in session.get_inputs():
        shape = [d if isinstance(d, int) else dim for d in arg.shape]
        dtype = _ORT_TYPES.get(arg.type, np.float32)
        feeds[arg.name] = rng.standard_normal(shape).astype(dtype)
    return feeds


def run_all(path: Path, feeds: Feeds) -> Outputs:
    """The outputs of the model at ``path`` on every batch (see :func:`oracle.run_model`)."""
    return run_model(Path(path), feeds)


def check_input_runs(path: Path, feeds: Feeds) -> Outputs:
    """Runs the input model on ``feeds``; InputError (exit 2) when onnxruntime cannot."""
    try:
        return run_all(Path(path), feeds)
    except Exception as exc:  # onnxruntime raises its own exception types
        raise InputError(f"onnxruntime cannot run the input model: {one_line(exc)} (inputs: "
                         f"{_describe(feeds)}; set them with --input-shape or --data)") from exc


def _describe(feeds: Feeds) -> str:
    first = feeds[0] if feeds else {}
    return ", ".join(f"{k} {v.dtype}{list(v.shape)}" for k, v in first.items()) or "none"


def _non_finite(outputs: Outputs) -> list[np.ndarray]:
    return [~np.isfinite(o) if np.issubdtype(np.asarray(o).dtype, np.floating) else None
            for batch in outputs for o in batch]


def _new_non_finite(outputs: Outputs, reference: Outputs | None) -> bool:
    """Non-finite outputs where the original's are finite (any, without an original)."""
    mine = _non_finite(outputs)
    theirs = _non_finite(reference) if reference is not None else [None] * len(mine)
    for a, b in zip(mine, theirs, strict=False):
        if a is not None and a.any() and (b is None or b.shape != a.shape or (a & ~b).any()):
            return True
    return False


def check_runs(path: Path, feeds: Feeds | None = None, original: Path | None = None,
               reference: Outputs | None = None) -> Outputs:
    """Runs the pruned model at ``path`` on ``feeds``; returns its outputs.

    Args:
        path: The (staged) pruned model.
        feeds: The batches; valid random feeds of the model's default shapes when None.
        original: The input model: run on the same feeds when the pruned one fails, so that a
            failure of both is reported as the input's (InputError) rather than the pruning's.
        reference: The original's outputs on ``feeds`` (a non-finite output it shares is fine).
    """
    if feeds is None:
        feeds = valid_feeds(path)
    try:
        outputs = run_all(Path(path), feeds)
    except Exception as exc:  # onnxruntime raises its own exception types
        if original is not None and reference is None:
            reference = check_input_runs(original, feeds)
        raise VerificationError(f"pruned model does not run in onnxruntime: {one_line(exc)}"
                                ) from exc
    if _new_non_finite(outputs, reference):
        if original is not None and reference is None:
            reference = check_input_runs(original, feeds)
            if not _new_non_finite(outputs, reference):
                return outputs
        raise VerificationError("pruned model produces non-finite outputs where the original's "
                                "are finite" if reference is not None else
                                "pruned model produces non-finite outputs on random inputs")
    return outputs


class SelfCheck:
    """The checks ``save_model`` runs on the staged output before it is renamed into place.

    Structure (ONNX checker), a run in onnxruntime on the job's inputs, and, once ``masks`` are
    set, the mask-equivalence oracle against the original. Call :meth:`check_input` first to
    refuse an input model onnxruntime cannot run (exit 2) before any work is done.

    Attributes:
        source: The input model file.
        feeds: The batches every check runs on.
        masks: ``PruneResult.masks``; None skips the oracle.
        io: ``PruneResult.io``: resized inputs are fed sliced, resized outputs compared sliced.
        fills: ``PruneResult.fills``: what the masks set removed entries to (None: read them
            from the input model).
        oracle: The oracle's result after a call with masks set, else None.
    """

    def __init__(self, source: Path, feeds: Feeds, masks: Masks | None = None) -> None:
        self.source = Path(source)
        self.feeds = list(feeds)
        self.masks = masks
        self.reference: Outputs | None = None
        self.oracle: OracleResult | None = None
        self.io: Cuts = {}  # PruneResult.io: graph inputs/outputs that changed shape
        self.fills = None

    def check_input(self) -> None:
        """Runs the input model on the feeds (InputError when onnxruntime cannot)."""
        try:
            self.reference = check_input_runs(self.source, self.feeds)
        except InputError:
            load_model(self.source)  # our own reasons (checker, external data) come first
            raise

    def __call__(self, staged: Path) -> None:
        check_file(staged)
        if self.io:  # resized graph I/O: the pruned model reads and writes them sliced
            names = [o.name for o in read_interface(self.source).graph.output]
            reference = None if self.reference is None else [
                sliced_outputs(r, names, self.io) for r in self.reference]
            feeds = [sliced_feeds(f, self.io) for f in self.feeds]
            outputs = check_runs(staged, feeds, None, reference)
        else:
            reference = self.reference
            outputs = check_runs(staged, self.feeds, self.source, reference)
        if self.masks is not None:
            self.oracle = check_oracle(self.source, staged, self.masks, self.feeds, outputs,
                                       reference, io=self.io, fills=self.fills)
