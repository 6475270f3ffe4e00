"""Every command the README and docs/ show is a command the CLI accepts as written.

Each ``cultureclip ...`` line of a fenced shell block (also behind ``torchrun``/
``accelerate launch -m cultureclip...``) is parsed by the real CLI: the subcommand exists,
every option exists and its value has the right type, the arguments are complete. Its
``--set key=value`` overrides are applied to the command's config class as the command
would (preset < config file < ``--set``; a former key name such as ``output_dir`` is an
error naming ``out``), and must name real keys with valid values (the shell's quoting
removed, as a shell would).
"""

from __future__ import annotations

import importlib
import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import typer
from pydantic import ValidationError

from cultureclip.cli.main import app
from cultureclip.core.config import merge_layers, read_config_file
from cultureclip.presets import read_preset

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(bash|sh|shell|console)\s*$")

#: subcommand → the config class its --set overrides go to
CONFIG_CLASSES = {
    ("train",): "cultureclip.train.config:TrainConfig",
    ("synth",): "cultureclip.synth.config:SynthConfig",
    ("eval",): "cultureclip.eval.api:EvalConfig",
    ("quickstart",): "cultureclip.quickstart.pipeline:QuickstartConfig",
    ("index",): "cultureclip.retrieval.index:IndexConfig",
    ("retrieval-eval",): "cultureclip.retrieval.evaluate:RetrievalEvalConfig",
    ("build-benchmark",): "cultureclip.synth.builder:BuilderConfig",
    ("train-vlm",): "cultureclip.vlm.train:VLMTrainConfig",
}


@dataclass(frozen=True)
class DocCommand:
    source: str
    line: int
    argv: tuple[str, ...]

    def __str__(self) -> str:
        return f"{self.source}:{self.line}: cultureclip {' '.join(self.argv)}"


def _shell_lines(path: Path) -> list[tuple[int, str]]:
    lines, inside, pending, start = [], False, "", 0
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if FENCE.match(raw.strip()):
            inside = True
            continue
        if inside and raw.strip().startswith("```"):
            inside = False
            continue
        if not inside:
            continue
        if not pending:
            start = number
        if raw.rstrip().endswith("\\"):
            pending += raw.rstrip()[:-1] + " "
            continue
        lines.append((start, pending + raw))
        pending = ""
    return lines


def _cultureclip_argv(line: str) -> tuple[str, ...] | None:
    try:
        words = shlex.split(line, comments=True)
    except ValueError:
        return None
    while words and re.match(r"^[A-Z_][A-Z0-9_]*=", words[0]):  # ENV=value prefixes
        words = words[1:]
    if words and words[-1] == "&":
        words = words[:-1]
    if not words:
        return None
    if words[0] == "cultureclip":
        rest = words[1:]
    elif words[0] in ("torchrun", "accelerate", "python", "python3") and "-m" in words:
        index = words.index("-m")
        if index + 1 >= len(words) or not words[index + 1].startswith("cultureclip"):
            return None
        rest = words[index + 2 :]
    else:
        return None
    # "[--max-upload-mb 8]" marks an optional part: the command must work with it too.
    return tuple(word.strip("[]") for word in rest if word not in ("[", "]"))


def doc_commands() -> list[DocCommand]:
    found = []
    for path in DOCS:
        for number, line in _shell_lines(path):
            argv = _cultureclip_argv(line)
            if argv is not None:
                found.append(DocCommand(str(path.relative_to(ROOT)), number, argv))
    return found


COMMANDS = doc_commands()


def test_the_docs_show_commands() -> None:
    assert len(COMMANDS) >= 30


def test_overrides_name_out_one_way() -> None:
    from cultureclip.train.config import TrainConfig

    data = merge_layers(TrainConfig, {"data": {"path": "x"}}, overrides=["out=runs/a"])
    assert TrainConfig.model_validate(data).out == "runs/a"
    # the former name is refused with the one to use
    data = merge_layers(TrainConfig, {"data": {"path": "x"}}, overrides=["output_dir=runs/a"])
    with pytest.raises(ValueError, match="output_dir was renamed: use out"):
        TrainConfig.model_validate(data)


def _parse(argv: tuple[str, ...]) -> tuple[tuple[str, ...], Any]:
    """Parses like the real CLI without running anything; returns the command path."""
    # typer carries its own copy of click: duck-type its groups and errors.
    command: Any = typer.main.get_command(app)
    context = command.make_context("cultureclip", list(argv), resilient_parsing=False)
    path: list[str] = []
    while hasattr(command, "resolve_command"):
        remaining = [*context._protected_args, *context.args]
        if not remaining:
            break
        name, sub, rest = command.resolve_command(context, remaining)
        assert sub is not None, f"no subcommand {remaining[0]!r}"
        path.append(name or "")
        command = sub
        context = command.make_context(name, rest, parent=context, resilient_parsing=False)
    return tuple(path), context


@pytest.mark.parametrize("command", COMMANDS, ids=str)
def test_a_documented_command_parses(command: DocCommand) -> None:
    try:
        _parse(command.argv)
    except Exception as exc:
        if not hasattr(exc, "format_message"):  # a click usage error
            raise
        pytest.fail(f"{command}\n  -> {exc.format_message()}")


def _config_class(path: tuple[str, ...]) -> Any:
    target = CONFIG_CLASSES.get(path[:1])
    if target is None:
        return None
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


@pytest.mark.parametrize(
    "command", [c for c in COMMANDS if "--set" in c.argv or "-s" in c.argv], ids=str
)
def test_documented_overrides_name_real_keys_with_valid_values(command: DocCommand) -> None:
    path, context = _parse(command.argv)
    cls = _config_class(path)
    if cls is None:
        pytest.skip(f"no config class known for {path}")
    overrides = list(context.params.get("overrides") or [])
    layers: list[dict[str, Any]] = []
    if context.params.get("preset"):
        layers.append(read_preset(path[0], context.params["preset"]))
    config_file = context.params.get("config")
    if config_file and (ROOT / str(config_file)).is_file():
        layers.append(read_config_file(ROOT / str(config_file)))
    data = merge_layers(cls, *layers, overrides=overrides)
    try:
        cls.model_validate(data)
    except ValidationError as exc:
        touched = {o.split("=", 1)[0].strip().split(".")[0] for o in overrides}
        problems = [
            f"{'.'.join(map(str, e['loc']))}: {e['msg']}"
            for e in exc.errors()
            if e["loc"] and str(e["loc"][0]) in touched and e["type"] != "missing"
        ]
        assert not problems, f"{command}\n  -> {problems}"
