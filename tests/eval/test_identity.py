"""A stored result comes back only when the same content made it (issue 23): a model changed
in memory, a folder retrained in place, another ``generative.mode`` under one name and a
dataset folder rewritten in place (or another of the same name) are each recomputed and
give the fresh result; old or torn result files are recomputed, never trusted."""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from cultureclip.cli.main import app
from cultureclip.eval.api import evaluate

from .layouts import PALETTE, write_hub_layout
from .test_released_layouts import cvqa_rows, run_eval
from .test_releases import COMMAND, runner, write_release


def _perturb(module: torch.nn.Module, name: str, seed: int = 0) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        tensor = dict(module.named_parameters())[name]
        tensor.add_(torch.randn(tensor.shape, generator=generator) * tensor.std() * 4)


def test_a_model_changed_in_memory_is_evaluated_again(
    tiny_model, mcq_file: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    first = evaluate(tiny_model, "cultureverse", data=mcq_file, out_dir=tmp_path, model_name="t")
    assert first.identity and json.loads(first.path.read_text())["identity"] == first.identity
    same = evaluate(tiny_model, "cultureverse", data=mcq_file, out_dir=tmp_path, model_name="t")
    assert same.reused
    _perturb(tiny_model.model, "text_projection.weight")
    with caplog.at_level(logging.INFO, logger="cultureclip.eval.api"):
        again = evaluate(
            tiny_model, "cultureverse", data=mcq_file, out_dir=tmp_path, model_name="t"
        )
    fresh = evaluate(tiny_model, "cultureverse", data=mcq_file, model_name="t")
    assert not again.reused and again.metrics == fresh.metrics
    assert again.identity != first.identity
    assert "recomputed: weights changed since the stored result" in caplog.text


def test_a_model_folder_retrained_in_place_is_evaluated_again(
    tiny_clip_dir: Path, mcq_file: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = shutil.copytree(tiny_clip_dir, tmp_path / "model")
    spec = f"hf:{folder}"
    first = evaluate(spec, "cultureverse", data=mcq_file, out_dir=tmp_path / "out")
    with caplog.at_level(logging.INFO, logger="cultureclip.eval.api"):
        assert evaluate(spec, "cultureverse", data=mcq_file, out_dir=tmp_path / "out").reused
    assert f"reused (same content {first.identity[:6]})" in caplog.text
    # Retrained heads-only: one small tensor in the middle of a large weights file moves,
    # the file keeps its size and layout.
    weights = folder / "model.safetensors"
    with safe_open(str(weights), "pt") as handle:
        metadata = handle.metadata()
    tensors = load_file(weights)
    projection = tensors["text_projection.weight"]
    noise = torch.randn(projection.shape, generator=torch.Generator().manual_seed(0))
    tensors["text_projection.weight"] = projection + noise * projection.std() * 4
    save_file(tensors, str(weights), metadata=metadata)
    again = evaluate(spec, "cultureverse", data=mcq_file, out_dir=tmp_path / "out")
    fresh = evaluate(spec, "cultureverse", data=mcq_file)
    assert not again.reused and again.metrics == fresh.metrics
    # A copy of the same bytes elsewhere is the same model: its result is reused.
    twin = shutil.copytree(folder, tmp_path / "copy")
    moved = evaluate(
        f"hf:{twin}", "cultureverse", data=mcq_file, out_dir=tmp_path / "out", model_name=spec
    )
    assert moved.reused


@pytest.mark.slow
def test_another_generative_mode_under_one_name_is_evaluated_again(
    tiny_vlm: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from cultureclip.testing import write_flag_mcq

    items = write_flag_mcq(tmp_path / "flags", views=2, shuffle_options=True)
    spec, out = f"hf-vlm:{tiny_vlm}", tmp_path / "runs"

    def run(mode: str, out_dir: Path | None) -> Any:
        settings = {"mode": mode, "likelihood_target": "text", "max_new_tokens": 4}
        return evaluate(
            spec, "cultureverse", data=items, out_dir=out_dir, model_name="vlm", generative=settings
        )

    generated = run("generate", out)
    with caplog.at_level(logging.INFO, logger="cultureclip.eval.api"):
        scored = run("likelihood", out)
    assert not scored.reused and "generative settings changed" in caplog.text
    assert scored.key["model"]["generative"]["mode"] == "likelihood"
    fresh = run("likelihood", None)
    assert scored.metrics == fresh.metrics and scored.counts.refused == 0
    assert generated.key["model"]["generative"]["mode"] == "generate"


def _cvqa_folder(folder: Path, rows: list[dict[str, Any]], features: Any) -> Path:
    if folder.exists():
        shutil.rmtree(folder)
    return write_hub_layout(folder, rows, features)


def test_a_dataset_folder_rewritten_in_place_or_elsewhere_is_read_again(tmp_path: Path) -> None:
    """Hub-layout folders are read by ``datasets``; its cache never answers for other bytes."""
    rows, features = cvqa_rows()
    folder = _cvqa_folder(tmp_path / "a" / "cvqa", rows, features)
    first = run_eval("cvqa", folder, tmp_path / "out1")
    assert first["n"] == 6
    # Rewritten in place with 12 other rows, evaluated into a fresh folder and the same one.
    doubled = [{**row, "ID": f"{row['ID']}-{k}"} for k in range(2) for row in rows]
    for row in doubled[6:]:
        row["Label"] = (row["Label"] + 1) % 4
    files = [folder / "README.md", *(folder / "data").glob("*.parquet")]
    times = {file: (file.stat().st_atime_ns, file.stat().st_mtime_ns) for file in files}
    _cvqa_folder(folder, doubled, features)
    for file, ns in times.items():  # as `cp -p`, rsync or an unpacked archive leave them
        os.utime(file, ns=ns)
    fresh_out = run_eval("cvqa", folder, tmp_path / "out2")
    same_out = run_eval("cvqa", folder, tmp_path / "out1")
    assert fresh_out["n"] == same_out["n"] == 12
    assert fresh_out["metrics"] == same_out["metrics"] != first["metrics"]
    # A folder of the same name elsewhere whose answers are hidden takes no earlier labels.
    hidden = [{**row, "Label": -1} for row in rows]
    other = _cvqa_folder(tmp_path / "b" / "cvqa", hidden, features)
    blind = run_eval("cvqa", other, tmp_path / "out3")
    assert blind["counts"]["hidden"] == 6 and blind["n"] == 0  # predicted, none scored
    predictions = [
        json.loads(line)
        for line in (tmp_path / "out3")
        .rglob("predictions.jsonl")
        .__next__()
        .read_text()
        .splitlines()
    ]
    assert len(predictions) == 6 and all(p["answer"] is None for p in predictions)


def test_results_of_older_versions_and_torn_files_are_recomputed(
    tiny_model, mcq_file: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    first = evaluate(tiny_model, "cultureverse", data=mcq_file, out_dir=tmp_path, model_name="t")
    path = first.path
    old = json.loads(path.read_text())
    del old["identity"]  # as a version that did not hash content wrote it
    path.write_text(json.dumps(old))
    with caplog.at_level(logging.INFO, logger="cultureclip.eval.api"):
        again = evaluate(
            tiny_model, "cultureverse", data=mcq_file, out_dir=tmp_path, model_name="t"
        )
    assert not again.reused and "records no content identity" in caplog.text
    path.write_text(path.read_text()[:40])  # torn
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="cultureclip.eval.api"):
        torn = evaluate(tiny_model, "cultureverse", data=mcq_file, out_dir=tmp_path, model_name="t")
    assert not torn.reused and torn.metrics == first.metrics
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "recomputed" in warnings[0].getMessage()
    assert "\n" not in warnings[0].getMessage()


def test_names_paths_and_batch_sizes_decide_nothing(
    tiny_model, mcq_file: Path, tmp_path: Path
) -> None:
    first = evaluate(tiny_model, "cultureverse", data=mcq_file, out_dir=tmp_path, model_name="t")
    copy = shutil.copytree(mcq_file.parent, tmp_path / "elsewhere" / "items")
    moved = evaluate(
        tiny_model,
        "cultureverse",
        data=copy / mcq_file.name,
        out_dir=tmp_path,
        model_name="t",
        batch_size=3,
    )
    assert moved.reused and moved.identity == first.identity


def test_a_result_of_a_newer_version_is_refused_not_overwritten(
    tiny_model, mcq_file: Path, tmp_path: Path
) -> None:
    from cultureclip.core.errors import InputError

    first = evaluate(tiny_model, "cultureverse", data=mcq_file, out_dir=tmp_path, model_name="t")
    newer = {**json.loads(first.path.read_text()), "schema_version": 99}
    first.path.write_text(json.dumps(newer))
    with pytest.raises(InputError, match="newer than this cultureclip reads"):
        evaluate(tiny_model, "cultureverse", data=mcq_file, out_dir=tmp_path, model_name="t")
    assert json.loads(first.path.read_text())["schema_version"] == 99


def test_images_an_annotation_file_points_to_are_part_of_its_data(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A release's images lie beside its annotation file (here under ``image_root``): one
    redrawn in place makes the stored result another data's."""
    monkeypatch.chdir(tmp_path)
    write_release(tmp_path)

    def run(out: str) -> dict[str, Any]:
        args = [*COMMAND, "-m", "colour:oracle", "--model-name", "oracle", "-o", out]
        assert runner.invoke(app, args).exit_code == 0
        return json.loads((tmp_path / out / "cultureverse" / "oracle" / "result.json").read_text())

    first = run("out")
    with caplog.at_level(logging.INFO, logger="cultureclip.eval.api"):
        assert run("out")["identity"] == first["identity"]
    assert "reused (same content" in caplog.text
    caplog.clear()
    red = tmp_path / "data" / "images" / "red.png"
    Image.new("RGB", (16, 16), PALETTE["cyan"]).save(red)  # the red item now shows cyan
    with caplog.at_level(logging.INFO, logger="cultureclip.eval.api"):
        again = run("out")
    assert "recomputed: data changed" in caplog.text
    fresh = run("fresh")
    assert again["metrics"] == fresh["metrics"] != first["metrics"]
