"""What ``--criterion auto`` and ``--compensate auto`` (the CLI's defaults) choose, and why.

With calibration data (``--data``) the CLI prunes by a data-driven criterion and compensates;
without data it prunes by L1 magnitude and does not compensate, because data-driven scores and
compensation computed on random inputs follow random activations. Measured on PP-OCRv4 det
(``benchmarks/fidelity.py``, OCR similarity, original 1.000): at 0.50x MACs, fluctuation +
stats on 16 real calibration images 1.000, the same on random calibration inputs 0.000, L1
without compensation 0.000 (and 0.033 at 0.82x). Among the compensations, ``refit,stats`` was
best or tied at every level on det (0.999-1.000 OCR similarity from 0.80x to 0.35x MACs, the
best det IoU), tied best on MiniLM (embedding cosine 0.909 at 25% heads + 30% MLP; refit 0.909,
stats 0.879) and first or second on EfficientNet-Lite0 (top-1 agreement 0.625 / 0.469 at 0.8x /
0.6x; refit 0.734 / 0.234, stats 0.625 / 0.375). The tables are in the README.
"""

from __future__ import annotations

AUTO = "auto"
DATA_CRITERION = "fluctuation"  # FLAP's fluctuation: best or tied on det, MiniLM, effnet
DATA_COMPENSATION = "refit,stats"  # best or tied on det, MiniLM and EfficientNet-Lite0
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
