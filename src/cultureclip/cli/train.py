"""CLI for the train stage (placeholder until issue 3 lands)."""

from __future__ import annotations

import typer

from cultureclip.cli.common import not_built


def register(app: typer.Typer) -> None:
    @app.command("train", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
    def _train() -> None:
        """Not built yet (issue 3)."""
        not_built("train", "issue 3")

