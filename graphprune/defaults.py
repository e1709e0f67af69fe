"""What ``--criterion auto`` and ``--compensate auto`` (the CLI's defaults) choose, and why.

With calibration data (``--data``) the CLI prunes by a data-driven criterion and compensates;
without data it prunes by L1 magnitude and does not compensate, because data-driven scores and
compensation computed on random inputs follow random activations. Measured on PP-OCRv4 det
(``benchmarks/fidelity.py``, OCR similarity, original 1.000): at 0.50x MACs, fluctuation +
stats on 16 real calibration images 1.000, the same on random calibration inputs 0.000, L1
without compensation 0.000 (and 0.033 at 0.82x). The measurements behind each choice are in
the README's fidelity section.
"""

from __future__ import annotations

AUTO = "auto"
DATA_CRITERION = "fluctuation"  # FLAP's fluctuation: best or tied on det, MiniLM, effnet
DATA_COMPENSATION = "refit"  # the one method that helped on det and MiniLM alike
NO_DATA_CRITERION = "l1"
NO_DATA_COMPENSATION = "none"


def resolve(criterion: str, compensate: str, has_data: bool) -> tuple[str, str]:
    """``(criterion, compensate)`` with ``auto`` replaced by the choice for ``has_data``."""
    if criterion == AUTO:
        criterion = DATA_CRITERION if has_data else NO_DATA_CRITERION
    if compensate == AUTO:
        compensate = DATA_COMPENSATION if has_data else NO_DATA_COMPENSATION
    return criterion, compensate


def auto_notice(criterion: str, compensate: str, has_data: bool) -> str | None:
    """What the CLI says when ``auto`` chose the no-data defaults (None otherwise)."""
    if has_data or AUTO not in (criterion, compensate):
        return None
    return (f"no --data: pruning by {NO_DATA_CRITERION} magnitude without compensation; with "
            f"--data, {DATA_CRITERION} scores and {DATA_COMPENSATION} compensation keep far "
            "more of what the model does")
