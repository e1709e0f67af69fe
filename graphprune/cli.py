"""Command line: argument parsing -> API calls, no logic of its own.

Exit codes: 0 success, 1 internal error, 2 bad input or usage, 3 output not writable,
4 the pruned model failed verification (nothing written), 128 + N killed by signal N
(130 SIGINT, 143 SIGTERM; staging removed).
"""

from __future__ import annotations

import json
import sys
import traceback
from pathlib import Path

import click

import graphprune
from graphprune import staging
from graphprune._io import check_output, load_model
from graphprune.allocation import DEFAULT_ROUND_TO
from graphprune.analysis.summary import analysis_warnings
from graphprune.bench.latency import DEFAULT_WARMUP
from graphprune.bench.measure import BenchSettings, measure
from graphprune.bench.progress import progress_bar, step
from graphprune.bench.sweep import (
    parse_compensations,
    parse_criteria,
    parse_ratios,
    sweep,
    sweep_model_path,
    sweep_settings,
)
from graphprune.calibration import DEFAULT_CALIB_SAMPLES, random_calibration_notice
from graphprune.compensation import ORDER, parse_compensate
from graphprune.defaults import (
    AUTO,
    DATA_COMPENSATION,
    DATA_CRITERION,
    NO_DATA_CRITERION,
    auto_notice,
)
from graphprune.defaults import resolve as resolve_defaults
from graphprune.destinations import check_destinations, check_folder, keep_original
from graphprune.errors import GraphpruneError, UsageError
from graphprune.importance import NEEDS_CALIBRATION, SCORERS
from graphprune.inputs import inputs_for_models, load_inputs, parse_input_shapes
from graphprune.job import prune_file, spaced_collections
from graphprune.options import PruneOptions
from graphprune.report.costs import count_costs
from graphprune.report.files import write_json
from graphprune.report.format import printable
from graphprune.report.json_report import analysis_report, bench_report, build_report
from graphprune.report.table import (
    print_analysis,
    print_bench,
    print_line,
    print_notices,
    print_summary,
    print_sweep,
    print_warnings,
    terminal_console,
)
from graphprune.report.writers import (
    prune_report_paths,
    sweep_report_paths,
    write_prune_reports,
    write_sweep_reports,
)
from graphprune.sensitivity import DEFAULT_RATIOS as DEFAULT_SENSITIVITY_RATIOS
from graphprune.verify.resized_io import resized_inputs
from graphprune.verify.runtime import SelfCheck


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


CHECK_BATCHES = 2  # batches the self-check and the oracle run on


def _job_inputs(model: Path, input_shapes, data, samples, seed, bench: bool):
    """The job's inputs and its self-check, after checking that the input model runs on them."""
    inputs = load_inputs(model, parse_input_shapes(input_shapes), data,
                         samples if bench else CHECK_BATCHES, seed)
    check = SelfCheck(model, inputs.batches[:CHECK_BATCHES])
    check.check_input()
    return inputs, check


def _calibration(model: Path, criterion: str, compensate: str, input_shapes, data, samples: int,
                 seed: int):
    """Calibration batches for a data-driven criterion or compensation (None otherwise)."""
    if criterion not in NEEDS_CALIBRATION and not parse_compensate(compensate):
        return None
    if data is None:
        print_line(f"note: {random_calibration_notice()}",
                   terminal_console(stderr=True), style="yellow")
    return load_inputs(model, parse_input_shapes(input_shapes), data, samples, seed)


