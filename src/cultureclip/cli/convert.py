"""``cultureclip convert``: move a collection between layouts in one command."""

from __future__ import annotations

from pathlib import Path

import typer

from cultureclip.cli.common import console, user_errors


def register(app: typer.Typer) -> None:
    @app.command("convert")
    def convert_command(
        source: str = typer.Option(
            ...,
            "--from",
            help="Collection: Chinese-CLIP dir, samples layout, caption folder, CulTwin.",
        ),
        out: Path = typer.Option(..., "--to", help="Directory to write."),
        format: str = typer.Option(
            ...,
            "--format",
            "-f",
            help="chinese-clip (TSV+JSONL), chinese-clip-folder (JSONL + image folder), "
            "folder (images + captions.jsonl) or cultwin.",
        ),
        split: str | None = typer.Option(
            None, "--split", help="Split of the source to read (see docs/retrieval.md)."
        ),
        out_split: str | None = typer.Option(
            None, "--out-split", help="Split name to write (default: the source's, else test)."
        ),
        urlsafe: bool = typer.Option(
            False, "--urlsafe", help="chinese-clip: URL-safe base64, as Chinese-CLIP writes it."
        ),
        seed: int = typer.Option(0, "--split-seed", help="Seed of the 7:1:2 split."),
    ) -> None:
        """Convert between folder/JSONL, Chinese-CLIP TSV+JSONL and CulTwin layouts."""
        from cultureclip.data.collections import WRITE_FORMATS, load_collection, write_collection

        with user_errors():
            if format not in WRITE_FORMATS:
                raise typer.BadParameter(
                    f"choose one of {', '.join(WRITE_FORMATS)}", param_hint="--format"
                )
            collection = load_collection(source, split, seed=seed)
            name = out_split or str(collection.meta.get("split") or split or "test")
            write_collection(out, collection, format, split=name, urlsafe=urlsafe)
        console.print(
            f"[green]wrote[/] {len(collection.images)} images and {len(collection.texts)} texts "
            f"as {format}{f' (split {name})' if format.startswith('chinese') else ''} → {out}"
        )
