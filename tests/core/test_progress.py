"""Progress: plain periodic log lines by default; bars only where the CLI draws them."""

from __future__ import annotations

import logging

from cultureclip.core import progress as progress_module
from cultureclip.core.progress import LogSink, progress, set_sink, track


def test_plain_lines_are_logged_periodically_and_at_the_end(caplog) -> None:
    previous = set_sink(LogSink(interval_s=0.0))
    try:
        with caplog.at_level(logging.INFO, logger="cultureclip.progress"):
            assert list(track(range(3), "encode images")) == [0, 1, 2]
    finally:
        set_sink(previous)
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0].startswith("encode images: 1/3 (33%)")
    assert lines[-1].startswith("encode images: 3/3 (100%)")


def test_a_disabled_task_says_nothing(caplog) -> None:
    with (
        caplog.at_level(logging.INFO, logger="cultureclip.progress"),
        progress("quiet", 5, enabled=False) as task,
    ):
        task.update(advance=5, stats="loss 1")
    assert caplog.records == []


def test_the_default_sink_is_plain_logging() -> None:
    assert isinstance(progress_module.get_sink(), LogSink)