_SELECTION_OPTIONS = [  # shared by prune and sweep
    click.option("--round-to", type=int, default=DEFAULT_ROUND_TO, show_default=True,
                 help="Round kept channel counts to a multiple of this."),
    click.option("--exclude", multiple=True, metavar="PATTERN",
                 help="Leave nodes whose name matches this fnmatch pattern untouched "
                      "(repeatable)."),
    click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
                 help="Seed of --criterion random and of random inputs."),
]
_PRUNE_OPTIONS = [
    click.option("--criterion", type=click.Choice([AUTO, *sorted(SCORERS)]), default=AUTO,
                 show_default=True,
                 help=f"Channel importance; auto: {DATA_CRITERION} with --data, else "
                      f"{NO_DATA_CRITERION}."),
    *_SELECTION_OPTIONS,
    click.option("--compensate", default=AUTO, show_default=True, metavar="METHODS",
                 help="After pruning, correct the weights so the model tracks the original on "
                      "the calibration data: none, or a comma-separated list of "
                      f"{', '.join(ORDER)} (run in that order); auto: {DATA_COMPENSATION} "
                      "with --data, else none. Compensated outputs differ from the masked "
                      "original by design: the oracle is skipped."),
]
_INPUT_OPTIONS = [
    click.option("--input-shape", "input_shapes", multiple=True, metavar="NAME=D1,D2,...",
                 help="Size of an input's symbolic dims (default: batch 1, image H, W 224, "
                      "others 128)."),
    click.option("--data", type=click.Path(path_type=Path), default=None,
                 help="Inputs: a .npy/.npz file, a folder of them, or a folder of images "
                      "(default: random)."),
    click.option("--samples", type=int, default=None,
                 help="Most input batches used for fidelity (default: 16 random, all data)."),
]
_BENCH_OPTIONS = [
    click.option("--threads", type=int, default=None,
                 help="CPU intra-op threads (default: physical cores)."),
    click.option("--runs", type=int, default=None,
                 help="Timed runs per model (default: what fits in about 5 s, 20 to 500)."),
    click.option("--warmup", type=int, default=DEFAULT_WARMUP, show_default=True,
                 help="Untimed runs per model and input shape first."),
    click.option("--providers", default="cpu,cuda", show_default=True,
                 help="Execution providers to time; cuda where onnxruntime-gpu and a GPU are."),
]


def _options(*groups):
    def decorate(fn):
        for option in reversed([o for group in groups for o in group]):
            fn = option(fn)
        return fn
    return decorate


def _settings(runs, warmup, threads, providers: str) -> BenchSettings:
    names = tuple(p.strip().lower() for p in providers.split(",") if p.strip())
    return BenchSettings(runs=runs, warmup=warmup, threads=threads, providers=names)


@cli.command()
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--ratio", type=float, default=0.5, show_default=True,
              help="Share of channels removed from every prunable group, in [0, 1).")
@click.option("--heads", type=float, default=None,
              help="Share of whole attention heads removed per layer (default: --ratio).")
@click.option("--mlp", type=float, default=None,
              help="Share of channels and MLP neurons removed per group (default: --ratio).")
@click.option("--allocation", type=click.Choice(["uniform", "global", "sensitivity"]),
              default="uniform", show_default=True,
              help="uniform: --ratio of every group; global: --ratio of all channels, ranked "
                   "together by standardized scores, every group keeping at least a tenth; "
                   "sensitivity: per-group widths from --sensitivity-json, least summed output "
                   "change for --ratio or --target-macs/--target-params.")
@click.option("--sensitivity-json", type=click.Path(path_type=Path), default=None,
              help="With --allocation sensitivity: the table of graphprune analyze MODEL "
                   "--sensitivity --json PATH (same --criterion and --round-to).")
@click.option("--steps", type=click.IntRange(min=1), default=1, show_default=True,
              help="Prune gradually in this many steps, re-scoring (and compensating) "
                   "between steps; the last step ends at --ratio / the target.")
@click.option("--target-macs", type=float, default=None,
              help="Keep this fraction of the original MACs, in (0, 1], within 2% after "
                   "rounding: implies global ranking; --ratio, --heads, --mlp are ignored.")
@click.option("--target-params", type=float, default=None,
              help="Keep this fraction of the original parameters, like --target-macs "
                   "(excludes it).")
