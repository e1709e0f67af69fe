"""Command line: argument parsing -> API calls, no logic of its own.

Exit codes: 0 success, 1 internal error, 2 bad input or usage, 3 output not writable,
4 the pruned model failed verification (nothing written).
"""

from __future__ import annotations

import sys
import traceback
from pathlib import Path

import click
from rich.console import Console

import graphprune
from graphprune._io import save_model
from graphprune.errors import GraphpruneError, UsageError
from graphprune.importance import SCORERS
from graphprune.report.json_report import build_report, report_path, write_json
from graphprune.report.table import print_analysis, print_summary
from graphprune.verify.runtime import check_runs
from graphprune.verify.structural import check_file

DEFAULT_ROUND_TO = 8


class _DefaultToPrune(click.Group):
    """``graphprune MODEL ...`` means ``graphprune prune MODEL ...``."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h", "--version"):
            args = ["prune", *args]
        return super().parse_args(ctx, args)


@click.group(cls=_DefaultToPrune, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(graphprune.__version__, prog_name="graphprune")
def cli() -> None:
    """Structured pruning of ONNX models: `graphprune model.onnx --ratio 0.5`."""


def _verify(staged: Path) -> None:
    """Checks run on the staged output before it is renamed into place."""
    check_file(staged)
    check_runs(staged)


@cli.command()
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--ratio", type=float, default=0.5, show_default=True,
              help="Share of channels removed from every prunable group, in [0, 1).")
@click.option("-o", "--output", type=click.Path(path_type=Path), default=None,
              help="Output model path (default: <input stem>.pruned.onnx).")
@click.option("--criterion", type=click.Choice(sorted(SCORERS)), default="l1", show_default=True,
              help="Channel importance.")
@click.option("--round-to", type=int, default=DEFAULT_ROUND_TO, show_default=True,
              help="Round kept channel counts to a multiple of this.")
@click.option("--exclude", multiple=True, metavar="PATTERN",
              help="Leave nodes whose name matches this fnmatch pattern untouched (repeatable).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of --criterion random.")
@click.option("--force", is_flag=True, help="Allow overwriting the input model.")
@click.option("--debug", is_flag=True, help="Strict checks after the rewrite; tracebacks on errors.")
def prune(model: Path, ratio: float, output: Path | None, criterion: str, round_to: int,
          exclude: tuple[str, ...], seed: int, force: bool, debug: bool) -> None:
    """Prune MODEL and write the pruned model and a JSON report."""
    output = output or model.with_name(f"{model.stem}.pruned.onnx")
    if not force and output.resolve() == model.resolve():
        raise UsageError(f"{output}: output would overwrite the input (use --force)")
    if not 0 <= ratio < 1:
        raise UsageError(f"--ratio must be in [0, 1), got {ratio}")
    console = Console(stderr=False)
    result = graphprune.prune(model, ratio, criterion=criterion, round_to=round_to,
                              exclude=exclude, seed=seed, debug=debug)
    save_model(result.model, output, check=_verify)
    settings = {"ratio": ratio, "criterion": criterion, "round_to": round_to,
                "exclude": list(exclude), "seed": seed}
    report = build_report(result, source=model, output=output, settings=settings)
    write_json(report, report_path(output))
    print_summary(result, console)
    console.print(f"wrote {output} and {report_path(output)}")


@cli.command()
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--exclude", multiple=True, metavar="PATTERN", help="As for prune.")
@click.option("--debug", is_flag=True, help="Tracebacks on errors.")
def analyze(model: Path, exclude: tuple[str, ...], debug: bool) -> None:
    """Print the channel groups of MODEL and the channels that stay whole; writes nothing."""
    del debug
    print_analysis(graphprune.analyze(model, exclude), Console())


def main(argv: list[str] | None = None) -> int:
    """Entry point: runs the CLI, turning errors into one line on stderr and an exit code."""
    args = sys.argv[1:] if argv is None else argv
    debug = "--debug" in args
    try:
        cli.main(args=args, prog_name="graphprune", standalone_mode=False)
    except GraphpruneError as exc:
        if debug:
            traceback.print_exc()
        click.echo(f"graphprune: error: {exc}", err=True)
        return exc.exit_code
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.ClickException as exc:
        click.echo(f"graphprune: error: {exc.format_message()}", err=True)
        return 2
    except click.exceptions.Abort:
        click.echo("graphprune: aborted", err=True)
        return 1
    except Exception as exc:  # the one place an unexpected error becomes a line, not a traceback
        if debug:
            traceback.print_exc()
        click.echo(f"graphprune: internal error: {type(exc).__name__}: {exc}", err=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
