"""One prune job on files, from loading the model to the atomic save of the verified result.

Load -> analyze -> score -> allocate -> rewrite -> compensate -> verify -> save.
:func:`prune_file` is what ``graphprune MODEL`` and every point of ``graphprune sweep`` run; the
CLI parses its flags into :class:`~graphprune.options.PruneOptions`, checks the input model runs
(:class:`~graphprune.verify.runtime.SelfCheck`), and measures and reports around it.
"""

from __future__ import annotations

import contextlib
import gc
import os
from collections.abc import Callable, Iterator
from pathlib import Path

from graphprune._io import save_model
from graphprune.bench.progress import Progress, step
from graphprune.options import PruneOptions
from graphprune.pipeline import PruneResult
from graphprune.steps import prune_in_steps
from graphprune.verify.runtime import SelfCheck

# Python's cyclic garbage collector scans every live object in a full collection; the IR of a
# 100k-node model is millions of them, and with the default thresholds (700, 10, 10) the whole
# job spent a fifth of its time there (the CLI on the 100k-node model of benchmarks/scale.py:
# 65.5 s, 53.1 s with these; garbage cycles are still collected, less often).
GC_THRESHOLDS = (100_000, 50, 100)


@contextlib.contextmanager
def spaced_collections() -> Iterator[None]:
    """Collects cyclic garbage less often for the duration (the thresholds are restored)."""
    before = gc.get_threshold()
    gc.set_threshold(*GC_THRESHOLDS)
    try:
        yield
    finally:
        gc.set_threshold(*before)


def prune_file(source: str | os.PathLike, output: str | os.PathLike, options: PruneOptions, *,
               calibration=None, check: Callable[[Path], None] | None = None,
               oracle: bool = True,
               progress: Progress | None = None) -> PruneResult:
    """Prunes the model at ``source`` and writes it to ``output`` once it passes ``check``.

    Args:
        source: The input model file.
        output: Where the pruned model goes (atomically, with its external data as a pair;
            nothing is written when a check fails).
        options: What to prune and how (checked first).
        calibration: Batches (or a ``--data`` path) that data-driven criteria and compensation
            run the model on (see :func:`graphprune.prune`).
        check: Called on the staged file before it is renamed into place. The job's
            :class:`SelfCheck` (its :meth:`~SelfCheck.check_input` already run): the written
            model must load and run on its inputs and, with ``oracle``, compute what the masked
            original computes. None: written unchecked.
        oracle: Run the mask-equivalence oracle in ``check`` (skipped when compensation changed
            the weights: the pruned model then differs from the masked original by design).
        progress: Where the steps show, if anywhere.

    Cyclic garbage is collected less often meanwhile (:data:`GC_THRESHOLDS`, restored after).
    """
    options.check()
    with spaced_collections():
        with step(progress, "pruning"):
            result = prune_in_steps(source, options.ratio, steps=options.steps,
                                    calibration=calibration, **options.keywords())
        if isinstance(check, SelfCheck):
            check.masks = result.masks if oracle and not result.compensation else None
            check.io = result.io
            check.fills = result.fills
        with step(progress, "checking and writing the model"):
            save_model(result.model, Path(output), check=check)
    return result