@click.option("--target-latency", type=float, default=None,
              help="Keep this fraction of the original latency on this machine (onnxruntime "
                   "CPU, 1 thread), in (0, 1]: every layer is timed alone at a few widths "
                   "first (tens of seconds on ResNet-50), then the pruned model against the "
                   "original. Excludes --target-macs and --target-params.")
@click.option("--resize-io", multiple=True, metavar="PATTERN",
              help="Let graph inputs/outputs whose name matches this fnmatch pattern change shape "
                   "(a KV cache: fewer heads); every change is reported (repeatable).")
@click.option("-o", "--output", type=click.Path(path_type=Path), default=None,
              help="Output model path (default: <input stem>.pruned.onnx).")
@_options(_PRUNE_OPTIONS)
@click.option("--bench/--no-bench", default=True, show_default=True,
              help="Measure latency and fidelity of the original and the pruned model.")
@_options(_INPUT_OPTIONS, _BENCH_OPTIONS)
@click.option("--oracle/--no-oracle", default=True, show_default=True,
              help="Check the written model against the masked original (mask equivalence).")
@click.option("--calib-samples", type=click.IntRange(min=1), default=DEFAULT_CALIB_SAMPLES,
              show_default=True,
              help="Batches from --data (or random) that data-driven criteria and "
                   "compensation run the model on.")
@click.option("--force", is_flag=True, help="Allow overwriting the input model.")
@click.option("--debug", is_flag=True,
              help="Strict checks after the rewrite; tracebacks on errors.")
def prune(model: Path, ratio: float, heads: float | None, mlp: float | None, allocation: str,
          sensitivity_json: Path | None, steps: int, target_macs: float | None,
          target_params: float | None, target_latency: float | None,
          resize_io: tuple[str, ...],
          output: Path | None, criterion: str, round_to: int,
          exclude: tuple[str, ...], seed: int, compensate: str, bench: bool,
          input_shapes: tuple[str, ...],
          data: Path | None, samples: int | None, threads: int | None, runs: int | None,
          warmup: int, providers: str, oracle: bool, calib_samples: int, force: bool,
          debug: bool) -> None:
    """Prune MODEL; write the pruned model and JSON and HTML reports."""
    output = output or model.with_name(f"{model.stem}.pruned.onnx")
    notice = auto_notice(criterion, compensate, data is not None)
    criterion, compensate = resolve_defaults(criterion, compensate, data is not None)
    options = PruneOptions.of(
        ratio, heads=heads, mlp=mlp, allocation=allocation, steps=steps,
        target_macs=target_macs, target_params=target_params, target_latency=target_latency,
        resize_io=resize_io, criterion=criterion, round_to=round_to, exclude=exclude,
        seed=seed, compensate=compensate, input_shapes=parse_input_shapes(input_shapes),
        debug=debug, **_sensitivity_table(allocation, sensitivity_json)).check()
    methods = options.compensate
    check_output(output, model, force, reports=prune_report_paths(output))
    settings = _settings(runs, warmup, threads, providers)
    console = terminal_console()
    with progress_bar() as progress:
        with step(progress, "checking the input model"):
            inputs, check = _job_inputs(model, input_shapes, data, samples, seed, bench)
        calibration = _calibration(model, criterion, compensate, input_shapes, data,
                                   calib_samples, seed)
        reference = keep_original(model, output) if bench else model  # --force in place
        result = prune_file(model, output, options, calibration=calibration, check=check,
                            oracle=oracle, progress=progress)
        measurement = None
        if bench:  # resized inputs: the pruned model reads them sliced (and has no fidelity)
            pruned_inputs = resized_inputs(inputs, result.io) if result.io else inputs
            measurement = measure([reference, output], [inputs, pruned_inputs], settings,
                                  progress)
        report = build_report(result, source=reference, output=output, measurement=measurement,
                              settings={"ratio": ratio, "heads": heads, "mlp": mlp,
                                        "allocation": allocation if allocation ==
                                        "sensitivity" or options.target is None else "target",
                                        "target_macs": target_macs,
                                        "target_params": target_params,
                                        "target_latency": target_latency,
                                        "resize_io": list(resize_io),
                                        "criterion": criterion,
                                        "round_to": round_to, "exclude": list(exclude),
                                        "seed": seed,
                                        "compensate": list(methods),
                                        "steps": steps,
                                        "sensitivity": sensitivity_json and
                                        str(sensitivity_json),
                                        "calibration": calibration and {
                                            "origin": calibration.origin,
                                            "batches": len(calibration.batches)}},
                              oracle=check.oracle)
        report["input"] = str(model)
        report["notices"] += [notice] if notice is not None else []
        if result.latency is not None:
            report["latency_target"] = result.latency
            report["notices"].append(f"--target-latency: {result.latency['machine']}")
        with step(progress, "writing the reports"):
            paths = write_prune_reports(report, output)
    print_notices(report["notices"], console)
    print_warnings(report["warnings"], terminal_console(stderr=True))
    print_summary(report, console)
    if result.latency is not None:
        print_line(_latency_line(result.latency), console)
    for change in report["resized_io"]:
        console.print(f"resized graph I/O {change['name']}: {change['before']} -> "
                      f"{change['after']} (allocate it so when serving)", markup=False,
                      highlight=False)
    print_line(f"wrote {output}, {paths[0]} and {paths[1]}", console)


