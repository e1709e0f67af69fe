"""Compensation: passes that make a pruned model compute what the original did, on data.

Pruning is exact against the *masked* original (the mask-equivalence oracle); compensation
deliberately changes the pruned model's weights so that it tracks the *original* on calibration
data instead. Each method is one pass (``ir.passes.InPlacePass``) over the pruned model, built
from a :class:`CompensationContext`, registered in :data:`COMPENSATIONS` under its
``--compensate`` name. Combined methods run in :data:`ORDER`.
"""

from __future__ import annotations

from collections.abc import Sequence

from graphprune.compensation.context import CompensationContext, original_proto
from graphprune.errors import UsageError

# name -> pass class taking a CompensationContext; filled by the method modules below.
COMPENSATIONS: dict[str, type] = {}
ORDER: tuple[str, ...] = ("bias", "refit", "stats")  # when several are asked for


def parse_compensate(spec: str | Sequence[str] | None) -> tuple[str, ...]:
    """``"none"``, ``"bias,stats"`` or a sequence of names -> names in :data:`ORDER`.

    Raises:
        UsageError: An unknown name, or ``none`` together with a method.
    """
    if spec is None:
        return ()
    names = [n.strip() for n in (spec.split(",") if isinstance(spec, str) else spec)]
    names = [n for n in names if n]
    if "none" in names:
        if len(names) > 1:
            raise UsageError("--compensate none excludes every other method")
        return ()
    choices = [n for n in ORDER if n in COMPENSATIONS]
    for name in names:
        if name not in COMPENSATIONS:
            raise UsageError(f"unknown compensation '{name}' (choose from none, "
                             f"{', '.join(choices)})")
    return tuple(n for n in ORDER if n in names)


def compensate(context: CompensationContext, names: Sequence[str]) -> list[dict]:
    """Runs the passes ``names`` (already parsed) on ``context.model``; one report each."""
    import time

    reports = []
    for name in names:
        start = time.perf_counter()
        compensation = COMPENSATIONS[name](context)
        compensation(context.model)
        report = dict(getattr(compensation, "report", None) or {})
        report.update(name=name, seconds=round(time.perf_counter() - start, 3))
        reports.append(report)
    return reports


import graphprune.compensation.bias  # noqa: E402,F401  (registers "bias")
import graphprune.compensation.refit  # noqa: E402,F401  (registers "refit")
import graphprune.compensation.stats  # noqa: E402,F401  (registers "stats")

__all__ = ["COMPENSATIONS", "ORDER", "CompensationContext", "compensate", "original_proto",
           "parse_compensate"]
