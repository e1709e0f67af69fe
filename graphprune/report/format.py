"""Numbers and rows shared by the terminal tables and the HTML pages."""

from __future__ import annotations

import unicodedata


def printable(text: object) -> str:
    r"""``text`` with every control or format character written as an escape (``\x1b``).

    Names come from the model file: printed raw, ``\x1b[2J`` would clear the user's terminal and
    a right-to-left override would reorder what they read. Everything else is kept literally.
    """
    text = str(text)
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else _escape_char(c) for c in text)


def _escape_char(char: str) -> str:
    if unicodedata.category(char) == "Zs":  # a space of another width prints as a space
        return char
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 \
        else f"\\U{code:08x}"


def human(n: float) -> str:
    """``25530472`` -> ``25.53M``."""
    for unit in ("", "K", "M", "G", "T"):
        if abs(n) < 1000:
            return f"{n:.4g}{unit}"
        n /= 1000
    return f"{n:.4g}P"


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.4g} {unit}"
        n /= 1024
    return f"{n:.4g} GiB"


def number(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}g}"


def ratio(after: float | None, before: float | None) -> str:
    return f"{after / before:.3f}" if after is not None and before else "-"


def summary_rows(before: dict, after: dict) -> list[tuple[str, str, str, str]]:
    """(quantity, before, after, after/before) for costs, file size and latency."""
    rows = [
        (key, human(before[key]), human(after[key]), ratio(after[key], before[key]))
        for key in ("params", "macs")
    ]
    rows.append(("file size", human_bytes(before["file_size"]), human_bytes(after["file_size"]),
                 ratio(after["file_size"], before["file_size"])))
    for provider, stats in before["latency"].items():
        other = after["latency"].get(provider)
        for key in ("median_ms", "p90_ms"):
            value = other[key] if other else None
            rows.append((f"{provider} latency {key[:-3]} (ms)", number(stats[key]),
                         number(value), ratio(value, stats[key])))
    return rows


RANDOM_FIDELITY_NOTICE = ("fidelity measured on random inputs: output change, not task accuracy; "
                          "pass --data with inputs like the model's real ones")


def fidelity_notices(environment: dict | None, fidelity: list[dict | None]) -> list[str]:
    """:data:`RANDOM_FIDELITY_NOTICE` when some fidelity was measured on random inputs."""
    origin = ((environment or {}).get("inputs") or {}).get("origin")
    return [RANDOM_FIDELITY_NOTICE] if origin == "random" and any(fidelity) else []


def calibration_notices(calibration: dict | None, environment: dict | None) -> list[str]:
    """A notice when data-driven pruning was calibrated on the inputs fidelity is measured on.

    Args:
        calibration: ``{"origin": ..., "batches": ...}`` of the calibration data, or None.
        environment: The measurement's environment (its ``inputs`` say where they came from).
    """
    origin = ((environment or {}).get("inputs") or {}).get("origin")
    if not calibration or origin is None or calibration.get("origin") != origin:
        return []
    return [f"calibrated on the inputs fidelity is measured on ({origin}): fidelity of "
            "data-driven criteria and compensation is optimistic; measure on held-out inputs"]


def fidelity_meaning(environment: dict | None) -> str:
    """What the fidelity numbers are: the output change on which inputs (never task accuracy)."""
    inputs = (environment or {}).get("inputs") or {}
    origin = inputs.get("origin")
    if origin == "random":
        return "output change against the original on random inputs: not task accuracy"
    return (f"output change against the original on {origin} ({inputs.get('batches')} batches): "
            "task-agnostic, not task accuracy")


def fidelity_rows(fidelity: dict | None) -> list[tuple[str, str]]:
    """(metric, value) of the worst output; empty without a fidelity measurement."""
    if not fidelity:
        return []
    if "error" in fidelity:
        return [("error", fidelity["error"])]
    top1 = fidelity["top1_agreement"]
    return [
        ("relative L2 error", number(fidelity["rel_l2"])),
        ("cosine similarity", number(fidelity["cosine"], 6)),
        ("top-1 agreement", "-" if top1 is None else f"{top1:.1%}"),
    ]


def environment_line(env: dict | None) -> str:
    """One line: CPU, cores/threads, onnxruntime version, GPU and inputs."""
    if not env:
        return "not measured (--no-bench)"
    inputs = env.get("inputs", {})
    shapes = "; ".join(", ".join(f"{k}={v}" for k, v in s.items())
                       for s in inputs.get("shapes", []))
    line = (f"{env['cpu']} ({env['physical_cores']} physical cores, {env['intra_op_threads']} "
            f"threads), onnxruntime {env['onnxruntime']}")
    if env.get("gpu"):
        line += f", GPU {env['gpu']}"
    return line + f"; inputs: {inputs.get('origin')}, {inputs.get('batches')} batches of {shapes}"