def _sensitivity_table(allocation: str, path: Path | None) -> dict:
    """``prune``'s ``sensitivity`` keyword: the table path where one is given."""
    if allocation == "sensitivity" and path is None:
        raise UsageError("--allocation sensitivity needs --sensitivity-json PATH (write it "
                         "with graphprune analyze MODEL --sensitivity --json PATH)")
    if path is not None and allocation != "sensitivity":
        raise UsageError("--sensitivity-json needs --allocation sensitivity")
    return {} if path is None else {"sensitivity": str(path)}


@cli.command(name="bench")
@click.argument("models", nargs=-1, required=True, type=click.Path(path_type=Path))
@_options(_INPUT_OPTIONS, _BENCH_OPTIONS)
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="Seed of random inputs.")
@click.option("--json", "json_path", type=click.Path(path_type=Path), default=None,
              help="Also write the results to this JSON file.")
@click.option("--debug", is_flag=True, help="Tracebacks on errors.")
def bench_command(models: tuple[Path, ...], input_shapes: tuple[str, ...], data: Path | None,
                  samples: int | None, threads: int | None, runs: int | None, warmup: int,
                  providers: str, seed: int, json_path: Path | None, debug: bool) -> None:
    """Time MODELS interleaved in onnxruntime; fidelity of each to the first."""
    del debug
    for path in models if json_path is not None else ():
        check_destinations(path, [json_path])
    settings = _settings(runs, warmup, threads, providers)
    shapes = parse_input_shapes(input_shapes)
    inputs = inputs_for_models(models, shapes, data, samples, seed)
    with progress_bar() as progress:
        with step(progress, "counting costs", len(models)) as advance:
            costs = []
            for path in models:
                costs.append(count_costs(load_model(path), shapes))
                advance()
        report = bench_report(costs, measure(models, inputs, settings, progress))
    if json_path is not None:
        write_json(report, json_path)
    console = terminal_console()
    print_notices(report["notices"], console)
    print_bench(report, console)


