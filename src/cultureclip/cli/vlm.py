"""CLI of generative-VLM fine-tuning: ``cultureclip train-vlm``."""

from __future__ import annotations

from pathlib import Path

import typer

from cultureclip.cli.common import ConfigOption, OverrideOption, console, user_errors


def register(app: typer.Typer) -> None:
    @app.command("train-vlm")
    def train_vlm_command(
        config: Path | None = ConfigOption,
        overrides: list[str] | None = OverrideOption,
        model: str | None = typer.Option(
            None, "--model", "-m", help="Hub id or dir of a chat VLM (same as --set model=...)."
        ),
        data: str | None = typer.Option(
            None, "--data", help="CultureVerse chat export, instruct.jsonl (--set data=...)."
        ),
        out: str | None = typer.Option(
            None, "--out", "-o", help="Output dir (same as --set output_dir=...)."
        ),
        resume: str | None = typer.Option(
            None, "--resume", help="'latest' (or a checkpoint dir) to continue a run."
        ),
    ) -> None:
        """Fine-tune a generative VLM (LoRA or full SFT) on CultureVerse chat data; also under accelerate/torchrun."""
        with user_errors():
            from cultureclip.config import read_config_file
            from cultureclip.vlm.train import load_vlm_train_config, train_vlm

            values = read_config_file(config) if config else {}
            cli = dict(model=model, data=data, output_dir=out, resume=resume)
            values.update({k: v for k, v in cli.items() if v is not None})
            cfg = load_vlm_train_config(None, list(overrides or []), **values)
            result = train_vlm(cfg)
        if not result.is_main:
            return
        loss = "n/a" if result.final_loss is None else f"{result.final_loss:.4f}"
        console.print(
            f"[green]trained[/] {result.steps} steps, final loss {loss}; model: {result.model_dir}"
        )
        typer.echo(str(result.model_dir))
