"""Where sensitivity trials run: in this process, a local process pool, or a Ray cluster.

Every executor builds one :class:`~graphprune.sensitivity.worker.Worker` per worker process
(the model is loaded once per worker, from its path), hands it ``(group, ratio)`` trials and
returns the records in trial order, so the table does not depend on the executor.

- ``run_local(job, trials, 1)`` runs in this process;
- ``run_local(job, trials, n)`` uses ``concurrent.futures.ProcessPoolExecutor`` (spawned
  workers: no forked onnxruntime thread pools) with the worker built in its initializer;
- ``run_ray(job, trials, address)`` uses one Ray actor per worker (``num_cpus=1``); the job is
  put in the object store once. Ray is imported only here.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
from collections.abc import Sequence
from pathlib import Path

from graphprune.errors import UsageError
from graphprune.sensitivity.worker import Job, Trial, Worker

_WORKER: Worker | None = None  # the worker of this pool process


def _start(job: Job) -> None:
    global _WORKER
    _WORKER = Worker(job)


def _trial(trial: Trial) -> dict:
    return _WORKER.run(trial)


def default_workers() -> int:
    """The CPUs this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def run_local(job: Job, trials: Sequence[Trial], workers: int | None = None) -> list[dict]:
    """Records of ``trials`` in order, on ``workers`` local processes (default: CPU count)."""
    workers = min(workers or default_workers(), max(1, len(trials)))
    if workers == 1:
        worker = Worker(job)
        return [worker.run(t) for t in trials]
    from concurrent.futures import ProcessPoolExecutor

    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_start,
                             initargs=(job,)) as pool:
        return list(pool.map(_trial, trials))


def import_ray():
    """The ``ray`` module, or a one-line UsageError saying how to install it."""
    try:
        import ray
    except ImportError:
        raise UsageError("--ray needs Ray: pip install 'graphprune[distributed]' "
                         "(or ray==2.60.0)") from None
    return ray


class RayWorker:
    """A :class:`Worker` as a Ray actor."""

    def __init__(self, job: Job) -> None:
        self.worker = Worker(job)

    def run(self, trial: Trial) -> dict:
        return self.worker.run(trial)


def _connect(ray, address: str) -> bool:
    """Connects to Ray unless already connected; True when this call connected.

    ``auto``: the cluster ``RAY_ADDRESS`` or ``ray start`` names, else a new local instance
    (``ray.init()``); any other value is a cluster address. A local instance started here is
    told where this copy of graphprune lies (``PYTHONPATH``), so its workers import it.
    """
    if ray.is_initialized():
        return False
    package_root = str(Path(__file__).resolve().parents[2])
    env = {"PYTHONPATH": os.pathsep.join(
        p for p in (package_root, os.environ.get("PYTHONPATH")) if p)}
    handler = signal.getsignal(signal.SIGTERM)
    try:
        ray.init(address=None if address == "auto" else address, include_dashboard=False,
                 log_to_driver=False, runtime_env={"env_vars": env})
    except (ConnectionError, ValueError, RuntimeError) as exc:
        raise UsageError(f"--ray {address}: cannot connect to Ray ({exc})") from exc
    finally:  # ray.init replaces the driver's SIGTERM handler: keep the CLI's (staging cleanup)
        signal.signal(signal.SIGTERM, handler)
    return True


def run_ray(job: Job, trials: Sequence[Trial], address: str = "auto",
            workers: int | None = None) -> tuple[list[dict], int]:
    """Records of ``trials`` in order and the actor count (default: the cluster's CPUs)."""
    ray = import_ray()
    from ray.util import ActorPool

    connected = _connect(ray, address)
    try:
        cpus = int(ray.cluster_resources().get("CPU", 1))
        count = min(workers or cpus, max(1, len(trials)))
        actor = ray.remote(num_cpus=1)(RayWorker)
        shared = ray.put(job)
        actors = [actor.remote(shared) for _ in range(count)]
        try:
            found = ActorPool(actors).map(lambda a, t: a.run.remote(t), list(trials))
            return list(found), count
        finally:
            for handle in actors:
                ray.kill(handle)
    finally:
        if connected:
            ray.shutdown()
