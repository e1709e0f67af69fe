"""What a compensation pass reads: the original model, the pruned one, the plan and the data.

Compensation runs after the rewrite, on the pruned model (in place). It may run the original
model and the pruned model on the same calibration batches, side by side:
:meth:`CompensationContext.paired` yields, per batch, the values asked of each. Values keep
their names through the rewrite; ``plan.kept(value, axis)`` maps a pruned channel back to the
original channel it was (the pruned model's values are the analysis's own objects: the rewrite
is in place).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
import onnx
import onnx.numpy_helper
import onnx_ir as ir

from graphprune.analysis import ChannelAnalysis, PrunePlan
from graphprune.calibration import Batch, ProtoModel, model_proto, stream_values

Masks = dict[str, list[tuple[int, np.ndarray]]]


@dataclasses.dataclass
class CompensationContext:
    """Everything a compensation pass may read.

    Attributes:
        original: The model before the rewrite, as a proto (external tensors as references).
        folder: Where the original's external data lies (None: none).
        model: The pruned model; passes edit it in place.
        analysis: The channel analysis of the original (its values are ``model``'s values).
        plan: The kept classes: ``plan.kept(value, axis)`` gives the original indices kept on
            an axis (None: the axis is whole).
        batches: Calibration feeds of the original's inputs.
        io: ``PruneResult.io``: graph inputs the pruned model reads sliced.
        origin: ``"random"`` or the ``--data`` path (reports say which).
    """

    original: onnx.ModelProto
    folder: Path | None
    model: ir.Model
    analysis: ChannelAnalysis
    plan: PrunePlan
    batches: tuple[Batch, ...]
    io: Masks = dataclasses.field(default_factory=dict)
    origin: str = "data"
    _constants: dict | None = dataclasses.field(default=None, init=False, repr=False)

    def pruned_batches(self) -> list[Batch]:
        """The batches as the pruned model reads them (resized inputs sliced)."""
        if not self.io:
            return list(self.batches)
        from graphprune.verify.resized_io import sliced_feeds

        return [sliced_feeds(b, self.io) for b in self.batches]

    def original_values(self, names: Iterable[str]) -> Iterator[dict[str, np.ndarray]]:
        """Values of the original model, one batch at a time."""
        return stream_values(ProtoModel(self.original, self.folder), self.batches, names)

    def pruned_values(self, names: Iterable[str]) -> Iterator[dict[str, np.ndarray]]:
        """Values of the pruned model as it is now, one batch at a time."""
        return stream_values(self.model, self.pruned_batches(), names)

    def paired(self, original: Sequence[str], pruned: Sequence[str]
               ) -> Iterator[tuple[dict[str, np.ndarray], dict[str, np.ndarray]]]:
        """``(original values, pruned values)`` on the same batch, batch after batch."""
        return zip(self.original_values(original), self.pruned_values(pruned), strict=True)

    def original_array(self, name: str) -> np.ndarray:
        """The original model's constant ``name`` (an initializer or a ``Constant`` output).

        Read from :attr:`original` (external data from :attr:`folder`): the pruned model's
        constants are sliced in place, so the removed entries exist only there.

        Raises:
            KeyError: The original has no constant of that name.
        """
        if self._constants is None:
            graph = self.original.graph
            found = {t.name: t for t in graph.initializer}
            for node in graph.node:
                if node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
                    value = next((a for a in node.attribute if a.name == "value"), None)
                    if value is not None:
                        found.setdefault(node.output[0], value.t)
            self._constants = found
        tensor = self._constants[name]
        base = str(self.folder) if self.folder is not None else ""
        return onnx.numpy_helper.to_array(tensor, base_dir=base)


def original_proto(model: ir.Model) -> tuple[onnx.ModelProto, Path | None]:
    """The model as a proto (taken before the rewrite) and its external-data folder."""
    return model_proto(model)
