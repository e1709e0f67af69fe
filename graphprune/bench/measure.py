"""One measurement of several models: latency per execution provider and fidelity to the first.

The first model is the reference (the original, when comparing with a pruned model). Every model
is fed the same batches, unless its inputs differ from the reference's (``graphprune bench`` on
unrelated models); then it gets its own and no fidelity.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from pathlib import Path

from rich.progress import Progress

from graphprune.bench.cuda import cuda_latency, cuda_unavailable
from graphprune.bench.fidelity import Outputs, compare_outputs
from graphprune.bench.latency import (
    DEFAULT_BUDGET_S,
    DEFAULT_WARMUP,
    LatencyStats,
    cpu_latency,
    cpu_session,
)
from graphprune.bench.progress import step
from graphprune.bench.system import environment, gpu_name, physical_cores
from graphprune.errors import UsageError
from graphprune.inputs import Inputs

PROVIDERS = ("cpu", "cuda")


@dataclasses.dataclass(frozen=True)
class BenchSettings:
    """How latency is measured.

    Attributes:
        runs: Timed runs per model; None picks them from ``budget_s``.
        warmup: Untimed runs per model and input shape first.
        threads: CPU intra-op threads; None means the physical cores.
        providers: Which of ``cpu``, ``cuda`` to measure (CUDA only where it is available).
        budget_s: About how long the timed rounds take when ``runs`` is None.
    """

    runs: int | None = None
    warmup: int = DEFAULT_WARMUP
    threads: int | None = None
    providers: tuple[str, ...] = PROVIDERS
    budget_s: float = DEFAULT_BUDGET_S

    def __post_init__(self):
        if self.runs is not None and self.runs < 1:
            raise UsageError(f"--runs must be at least 1, got {self.runs}")
        if self.warmup < 0:
            raise UsageError(f"--warmup must not be negative, got {self.warmup}")
        if self.threads is not None and self.threads < 1:
            raise UsageError(f"--threads must be at least 1, got {self.threads}")
        unknown = set(self.providers) - set(PROVIDERS)
        if unknown:
            raise UsageError(f"unknown provider(s) {', '.join(sorted(unknown))} "
                             f"(choose from {', '.join(PROVIDERS)})")

    @property
    def cpu_threads(self) -> int:
        return self.threads or physical_cores()


@dataclasses.dataclass(frozen=True)
class Measurement:
    """Latency by provider and fidelity to the first model, per model (in the given order)."""

    paths: tuple[Path, ...]
    latency: tuple[dict[str, LatencyStats], ...]
    fidelity: tuple[dict | None, ...]
    environment: dict
    notices: tuple[str, ...]


def _run_all(path: Path, batches, threads: int, advance) -> tuple[list[str], Outputs]:
    session = cpu_session(path, threads)
    outputs = []
    for batch in batches:
        outputs.append(session.run(None, batch))
        advance()
    return [o.name for o in session.get_outputs()], outputs


def fidelity_to_first(paths: Sequence[Path], inputs: Sequence[Inputs], threads: int,
                      progress: Progress | None = None) -> list[dict | None]:
    """Output metrics of every model against the first on the same batches (None where not)."""
    same = [i == 0 or inputs[i] is inputs[0] for i in range(len(paths))]
    total = sum(len(inputs[i].batches) for i in range(len(paths)) if same[i])
    with step(progress, "fidelity", total) as advance:
        names, reference = _run_all(paths[0], inputs[0].batches, threads, advance)
        results: list[dict | None] = [None]
        for path, data, ok in zip(paths[1:], inputs[1:], same[1:], strict=True):
            outputs = _run_all(path, data.batches, threads, advance)[1] if ok else None
            results.append(compare_outputs(names, reference, outputs) if ok else None)
    return results


def _latency(paths, inputs, settings: BenchSettings, progress, notices: list[str]):
    per_model: list[dict[str, LatencyStats]] = [{} for _ in paths]
    measurers = {"cpu": functools.partial(cpu_latency, threads=settings.cpu_threads),
                 "cuda": cuda_latency}
    batches = [i.batches for i in inputs]
    for provider in settings.providers:
        reason = cuda_unavailable() if provider == "cuda" else None
        if reason:
            notices.append(f"CUDA latency skipped: {reason}")
            continue
        found = _per_model(measurers[provider], paths, batches, settings, progress)
        for stats, one in zip(per_model, found, strict=True):
            stats[provider] = one
    return per_model


def _per_model(measure_fn, paths, batches, settings: BenchSettings, progress):
    """Runs ``measure_fn`` over all models when they share inputs, else groups by inputs."""
    groups: dict[int, list[int]] = {}
    for index, data in enumerate(batches):
        groups.setdefault(id(data), []).append(index)
    found: list[LatencyStats | None] = [None] * len(paths)
    for members in groups.values():
        stats = measure_fn([paths[i] for i in members], batches[members[0]], runs=settings.runs,
                           warmup=settings.warmup, budget_s=settings.budget_s, progress=progress)
        for i, s in zip(members, stats, strict=True):
            found[i] = s
    return found


def measure(paths: Sequence[str | Path], inputs: Inputs | Sequence[Inputs],
            settings: BenchSettings | None = None,
            progress: Progress | None = None) -> Measurement:
    """Latency (per settings) and fidelity to ``paths[0]`` of every model.

    Args:
        paths: Model files; the first is the reference.
        inputs: The batches for all models, or one ``Inputs`` per model (models whose ``Inputs``
            object is not the first model's get no fidelity).
        settings: How latency is measured (default: ``BenchSettings()``).
        progress: Where progress bars go, if anywhere.
    """
    settings = settings or BenchSettings()
    paths = tuple(Path(p) for p in paths)
    inputs = [inputs] * len(paths) if isinstance(inputs, Inputs) else list(inputs)
    notices: list[str] = []
    latency = _latency(paths, inputs, settings, progress, notices)
    fidelity = fidelity_to_first(paths, inputs, settings.cpu_threads, progress)
    env = environment(settings.cpu_threads)
    if any("cuda" in stats for stats in latency):
        env["gpu"] = gpu_name()
    env["inputs"] = inputs[0].as_dict()
    return Measurement(paths, tuple(latency), tuple(fidelity), env, tuple(notices))