_SWEEP_OPTIONS = [
    click.option("--criteria", default=None, metavar="NAMES",
                 help="Comma-separated criteria compared side by side "
                      f"({', '.join(sorted(SCORERS))}; default: --criterion)."),
    click.option("--criterion", type=click.Choice(sorted(SCORERS)), default="l1",
                 show_default=True, help="The one criterion, when --criteria is not given."),
    click.option("--compensate", default="none", show_default=True, metavar="SETTINGS",
                 help="Comma-separated compensations compared side by side, each none or "
                      f"methods joined by + ({', '.join(ORDER)}): 'none,stats,bias+stats'. "
                      "Every criterion is swept with every compensation."),
    *_SELECTION_OPTIONS,
    click.option("--calib-samples", type=click.IntRange(min=1), default=DEFAULT_CALIB_SAMPLES,
                 show_default=True,
                 help="Batches from --calib-data (or random) that data-driven criteria and "
                      "compensation run the model on."),
    click.option("--calib-data", type=click.Path(path_type=Path), default=None,
                 help="Calibration inputs, like --data (default: --data); other samples than "
                      "--data keep the fidelity of data-driven settings honest."),
]


def _sweep_plan(criteria: str | None, criterion: str, compensate: str):
    """The (criterion, compensation) settings of a sweep: every criterion with every one."""
    if criteria is not None and click.get_current_context().get_parameter_source(
            "criterion") is click.core.ParameterSource.COMMANDLINE:
        raise UsageError("--criteria and --criterion exclude each other")
    names = parse_criteria(criteria) if criteria is not None else [criterion]
    return sweep_settings(names, parse_compensations(compensate))


def _sweep_calibration(model: Path, plan, input_shapes, data, samples: int, seed: int):
    """Calibration batches, once for all settings, when any of them needs them (else None)."""
    for setting in plan:
        found = _calibration(model, setting.criterion, ",".join(setting.compensate) or "none",
                             input_shapes, data, samples, seed)
        if found is not None:
            return found
    return None


@cli.command(name="sweep")
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--ratios", default="0.1,0.2,0.3,0.4,0.5,0.6,0.7", show_default=True,
              help="Comma-separated pruning ratios, each in [0, 1).")
@click.option("-o", "--output-dir", type=click.Path(path_type=Path), default=None,
              help="Folder of <stem>.sweep.json/.html (default: the model's folder).")
@click.option("--keep-models", is_flag=True,
              help="Keep every pruned model (<stem>.ratioR.onnx; with several settings "
                   "<stem>.CRITERION-COMPENSATION.ratioR.onnx).")
@_options(_SWEEP_OPTIONS)
@click.option("--bench/--no-bench", default=True, show_default=True,
              help="Measure latency and fidelity at every ratio.")
@_options(_INPUT_OPTIONS, _BENCH_OPTIONS)
@click.option("--debug", is_flag=True, help="Tracebacks on errors.")
def sweep_command(model: Path, ratios: str, output_dir: Path | None, keep_models: bool,
                  criteria: str | None, criterion: str, compensate: str, round_to: int,
                  exclude: tuple[str, ...], seed: int, calib_samples: int,
                  calib_data: Path | None, bench: bool,
                  input_shapes: tuple[str, ...], data: Path | None, samples: int | None,
                  threads: int | None, runs: int | None, warmup: int, providers: str,
                  debug: bool) -> None:
    """Prune MODEL at several ratios, for every criterion x compensation; plot them together.

    Fidelity is drawn against MACs, one curve per setting; with --data it is measured (and
    data-driven criteria and compensation calibrated) on those inputs.
    """
    del debug
    out_dir = output_dir or model.parent
    if not out_dir.is_dir():
        raise UsageError(f"{out_dir}: no such folder")
    settings = _settings(runs, warmup, threads, providers)
    ratio_list = parse_ratios(ratios)
    plan = _sweep_plan(criteria, criterion, compensate)
    check_folder(out_dir)
    named = len(plan) > 1
    kept = [sweep_model_path(out_dir, model.stem, r, s if named else None)
            for s in plan for r in ratio_list] if keep_models else []
    check_destinations(model, [*sweep_report_paths(out_dir, model), *kept])
    inputs, check = _job_inputs(model, input_shapes, data, samples, seed, bench)
    calibration = _sweep_calibration(model, plan, input_shapes, calib_data or data,
                                     calib_samples, seed)
    with progress_bar() as progress:
        report = sweep(model, ratio_list, out_dir, inputs if bench else None, settings,
                       keep_models=keep_models, check=check, progress=progress,
                       sweep_settings=plan,
                       prune_options={"round_to": round_to, "exclude": list(exclude),
                                      "seed": seed,
                                      "input_shapes": parse_input_shapes(input_shapes),
                                      "calibration": calibration})
        with step(progress, "writing the reports"):
            paths = write_sweep_reports(report, out_dir, model)
    console = terminal_console()
    print_notices(report["notices"], console)
    print_warnings(report["warnings"], terminal_console(stderr=True))
    print_sweep(report, console)
    print_line(f"wrote {paths[0]} and {paths[1]}", console)


