"""The quickstart's config as its command builds it: --small is the shipped preset."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from cultureclip.cli.main import app
from cultureclip.quickstart import pipeline


@pytest.fixture
def captured(monkeypatch: pytest.MonkeyPatch) -> list[pipeline.QuickstartConfig]:
    """The configs ``cultureclip quickstart`` would run, without running them."""
    seen: list[pipeline.QuickstartConfig] = []

    def fake_run(config: pipeline.QuickstartConfig) -> None:
        seen.append(config)
        raise SystemExit(0)

    monkeypatch.setattr(pipeline, "run", fake_run)
    return seen


def test_small_is_the_small_preset_and_set_still_wins(
    captured: list[pipeline.QuickstartConfig], tmp_path: Path
) -> None:
    args = ["quickstart", "--small", "--out", str(tmp_path), "--set", "finetune.epochs=2"]
    assert CliRunner().invoke(app, args).exit_code == 0
    config = captured[0]
    assert (config.world.max_culture, config.align.epochs, config.example_searches) == (40, 3, 2)
    assert config.finetune.epochs == 2
    assert config.device == "auto"


def test_device_flag_and_conflicting_presets(
    captured: list[pipeline.QuickstartConfig], tmp_path: Path
) -> None:
    runner = CliRunner()
    assert (
        runner.invoke(app, ["quickstart", "--device", "cpu", "--out", str(tmp_path)]).exit_code == 0
    )
    assert captured[0].device == "cpu"
    conflict = runner.invoke(app, ["quickstart", "--small", "--preset", "other"])
    assert conflict.exit_code == 2 and "--small is --preset small" in conflict.output
    assert len(captured) == 1


def test_a_missing_gpu_fails_before_any_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out = tmp_path / "qs"
    result = CliRunner().invoke(app, ["quickstart", "--device", "cuda", "--out", str(out)])
    assert result.exit_code == 2 and "CUDA is not available" in result.output
    assert not out.exists()
