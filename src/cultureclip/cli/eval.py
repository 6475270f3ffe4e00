"""CLI for the eval stage (placeholder until issue 4 lands)."""

from __future__ import annotations

import typer

from cultureclip.cli.common import not_built


def register(app: typer.Typer) -> None:
    @app.command("eval", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
    def _eval() -> None:
        """Not built yet (issue 4)."""
        not_built("eval", "issue 4")

    @app.command("report", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
    def _report() -> None:
        """Not built yet (issue 4)."""
        not_built("report", "issue 4")
