"""The one adapter from a command's flags to its config: preset < file < flags < --set."""

from __future__ import annotations

from pathlib import Path

import pytest

from cultureclip.cli.common import stage_config, switch
from cultureclip.core.errors import UnknownNameError
from cultureclip.train.config import TrainConfig


def test_each_layer_beats_the_one_before(tmp_path: Path) -> None:
    file = tmp_path / "run.yaml"
    file.write_text("epochs: 3\nout: runs/file\ndata: {path: from-file}\n")
    common = dict(preset="cultureclip-vitb32", config=file)
    cfg = stage_config(TrainConfig, "train", **common)
    assert cfg.epochs == 3 and cfg.out == "runs/file" and cfg.data.path == "from-file"
    assert cfg.batch_size == 2048  # from the preset, which the file does not set
    cfg = stage_config(
        TrainConfig, "train", **common, flags={"out": "runs/flag", "data.path": None}
    )
    assert cfg.out == "runs/flag" and cfg.data.path == "from-file"  # None: flag not given
    cfg = stage_config(
        TrainConfig, "train", **common, flags={"out": "runs/flag"}, overrides=["out=x"]
    )
    assert cfg.out == "x"


def test_switches_only_turn_a_key_on(tmp_path: Path) -> None:
    file = tmp_path / "run.yaml"
    file.write_text("overwrite: true\ndata: {path: d}\n")
    assert stage_config(
        TrainConfig, "train", config=file, flags={"overwrite": switch(False)}
    ).overwrite
    assert switch(True) is True and switch(False) is None


def test_paths_in_flags_become_text(tmp_path: Path) -> None:
    cfg = stage_config(TrainConfig, "train", flags={"data.path": tmp_path, "out": tmp_path / "o"})
    assert cfg.data.path == str(tmp_path) and cfg.out == str(tmp_path / "o")


def test_an_unknown_preset_names_the_known_ones() -> None:
    with pytest.raises(
        UnknownNameError, match=r"unknown training preset 'nope'.*cultureclip-vitb32"
    ):
        stage_config(TrainConfig, "train", preset="nope")
