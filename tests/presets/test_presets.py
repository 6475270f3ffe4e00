"""Presets ship inside the package, one folder per command, and each validates."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from cultureclip.cli.main import app
from cultureclip.core.config import merge_layers, validate
from cultureclip.presets import COMMANDS, all_presets, presets, read_preset

CLASSES = {
    "synth": "cultureclip.synth.config:SynthConfig",
    "train": "cultureclip.train.config:TrainConfig",
    "train-vlm": "cultureclip.vlm.train:VLMTrainConfig",
    "eval": "cultureclip.eval.api:EvalConfig",
    "index": "cultureclip.retrieval.index:IndexConfig",
    "retrieval-eval": "cultureclip.retrieval.evaluate:RetrievalEvalConfig",
    "quickstart": "cultureclip.quickstart.pipeline:QuickstartConfig",
}
#: keys a preset may leave to the command line
REQUIRED = {"train": {"data": {"path": "x"}}, "index": {"out": "x"}}


def _class(command: str) -> type:
    import importlib

    module, _, name = CLASSES[command].partition(":")
    return getattr(importlib.import_module(module), name)


PRESETS = [(command, name) for command, found in all_presets().items() for name in found]


def test_every_stage_ships_presets() -> None:
    assert set(CLASSES) <= set(all_presets()) and set(all_presets()) <= set(COMMANDS)


@pytest.mark.parametrize(("command", "name"), PRESETS, ids=lambda v: str(v))
def test_each_preset_validates_as_its_command_config(command: str, name: str) -> None:
    cls = _class(command)
    validate(cls, merge_layers(cls, REQUIRED.get(command, {}), read_preset(command, name)))


def test_presets_are_package_data_listed_in_pyproject() -> None:
    import tomllib

    root = Path(__file__).resolve().parents[2]
    patterns = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"
    ]["cultureclip"]
    assert "**/*.yaml" in patterns
    assert all(
        str(path).startswith(str(root / "src" / "cultureclip" / "presets"))
        for path in presets("train").values()
    )


def test_a_local_configs_folder_adds_and_shadows_presets(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "configs" / "train").mkdir(parents=True)
    (tmp_path / "configs" / "train" / "mine.yaml").write_text("epochs: 2\n")
    (tmp_path / "configs" / "train" / "cultureclip-full.yaml").write_text("epochs: 5\n")
    monkeypatch.chdir(tmp_path)
    assert read_preset("train", "mine") == {"epochs": 2}
    assert read_preset("train", "cultureclip-full") == {"epochs": 5}


def test_the_presets_command_lists_every_command() -> None:
    result = CliRunner().invoke(app, ["presets"], terminal_width=200)
    assert result.exit_code == 0, result.output
    for command, name in PRESETS:
        assert command in result.output and name in result.output
