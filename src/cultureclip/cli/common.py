"""Helpers shared by the subcommands: errors as one red line and exit code 2."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import typer
from rich.console import Console

console = Console(stderr=True)

ConfigOption = typer.Option(None, "--config", "-c", help="YAML or JSON config file.")
OverrideOption = typer.Option(
    None, "--set", "-s", help="Override a config key: key.sub=value (repeatable)."
)


def fail(message: str, code: int = 2) -> None:
    console.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(code)


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Turns the toolkit's expected errors (bad config, bad input) into a clean message."""
    from cultureclip.config import ConfigError
    from cultureclip.models.base import BackendError

    try:
        yield
    except (ConfigError, BackendError, FileNotFoundError, ValueError, KeyError) as exc:
        fail(str(exc).strip("'\""))
