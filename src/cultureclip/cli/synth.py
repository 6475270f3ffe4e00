"""CLI for the synth stage (placeholder until issue 5 lands)."""

from __future__ import annotations

import typer

from cultureclip.cli.common import not_built


def register(app: typer.Typer) -> None:
    @app.command("synth", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
    def _synth() -> None:
        """Not built yet (issue 5)."""
        not_built("synth", "issue 5")

