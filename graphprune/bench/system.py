"""What the measurements ran on: CPU model, core counts, onnxruntime version, GPU name."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess


def _cpuinfo_lines() -> list[str]:
    try:
        with open("/proc/cpuinfo") as handle:
            return handle.readlines()
    except OSError:
        return []


def physical_cores() -> int:
    """Physical cores (hyperthreads not counted) where the OS tells, else logical CPUs."""
    pairs = set()
    phys = None
    for line in _cpuinfo_lines():
        if line.startswith("physical id"):
            phys = line.split(":")[1].strip()
        elif line.startswith("core id"):
            pairs.add((phys, line.split(":")[1].strip()))
    return len(pairs) or os.cpu_count() or 1


def cpu_model() -> str:
    """The CPU's marketing name (``model name`` in /proc/cpuinfo), else what platform knows."""
    for line in _cpuinfo_lines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "unknown"


def gpu_name() -> str | None:
    """Name of GPU 0 as nvidia-smi reports it, or None without nvidia-smi."""
    if shutil.which("nvidia-smi") is None:
        return None
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return out.strip().splitlines()[0] if out.strip() else None


def environment(threads: int) -> dict:
    """The machine and runtime facts recorded with every latency measurement."""
    import onnxruntime as ort

    return {
        "cpu": cpu_model(),
        "physical_cores": physical_cores(),
        "logical_cpus": os.cpu_count(),
        "intra_op_threads": threads,
        "onnxruntime": ort.__version__,
        "onnxruntime_providers": ort.get_available_providers(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
