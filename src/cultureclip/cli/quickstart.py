"""CLI for the quickstart stage (placeholder until issue 7 lands)."""

from __future__ import annotations

import typer

from cultureclip.cli.common import not_built


def register(app: typer.Typer) -> None:
    @app.command(
        "quickstart", context_settings={"allow_extra_args": True, "ignore_unknown_options": True}
    )
    def _quickstart() -> None:
        """Not built yet (issue 7)."""
        not_built("quickstart", "issue 7")
