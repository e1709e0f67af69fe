"""Shared pytest options: ``--fuzz-examples N`` sets the budget of the property-based fuzz test."""

from __future__ import annotations

import pytest

DEFAULT_FUZZ_EXAMPLES = 60


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--fuzz-examples",
        type=int,
        default=DEFAULT_FUZZ_EXAMPLES,
        help=f"random graphs the fuzz test prunes (default {DEFAULT_FUZZ_EXAMPLES}; "
        "larger budgets also draw fresh random examples instead of the fixed CI sequence)",
    )


@pytest.fixture(scope="session")
def fuzz_examples(request: pytest.FixtureRequest) -> int:
    return request.config.getoption("--fuzz-examples")
