"""The CulTwin format: validation by line, JSONL ↔ Parquet, twin batches."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from cultureclip.data.cultwin import CulTwinFormatError, TwinRecord, read_cultwin, write_cultwin
from cultureclip.data.twin_dataset import TwinCollator, TwinDataset


def _record(i: int, **changes: object) -> dict[str, object]:
    record: dict[str, object] = {
        "id": f"r{i}",
        "country": "JP",
        "category": "Architecture",
        "pos_concept": "Japanese castle",
        "pos_context": "feudal-era fortresses with white walls",
        "pos_features": ["white walls", "layered curved roofs"],
        "pos_captions": ["a white castle with curved roofs"],
        "neg_concept": "European castle",
        "neg_context": "medieval stone fortress",
        "neg_features": "grey stone towers",
        "neg_captions": ["a grey stone castle"],
        "quality": {"pos": [5, 4, 5]},
        "source": "test",
    }
    record.update(changes)
    return record


@pytest.fixture
def malformed(tmp_path: Path) -> Path:
    missing_field = _record(3)
    del missing_field["neg_concept"]
    lines = [
        json.dumps(_record(1)),
        "{not json at all",
        json.dumps(missing_field),
        "",  # blank lines are skipped, not errors
        json.dumps(_record(1, pos_concept="same id again")),
        json.dumps(["a list", "not an object"]),
        json.dumps(_record(7)),
    ]
    path = tmp_path / "cultwin.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_malformed_file_reports_lines_and_keeps_good_records(malformed: Path) -> None:
    load = read_cultwin(malformed)
    assert [r.id for r in load.records] == ["r1", "r7"]
    errors = {bad.line: bad.error for bad in load.errors}
    assert set(errors) == {2, 3, 5, 6}
    assert "not valid JSON" in errors[2]
    assert "neg_concept" in errors[3] and "Field required" in errors[3]
    assert "duplicate id 'r1'" in errors[5]
    assert "expected an object" in errors[6]
    report = load.error_report()
    assert "line 2:" in report and "line 5:" in report
    # Features given as a list are stored as one string.
    assert load.records[0].pos_features == "white walls; layered curved roofs"


def test_strict_mode_raises_naming_the_lines(malformed: Path) -> None:
    with pytest.raises(CulTwinFormatError, match=r"4 bad record\(s\)") as info:
        read_cultwin(malformed, strict=True)
    assert "line 3:" in str(info.value)


def test_missing_images_are_flagged_when_asked(toy_cultwin: Path) -> None:
    (toy_cultwin.parent / "images" / "0002_neg.png").unlink()
    assert len(read_cultwin(toy_cultwin).records) == 8
    checked = read_cultwin(toy_cultwin, check_images=True)
    assert len(checked.records) == 7
    assert "0002_neg.png" in checked.errors[0].error and checked.errors[0].line == 3


def test_jsonl_parquet_round_trip(tmp_path: Path) -> None:
    records = [
        TwinRecord.model_validate(_record(i, pos_captions=[f"cap {i}", "第二个"])) for i in range(3)
    ]
    parquet = write_cultwin(tmp_path / "cultwin.parquet", records)
    from_parquet = read_cultwin(parquet)
    assert not from_parquet.errors
    jsonl = write_cultwin(tmp_path / "copy" / "cultwin.jsonl", from_parquet.records)
    from_jsonl = read_cultwin(jsonl)
    assert [r.model_dump() for r in from_jsonl.records] == [r.model_dump() for r in records]
    assert from_jsonl.records[0].quality == {"pos": [5, 4, 5]}
    # A directory resolves to the file inside it.
    assert len(read_cultwin(tmp_path)) == 3


def test_twin_dataset_and_collator_shapes(toy_cultwin: Path) -> None:
    def transform(images):
        return torch.stack([torch.zeros(3, 16, 16) + i for i, _ in enumerate(images)])

    def tokenize(texts):
        return {"input_ids": torch.tensor([[len(t), 1] for t in texts])}

    dataset = TwinDataset(read_cultwin(toy_cultwin), transform, seed=3)
    assert len(dataset) == 8
    batch = TwinCollator(tokenize)([dataset[i] for i in range(4)])
    assert batch.pos_images.shape == batch.neg_images.shape == (4, 3, 16, 16)
    for tokens in (batch.pos_captions, batch.neg_captions, batch.pos_concepts, batch.neg_concepts):
        assert tokens["input_ids"].shape == (4, 2)
    assert batch.ids == ["toy-0000", "toy-0001", "toy-0002", "toy-0003"]
    assert len(batch) == 4
    # Captions are drawn deterministically per (seed, epoch, id).
    again = TwinDataset(read_cultwin(toy_cultwin), transform, seed=3)
    assert [again[i]["pos_caption"] for i in range(8)] == [
        dataset[i]["pos_caption"] for i in range(8)
    ]


def test_an_invalid_utf8_byte_costs_one_record_not_the_file(toy_cultwin: Path) -> None:
    lines = toy_cultwin.read_bytes().splitlines(keepends=True)
    lines[2] = lines[2].replace(b'"pos_concept": "', b'"pos_concept": "\xff', 1)
    toy_cultwin.write_bytes(b"".join(lines))
    load = read_cultwin(toy_cultwin)
    assert len(load) == len(lines) - 1
    assert [e.line for e in load.errors] == [3]
    assert load.errors[0].error.startswith("not UTF-8 (byte ")


def test_one_detection_says_the_same_to_training_and_collections(toy_cultwin: Path) -> None:
    from cultureclip.core.errors import InputError
    from cultureclip.data.collections import detect_layout
    from cultureclip.data.cultwin import is_cultwin_path
    from cultureclip.train.config import DataSettings
    from cultureclip.train.data import detect_kind

    renamed = toy_cultwin.with_name("my_twins.jsonl")
    renamed.write_bytes(toy_cultwin.read_bytes())
    plain = toy_cultwin.with_name("pairs.jsonl")
    plain.write_text('{"image": "images/a.png", "text": "a castle"}\n')
    assert is_cultwin_path(renamed) and not is_cultwin_path(plain)
    assert detect_kind(DataSettings(path=str(renamed))) == "twin"
    assert detect_layout(renamed) == "cultwin"
    assert detect_kind(DataSettings(path=str(plain))) == "pairs"
    with pytest.raises(InputError, match="cannot tell the layout"):
        detect_layout(plain)
