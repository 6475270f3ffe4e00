"""CLI of the train stage: ``cultureclip train``, ``cultureclip wise-ft``, ``cultureclip export``."""

from __future__ import annotations

from pathlib import Path

import typer

from cultureclip.cli.common import (
    ConfigOption,
    OverrideOption,
    PresetOption,
    console,
    stage_config,
    switch,
    user_errors,
)


def train_command(
    config: Path | None = ConfigOption,
    preset: str | None = PresetOption,
    overrides: list[str] | None = OverrideOption,
    data: str | None = typer.Option(
        None, "--data", help="Training data (same as --set data.path=...)."
    ),
    out: str | None = typer.Option(None, "--out", "-o", help="Output dir (same as --set out=...)."),
    resume: str | None = typer.Option(
        None, "--resume", help="'latest' (or a checkpoint file) to continue an interrupted run."
    ),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="Start over in an output dir that holds another run."
    ),
    list_presets: bool = typer.Option(False, "--list-presets", help="Print the presets and exit."),
) -> None:
    """Fine-tune a model with the CultureCLIP (or clip/negclip) loss; also under torchrun."""
    from cultureclip.train import TrainConfig, train
    from cultureclip.train import list_presets as find_presets

    with user_errors():
        if list_presets:
            for name, path in find_presets().items():
                typer.echo(f"{name}\t{path}")
            return
        flags = {
            "data.path": data,
            "out": out,
            "resume": resume,
            "overwrite": switch(overwrite),
        }
        cfg = stage_config(
            TrainConfig, "train", config=config, preset=preset, overrides=overrides, flags=flags
        )
        result = train(cfg)
    if not result.is_main:
        return
    if result.completed:
        loss = "n/a" if result.final_loss is None else f"{result.final_loss:.4f}"
        console.print(
            f"[green]trained[/] {result.steps} steps, final loss {loss}; "
            f"model: {result.final_model_dir}"
            + (f"; export: {result.export_dir}" if result.export_dir else "")
        )
    else:
        console.print(
            f"[yellow]stopped[/] at step {result.steps}/{result.total_steps}; continue with "
            f"--resume latest (checkpoint {result.last_checkpoint})"
        )


def wise_ft_command(
    base: str = typer.Argument(..., help="Base model: a spec (hf:...) or a saved dir."),
    finetuned: str = typer.Argument(..., help="Fine-tuned model dir (e.g. runs/x/final)."),
    alpha: float = typer.Option(
        ..., "--alpha", "-a", help="Weight of the fine-tuned model, in [0, 1]."
    ),
    out: Path = typer.Option(..., "--out", "-o", help="Where to save the interpolated model."),
    export: bool = typer.Option(
        False, "--export", help="Write the backend's native format instead."
    ),
) -> None:
    """WiSE-FT: save (1-α)·base + α·fine-tuned as a new model."""
    with user_errors():
        from cultureclip.models.registry import create_model
        from cultureclip.train.wise_ft import wise_ft

        mixed = wise_ft(create_model(base), create_model(finetuned), alpha)
        if export:
            from cultureclip.publish import export_model

            path = export_model(mixed, out, base=base)
        else:
            path = mixed.save(out)
    console.print(f"[green]saved[/] WiSE-FT α={alpha} model to {path}")


def export_command(
    model: str = typer.Argument(..., help="A saved model dir or a spec."),
    out: Path = typer.Argument(..., help="Output directory."),
) -> None:
    """Write a self-contained model: the backend's native format (save_pretrained for hf),
    LoRA merged with the adapter in adapter/, and a model card."""
    with user_errors():
        from cultureclip.models.registry import create_model
        from cultureclip.publish import export_model

        path = export_model(create_model(model), out)
    console.print(f"[green]exported[/] {model} to {path}")


def register(app: typer.Typer) -> None:
    app.command("train")(train_command)
    app.command("wise-ft")(wise_ft_command)
    app.command("export")(export_command)
