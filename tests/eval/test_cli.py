from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from cultureclip.cli.main import app

runner = CliRunner()


def test_eval_then_report(tiny_clip_dir: Path, mcq_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "results"
    args = [
        "eval",
        "--model",
        f"hf:{tiny_clip_dir}",
        "--benchmark",
        "cultureverse",
        "--data",
        str(mcq_file),
        "--out",
        str(out),
        "--model-name",
        "tiny",
        "--set",
        "options.batch_size=4",
        "--set",
        "options.templates={recognition: 'an image of {option}', knowledge: '{option}', scene: '{option}'}",
    ]
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    result_file = out / "cultureverse" / "tiny" / "result.json"
    result = json.loads(result_file.read_text())
    assert result["config"]["batch_size"] == 4
    assert result["config"]["templates"]["recognition"] == "an image of {option}"
    assert result["n"] == 18 and result["n_skipped"] == 2
    assert (out / "cultureverse" / "tiny" / "config.yaml").exists()
    created = result["created"]
    second = runner.invoke(app, args)  # skip-existing
    assert second.exit_code == 0 and json.loads(result_file.read_text())["created"] == created

    report = runner.invoke(
        app, ["report", str(out), "--out", str(tmp_path / "report"), "--resamples", "200"]
    )
    assert report.exit_code == 0, report.output
    assert (tmp_path / "report" / "report.html").exists()
    assert (tmp_path / "report" / "groups.csv").exists()


def test_eval_errors_are_one_line(tmp_path: Path) -> None:
    bad = runner.invoke(
        app, ["eval", "--model", "hf:x", "--benchmark", "nope", "--data", str(tmp_path)]
    )
    assert bad.exit_code == 2
    assert "unknown benchmark 'nope'" in bad.output
    missing = runner.invoke(app, ["eval", "--benchmark", "zeroshot", "--data", str(tmp_path)])
    assert missing.exit_code == 2 and "model" in missing.output


def test_benchmarks_lists_registry() -> None:
    listed = runner.invoke(app, ["benchmarks"])
    assert listed.exit_code == 0
    for name in ("cultureverse", "globalrg-grounding", "crope", "twins"):
        assert name in listed.output
