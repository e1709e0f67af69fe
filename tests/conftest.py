"""Shared pytest options: ``--fuzz-examples N`` sets the budget of the property-based fuzz test."""

from __future__ import annotations

import pytest

from models.export import export

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


@pytest.fixture(scope="module")
def model_path(tmp_path_factory, request):
    """A quarter-width ResNet-18 on 32x32 inputs (dynamic batch), in a folder of the module's own.

    The CLI, bench, report and sweep tests write their outputs beside it.
    """
    folder = tmp_path_factory.mktemp(request.module.__name__.rsplit(".", 1)[-1])
    return export("resnet18", folder / "net.onnx", width=0.25, input_shape=(1, 3, 32, 32),
                  dynamic_batch=True)
