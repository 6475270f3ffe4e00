"""Helpers shared by the subcommands: user errors as one red line and exit code 2."""

from __future__ import annotations

import contextlib
import traceback
from collections.abc import Iterator

import typer
from rich.console import Console

from cultureclip.core.errors import UserError

console = Console(stderr=True)

ConfigOption = typer.Option(None, "--config", "-c", help="YAML or JSON config file.")
OverrideOption = typer.Option(
    None, "--set", "-s", help="Override a config key: key.sub=value (repeatable)."
)

#: set by ``cultureclip --debug``: user errors then show their traceback too
DEBUG = False


def fail(message: str, code: int = 2) -> None:
    console.print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(code)


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Turns a :class:`UserError` into one clean line; any other exception is a bug and
    keeps its traceback."""
    try:
        yield
    except UserError as exc:
        if DEBUG:
            console.print(traceback.format_exc(), markup=False, highlight=False)
        fail(str(exc))
