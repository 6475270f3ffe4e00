"""Helpers shared by the subcommands: flags → config, user errors as one red line and exit 2.

Every stage command has the same shape: declare its flags, turn them into a config with
:func:`stage_config` (preset < ``--config`` file < flags < ``--set``), call the stage's
``run(config)`` and render the result.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import traceback
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import typer
from rich.console import Console

from cultureclip.core.errors import UserError

console = Console(stderr=True)

ConfigOption = typer.Option(None, "--config", "-c", help="YAML or JSON config file.")
OverrideOption = typer.Option(
    None, "--set", "-s", help="Override a config key: key.sub=value (repeatable)."
)
PresetOption = typer.Option(
    None, "--preset", "-p", help="Start from a shipped preset (see `cultureclip presets`)."
)

C = TypeVar("C")


def stage_config(
    cls: type[C],
    command: str,
    *,
    config: str | Path | None = None,
    preset: str | None = None,
    overrides: Sequence[str] | None = None,
    flags: Mapping[str, Any] | None = None,
    defaults: Mapping[str, Any] | None = None,
) -> C:
    """A command's config: ``defaults`` < ``--preset`` < ``--config`` file < flags < ``--set``.

    ``flags`` maps a config key path (``data.path``) to a flag's value; None means the
    flag was not given (a switch passes None when off). Later layers win key by key.
    """
    from cultureclip.core.config import merge_layers, read_config_file, validate
    from cultureclip.presets import read_preset

    layers: list[dict[str, Any]] = [dict(defaults or {})]
    if preset is not None:
        layers.append(read_preset(command, preset))
    if config is not None:
        layers.append(read_config_file(config))
    layers.append(_nested(flags or {}))
    return validate(cls, merge_layers(cls, *layers, overrides=list(overrides or [])))  # type: ignore[arg-type]


def _nested(flat: Mapping[str, Any]) -> dict[str, Any]:
    """``{"data.path": x}`` → ``{"data": {"path": x}}``, dropping flags not given."""
    nested: dict[str, Any] = {}
    for key, value in flat.items():
        if value is None:
            continue
        *sections, last = key.split(".")
        node = nested
        for section in sections:
            node = node.setdefault(section, {})
        node[last] = str(value) if isinstance(value, Path) else value
    return nested


def switch(value: bool) -> bool | None:
    """A boolean flag as a config layer value: on sets the key, off leaves it alone."""
    return True if value else None


#: set by ``cultureclip --debug``: user errors then show their traceback too
DEBUG = False
_SINK: RichSink | None = None


class _StderrHandler(logging.Handler):
    """Log records as plain lines on the current stderr (no wrapping: lines stay greppable)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = self.format(record)
            if record.levelno >= logging.WARNING:
                message = f"{record.levelname.lower()}: {message}"
            if _SINK is not None and _SINK.active:
                _SINK.print(message)
            else:
                sys.stderr.write(message + "\n")
                sys.stderr.flush()
        except Exception:  # logging must never take the program down
            self.handleError(record)


def setup_logging(debug: bool = False) -> None:
    """Library code logs; the CLI shows its records on stderr (INFO, or DEBUG with --debug)."""
    root = logging.getLogger("cultureclip")
    for handler in list(root.handlers):
        if isinstance(handler, _StderrHandler):
            root.removeHandler(handler)
    root.addHandler(_StderrHandler())
    root.setLevel(logging.DEBUG if debug else logging.INFO)


class RichSink:
    """Progress bars on a terminal: one live display shared by every open task."""

    def __init__(self) -> None:
        self._progress: Any = None
        self._open = 0

    @property
    def active(self) -> bool:
        return self._progress is not None

    def print(self, message: str) -> None:
        """A log line above the live bars (printing around them would tear the display)."""
        self._progress.console.print(message, markup=False, highlight=False)

    def open(self, description: str, total: float | None, completed: float) -> Any:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        if self._progress is None:
            self._progress = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                TextColumn("{task.fields[stats]}"),
                console=console,
                transient=False,
            )
            self._progress.start()
        self._open += 1
        task_id = self._progress.add_task(description, total=total, completed=completed, stats="")
        return _RichTask(self._progress, task_id)

    def close(self, task: Any) -> None:
        self._open -= 1
        if self._open <= 0 and self._progress is not None:
            self._progress.stop()
            self._progress, self._open = None, 0


class _RichTask:
    def __init__(self, progress: Any, task_id: Any) -> None:
        self.progress, self.task_id = progress, task_id

    def update(
        self, *, advance: float = 0, completed: float | None = None, stats: str = ""
    ) -> None:
        # rich applies ``advance`` first, so a given ``completed`` wins
        fields: dict[str, Any] = {"stats": stats} if stats else {}
        self.progress.update(self.task_id, advance=advance, completed=completed, **fields)


def setup_progress() -> None:
    """Bars on a terminal; plain periodic log lines otherwise (the library default)."""
    global _SINK
    from cultureclip.core.progress import set_sink

    if console.is_terminal:
        _SINK = RichSink()
        set_sink(_SINK)


def print_table(
    title: str, columns: Sequence[str], rows: Iterable[Sequence[str]], out: Console = console
) -> None:
    """A rich table of plain cells, on stderr unless ``out`` says otherwise."""
    from rich.table import Table

    table = Table(*columns, title=title)
    for row in rows:
        table.add_row(*row)
    out.print(table)


def fail(message: str) -> None:
    console.print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(2)


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