_SENSITIVITY_OPTIONS = [
    click.option("--sensitivity", is_flag=True,
                 help="Prune every group alone at each of --ratios and measure the output "
                      "change against the original on --data (trials in parallel)."),
    click.option("--ratios", default=",".join(f"{r:g}" for r in DEFAULT_SENSITIVITY_RATIOS),
                 show_default=True, help="--sensitivity: comma-separated ratios in (0, 1)."),
    click.option("--criterion", type=click.Choice(sorted(SCORERS)), default="l1",
                 show_default=True, help="--sensitivity: which channels a trial removes."),
    click.option("--round-to", type=int, default=DEFAULT_ROUND_TO, show_default=True,
                 help="--sensitivity: as for prune (use the value you will prune with)."),
    click.option("--workers", type=click.IntRange(min=1), default=None,
                 help="--sensitivity: local worker processes (default: CPU count), or Ray "
                      "actors with --ray (default: the cluster's CPUs)."),
    click.option("--ray", "ray_address", default=None, metavar="auto|ADDRESS",
                 help="--sensitivity: run the trials on Ray: auto (RAY_ADDRESS, a running "
                      "cluster, else a local instance) or a cluster address."),
    click.option("--input-shape", "input_shapes", multiple=True, metavar="NAME=D1,D2,...",
                 help="--sensitivity: as for prune."),
    click.option("--data", type=click.Path(path_type=Path), default=None,
                 help="--sensitivity: inputs, as for prune (default: random)."),
    click.option("--calib-samples", type=click.IntRange(min=1), default=DEFAULT_CALIB_SAMPLES,
                 show_default=True, help="--sensitivity: most input batches used."),
    click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
                 help="--sensitivity: seed of random inputs."),
]


@cli.command()
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--exclude", multiple=True, metavar="PATTERN", help="As for prune.")
@click.option("--json", "json_path", is_flag=False, flag_value="-", default=None,
              metavar="[FILE|-]",
              help="Write the analysis (the sensitivity table with --sensitivity) as JSON to "
                   "FILE, or to stdout instead of the tables.")
@_options(_SENSITIVITY_OPTIONS)
@click.option("--debug", is_flag=True, help="Tracebacks on errors.")
@click.pass_context
def analyze(ctx: click.Context, model: Path, exclude: tuple[str, ...], json_path: str | None,
            sensitivity: bool, debug: bool, **options) -> None:
    """Print the channel groups of MODEL and the channels that stay whole.

    With --sensitivity, print (and with --json write) how much the output changes when each
    group alone is pruned. Writes nothing unless --json names a file.
    """
    del debug
    if json_path not in (None, "-"):
        check_output(Path(json_path), model)
    if sensitivity:
        _sensitivity(model, exclude, json_path, **options)
        return
    given = [f"--{k.replace('_', '-')}" for k in options
             if ctx.get_parameter_source(k) is not click.core.ParameterSource.DEFAULT]
    if given:
        raise UsageError(f"{', '.join(given)}: only with --sensitivity")
    analysis = graphprune.analyze(model, exclude)
    warnings = analysis_warnings(analysis, exclude)
    print_warnings([w.as_dict() for w in warnings], terminal_console(stderr=True))
    if json_path is None:
        print_analysis(analysis, terminal_console())
        return
    report = analysis_report(analysis, source=model, exclude=list(exclude), warnings=warnings)
    if json_path == "-":
        click.echo(json.dumps(report, indent=1))
        return
    write_json(report, Path(json_path))
    print_analysis(analysis, terminal_console())
    print_line(f"wrote {json_path}", terminal_console())


