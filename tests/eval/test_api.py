"""The eval stage as ``run(EvalConfig)``; ``evaluate(...)`` is the same with keywords."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from cultureclip.eval.api import EvalConfig, evaluate, run


def test_run_and_evaluate_agree_and_save_the_config(
    tiny_model, mcq_file: Path, tmp_path: Path
) -> None:
    config = EvalConfig(
        model="t", model_name="t", benchmark="cultureverse", data=str(mcq_file), out=str(tmp_path)
    )
    first = run(config, model=tiny_model)
    assert first.path is not None and not first.reused
    saved = yaml.safe_load((first.path.parent / "config.yaml").read_text())
    assert saved["out"] == str(tmp_path) and saved["device"] == "auto"
    again = evaluate(tiny_model, "cultureverse", data=mcq_file, out_dir=tmp_path, model_name="t")
    assert again.reused and again.metrics == first.metrics


def test_out_none_writes_nothing(tiny_model, mcq_file: Path, tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    config = EvalConfig(
        model="t", model_name="t", benchmark="cultureverse", data=str(mcq_file), out=None
    )
    result = run(config, model=tiny_model)
    assert result.path is None and result.n == 18 and not any((tmp_path / "cwd").iterdir())


def test_old_names_of_out_are_one_line_errors() -> None:
    with pytest.raises(ValueError, match="out_dir was renamed: use out"):
        EvalConfig.model_validate(
            {"model": "m", "benchmark": "b", "data": "d", "out_dir": "runs/old"}
        )
