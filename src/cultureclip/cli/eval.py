"""CLI of the eval stage: ``eval``, ``report``, ``build-benchmark``, ``benchmarks``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from cultureclip.cli.common import (
    ConfigOption,
    OverrideOption,
    PresetOption,
    console,
    print_table,
    stage_config,
    switch,
    user_errors,
)
from cultureclip.core.errors import InputError

if TYPE_CHECKING:
    from cultureclip.eval.compare import PairedStats
    from cultureclip.eval.results import EvalResult


def eval_command(
    ctx: typer.Context,
    model: list[str] = typer.Option(
        None,
        "--model",
        "-m",
        help="Model spec (hf:…, saved dir, openai:<model>@<url>, hf-vlm:…); repeat for several.",
    ),
    suite: str = typer.Option(
        None,
        "--suite",
        help="Run a suite (culture-contrastive, culture-generative, general, or a .yaml) "
        "on every --model, then write one report.",
    ),
    report: str = typer.Option(
        None, "--report", help="Report directory of a suite run (default: <out>/report)."
    ),
    benchmark: str = typer.Option(
        None,
        "--benchmark",
        "-b",
        help="Benchmark name (see `cultureclip benchmarks`) or a benchmark spec .yaml file.",
    ),
    data: str = typer.Option(
        None, "--data", "-d", help="Benchmark data: local path or hub dataset name."
    ),
    split: str = typer.Option(
        None,
        "--split",
        help="Split of hub datasets and retrieval collections (default: test).",
    ),
    out: str = typer.Option(None, "--out", "-o", help="Results directory (default: runs/eval)."),
    baseline: str = typer.Option(
        None, "--baseline", help="Also evaluate this base model and store the delta."
    ),
    model_name: str = typer.Option(
        None, "--model-name", help="Name of the model in results (default: spec)."
    ),
    baseline_name: str = typer.Option(
        None, "--baseline-name", help="Name of the baseline in results."
    ),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="Recompute even if the result exists."
    ),
    device: str = typer.Option(
        None, "--device", help="torch device of contrastive and hf-vlm models (default: auto)."
    ),
    precision: str = typer.Option(
        None, "--precision", help="auto (bf16 on a GPU, fp32 on a CPU), fp32, bf16 or fp16."
    ),
    config: Path = ConfigOption,
    preset: str | None = PresetOption,
    overrides: list[str] = OverrideOption,
) -> None:
    """Evaluate models on a benchmark or a suite; writes result.json + predictions.jsonl.

    A stored result is reused only when it was made from the same content (the model's
    weights, the data's bytes, split, options, protocol): the run says "reused (same
    content …)" or why it recomputed; --overwrite recomputes.
    `cultureclip eval compare RUN_A RUN_B` compares two runs item by item.
    """
    if ctx.invoked_subcommand is not None:
        return
    # Long because typer declares one parameter per flag; the body is two short branches
    # (a suite, or one benchmark), each handing a config to the eval stage.
    with user_errors():
        if suite:
            if benchmark or data or overrides or config or preset:
                raise InputError(
                    "--suite takes its benchmarks, data and options from the suite file; "
                    "drop --benchmark/--data/--set/--config/--preset (or write your own "
                    "suite .yaml)"
                )
            from cultureclip.core.device import resolve_device
            from cultureclip.eval.api import load_suite, run_suite

            if not model:
                raise InputError("--suite needs at least one --model")
            resolve_device(device)  # a device this machine lacks: one line, before any work
            loaded = load_suite(suite)
            if model_name and len(model) > 1:
                raise InputError("--model-name names a single --model")
            console.print(
                f"suite [bold]{loaded.name}[/]: {len(loaded.benchmarks)} benchmark(s) × "
                f"{len(model)} model(s)"
            )
            done = run_suite(
                loaded,
                model,
                out_dir=out or "runs/eval",
                model_names=[model_name] if model_name else None,
                report_dir=report,
                overwrite=overwrite,
                device=device,
                precision=precision,
                progress=True,
                on_result=_print_suite_result,
                baseline=baseline,
            )
            console.print(
                f"{len(done.computed)} computed, {len(done.reused)} reused, {len(done.failed)} failed"
            )
            if done.report:
                console.print(f"report written to [bold]{done.report}[/]")
                typer.echo(done.report)
            if done.failed:
                raise typer.Exit(1)
            return
        from cultureclip.eval.api import EvalConfig, run

        if len(model or []) > 1 and (model_name or baseline):
            raise InputError("--model-name/--baseline go with a single --model")
        flags = dict(
            benchmark=benchmark,
            data=data,
            split=split,
            out=out,
            baseline=baseline,
            model_name=model_name,
            baseline_name=baseline_name,
            device=device,
            precision=precision,
            overwrite=switch(overwrite),
        )
        # each model in turn, each printed when it is done; stops at one with failed answers
        for spec in model or [None]:
            cfg = stage_config(
                EvalConfig,
                "eval",
                config=config,
                preset=preset,
                overrides=overrides,
                flags={**flags, "model": spec},
            )
            result = run(cfg, progress=True)
            _print_result(result)
            failed = result.counts.failed
            if failed:
                console.print(
                    f"[yellow]{failed} of {result.n} answers failed[/] (server errors or "
                    "timeouts); they count as wrong above. Rerun the same command to ask "
                    "only those again."
                )
                raise typer.Exit(1)


def compare_command(
    run_a: Path = typer.Argument(..., help="Result directory (or result.json) of model A."),
    run_b: Path = typer.Argument(..., help="Result directory (or result.json) of model B."),
    resamples: int = typer.Option(1000, "--resamples", help="Paired bootstrap resamples."),
    seed: int = typer.Option(42, "--seed", help="Bootstrap seed."),
) -> None:
    """B against A on the items both answered: accuracy difference, exact McNemar p-value
    and paired bootstrap 95% interval, overall and per group."""
    with user_errors():
        from cultureclip.eval.compare import compare_results

        found = compare_results(run_a, run_b, n_resamples=resamples, seed=seed)
        rows = [_paired_row("overall", "all", found.overall)]
        for key, groups in found.groups.items():
            rows += [_paired_row(key, value, stats) for value, stats in groups.items()]
        print_table(
            f"{found.benchmark}: B = {found.model_b} vs A = {found.model_a}",
            ("group key", "group", "n", "A %", "B %", "B − A", "95% CI", "McNemar p"),
            rows,
        )
        overall = found.overall
        console.print(
            f"difference B − A: {overall.difference:+.2f} points on {overall.n} items "
            f"(A only right on {overall.only_a}, B only on {overall.only_b}); "
            f"exact McNemar p = {overall.p_value:.4g}; 95% paired bootstrap "
            f"[{overall.ci_low:+.2f}, {overall.ci_high:+.2f}]",
            soft_wrap=True,
        )
        if found.unpaired:
            console.print(f"{found.unpaired} item(s) answered by one run only, left out")


def _paired_row(key: str, group: str, stats: PairedStats) -> tuple[str, ...]:
    return (
        key,
        group,
        str(stats.n),
        f"{stats.accuracy_a:.2f}",
        f"{stats.accuracy_b:.2f}",
        f"{stats.difference:+.2f}",
        f"[{stats.ci_low:+.2f}, {stats.ci_high:+.2f}]",
        f"{stats.p_value:.4g}",
    )


def report_command(
    results: list[Path] = typer.Argument(..., help="Result directories or result.json files."),
    out: Path = typer.Option(
        Path("runs/report"), "--out", "-o", help="Where report.html and the CSVs go."
    ),
    resamples: int = typer.Option(1000, "--resamples", help="Bootstrap resamples for the 95% CIs."),
    seed: int = typer.Option(42, "--seed", help="Bootstrap seed."),
) -> None:
    """Merge results into results.csv, groups.csv and a self-contained report.html."""
    with user_errors():
        from cultureclip.eval.report import build_report

        path = build_report(results, out, n_resamples=resamples, seed=seed)
        console.print(f"report written to [bold]{path}[/]")
        typer.echo(str(path))


def build_command(
    documents: str = typer.Option(
        None, "--documents", help="Directory of <country>.txt/.md documents."
    ),
    llm: str = typer.Option(None, "--llm", help="LLM as <model>@<base_url> (OpenAI-compatible)."),
    out: str = typer.Option(
        None, "--out", "-o", help="Output directory (default: runs/benchmark)."
    ),
    images: str = typer.Option(
        None, "--images", help="Images named <concept id>.jpg (default: <out>/images)."
    ),
    config: Path = ConfigOption,
    overrides: list[str] = OverrideOption,
) -> None:
    """Build a CultureVerse-style MCQ benchmark from documents with an LLM (items, review CSV, instruct data)."""
    with user_errors():
        from cultureclip.core.errors import UserError
        from cultureclip.core.llm import LLMError
        from cultureclip.synth.builder import BuilderConfig, build_benchmark

        flags = dict(documents=documents, llm=llm, out=out, images=images)
        cfg = stage_config(
            BuilderConfig, "build-benchmark", config=config, overrides=overrides, flags=flags
        )
        try:
            counts = build_benchmark(cfg)
        except LLMError as exc:
            raise UserError(f"the LLM failed: {exc} (rerun to resume)") from exc
        console.print(", ".join(f"{k}: {v}" for k, v in counts.items()))
        typer.echo(str(Path(cfg.out) / "items.jsonl"))


def benchmarks_command() -> None:
    """List the shipped and installed benchmarks (spec files) with their source and scorer."""
    from rich.table import Table

    from cultureclip.eval.spec import benchmark_specs

    table = Table(title="benchmarks (or: -b my_bench.yaml, see docs/benchmark-specs.md)")
    table.add_column("benchmark", no_wrap=True)
    for column in ("source", "scorer", "description"):
        table.add_column(column, overflow="fold")
    for name, spec in sorted(benchmark_specs().items()):
        table.add_row(name, spec.source.data or "-d PATH", spec.scorer, spec.description)
    console.print(table)


def _print_suite_result(shown: str, outcome: EvalResult | Exception) -> None:
    if isinstance(outcome, Exception):
        console.print(f"[red]failed[/] {shown}: {outcome}")
        return
    main = next(iter(outcome.metrics.items()), ("", float("nan")))
    how = "reused" if outcome.reused else f"{outcome.seconds:.1f}s"
    console.print(f"{shown}: {main[0]} {main[1]:.2f} (n={outcome.n}, {how})")


SHOWN_REFUSALS = 10


def _print_result(result: EvalResult) -> None:
    rows = []
    for key, value in result.metrics.items():
        delta = ""
        if result.baseline is not None and key in result.baseline.delta:
            delta = f"  ({result.baseline.delta[key]:+.2f} vs {result.baseline.model})"
        rows.append((key, f"{value:.2f}{delta}"))
    title = f"{result.benchmark} · {result.model} · n={result.n}"
    if rows:
        print_table(title, ("metric", "value"), rows)
    else:  # e.g. a test split whose answers are all withheld: predicted, nothing to score
        console.print(f"{title}: no scored items")
    if result.reused:
        # the stage has logged "reused (same content …)"; say how to do otherwise
        console.print("the stored result was reused; pass --overwrite to recompute")
    counts = result.counts
    if counts.hidden:
        console.print(f"answers hidden: {counts.hidden} items, not scored (predicted)")
    if counts.ids_suffixed or counts.duplicates_dropped:
        console.print(
            f"ids suffixed: {counts.ids_suffixed} (one id reused for different items); "
            f"duplicates dropped: {counts.duplicates_dropped} (exact copies of a row)"
        )
    if result.n_skipped:
        console.print(
            f"[yellow]{result.n_skipped} malformed item(s) skipped[/], one line each "
            "(the others are scored):"
        )
        for line in result.skipped[:SHOWN_REFUSALS]:
            console.print(f"  {line}", markup=False, highlight=False, soft_wrap=True)
        if result.n_skipped > SHOWN_REFUSALS:
            console.print(f"  … {result.n_skipped - SHOWN_REFUSALS} more in result.json")
    if result.path is not None:
        console.print(f"predictions: {result.path.parent / result.predictions_file}")
        typer.echo(str(result.path))


def register(app: typer.Typer) -> None:
    evaluation = typer.Typer(
        help="Evaluate models on a benchmark or a suite; `eval compare` compares two runs.",
        invoke_without_command=True,
        no_args_is_help=False,
    )
    evaluation.callback()(eval_command)
    evaluation.command("compare")(compare_command)
    app.add_typer(evaluation, name="eval")
    app.command("report")(report_command)
    app.command("build-benchmark")(build_command)
    app.command("benchmarks")(benchmarks_command)
