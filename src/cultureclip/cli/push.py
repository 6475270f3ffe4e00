"""``cultureclip push``: a model, a CulTwin set or eval results to the Hugging Face Hub."""

from __future__ import annotations

from pathlib import Path

import typer

from cultureclip.cli.common import console, user_errors


def push_command(
    folder: Path = typer.Argument(
        ..., help="A model folder (or training run), a CulTwin set or an eval output folder."
    ),
    repo_id: str = typer.Argument(..., help="user/name or org/name (datasets/user/name also)."),
    private: bool = typer.Option(False, "--private", help="Create the repo as private."),
    revision: str | None = typer.Option(
        None, "--revision", help="Branch to commit to (created if missing)."
    ),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Write the card and list the files; touch no network."
    ),
    license: str | None = typer.Option(
        None, "--license", help="License id for the card (e.g. apache-2.0, mit)."
    ),
    dataset: list[str] | None = typer.Option(
        None, "--dataset", help="A hub dataset the model was trained on (repeatable)."
    ),
    eval_dirs: list[Path] | None = typer.Option(
        None,
        "--eval",
        help="Eval results to list in a model card (a folder or result.json; repeatable).",
    ),
    message: str | None = typer.Option(None, "--message", "-m", help="Commit message."),
) -> None:
    """Write the folder's card and upload it to the hub in one commit; print the URL."""
    with user_errors():
        from cultureclip.publish import push, read_eval_results

        results = read_eval_results(*eval_dirs) if eval_dirs else []
        result = push(
            folder,
            repo_id,
            private=private,
            revision=revision,
            dry_run=dry_run,
            license=license,
            datasets=dataset or [],
            eval_results=results,
            message=message,
        )
    size = f"{result.bytes / 1e6:.1f} MB" if result.bytes >= 1e5 else f"{result.bytes} bytes"
    where = f"{result.repo_type} repo {result.repo_id}"
    if result.url is None:
        console.print(f"[yellow]dry run[/]: card written to {result.card}")
        console.print(
            f"would upload {len(result.files)} files ({size}) from {result.folder} to {where}:"
        )
        for name in result.files:
            typer.echo(f"  {name}")
        return
    console.print(f"[green]pushed[/] {len(result.files)} files ({size}) to {where}")
    typer.echo(result.url)


def register(app: typer.Typer) -> None:
    app.command("push")(push_command)
