"""Collection readers/writers, layout dispatch and the leak-free 7:1:2 split."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cultureclip.data.collections import (
    CollectionFormatError,
    ImageDecodeError,
    decode_image,
    load_collection,
    read_caption_folder,
    read_chinese_clip,
    read_cultwin_pairs,
    split_collection,
    write_chinese_clip,
)
from cultureclip.data.pairs import PairCollection


def _save(path: Path, colour: tuple[int, int, int]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (20, 16), colour).save(path)


def test_chinese_clip_round_trip_keeps_ids_relations_and_pixels(
    tmp_path: Path, toy_collection
) -> None:
    original = toy_collection(tmp_path)
    write_chinese_clip(tmp_path / "out", "train", original)
    loaded = read_chinese_clip(tmp_path / "out", "train")
    assert loaded.image_ids == original.image_ids
    assert loaded.texts == original.texts
    assert loaded.text_ids == original.text_ids
    assert loaded.text_to_images == original.text_to_images
    assert loaded.text_to_images[-1] == [0, 3]  # a text with two correct images survives
    # Images stay base64 bytes until used, and decode to the same pixels.
    assert isinstance(loaded.images[0], bytes)
    for i in (0, 5):
        assert np.array_equal(np.asarray(loaded.load_image(i)), np.asarray(original.load_image(i)))
    first = json.loads((tmp_path / "out" / "train_texts.jsonl").read_text().splitlines()[0])
    assert first["text_id"] == 0 and first["image_ids"] == [
        100
    ]  # integer ids, as Chinese-CLIP writes


def test_chinese_clip_errors_name_file_and_line(tmp_path: Path) -> None:
    root = tmp_path / "bad"
    root.mkdir()
    (root / "test_imgs.tsv").write_text("1\taGVsbG8=\n2\n")
    (root / "test_texts.jsonl").write_text('{"text_id": 1, "text": "x", "image_ids": [1]}\n')
    with pytest.raises(CollectionFormatError, match=r"test_imgs.tsv:2"):
        read_chinese_clip(root, "test")
    (root / "test_imgs.tsv").write_text("1\taGVsbG8=\n")
    (root / "test_texts.jsonl").write_text(
        '{"text_id": 1, "text": "x", "image_ids": [1]}\n{"text_id": 2, "text": "y", "image_ids": [9]}\n'
    )
    with pytest.raises(CollectionFormatError, match=r"test_texts.jsonl:2.*\['9'\]"):
        read_chinese_clip(root, "test")
    with pytest.raises(FileNotFoundError, match=r"splits present in .*: test"):
        read_chinese_clip(root, "train")


def test_caption_folder_formats(tmp_path: Path) -> None:
    folder = tmp_path / "jsonl"
    _save(folder / "a.png", (255, 0, 0))
    _save(folder / "sub" / "b.png", (0, 0, 255))
    (folder / "captions.jsonl").write_text(
        '{"image": "a.png", "captions": ["red one", "crimson"]}\n{"file": "sub/b.png", "text": "blue"}\n'
    )
    collection = read_caption_folder(folder)
    assert collection.image_ids == ["a.png", "sub/b.png"]
    assert collection.texts == ["red one", "crimson", "blue"]
    assert collection.text_to_images == [[0], [0], [1]]

    folder = tmp_path / "csv"
    _save(folder / "a.png", (255, 0, 0))
    (folder / "captions.csv").write_text('file_name,caption\na.png,"red, bright"\na.png,scarlet\n')
    collection = read_caption_folder(folder)
    assert collection.texts == ["red, bright", "scarlet"] and collection.image_ids == ["a.png"]

    folder = tmp_path / "tsv"
    _save(folder / "a.png", (255, 0, 0))
    (folder / "captions.tsv").write_text("a.png\t红色的丝绸\n")
    assert read_caption_folder(folder).texts == ["红色的丝绸"]


def test_caption_folder_rejects_missing_and_escaping_paths(tmp_path: Path) -> None:
    folder = tmp_path / "f"
    _save(folder / "a.png", (1, 2, 3))
    _save(tmp_path / "outside.png", (1, 2, 3))
    (folder / "captions.tsv").write_text("a.png\tok\nmissing.png\tgone\n")
    with pytest.raises(CollectionFormatError, match=r"captions.tsv:2.*missing.png"):
        read_caption_folder(folder)
    (folder / "captions.tsv").write_text("../outside.png\tsneaky\n")
    with pytest.raises(CollectionFormatError, match="outside"):
        read_caption_folder(folder)


def test_cultwin_pairs_give_each_side_its_captions(toy_cultwin: Path) -> None:
    collection = read_cultwin_pairs(toy_cultwin)
    assert len(collection.images) == 16 and len(collection.texts) == 32
    assert collection.image_ids[:2] == ["toy-0000:pos", "toy-0000:neg"]
    assert collection.texts[:2] == ["a round concept 0", "concept 0, round, from JP"]
    assert collection.text_to_images[:3] == [[0], [0], [1]]


def _big_collection(n_images: int = 200) -> PairCollection:
    texts, links = [], []
    for i in range(n_images):
        texts.append(f"text {i}")
        links.append([i])
    # Some texts tie pairs of images together: those images must share a split.
    for i in range(0, 40, 4):
        texts.append(f"pair {i}")
        links.append([i, i + 1])
    return PairCollection(
        [str(i) for i in range(n_images)],
        [b"x"] * n_images,
        [str(t) for t in range(len(texts))],
        texts,
        links,
    )


def test_split_is_7_1_2_leak_free_and_seeded() -> None:
    collection = _big_collection()
    parts = split_collection(collection, seed=0)
    sizes = {name: len(part.images) for name, part in parts.items()}
    assert sum(sizes.values()) == 200
    assert (
        abs(sizes["train"] - 140) <= 2
        and abs(sizes["valid"] - 20) <= 2
        and abs(sizes["test"] - 40) <= 2
    )
    image_sets = [set(part.image_ids) for part in parts.values()]
    text_sets = [set(part.text_ids) for part in parts.values()]
    for a in range(3):
        for b in range(a + 1, 3):
            assert not image_sets[a] & image_sets[b]
            assert not text_sets[a] & text_sets[b]
    assert sum(len(s) for s in text_sets) == len(collection.texts)
    for part in parts.values():  # relations stay valid after re-indexing
        for text, refs in zip(part.texts, part.text_to_images, strict=True):
            if text.startswith("text "):
                assert [part.image_ids[r] for r in refs] == [text.split()[1]]
    again = split_collection(collection, seed=0)
    assert again["test"].image_ids == parts["test"].image_ids
    assert split_collection(collection, seed=1)["test"].image_ids != parts["test"].image_ids
    with pytest.raises(ValueError, match="ratios"):
        split_collection(collection, ratios=(1, 1))


def test_load_collection_dispatches_on_layout(
    tmp_path: Path, toy_cultwin: Path, toy_collection
) -> None:
    collection = toy_collection(tmp_path)
    root = tmp_path / "cc"
    write_chinese_clip(root, "train", collection)
    assert load_collection(root).meta["split"] == "train"  # a single split needs no --split
    write_chinese_clip(root, "valid", collection)
    with pytest.raises(ValueError, match="choose one with --split"):
        load_collection(root)
    assert load_collection(root, "val").meta["split"] == "valid"
    assert load_collection(root / "train_texts.jsonl").meta["split"] == "train"

    whole = load_collection(toy_cultwin)
    assert whole.meta["layout"] == "cultwin" and len(whole.images) == 16
    test = load_collection(toy_cultwin.parent, "test")
    assert 0 < len(test.images) < 16 and test.meta["split"] == "test"
    with pytest.raises(ValueError, match="unknown split"):
        load_collection(toy_cultwin, "holdout")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CollectionFormatError, match="holds none of"):
        load_collection(tmp_path / "empty")


def test_decode_image_reports_the_reason(tmp_path: Path) -> None:
    with pytest.raises(ImageDecodeError, match="cannot decode image"):
        decode_image(b"bm90IGFuIGltYWdl")  # base64 of "not an image"
    truncated = tmp_path / "t.png"
    _save(truncated, (9, 9, 9))
    truncated.write_bytes(truncated.read_bytes()[:40])
    with pytest.raises(ImageDecodeError):
        decode_image(truncated)
