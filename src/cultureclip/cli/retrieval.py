"""CLI for the retrieval stage (placeholder until issue 6 lands)."""

from __future__ import annotations

import typer

from cultureclip.cli.common import not_built


def register(app: typer.Typer) -> None:
    @app.command("index", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
    def _index() -> None:
        """Not built yet (issue 6)."""
        not_built("index", "issue 6")

    @app.command("search", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
    def _search() -> None:
        """Not built yet (issue 6)."""
        not_built("search", "issue 6")

    @app.command("serve", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
    def _serve() -> None:
        """Not built yet (issue 6)."""
        not_built("serve", "issue 6")

