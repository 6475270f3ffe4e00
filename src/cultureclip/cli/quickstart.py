"""CLI of the quickstart: ``cultureclip quickstart [--out DIR]``."""

from __future__ import annotations

from pathlib import Path

import typer

from cultureclip.cli.common import (
    ConfigOption,
    OverrideOption,
    PresetOption,
    console,
    stage_config,
    user_errors,
)


def register(app: typer.Typer) -> None:
    @app.command("quickstart")
    def quickstart_command(
        out: str | None = typer.Option(
            None, "--out", "-o", help="Output directory [default: runs/quickstart]."
        ),
        model: str | None = typer.Option(
            None,
            "--model",
            "-m",
            help="Model to start from [default: lite:en, offline]; e.g. hf:openai/clip-vit-base-patch32 "
            "(add --set align.epochs=0 to skip aligning an already aligned model).",
        ),
        small: bool = typer.Option(
            False,
            "--small",
            help="A small world and short training (about a minute; for tests): --preset small.",
        ),
        device: str | None = typer.Option(
            None, "--device", help="auto (CUDA when present), cpu, cuda, cuda:1, ..."
        ),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress output."),
        config: Path | None = ConfigOption,
        preset: str | None = PresetOption,
        overrides: list[str] | None = OverrideOption,
    ) -> None:
        """Run the whole workflow offline: world → align → fine-tune → eval → index → report."""
        with user_errors():
            from cultureclip.core.errors import InputError
            from cultureclip.quickstart.pipeline import (
                QuickstartConfig,
                gain_summary,
                run,
                summary_rows,
            )

            if small and preset not in (None, "small"):
                raise InputError("--small is --preset small; give one preset")
            cfg = stage_config(
                QuickstartConfig,
                "quickstart",
                config=config,
                preset="small" if small else preset,
                overrides=overrides,
                flags={
                    "out": out,
                    "model": model,
                    "device": device,
                    "progress": False if quiet else None,
                },
            )
            result = run(cfg)

        from rich.console import Console
        from rich.table import Table

        table = Table(title="cultureclip quickstart (held-out data)")
        table.add_column("model")
        for column in ("twins, new views", "twins, unseen concepts", "general zero-shot top-1"):
            table.add_column(column, justify="right")
        for role, seen, unseen, general in summary_rows(result):
            table.add_row(role, f"{seen:.1f}", f"{unseen:.1f}", f"{general:.1f}")
        stdout = Console()
        stdout.print(table)
        stdout.print(gain_summary(result), highlight=False)
        for search in result.searches:
            hits = ", ".join(
                f"{h['caption'] or h['image']} ({h['score']:.2f})" for h in search["hits"]
            )
            stdout.print(f"search [italic]{search['query']}[/] → {hits}")
        console.print(f"report: {result.report}   summary: {result.out / 'summary.json'}")
