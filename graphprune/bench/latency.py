"""onnxruntime CPU latency of several models, measured interleaved so machine drift cancels."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from graphprune.verify.runtime import random_feeds


def physical_cores() -> int:
    """Physical cores (hyperthreads not counted) where the OS tells, else logical CPUs."""
    try:
        pairs = set()
        with open("/proc/cpuinfo") as handle:
            phys = core = None
            for line in handle:
                if line.startswith("physical id"):
                    phys = line.split(":")[1].strip()
                elif line.startswith("core id"):
                    core = line.split(":")[1].strip()
                    pairs.add((phys, core))
        if pairs:
            return len(pairs)
    except OSError:
        pass
    return os.cpu_count() or 1


def interleaved_latency(
    paths: list[Path], runs: int = 30, warmup: int = 5, threads: int | None = None, dim: int = 1
) -> list[dict]:
    """Median and p90 latency (ms) per model; one run of each model per round, in turn."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or physical_cores()
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    sessions = [ort.InferenceSession(str(p), options, providers=["CPUExecutionProvider"]) for p in paths]
    feeds = [random_feeds(s, dim=dim) for s in sessions]
    for _ in range(warmup):
        for session, feed in zip(sessions, feeds):
            session.run(None, feed)
    times = [[] for _ in paths]
    for _ in range(runs):
        for k, (session, feed) in enumerate(zip(sessions, feeds)):
            start = time.perf_counter()
            session.run(None, feed)
            times[k].append((time.perf_counter() - start) * 1e3)
    return [
        {"model": str(p), "median_ms": float(np.median(t)), "p90_ms": float(np.percentile(t, 90)),
         "runs": runs, "threads": options.intra_op_num_threads}
        for p, t in zip(paths, times)
    ]
