"""onnxruntime latency of several models, measured interleaved so machine drift cancels.

Every model is warmed up on every input shape first. Then each round runs every model once per
input shape, in turn, the order reversed every other round, so a slow spell of the machine hits
all models alike. ``runs=None`` picks the number of rounds from a time budget (at least
``MIN_RUNS``, at most ``MAX_RUNS``).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from rich.progress import Progress

from graphprune.bench.progress import step
from graphprune.bench.system import physical_cores
from graphprune.inputs import Batch
from graphprune.verify.runtime import random_feeds

MIN_RUNS = 20
MAX_RUNS = 500
DEFAULT_WARMUP = 10
DEFAULT_BUDGET_S = 5.0

Runner = Callable[[], object]

__all__ = ["LatencyStats", "cpu_latency", "cpu_session", "interleave", "interleaved_latency",
           "measurement_options", "physical_cores", "shape_representatives"]


@dataclasses.dataclass(frozen=True)
class LatencyStats:
    """Latency samples of one model on one execution provider, in milliseconds."""

    provider: str
    samples_ms: tuple[float, ...]
    warmup: int
    threads: int | None = None

    @property
    def median_ms(self) -> float:
        return float(np.median(self.samples_ms))

    @property
    def p90_ms(self) -> float:
        return float(np.percentile(self.samples_ms, 90))

    def as_dict(self) -> dict:
        samples = np.asarray(self.samples_ms)
        return {
            "provider": self.provider,
            "median_ms": self.median_ms,
            "p90_ms": self.p90_ms,
            "mean_ms": float(samples.mean()),
            "min_ms": float(samples.min()),
            "max_ms": float(samples.max()),
            "runs": len(samples),
            "warmup": self.warmup,
            "threads": self.threads,
            "samples_ms": [round(float(s), 4) for s in samples],
        }


def shape_representatives(batches: Sequence[Batch]) -> list[Batch]:
    """The first batch of every distinct set of input shapes."""
    seen, kept = set(), []
    for batch in batches:
        key = tuple(sorted((name, array.shape) for name, array in batch.items()))
        if key not in seen:
            seen.add(key)
            kept.append(batch)
    return kept


def _rounds(runs: int | None, round_s: float | None, budget_s: float) -> int:
    if runs is not None:
        return runs
    if round_s is None:  # no warm-up to time a round by
        return MIN_RUNS
    return max(MIN_RUNS, min(MAX_RUNS, math.ceil(budget_s / max(round_s, 1e-6))))


def interleave(
    runners: Sequence[Sequence[Runner]],
    runs: int | None = None,
    warmup: int = DEFAULT_WARMUP,
    budget_s: float = DEFAULT_BUDGET_S,
    progress: Progress | None = None,
    label: str = "latency",
    clock: Callable[[], float] = time.perf_counter,
) -> list[list[float]]:
    """Milliseconds per run of every model; ``runners[m][s]`` runs model ``m`` on shape ``s``.

    A sample is the time of one run of one model, over all shapes when there are several, read
    on ``clock`` (wall time; ``time.thread_time`` counts only the CPU time of this thread).
    """
    start = time.perf_counter()
    with step(progress, f"{label}: warm-up", warmup * len(runners)) as advance:
        for _ in range(warmup):
            for model_runners in runners:
                for run in model_runners:
                    run()
                advance()
    round_s = (time.perf_counter() - start) / warmup if warmup else None
    rounds = _rounds(runs, round_s, budget_s)
    times: list[list[float]] = [[] for _ in runners]
    with step(progress, f"{label}: {len(runners)} models interleaved", rounds) as advance:
        for r in range(rounds):
            order = range(len(runners)) if r % 2 == 0 else reversed(range(len(runners)))
            for m in order:
                begin = clock()
                for run in runners[m]:
                    run()
                times[m].append((clock() - begin) * 1e3)
            advance()
    return times


def measurement_options(threads: int | None = None):
    """Session options for timing several sessions in turn.

    Worker threads do not spin after a run: a previous session's spinning threads would take
    the cores from the session being timed (measured: a model timed 4-6x slower, at random,
    when interleaved with spinning sessions; unchanged and steady without spinning).
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


def cpu_session(path: str | Path, threads: int):
    """An onnxruntime CPU session with ``threads`` intra-op threads and one inter-op thread."""
    import onnxruntime as ort

    return ort.InferenceSession(str(path), measurement_options(threads),
                                providers=["CPUExecutionProvider"])


def cpu_latency(
    paths: Sequence[str | Path],
    batches: Sequence[Batch],
    runs: int | None = None,
    warmup: int = DEFAULT_WARMUP,
    threads: int | None = None,
    budget_s: float = DEFAULT_BUDGET_S,
    progress: Progress | None = None,
) -> list[LatencyStats]:
    """CPU execution provider latency of every model on every distinct shape of ``batches``."""
    threads = threads or physical_cores()
    sessions = [cpu_session(p, threads) for p in paths]
    feeds = shape_representatives(batches)
    runners = [[_cpu_runner(s, f) for f in feeds] for s in sessions]
    times = interleave(runners, runs, warmup, budget_s, progress, "CPU latency")
    return [LatencyStats("cpu", tuple(t), warmup, threads) for t in times]


def _cpu_runner(session, feed: Batch) -> Runner:
    return lambda: session.run(None, feed)


def interleaved_latency(
    paths: list[Path], runs: int = 30, warmup: int = 5, threads: int | None = None, dim: int = 1
) -> list[dict]:
    """Median and p90 latency (ms) per model on random inputs (symbolic dims set to ``dim``)."""
    threads = threads or physical_cores()
    sessions = [cpu_session(p, threads) for p in paths]
    runners = [[_cpu_runner(s, random_feeds(s, dim=dim))] for s in sessions]
    times = interleave(runners, runs, warmup)
    return [
        {"model": str(p), "median_ms": float(np.median(t)), "p90_ms": float(np.percentile(t, 90)),
         "runs": runs, "threads": threads}
        for p, t in zip(paths, times, strict=True)
    ]
