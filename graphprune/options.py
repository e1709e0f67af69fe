"""What to prune and how, typed and checked in one place.

:class:`PruneOptions` holds the settings of one prune job (:func:`graphprune.prune`'s keywords,
``--steps`` included); :meth:`PruneOptions.check` is the one place their ranges and combinations
are checked: the API checks them on every call, the CLI before it reads the model, the sweep
for each of its points. Messages name the CLI flags, which is how the settings are documented.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import numpy as np

from graphprune.allocation import ALLOCATORS, DEFAULT_ROUND_TO
from graphprune.compensation import parse_compensate
from graphprune.errors import UsageError

TARGETS = ("target_macs", "target_params", "target_latency")


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


@dataclasses.dataclass(frozen=True)
class PruneOptions:
    """The settings of a prune job (see :func:`graphprune.prune` for each)."""

    ratio: float = 0.5
    heads: float | None = None
    mlp: float | None = None
    criterion: str = "l1"
    round_to: int = DEFAULT_ROUND_TO
    exclude: tuple[str, ...] = ()
    seed: int = 0
    allocation: str = "uniform"
    target_macs: float | None = None
    target_params: float | None = None
    target_latency: float | None = None
    compensate: tuple[str, ...] = ()
    resize_io: tuple[str, ...] = ()
    input_shapes: Mapping[str, tuple[int, ...]] | None = None
    sensitivity: str | dict | None = None
    steps: int = 1
    debug: bool = False

    @classmethod
    def of(cls, ratio: float = 0.5, *, compensate: str | Sequence[str] | None = None,
           exclude: Sequence[str] = (), resize_io: Sequence[str] = (), **options
           ) -> PruneOptions:
        """Options from :func:`graphprune.prune`'s arguments (``compensate`` as text or list)."""
        return cls(ratio, compensate=parse_compensate(compensate), exclude=tuple(exclude),
                   resize_io=tuple(resize_io), **options)

    @property
    def ratios(self) -> dict[str, float]:
        """Share removed per group kind: heads, and channels / MLP neurons."""
        return {"heads": self.ratio if self.heads is None else self.heads,
                "channels": self.ratio if self.mlp is None else self.mlp}

    @property
    def target(self) -> str | None:
        """The flag of the cost target given, if any."""
        given = [name for name in TARGETS if getattr(self, name) is not None]
        return _flag(given[0]) if given else None

    def check(self) -> PruneOptions:
        """Raises UsageError (exit 2) for a setting out of range or a combination that is not."""
        from graphprune.importance import SCORERS

        for name, value in (("ratio", self.ratio), ("heads", self.heads), ("mlp", self.mlp)):
            if value is not None and not 0 <= value < 1:
                raise UsageError(f"{_flag(name)} must be in [0, 1), got {value}")
        given = [_flag(name) for name in TARGETS if getattr(self, name) is not None]
        if len(given) > 1:
            raise UsageError(f"{' and '.join(given)} exclude each other")
        for name in TARGETS:
            value = getattr(self, name)
            if value is not None and not 0 < value <= 1:
                raise UsageError(f"{_flag(name)} must be in (0, 1], got {value}")
        if isinstance(self.round_to, bool) or not isinstance(self.round_to, int | np.integer) \
                or self.round_to < 1:
            raise UsageError(f"--round-to must be a positive integer, got {self.round_to!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int | np.integer) \
                or self.seed < 0:
            raise UsageError(f"seed must be a non-negative integer, got {self.seed!r}")
        if self.criterion not in SCORERS:
            raise UsageError(f"unknown criterion '{self.criterion}' (choose from "
                             f"{', '.join(SCORERS)})")
        if self.allocation not in ALLOCATORS or self.allocation == "target":
            choices = ", ".join(n for n in ALLOCATORS if n != "target")
            raise UsageError(f"unknown allocation '{self.allocation}' (choose from {choices})")
        if (self.sensitivity is not None) != (self.allocation == "sensitivity"):
            raise UsageError("allocation 'sensitivity' and a sensitivity table go together "
                             "(--allocation sensitivity --sensitivity-json PATH)")
        if self.allocation == "sensitivity" and self.target_latency is not None:
            raise UsageError("allocation 'sensitivity' does not take a latency target")
        check_steps(self.steps)
        return self

    def keywords(self) -> dict:
        """:func:`graphprune.prune`'s keywords (``ratio`` and ``steps`` excluded)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if f.name not in ("ratio", "steps")}


def check_steps(steps: int) -> None:
    """UsageError unless ``steps`` (``--steps``) is a positive integer."""
    if isinstance(steps, bool) or not isinstance(steps, int | np.integer) or steps < 1:
        raise UsageError(f"--steps must be at least 1, got {steps!r}")
