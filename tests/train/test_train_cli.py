"""``cultureclip train``, ``wise-ft`` and ``export`` through the real typer app."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

from cultureclip.cli.main import app
from cultureclip.core.io import read_jsonl
from cultureclip.models.registry import create_model

runner = CliRunner()


@pytest.fixture
def config_file(tmp_path: Path, tiny_clip_dir: Path) -> Path:
    path = tmp_path / "train.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "model": f"hf:{tiny_clip_dir}",
                "batch_size": 4,
                "epochs": 2,
                "log_every": 1,
                "progress": False,
                "optim": {"lr": 1e-3},
                "schedule": {"warmup_steps": 1},
                "checkpoint_every": 1,
            }
        )
    )
    return path


def test_train_stop_resume_wise_ft_export(
    config_file, toy_cultwin, tiny_clip_dir, tmp_path
) -> None:
    out = tmp_path / "run"
    args = ["train", "-c", str(config_file), "--data", str(toy_cultwin), "--out", str(out)]
    first = runner.invoke(app, [*args, "--set", "stop_at_step=2"])
    assert first.exit_code == 0, first.output
    assert "--resume latest" in first.output
    assert not (out / "final").exists()

    resumed = runner.invoke(app, [*args, "--resume", "latest"])
    assert resumed.exit_code == 0, resumed.output
    assert "trained 4 steps" in resumed.output
    assert [r["step"] for r in read_jsonl(out / "metrics.jsonl")] == [1, 2, 3, 4]
    assert yaml.safe_load((out / "config.yaml").read_text())["resume"] == "latest"

    mixed = tmp_path / "mixed"
    result = runner.invoke(
        app,
        [
            "wise-ft",
            f"hf:{tiny_clip_dir}",
            str(out / "final"),
            "--alpha",
            "0.3",
            "--out",
            str(mixed),
        ],
    )
    assert result.exit_code == 0, result.output
    model = create_model(mixed)
    assert model.weights_diverged

    exported = tmp_path / "exported"
    result = runner.invoke(app, ["export", str(out / "final"), str(exported)])
    assert result.exit_code == 0, result.output
    assert (exported / "config.json").exists()
    texts = ["twin 1", "concept 2 of IN"]
    torch.testing.assert_close(
        create_model(f"hf:{exported}").embed_texts(texts),
        create_model(out / "final").embed_texts(texts),
        rtol=1e-4,
        atol=1e-5,
    )


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ([], "data: Field required"),
        (["--data", "{data}", "--set", "loss=nope"], "unknown loss 'nope'"),
        (
            ["--data", "{data}", "--set", "precision=bf16", "--set", "device=cpu"],
            "needs a CUDA device",
        ),
        (["--data", "{data}", "--resume", "latest"], "no checkpoint"),
        (["--preset", "missing"], "unknown training preset"),
    ],
)
def test_train_errors_are_one_line(config_file, toy_cultwin, tmp_path, extra, message) -> None:
    extra = [a.replace("{data}", str(toy_cultwin)) for a in extra]
    result = runner.invoke(
        app, ["train", "-c", str(config_file), "--out", str(tmp_path / "o"), *extra]
    )
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output


def test_wise_ft_rejects_bad_alpha(tiny_clip_dir, tmp_path) -> None:
    spec = f"hf:{tiny_clip_dir}"
    result = runner.invoke(
        app, ["wise-ft", spec, spec, "--alpha", "2", "--out", str(tmp_path / "m")]
    )
    assert result.exit_code == 2 and "[0, 1]" in result.output
