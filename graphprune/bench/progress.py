"""Progress bars (rich) on stderr; the measuring code takes an optional ``Progress``."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)


def progress_bar(console: Console | None = None) -> Progress:
    """A transient progress display: spinner, description, bar, done/total, elapsed time.

    Off when the console is not a terminal (a bar would leave blank lines in a log).
    """
    console = console or Console(stderr=True)
    return Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
        disable=not console.is_terminal,
    )


@contextlib.contextmanager
def step(progress: Progress | None, description: str,
         total: int | None = None) -> Iterator[Callable[..., None]]:
    """A task on ``progress`` (if any) for the block; yields ``advance(n=1)``.

    ``total=None`` shows a spinner without a bar, for steps of unknown length.
    """
    if progress is None:
        yield lambda n=1: None
        return
    task = progress.add_task(description, total=total)
    try:
        yield lambda n=1: progress.advance(task, n)
    finally:
        progress.update(task, completed=total if total is not None else 1, total=total or 1)
