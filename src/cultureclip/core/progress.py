"""Progress of long work, reported through one interface; only the CLI draws bars.

Library code wraps long loops in :func:`progress` (or :func:`track`) and never imports a
terminal library. What the user sees is decided by the active sink:

- by default (a library call, a log file, CI, SLURM, ``nohup``) progress is a plain log
  line every ``interval_s`` seconds and one at the end, through :mod:`logging`;
- the CLI installs a bar renderer when stderr is a terminal (``cultureclip.cli.common``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Iterable, Iterator
from typing import Any, Protocol, TypeVar

logger = logging.getLogger("cultureclip.progress")

T = TypeVar("T")


class Task(Protocol):
    def update(
        self, *, advance: float = 0, completed: float | None = None, stats: str = ""
    ) -> None:
        """Moves the task on (``advance``) or to ``completed``; ``stats`` is a short status."""


class Sink(Protocol):
    def open(self, description: str, total: float | None, completed: float) -> Task: ...

    def close(self, task: Task) -> None: ...


class _Silent:
    def update(
        self, *, advance: float = 0, completed: float | None = None, stats: str = ""
    ) -> None:
        pass


class LogTask:
    """Counts, and logs a line every ``interval_s`` seconds and when closed."""

    def __init__(self, description: str, total: float | None, completed: float, interval_s: float):
        self.description = description
        self.total = total
        self.completed = completed
        self.stats = ""
        self.interval_s = interval_s
        self.start = time.monotonic()
        self._last_log = self.start
        self._start_count = completed

    def update(
        self, *, advance: float = 0, completed: float | None = None, stats: str = ""
    ) -> None:
        self.completed = completed if completed is not None else self.completed + advance
        if stats:
            self.stats = stats
        now = time.monotonic()
        if now - self._last_log >= self.interval_s:
            self._last_log = now
            self.log()

    def line(self) -> str:
        elapsed = time.monotonic() - self.start
        done = self.completed - self._start_count
        rate = f", {done / elapsed:.1f}/s" if elapsed > 0 and done else ""
        eta = ""
        if self.total:
            amount = f"{self.completed:g}/{self.total:g} ({100 * self.completed / self.total:.0f}%)"
            if done and self.completed < self.total:
                eta = f", eta {elapsed / done * (self.total - self.completed):.0f}s"
        else:
            amount = f"{self.completed:g}"
        stats = f", {self.stats}" if self.stats else ""
        return f"{self.description}: {amount}{rate}{stats}, {elapsed:.0f}s elapsed{eta}"

    def log(self) -> None:
        logger.info("%s", self.line())


class LogSink:
    """The default: plain periodic log lines (readable in CI logs and files), every
    ``interval_s`` seconds (``CULTURECLIP_PROGRESS_INTERVAL``, default 10)."""

    def __init__(self, interval_s: float | None = None) -> None:
        self.interval_s = interval_s

    def interval(self) -> float:
        if self.interval_s is not None:
            return self.interval_s
        try:
            return float(os.environ.get("CULTURECLIP_PROGRESS_INTERVAL", "10"))
        except ValueError:
            return 10.0

    def open(self, description: str, total: float | None, completed: float) -> Task:
        return LogTask(description, total, completed, self.interval())

    def close(self, task: Task) -> None:
        if isinstance(task, LogTask):
            task.log()


_sink: Sink = LogSink()


def set_sink(sink: Sink) -> Sink:
    """Installs ``sink`` for every later :func:`progress`; returns the one it replaces."""
    global _sink
    previous, _sink = _sink, sink
    return previous


def get_sink() -> Sink:
    return _sink


@contextlib.contextmanager
def progress(
    description: str, total: float | None = None, *, completed: float = 0, enabled: bool = True
) -> Iterator[Task]:
    """A task of the active sink for the duration of the block (silent if not ``enabled``)."""
    if not enabled:
        yield _Silent()
        return
    sink = _sink
    task = sink.open(description, total, completed)
    try:
        yield task
    finally:
        sink.close(task)


def track(
    items: Iterable[T],
    description: str,
    *,
    total: float | None = None,
    enabled: bool = True,
) -> Iterator[T]:
    """Iterates ``items``, advancing a task by one per item."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    with progress(description, total, enabled=enabled) as task:
        for item in items:
            yield item
            task.update(advance=1)


def describe(**stats: Any) -> str:
    """``loss 0.41  lr 1.0e-05``-style status text from keyword values."""
    parts = []
    for key, value in stats.items():
        parts.append(f"{key} {value:.4g}" if isinstance(value, float) else f"{key} {value}")
    return "  ".join(parts)
