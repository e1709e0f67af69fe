"""User-facing errors: one line of text and an exit code each."""

from __future__ import annotations


class GraphpruneError(Exception):
    """An error reported to the user as one line; ``exit_code`` is what the CLI returns."""

    exit_code = 1


class InputError(GraphpruneError):
    """The input path or file is not a usable ONNX model (exit code 2)."""

    exit_code = 2


class UsageError(GraphpruneError):
    """An option has a value that cannot work (exit code 2)."""

    exit_code = 2


class OutputError(GraphpruneError):
    """The output cannot be written (exit code 3)."""

    exit_code = 3


class VerificationError(GraphpruneError):
    """The pruned model failed a check; nothing was written (exit code 4)."""

    exit_code = 4


def one_line(exc: BaseException, limit: int = 300) -> str:
    """The exception's message on one line (whitespace collapsed), cut at ``limit`` characters."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."
