"""``cultureclip index / search / retrieval-eval`` end to end on the tiny model."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from typer.testing import CliRunner

from cultureclip.cli.main import app


def _run(*args: str):
    # COLUMNS: rich sizes its tables from the environment, not from the runner.
    return CliRunner().invoke(app, list(args), terminal_width=200, env={"COLUMNS": "200"})


def test_index_search_and_rerun(tmp_path: Path, culti_dir: Path, tiny_clip_dir: Path) -> None:
    out = tmp_path / "idx"
    common = [
        "index",
        "--model",
        f"hf:{tiny_clip_dir}",
        "--data",
        str(culti_dir),
        "--split",
        "test",
    ]
    result = _run(*common, "--out", str(out), "--laclip", "k=2,tau=0.1", "--set", "chunk_size=5")
    assert result.exit_code == 0, result.output
    assert "indexed 12 images and 25 texts" in result.output
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["laclip"]["k"] == 2 and saved["chunk_size"] == 5

    again = _run(*common, "--out", str(out), "--laclip", "k=2,tau=0.1", "--set", "chunk_size=5")
    assert again.exit_code == 0 and "8 chunk(s) reused" in again.output  # 3 image + 5 text chunks
    refused = _run(*common, "--out", str(out), "--laclip", "k=3")
    assert refused.exit_code == 2 and "--overwrite" in refused.output

    found = _run("search", "--index", str(out), "--text", "a square twin 2", "-k", "3", "--json")
    assert found.exit_code == 0, found.output
    body = json.loads(found.stdout)
    assert body["text"] == "a square twin 2" and [r["rank"] for r in body["results"]] == [1, 2, 3]

    image = culti_dir.parent / "toy" / "images" / "0001_neg.png"
    table = _run("search", "--index", str(out), "--image", str(image), "-k", "2")
    assert table.exit_code == 0 and "texts for" in table.output

    neither = _run("search", "--index", str(out))
    assert neither.exit_code == 2 and "exactly one of --text or --image" in neither.output
    missing = _run("search", "--index", str(out), "--image", str(tmp_path / "nope.png"))
    assert missing.exit_code == 2 and "image not found" in missing.output


def test_index_reports_bad_data_in_one_line(tmp_path: Path, tiny_clip_dir: Path) -> None:
    result = _run(
        "index",
        "--model",
        f"hf:{tiny_clip_dir}",
        "--data",
        str(tmp_path / "none"),
        "--out",
        str(tmp_path / "o"),
    )
    assert result.exit_code == 2
    assert "collection not found" in result.output and "Traceback" not in result.output
    bad = _run("index", "--model", "hf:x", "--data", ".", "--out", "o", "--laclip", "k=0")
    assert bad.exit_code == 2 and "invalid LACLIP options" in bad.output


def test_retrieval_eval_prints_global_next_to_laclip(
    tmp_path: Path, culti_dir: Path, tiny_clip_dir: Path
) -> None:
    out = tmp_path / "eval"
    result = _run(
        "retrieval-eval",
        "--model",
        f"hf:{tiny_clip_dir}",
        "--data",
        str(culti_dir),
        "--k",
        "2",
        "--scales",
        "0.3-0.6,0.5-1.0",
        "--tau",
        "0.05,0.2",
        "--published",
        "--out",
        str(out),
    )
    assert result.exit_code == 0, result.output
    # The table fits 80 columns, so long labels fold inside their cell.
    assert "T2I R@1" in result.output and "τ=0.2" in result.output and "chance" in result.output
    assert "(published)" in result.output and "bootstrap" in result.output
    assert max(len(line) for line in result.output.splitlines() if "│" in line) <= 80
    saved = json.loads((out / "results.json").read_text())
    assert saved["rows"][0]["label"] == "global" and len(saved["rows"]) == 5
    assert saved["chance"]["t2i_R@1"] > 0 and len(saved["rows"][0]["ci95"]["MR"]) == 2
    assert (out / "results.csv").read_text().splitlines()[0].startswith("label,t2i_R@1")
    assert yaml.safe_load((out / "config.yaml").read_text())["taus"] == [0.05, 0.2]
