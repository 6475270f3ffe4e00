"""``cultureclip synth``: run the CulTwin synthesis stages, merge, scale out, inspect failures."""

from __future__ import annotations

import contextlib
from collections import Counter
from pathlib import Path

import typer

from cultureclip.cli.common import (
    ConfigOption,
    OverrideOption,
    PresetOption,
    console,
    print_table,
    stage_config,
    user_errors,
)

#: a stage report's counts, in the columns of the summary table
_COUNTS = ("total", "given", "cached", "done", "skipped", "failed")
STAGES_HELP = (
    "Comma-separated stages to run (default: the config's): concepts,twins,captions,images,filter."
)


def _load(
    config: Path | None,
    overrides: list[str] | None,
    out: Path | None,
    from_folder: Path | None = None,
    preset: str | None = None,
    stages: str | None = None,
):  # -> SynthConfig
    from cultureclip.synth.config import FOLDER_DEFAULTS, SynthConfig

    flags: dict[str, object] = {"out": out}
    if stages:
        flags["stages"] = [s.strip() for s in stages.split(",") if s.strip()]
    if from_folder is not None:
        flags.update({"concepts.source": "folder", "concepts.folder": from_folder})
    return stage_config(
        SynthConfig,
        "synth",
        config=config,
        preset=preset,
        overrides=overrides,
        flags=flags,
        defaults=FOLDER_DEFAULTS if from_folder is not None else None,
    )


def _summary(reports: list, failures: dict) -> None:
    """Prints what each stage did; exits 1 (saying how to see them) when failures remain open."""
    if reports:
        rows = [(r.stage, *(str(getattr(r, name)) for name in _COUNTS)) for r in reports]
        print_table("synth", ("stage", "items", *_COUNTS[1:]), rows)
    open_count = failures.get("open_failures", 0)
    if not open_count:
        return
    by_stage = ", ".join(f"{stage}: {n}" for stage, n in sorted(failures["by_stage"].items()))
    console.print(
        f"[bold red]{open_count} open failure(s)[/] ({by_stage}); they are retried by the next "
        f"run. See them with: cultureclip synth failures {failures['out_dir']}",
        highlight=False,
    )
    raise typer.Exit(1)


def _open_failures(out_dir: Path) -> dict:
    from cultureclip.core.store import open_failures

    by_stage = Counter(failure["stage"] for failure in open_failures(out_dir / "work"))
    return {"open_failures": sum(by_stage.values()), "by_stage": dict(by_stage)}


def synth_command(
    ctx: typer.Context,
    config: Path | None = ConfigOption,
    preset: str | None = PresetOption,
    overrides: list[str] | None = OverrideOption,
    stages: str | None = typer.Option(None, "--stages", help=STAGES_HELP),
    shard: str | None = typer.Option(
        None, "--shard", help="Run shard i of n (i/n, e.g. 0/4); merge later."
    ),
    out: Path | None = typer.Option(None, "--out", "-o", help="Output directory (sets out)."),
    from_folder: Path | None = typer.Option(
        None,
        "--from-folder",
        help="A folder of labelled photos (<group>/<image> or labels.csv): every photo "
        "a record, twins mined across groups, template captions, no LLM (docs/own-data.md).",
    ),
) -> None:
    """Run the stages in order (resumable); merges into cultwin.parquet unless sharded.

    Exits 1 when failures remain open (after a per-stage summary), 2 on bad input."""
    if ctx.invoked_subcommand is not None:
        return
    with user_errors():
        from cultureclip.core.store import Shard
        from cultureclip.synth.pipeline import run

        cfg = _load(config, overrides, out, from_folder, preset, stages)
        parsed = Shard.parse(shard)
        report = run(cfg, shard=parsed)
        if parsed.count > 1:
            console.print(
                f"shard {shard} done; run `cultureclip synth merge` once every shard has finished"
            )
        failures = (
            report.merge.failures if report.merge is not None else _open_failures(Path(cfg.out))
        )
        _summary(report.stages, {**failures, "out_dir": cfg.out})


def merge_command(
    config: Path | None = ConfigOption,
    overrides: list[str] | None = OverrideOption,
    out: Path | None = typer.Option(None, "--out", "-o", help="Output directory (sets out)."),
) -> None:
    """Build cultwin.parquet and the failure report from every shard's stores.

    Exits 1 when failures remain open."""
    with user_errors():
        from cultureclip.synth.pipeline import merge

        cfg = _load(config, overrides, out)
        merged = merge(cfg)
        console.print(merged.line(), markup=False, highlight=False)
        _summary([], {**merged.failures, "out_dir": cfg.out})


def ray_command(
    config: Path | None = ConfigOption,
    overrides: list[str] | None = OverrideOption,
    shards: int = typer.Option(..., "--shards", help="Ray tasks, one per shard."),
    address: str | None = typer.Option(
        None, "--address", help="'auto' joins `ray start`; default: local Ray."
    ),
    gpus: float = typer.Option(
        0.0, "--gpus-per-task", help="GPUs per task (1 for image rendering)."
    ),
    out: Path | None = typer.Option(
        None, "--out", "-o", help="Output directory on a shared filesystem."
    ),
) -> None:
    """Run the whole pipeline as Ray tasks (one per shard) across a cluster, then merge."""
    with user_errors():
        from cultureclip.synth.distributed import run_with_ray

        cfg = _load(config, overrides, out)
        _, merged = run_with_ray(cfg, shards=shards, address=address, num_gpus=gpus)
        console.print(merged.line(), markup=False, highlight=False)
        _summary([], {**merged.failures, "out_dir": cfg.out})


def failures_command(
    out: Path = typer.Argument(..., help="The synth output directory."),
    show: int = typer.Option(20, "--show", help="How many failures to list."),
) -> None:
    """List the items that failed and have not succeeded since (raw answers in failures.jsonl)."""
    with user_errors():
        from cultureclip.core.errors import InputError, MissingInputError
        from cultureclip.core.store import open_failures

        if not out.exists():
            raise MissingInputError(f"synth output directory not found: {out}")
        if not (out / "work").is_dir():
            raise InputError(f"{out} is not a synth output directory (it has no work/)")
        failures = open_failures(out / "work")
        rows = [(f["stage"], f["key"], f["error"][:160]) for f in failures[:show]]
        print_table(f"{len(failures)} open failure(s)", ("stage", "key", "error"), rows)


def prompts_command() -> None:
    """List the built-in prompts and their versions."""
    from cultureclip.core.llm import list_prompts, load_prompt

    for name in list_prompts():
        prompt = load_prompt(name)
        typer.echo(f"{prompt.id}\t{prompt.description}")


def standin_command(
    port: int = typer.Option(8000, "--port", help="Port on 127.0.0.1."),
    delay: float = typer.Option(0.0, "--delay", help="Seconds before each answer."),
) -> None:
    """Serve the scripted stand-in LLM (fixed answers; for dry runs of a config, not data)."""
    from cultureclip.synth.standin import StandInLLMServer

    server = StandInLLMServer(delay_s=delay, port=port)
    console.print(f"stand-in LLM on {server.base_url} (Ctrl-C stops it)")
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()


def register(app: typer.Typer) -> None:
    synth = typer.Typer(
        help="Synthesise a CulTwin dataset: concepts, twins, captions, images, quality filter.",
        invoke_without_command=True,
        no_args_is_help=False,
    )
    synth.callback()(synth_command)
    synth.command("merge")(merge_command)
    synth.command("ray")(ray_command)
    synth.command("failures")(failures_command)
    synth.command("prompts")(prompts_command)
    synth.command("standin")(standin_command)
    app.add_typer(synth, name="synth")
