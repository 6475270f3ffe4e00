from __future__ import annotations

from pathlib import Path

import pytest

from cultureclip.eval.items import MCQItem, read_items, resolve_answer, write_items


def test_answers_in_every_form_and_malformed_items(mcq_file: Path) -> None:
    items = read_items(mcq_file)
    assert len(items) == 18
    by_id = {item.id: item for item in items}
    assert by_id["r0"].answer == 0
    assert by_id["k0"].answer_text == "JP"  # given as option text
    assert by_id["s0"].answer == 1  # given as letter "B"
    assert [(bad.id, bad.line) for bad in items.errors] == [("bad-1", 19), (None, 20)]
    assert "answer index 5" in str(items.errors[0])


def test_continent_filled_from_country_unless_given(mcq_file: Path) -> None:
    from cultureclip.data.taxonomy import continent_of

    items = read_items(mcq_file)
    assert all(item.continent == continent_of(item.country) for item in items)
    kept = MCQItem(
        id="x", image="a.png", options=["a", "b"], answer=0, country="JP", continent="Somewhere"
    )
    assert kept.continent == "Somewhere"


def test_parquet_round_trip(mcq_file: Path, tmp_path: Path) -> None:
    items = read_items(mcq_file)
    path = write_items(tmp_path / "items.parquet", items.items)
    again = read_items(path)
    assert [i.model_dump() for i in again] == [i.model_dump() for i in items]


def test_resolve_answer() -> None:
    options = ["Kimono", "Hanbok", "A"]
    assert resolve_answer(1, options) == 1
    assert resolve_answer("hanbok", options) == 1
    assert resolve_answer("A", options) == 2  # an option text wins over a letter
    assert resolve_answer("b", options) == 1
    with pytest.raises(ValueError, match="neither"):
        resolve_answer("Qipao", options)
    with pytest.raises(ValueError):
        resolve_answer(True, options)


def test_an_invalid_utf8_byte_costs_one_item_named_by_line(tmp_path) -> None:
    from PIL import Image

    from cultureclip.eval.items import read_items

    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    good = '{"id": "%s", "image": "a.png", "options": ["x", "y"], "answer": 0}\n'
    data = (
        (good % "one").encode()
        + b'{"id": "two", "question": "caf\xe9"}\n'
        + (good % "three").encode()
    )
    (tmp_path / "items.jsonl").write_bytes(data)
    loaded = read_items(tmp_path / "items.jsonl")
    assert [item.id for item in loaded.items] == ["one", "three"]
    assert [bad.line for bad in loaded.errors] == [2]
    assert "not UTF-8" in loaded.errors[0].error
