"""The quickstart end to end, in its small setting (``--small``), through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cultureclip.cli.main import app

pytestmark = pytest.mark.slow


def _model_files(out: Path) -> dict[str, float]:
    return {str(p): p.stat().st_mtime_ns for p in sorted((out / "train").rglob("*.safetensors"))}


def test_small_quickstart_runs_reports_and_resumes(tmp_path: Path) -> None:
    out = tmp_path / "qs"
    runner = CliRunner()
    first = runner.invoke(app, ["quickstart", "--small", "--quiet", "--out", str(out)])
    assert first.exit_code == 0, first.output
    for line in ("twins, new views", "cultureclip", "search"):
        assert line in first.output

    summary = json.loads((out / "summary.json").read_text())
    roles = {"base", "clip", "cultureclip"}
    for kind in ("seen", "unseen"):
        assert set(summary["twin_accuracy"][kind]) == roles
        assert all(0 <= v <= 100 for v in summary["twin_accuracy"][kind].values())
    assert set(summary["general_accuracy"]) == roles
    # Fine-tuning on the twins teaches them: their new renderings are told apart far better.
    seen = summary["twin_accuracy"]["seen"]
    assert seen["cultureclip"] > seen["base"] + 10
    assert seen["clip"] > seen["base"] + 10
    assert summary["searches"] and summary["searches"][0]["hits"]
    for name in ("report.html", "config.yaml", "summary.md", "world/world.json"):
        assert (out / name).exists(), name
    for label in ("twins-seen", "twins-unseen", "general-zeroshot"):
        assert (out / "eval" / label).is_dir(), label
    report = (out / "report.html").read_text()
    assert "twins-seen" in report and "twins-unseen" in report

    # A rerun with the same settings reuses every stage: nothing is trained again.
    trained = _model_files(out)
    assert len(trained) == 3  # align, clip, cultureclip
    again = runner.invoke(app, ["quickstart", "--small", "--quiet", "--out", str(out)])
    assert again.exit_code == 0, again.output
    assert _model_files(out) == trained
    assert (
        json.loads((out / "summary.json").read_text())["twin_accuracy"] == summary["twin_accuracy"]
    )
