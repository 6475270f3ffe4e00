"""The ``cultureclip`` command: subcommands and the model backend listing."""

from __future__ import annotations

import re
import subprocess
import sys

from typer.testing import CliRunner

from cultureclip.cli.main import app

SUBCOMMANDS = (
    "synth",
    "train",
    "eval",
    "report",
    "index",
    "search",
    "serve",
    "quickstart",
    "models",
)


def _commands(help_text: str) -> set[str]:
    # Rich draws the command table as "│ name   description │" rows.
    return set(re.findall(r"^│ ([a-z][a-z-]*)\s", help_text, flags=re.MULTILINE))


def test_help_lists_every_subcommand() -> None:
    result = CliRunner().invoke(app, ["--help"], terminal_width=120)
    assert result.exit_code == 0, result.output
    assert set(SUBCOMMANDS) <= _commands(result.output), result.output


def test_models_lists_the_backends() -> None:
    result = CliRunner().invoke(app, ["models"], terminal_width=160)
    assert result.exit_code == 0, result.output
    for backend in ("hf", "open_clip", "lite"):
        assert re.search(rf"^│ {backend}\s+│", result.output, flags=re.MULTILINE), result.output


def test_version() -> None:
    from cultureclip import __version__

    result = CliRunner().invoke(app, ["version"])
    assert result.exit_code == 0 and result.output.strip() == __version__


def test_help_does_not_import_heavy_libraries() -> None:
    """``cultureclip --help`` stays fast: no torch, transformers or open_clip at import."""
    code = (
        "import sys; from cultureclip.cli.main import app; "
        "heavy = [m for m in ('torch', 'transformers', 'open_clip', 'timm') if m in sys.modules]; "
        "print(','.join(heavy))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "", f"imported at CLI start-up: {out.strip()}"
