"""``cultureclip synth``: run the CulTwin synthesis stages, merge, scale out, inspect failures."""

from __future__ import annotations

import contextlib
from pathlib import Path

import typer

from cultureclip.cli.common import ConfigOption, OverrideOption, console, user_errors

STAGES_HELP = (
    "Comma-separated stages to run (default: the config's): concepts,twins,captions,images,filter."
)


def _load(config: Path | None, overrides: list[str] | None, out: Path | None):  # -> SynthConfig
    from cultureclip.config import load_config
    from cultureclip.synth.config import SynthConfig

    settings = list(overrides or [])
    if out is not None:
        settings.append(f"out_dir={out}")
    return load_config(SynthConfig, config, settings)


def register(app: typer.Typer) -> None:
    synth = typer.Typer(
        help="Synthesise a CulTwin dataset: concepts, twins, captions, images, quality filter.",
        invoke_without_command=True,
        no_args_is_help=False,
    )

    @synth.callback()
    def run(
        ctx: typer.Context,
        config: Path | None = ConfigOption,
        overrides: list[str] | None = OverrideOption,
        stages: str | None = typer.Option(None, "--stages", help=STAGES_HELP),
        shard: str | None = typer.Option(
            None, "--shard", help="Run shard i of n (i/n, e.g. 0/4); merge later."
        ),
        out: Path | None = typer.Option(
            None, "--out", "-o", help="Output directory (sets out_dir)."
        ),
    ) -> None:
        """Run the stages in order (resumable); merges into cultwin.parquet unless sharded."""
        if ctx.invoked_subcommand is not None:
            return
        with user_errors():
            from cultureclip.synth.pipeline import run_synth
            from cultureclip.synth.store import Shard

            cfg = _load(config, overrides, out)
            selected = [s.strip() for s in stages.split(",") if s.strip()] if stages else None
            if selected is not None:
                cfg.stages = selected  # validated against the known stages
            parsed = Shard.parse(shard)
            run_synth(cfg, shard=parsed)
            if parsed.count > 1:
                console.print(
                    f"shard {shard} done; run `cultureclip synth merge` once every shard has finished"
                )

    @synth.command("merge")
    def merge_command(
        config: Path | None = ConfigOption,
        overrides: list[str] | None = OverrideOption,
        out: Path | None = typer.Option(
            None, "--out", "-o", help="Output directory (sets out_dir)."
        ),
    ) -> None:
        """Build cultwin.parquet and the failure report from every shard's stores."""
        with user_errors():
            from cultureclip.synth.pipeline import merge

            console.print(merge(_load(config, overrides, out)).line())

    @synth.command("ray")
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

            _, merged = run_with_ray(
                _load(config, overrides, out), shards=shards, address=address, num_gpus=gpus
            )
            console.print(merged.line())

    @synth.command("failures")
    def failures_command(
        out: Path = typer.Argument(..., help="The synth output directory."),
        show: int = typer.Option(20, "--show", help="How many failures to list."),
    ) -> None:
        """List the items that failed and have not succeeded since (raw answers in failures.jsonl)."""
        with user_errors():
            from rich.table import Table

            from cultureclip.synth.store import open_failures

            failures = open_failures(out / "work")
            table = Table("stage", "key", "error", title=f"{len(failures)} open failure(s)")
            for failure in failures[:show]:
                table.add_row(failure["stage"], failure["key"], failure["error"][:160])
            console.print(table)

    @synth.command("prompts")
    def prompts_command() -> None:
        """List the built-in prompts and their versions."""
        from cultureclip.synth.prompts import list_prompts, load_prompt

        for name in list_prompts():
            prompt = load_prompt(name)
            typer.echo(f"{prompt.id}\t{prompt.description}")

    @synth.command("standin")
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

    app.add_typer(synth, name="synth")
