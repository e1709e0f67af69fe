"""One prune job on files, from loading the model to the atomic save of the verified result.

Load -> analyze -> score -> allocate -> rewrite -> compensate -> verify -> save.
:func:`prune_file` is what ``graphprune MODEL`` and every point of ``graphprune sweep`` run; the
CLI parses its flags into :class:`~graphprune.options.PruneOptions`, checks the input model runs
(:class:`~graphprune.verify.runtime.SelfCheck`), and measures and reports around it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from graphprune._io import save_model
from graphprune.bench.progress import Progress, step
from graphprune.options import PruneOptions
from graphprune.pipeline import PruneResult
from graphprune.steps import prune_in_steps
from graphprune.verify.runtime import SelfCheck


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
    """
    options.check()
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
