"""Rewrite passes state their place and their promise, checked around every call.

Each pass names the passes that must have run before it and those that must not have run yet,
and checks what holds after it: onnx-ir calls ``requires`` and ``ensures`` around ``call``. The
passes that ran on a model are recorded in ``model.meta`` (not serialized); the pipeline
clears the record before each rewrite (:func:`start_rewrite`), so a model rewritten again (the
steps of ``--steps``) starts over. A failed condition is a bug in graphprune, not in the model:
onnx-ir raises ``PreconditionError`` / ``PostconditionError`` (an internal error, exit 1).
"""

from __future__ import annotations

from collections.abc import Sequence

import onnx_ir as ir

RUN_KEY = "graphprune.passes_run"


def start_rewrite(model: ir.Model) -> None:
    """Forgets the passes run on ``model`` before: a new rewrite begins."""
    model.meta.pop(RUN_KEY, None)


class RewritePass(ir.passes.InPlacePass):
    """An in-place pass with its place in the rewrite stated, not implied by a list's order.

    Attributes:
        after: Names of the passes that must have run on the model first.
        before: Names of the passes that must not have run on it yet.
    """

    after: Sequence[str] = ()
    before: Sequence[str] = ()

    def requires(self, model: ir.Model) -> None:
        done = model.meta.get(RUN_KEY, ())
        name = type(self).__name__
        missing = [p for p in self.after if p not in done]
        if missing:
            raise ir.passes.PreconditionError(f"{name} runs after {', '.join(missing)}")
        early = [p for p in self.before if p in done]
        if early:
            raise ir.passes.PreconditionError(f"{name} runs before {', '.join(early)}")

    def ensures(self, model: ir.Model) -> None:
        self.check_result(model)
        model.meta[RUN_KEY] = (*model.meta.get(RUN_KEY, ()), type(self).__name__)

    def check_result(self, model: ir.Model) -> None:
        """Raises ``PostconditionError`` when what the pass promises does not hold."""
