"""CLI of generative-VLM fine-tuning: ``cultureclip train-vlm``."""

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
    @app.command("train-vlm")
    def train_vlm_command(
        config: Path | None = ConfigOption,
        preset: str | None = PresetOption,
        overrides: list[str] | None = OverrideOption,
        model: str | None = typer.Option(
            None, "--model", "-m", help="Hub id or dir of a chat VLM (same as --set model=...)."
        ),
        data: str | None = typer.Option(
            None, "--data", help="CultureVerse chat export, instruct.jsonl (--set data=...)."
        ),
        out: str | None = typer.Option(
            None, "--out", "-o", help="Output dir (same as --set out=...)."
        ),
        resume: str | None = typer.Option(
            None, "--resume", help="'latest' (or a checkpoint dir) to continue an interrupted run."
        ),
    ) -> None:
        """Fine-tune a generative VLM (LoRA or full SFT) on CultureVerse chat data; also under accelerate/torchrun."""
        with user_errors():
            from cultureclip.vlm.train import VLMTrainConfig, run

            flags = dict(model=model, data=data, out=out, resume=resume)
            cfg = stage_config(
                VLMTrainConfig,
                "train-vlm",
                config=config,
                preset=preset,
                overrides=overrides,
                flags=flags,
            )
            result = run(cfg)
        if not result.is_main:
            return
        loss = "n/a" if result.final_loss is None else f"{result.final_loss:.4f}"
        if result.model_dir is None:
            console.print(
                f"[yellow]stopped[/] at step {result.steps}/{result.total_steps}; "
                "continue with --resume latest"
            )
            return
        console.print(
            f"[green]trained[/] {result.steps} steps, final loss {loss}; model: {result.model_dir}"
        )
        typer.echo(str(result.model_dir))
