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


def test_cli_eval_in_bf16_scores_like_fp32(
    tiny_clip_dir: Path, mcq_file: Path, tmp_path: Path
) -> None:
    """``--set precision=bf16`` runs a contrastive model under CPU autocast; its result is
    keyed by the precision, so an fp32 result is not reused for it."""
    import json

    from typer.testing import CliRunner

    from cultureclip.cli.main import app

    scores = {}
    for precision in ("fp32", "bf16"):
        args = ["eval", "-m", f"hf:{tiny_clip_dir}", "-b", "cultureverse", "-d", str(mcq_file),
                "-o", str(tmp_path), "--model-name", precision, "--set", f"precision={precision}"]  # fmt: skip
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 0, result.output
        folder = tmp_path / "cultureverse" / precision
        saved = json.loads((folder / "result.json").read_text())
        assert saved["key"].get("precision") == (None if precision == "fp32" else "bf16")
        scores[precision] = [
            json.loads(line)["probs"] for line in (folder / "predictions.jsonl").open()
        ]
    for full, half in zip(scores["fp32"], scores["bf16"], strict=True):
        assert full == pytest.approx(half, abs=0.05)
