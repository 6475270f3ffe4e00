"""The ``cultureclip`` command. Each stage module adds its own subcommands."""

from __future__ import annotations

import typer

from cultureclip import __version__
from cultureclip.cli import convert as convert_cli
from cultureclip.cli import eval as eval_cli
from cultureclip.cli import push as push_cli
from cultureclip.cli import quickstart as quickstart_cli
from cultureclip.cli import retrieval as retrieval_cli
from cultureclip.cli import synth as synth_cli
from cultureclip.cli import train as train_cli
from cultureclip.cli import vlm as vlm_cli

app = typer.Typer(
    name="cultureclip",
    help="Culture-aware CLIP: synthesise CulTwin data, fine-tune, evaluate, retrieve.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _setup(
    debug: bool = typer.Option(
        False, "--debug", help="Show the traceback of user errors too, and debug logs."
    ),
) -> None:
    from cultureclip.cli import common
    from cultureclip.core.threads import configure_threads

    common.DEBUG = debug
    common.setup_logging(debug)
    common.setup_progress()
    configure_threads()


@app.command()
def models() -> None:
    """List the registered model backends."""
    from cultureclip.cli.common import print_table
    from cultureclip.models.registry import list_models

    print_table("model backends", ("backend", "description"), list_models().items())


@app.command()
def presets() -> None:
    """List the presets of every command: command, name, file (use `<command> --preset NAME`)."""
    from cultureclip.presets import all_presets

    for command, found in all_presets().items():
        for name, path in found.items():
            typer.echo(f"{command}\t{name}\t{path}")


@app.command()
def version() -> None:
    """Print the cultureclip version."""
    typer.echo(__version__)


for stage in (
    synth_cli,
    train_cli,
    eval_cli,
    retrieval_cli,
    convert_cli,
    quickstart_cli,
    vlm_cli,
    push_cli,
):
    stage.register(app)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
