"""Eval reliability (issue 14 items 4, 5, 7, 18; issue 16 items 3, 9): each failed before."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from cultureclip.cli.main import app
from cultureclip.core.errors import InputError
from cultureclip.eval import evaluate
from cultureclip.eval.report import build_report
from cultureclip.eval.spec import create_benchmark

from .conftest import COLOURS, write_image

runner = CliRunner()


def _eval_args(model_dir: Path, data: Path, out: Path) -> list[str]:
    return [
        "eval",
        "-m",
        f"hf:{model_dir}",
        "-b",
        "cultureverse",
        "-d",
        str(data),
        "-o",
        str(out),
        "--model-name",
        "tiny",
    ]


def test_reuse_is_keyed_on_data_content_and_options(
    tiny_clip_dir: Path, mcq_file: Path, tmp_path: Path
) -> None:
    out = tmp_path / "runs"
    first = runner.invoke(app, _eval_args(tiny_clip_dir, mcq_file, out))
    assert first.exit_code == 0, first.output
    assert "reused" not in first.output
    result_file = out / "cultureverse" / "tiny" / "result.json"
    stored = json.loads(result_file.read_text())
    assert stored["n"] == 18
    assert stored["key"]["data"]["content"] and stored["key"]["model"]["weights"]

    again = runner.invoke(app, _eval_args(tiny_clip_dir, mcq_file, out))
    assert again.exit_code == 0 and "reused" in again.output

    # Different data under the same (benchmark, model): recomputed, not reused.
    six = tmp_path / "six" / "items.jsonl"
    six.parent.mkdir()
    shutil.copytree(mcq_file.parent / "images", six.parent / "images")
    lines = mcq_file.read_text().splitlines()[:6]
    six.write_text("\n".join(lines) + "\n")
    other = runner.invoke(app, _eval_args(tiny_clip_dir, six, out))
    assert other.exit_code == 0, other.output
    assert "reused" not in other.output
    assert json.loads(result_file.read_text())["n"] == 6

    # Same path, edited content: the fingerprint differs, so it is recomputed.
    six.write_text("\n".join(lines[:3]) + "\n")
    edited = runner.invoke(app, _eval_args(tiny_clip_dir, six, out))
    assert "reused" not in edited.output and json.loads(result_file.read_text())["n"] == 3

    # Same data, different options: recomputed.
    opts = runner.invoke(app, [*_eval_args(tiny_clip_dir, six, out), "--set", "options.seed=7"])
    assert opts.exit_code == 0 and "reused" not in opts.output
    assert json.loads(result_file.read_text())["config"]["seed"] == 7
    # A batch size decides how work is cut, not the result: reused (issue 23).
    batch = runner.invoke(
        app,
        [
            *_eval_args(tiny_clip_dir, six, out),
            "--set",
            "options.seed=7",
            "--set",
            "options.batch_size=2",
        ],
    )
    assert batch.exit_code == 0 and "reused" in batch.output


def test_an_unkeyed_old_result_is_not_reused(tiny_model, mcq_file: Path, tmp_path: Path) -> None:
    first = evaluate(tiny_model, "cultureverse", data=mcq_file, out_dir=tmp_path, model_name="t")
    path = first.path
    assert path is not None
    stale = json.loads(path.read_text())
    stale.pop("key")
    stale["n"] = 646  # an earlier result of another dataset
    path.write_text(json.dumps(stale))
    again = evaluate(tiny_model, "cultureverse", data=mcq_file, out_dir=tmp_path, model_name="t")
    assert not again.reused and again.n == 18
    third = evaluate(tiny_model, "cultureverse", data=mcq_file, out_dir=tmp_path, model_name="t")
    assert third.reused and third.n == 18


def _break_images(root: Path) -> None:
    """Item images: one missing, one truncated JPEG, one text file named .jpg."""
    write_image(root / "images" / "good.jpg", (200, 30, 30))
    data = (root / "images" / "good.jpg").read_bytes()
    (root / "images" / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (root / "images" / "text.jpg").write_text("not an image at all")


def test_unreadable_images_are_skipped_and_reported(tiny_clip_dir: Path, tmp_path: Path) -> None:
    root = tmp_path / "mcq"
    _break_images(root)
    options = ["kimono", "hanbok", "qipao"]
    rows = [
        {"id": "ok", "image": "images/good.jpg", "options": options, "answer": 0},
        {"id": "gone", "image": "images/missing.jpg", "options": options, "answer": 0},
        {"id": "cut", "image": "images/truncated.jpg", "options": options, "answer": 1},
        {"id": "txt", "image": "images/text.jpg", "options": options, "answer": 2},
    ]
    (root / "items.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "runs"
    run = runner.invoke(
        app,
        [
            "eval",
            "-m",
            f"hf:{tiny_clip_dir}",
            "-b",
            "cultureverse",
            "-d",
            str(root),
            "-o",
            str(out),
            "--model-name",
            "tiny",
        ],
    )
    assert run.exit_code == 0, run.output
    result = json.loads((out / "cultureverse" / "tiny" / "result.json").read_text())
    assert result["n"] == 1 and result["n_skipped"] == 3
    joined = "\n".join(result["skipped"])
    for item_id in ("gone", "cut", "txt"):
        assert f"item '{item_id}'" in joined
    assert "3 malformed item(s) skipped" in run.output
    report = build_report([out], tmp_path / "report", n_resamples=20)
    page = report.read_text()
    assert "skipped" in page and "gone" in page


def test_zeroshot_skips_unreadable_images(tiny_model, tmp_path: Path) -> None:
    root = tmp_path / "zs"
    for c, name in enumerate(["red", "green"]):
        write_image(root / name / "0.png", COLOURS[c])
    (root / "red" / "broken.jpg").write_text("nope")
    result = evaluate(tiny_model, "zeroshot", data=root)
    assert result.n == 2 and result.n_skipped == 1
    assert "broken.jpg" in result.skipped[0]


def test_cultwin_record_with_missing_image_is_skipped(tiny_model, toy_cultwin: Path) -> None:
    from cultureclip.data.cultwin import read_cultwin

    load = read_cultwin(toy_cultwin)
    victim = load.records[0]
    path = load.image_path(victim.pos_image)
    assert path is not None
    path.unlink()
    result = evaluate(tiny_model, "twins", data=toy_cultwin)
    assert result.n == 14  # 8 pairs, one dropped whole
    assert result.n_skipped == 1 and repr(victim.id) in result.skipped[0]


def test_mean_per_class_recall_averages_over_classes_with_images(monkeypatch) -> None:
    # 7 classes, one with no image; recall per non-empty class: 6 classes, 3 right of 4 in
    # half of them -> CLIP_benchmark / sklearn: mean over the 6 classes that have images.
    classnames = [f"c{i}" for i in range(7)]
    labels = [label for label in range(6) for _ in range(4)]
    images: list[str | bytes] = [f"{i}.png" for i in range(len(labels))]
    bench = create_benchmark("zeroshot", "unused", templates=["{c}"]).scorer
    bench.skipped = []
    bench._loaded = (images, labels, classnames, Path("."))

    class Model(torch.nn.Module):
        pass

    from cultureclip.eval.scorers import zeroshot as module

    # one right of four in class 0, everything else right (features chosen by hand)
    dim = 7
    right = {
        i: torch.nn.functional.one_hot(torch.tensor(labels[i]), dim).float() for i in range(24)
    }
    for i in (1, 2, 3):
        right[i] = torch.nn.functional.one_hot(torch.tensor(6), dim).float()
    monkeypatch.setattr(
        module,
        "embed_images",
        lambda model, keys, load, **kw: {k: right[int(k)] for k in keys},
    )

    class Cache:
        def __init__(self, model) -> None:
            pass

        def encode(self, texts):
            return torch.stack(
                [torch.nn.functional.one_hot(torch.tensor(int(t[1:])), dim).float() for t in texts]
            )

    monkeypatch.setattr(module, "TextFeatureCache", Cache)
    monkeypatch.setattr(module, "VisionLanguageModel", Model)
    output = bench.run(Model(), progress=False)
    # recalls: class 0 25%, classes 1-5 100% -> (25 + 500) / 6 = 87.5 (not / 7 = 75.0)
    assert output.metrics["mean_per_class_recall"] == pytest.approx(87.5)


def test_labels_csv_folder_is_a_labelled_list(tiny_model, tmp_path: Path) -> None:
    root = tmp_path / "photos"
    rows = []
    for c, name in enumerate(["red square", "green square", "blue square"]):
        for k in range(2):
            write_image(root / "images" / f"{c}_{k}.png", COLOURS[c])
            rows.append({"image": f"images/{c}_{k}.png", "label": name})
    with open(root / "labels.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["image", "label"])
        writer.writeheader()
        writer.writerows(rows)
    result = evaluate(tiny_model, "zeroshot", data=root)
    assert result.n == 6
    assert set(result.per_group["class"]) == {"red square", "green square", "blue square"}


def test_single_class_image_folder_is_refused(tmp_path: Path) -> None:
    write_image(tmp_path / "only" / "images" / "0.png", COLOURS[0])
    with pytest.raises(InputError, match="single class"):
        create_benchmark("zeroshot", tmp_path / "only").prepare()


def test_zeroshot_reads_every_pillow_extension_recursively(tmp_path: Path) -> None:
    root = tmp_path / "zs"
    write_image(root / "cat" / "a.png", COLOURS[0])
    write_image(root / "cat" / "nested" / "deeper" / "b.png", COLOURS[1])
    (root / "cat" / "nested" / "deeper" / "b.png").rename(root / "cat" / "nested" / "b.jfif")
    write_image(root / "dog" / "c.png", COLOURS[2])
    (root / "dog" / "notes.xyz").write_text("not an image")
    bench = create_benchmark("zeroshot", root)
    bench.prepare()
    images, labels, classnames, _ = bench._loaded
    assert sorted(map(str, images)) == ["cat/a.png", "cat/nested/b.jfif", "dog/c.png"]
    assert labels.count(0) == 2 and classnames == ["cat", "dog"]
    assert any("notes.xyz" in s for s in bench.skipped)


def test_results_csv_rounds_deltas(tiny_model, mcq_file: Path, tmp_path: Path) -> None:
    result = evaluate(tiny_model, "cultureverse", data=mcq_file, out_dir=tmp_path / "r")
    assert result.path is not None
    stored = json.loads(result.path.read_text())
    stored["metrics"]["accuracy"] = 72.3
    stored["baseline"] = {
        "model": "base",
        "metrics": {"accuracy": 37.7},
        "delta": {"accuracy": 72.3 - 37.7},
    }
    result.path.write_text(json.dumps(stored))
    build_report([tmp_path / "r"], tmp_path / "report", n_resamples=10)
    text = (tmp_path / "report" / "results.csv").read_text()
    assert "34.6" in text and "34.599999" not in text