def _latency_line(entry: dict) -> str:
    achieved = "" if entry["achieved"] is None else f", measured {entry['achieved']:.3f}x"
    untimed = len(entry["lookup"]["untimed_nodes"])
    achieved += f"; {untimed} layers not timed alone, counted as fixed" if untimed else ""
    return (f"latency target {entry['target']:g} on this machine (onnxruntime CPU, 1 thread): "
            f"predicted {entry['predicted']:.3f}x{achieved} "
            f"(lookup {entry['lookup']['lookup_s']:.1f} s, "
            f"{entry['lookup']['lookup_cpu_s']:.1f} s CPU)")


def _sensitivity(model: Path, exclude, json_path: str | None, ratios: str, criterion: str,
                 round_to: int, workers: int | None, ray_address: str | None, input_shapes,
                 data: Path | None, calib_samples: int, seed: int) -> None:
    from graphprune.sensitivity import parse_ratios as parse_sensitivity_ratios
    from graphprune.sensitivity import sensitivity
    from graphprune.sensitivity.executors import import_ray
    from graphprune.sensitivity.report import print_sensitivity

    ratio_list = parse_sensitivity_ratios(ratios)  # before any work
    if ray_address is not None:
        import_ray()  # a missing Ray is a usage error
    if data is None:
        print_line("note: sensitivity on random inputs (no --data): output change on random "
                   "inputs, not on real data", terminal_console(stderr=True), style="yellow")
    table = sensitivity(model, ratio_list, data=None if data is None else str(data),
                        samples=calib_samples, criterion=criterion, round_to=round_to,
                        exclude=exclude, seed=seed, input_shapes=parse_input_shapes(input_shapes),
                        workers=workers, ray=ray_address)
    if json_path == "-":
        click.echo(json.dumps(table, indent=1))
        return
    print_sensitivity(table, terminal_console())
    if json_path is not None:
        write_json(table, Path(json_path))
        print_line(f"wrote {json_path}", terminal_console())


def _line(text: object) -> str:
    """One printable line: whitespace runs collapsed, control characters escaped."""
    return printable(" ".join(str(text).split()))


def main(argv: list[str] | None = None) -> int:
    """Entry point: runs the CLI, turning errors into one line on stderr and an exit code."""
    args = sys.argv[1:] if argv is None else argv
    debug = "--debug" in args
    try:
        with staging.signals_caught(), spaced_collections():
            cli.main(args=args, prog_name="graphprune", standalone_mode=False)
    except staging.Interrupted as exc:
        click.echo(f"graphprune: {exc}", err=True)
        return exc.exit_code
    except GraphpruneError as exc:
        if debug:
            traceback.print_exc()
        click.echo(f"graphprune: error: {_line(exc)}", err=True)
        return exc.exit_code
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.ClickException as exc:
        click.echo(f"graphprune: error: {_line(exc.format_message())}", err=True)
        return 2
    except click.exceptions.Abort:  # SIGINT (click turns KeyboardInterrupt into Abort)
        click.echo("graphprune: aborted", err=True)
        return 130
    except Exception as exc:  # the one place an unexpected error becomes a line, not a traceback
        if debug:
            traceback.print_exc()
        click.echo(f"graphprune: internal error: {type(exc).__name__}: {_line(exc)}", err=True)
        return 1
    finally:
        staging.remove_all()  # what outlives its block (the original kept for --force)
    return 0


if __name__ == "__main__":
    sys.exit(main())
