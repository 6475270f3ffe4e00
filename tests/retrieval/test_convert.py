"""``cultureclip convert``: folder/JSONL ↔ Chinese-CLIP TSV+JSONL ↔ CulTwin, lossless for
ids, texts, many-to-many relations and pixels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from cultureclip.cli.main import app
from cultureclip.data.collections import load_collection
from cultureclip.data.pairs import PairCollection


def _run(*args: str):
    return CliRunner().invoke(app, list(args), terminal_width=200, env={"COLUMNS": "200"})


def _relation(c: PairCollection) -> dict[str, tuple[str, list[str]]]:
    return {
        t: (text, sorted(c.image_ids[i] for i in refs))
        for t, text, refs in zip(c.text_ids, c.texts, c.text_to_images, strict=True)
    }


def _same(a: PairCollection, b: PairCollection) -> None:
    """Same ids, texts, relations (a caption folder lists texts per image, so the text
    order may differ) and pixels."""
    assert a.image_ids == b.image_ids
    assert _relation(a) == _relation(b)
    for i in range(len(a.images)):
        assert np.array_equal(np.asarray(a.load_image(i)), np.asarray(b.load_image(i)))


def test_convert_between_chinese_clip_folder_and_samples_layouts(
    tmp_path: Path, culti_dir: Path
) -> None:
    original = load_collection(culti_dir, "test")
    assert len(original.text_to_images[-1]) == 2  # a text with two images

    folder = tmp_path / "folder"
    result = _run("convert", "--from", str(culti_dir), "--to", str(folder), "--format", "folder")
    assert result.exit_code == 0, result.output
    assert "wrote 12 images and 25 texts" in result.output
    assert (folder / "captions.jsonl").exists()
    _same(original, load_collection(folder))

    back = tmp_path / "cc"
    result = _run(
        "convert", "--from", str(folder), "--to", str(back), "-f", "chinese-clip", "--urlsafe",
        "--out-split", "valid",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert (back / "valid_imgs.tsv").exists()
    _same(original, load_collection(back, "valid"))

    samples = tmp_path / "samples"
    result = _run("convert", "--from", str(back), "--to", str(samples), "-f", "chinese-clip-folder")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (samples / "valid_images").iterdir())[:2] == [
        "100.png",
        "101.png",
    ]
    _same(original, load_collection(samples))


def test_convert_cultwin_round_trip_and_plain_pairs_are_refused(
    tmp_path: Path, toy_cultwin: Path, culti_dir: Path
) -> None:
    original = load_collection(toy_cultwin)
    cc = tmp_path / "cc"
    assert (
        _run("convert", "--from", str(toy_cultwin), "--to", str(cc), "-f", "chinese-clip").exit_code
        == 0
    )
    twins = tmp_path / "twins"
    result = _run("convert", "--from", str(cc), "--to", str(twins), "-f", "cultwin")
    assert result.exit_code == 0, result.output
    again = load_collection(twins)
    assert again.image_ids == original.image_ids and again.texts == original.texts

    refused = _run(
        "convert", "--from", str(culti_dir), "--to", str(tmp_path / "x"), "-f", "cultwin"
    )
    assert refused.exit_code == 2 and "cultureclip synth" in refused.output
    bad = _run("convert", "--from", str(culti_dir), "--to", str(tmp_path / "y"), "-f", "nope")
    assert bad.exit_code == 2
