"""Real releases as they are (issue 26): a multiple-choice release loaded by a column
mapping alone (image root, coerced and mapped values, content ids, reused ids, duplicate
rows, refused rows) and a hidden-label test split predicted, not refused.

The colour oracle (tests/eval/layouts.py) picks the option naming the image's colour."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from typer.testing import CliRunner

from cultureclip.cli.main import app

from .layouts import PALETTE, write_hub_layout

runner = CliRunner()
COMMAND = [
    "eval",
    "-b",
    "cultureverse",
    "-d",
    "data/annotations.jsonl",
    "--set",
    "options.columns.id=id_",
    "--set",
    "options.columns.image=image_path",
    "--set",
    "options.image_root=data/images",
]


def write_release(root: Path, extra: list[dict[str, Any]] = ()) -> None:
    """``data/annotations.jsonl`` in a release's own shape, images in ``data/images/``."""
    images = root / "data" / "images"
    images.mkdir(parents=True)
    for colour in ("red", "green", "blue"):
        Image.new("RGB", (16, 16), PALETTE[colour]).save(images / f"{colour}.png")
    rows = [
        # an integer question type; answer an int index: right
        {
            "id_": "q1",
            "question": "Which colour?",
            "options": ["red", "green", "blue", "cyan"],
            "answer": 0,
            "category": "Food",
            "question_type": 1,
            "image_path": "red.png",
        },
        # options as a JSON string, an integer category: right
        {
            "id_": "q2",
            "question": "Which one?",
            "options": '["cyan", "green", "red", "blue"]',
            "answer": 1,
            "category": 7,
            "question_type": 2,
            "image_path": "green.png",
        },
        # q1 reused for a different question; its answer names the wrong colour: wrong
        {
            "id_": "q1",
            "question": "Which dress?",
            "options": ["blue", "red", "green", "cyan"],
            "answer": 1,
            "category": "Clothing",
            "question_type": 2,
            "image_path": "blue.png",
        },
    ]
    rows.append(dict(rows[1]))  # an exact duplicate row
    lines = [json.dumps(row) for row in [*rows, *extra]]
    (root / "data" / "annotations.jsonl").write_text("\n".join(lines) + "\n")


def run_release(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *extra: str) -> Any:
    monkeypatch.chdir(tmp_path)
    args = [*COMMAND, "-m", "colour:oracle", "--model-name", "oracle", "-o", "out", *extra]
    return runner.invoke(app, args)


def stored(tmp_path: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    folder = tmp_path / "out" / "cultureverse" / "oracle"
    result = json.loads((folder / "result.json").read_text())
    lines = (folder / "predictions.jsonl").read_text().splitlines()
    return result, [json.loads(line) for line in lines]


def test_the_issue_command_scores_every_row_of_a_release(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_release(tmp_path)
    done = run_release(tmp_path, monkeypatch)
    assert done.exit_code == 0, done.output
    result, predictions = stored(tmp_path)
    assert result["n"] == 3 and result["n_skipped"] == 0
    assert result["metrics"]["accuracy"] == pytest.approx(200 / 3)
    assert result["counts"]["ids_suffixed"] == 1 and result["counts"]["duplicates_dropped"] == 1
    assert [p["id"] for p in predictions] == ["q1", "q2", "q1#2"]
    assert [p["prediction"] for p in predictions] == [0, 1, 0]
    # integers read as text: grouped as "1"/"2" and "7"
    assert set(result["per_group"]["question_type"]) == {"1", "2"}
    assert set(result["per_group"]["category"]) == {"Food", "7", "Clothing"}
    assert "ids suffixed: 1" in done.output and "duplicates dropped: 1" in done.output


def test_a_value_map_names_the_question_types(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_release(tmp_path)
    done = run_release(
        tmp_path,
        monkeypatch,
        "--set",
        "options.value_maps.question_type={1: recognition, 2: knowledge}",
    )
    assert done.exit_code == 0, done.output
    result, _ = stored(tmp_path)
    assert set(result["per_group"]["question_type"]) == {"recognition", "knowledge"}
    assert result["config"]["value_maps"] == {
        "question_type": {"1": "recognition", "2": "knowledge"}
    }


def test_unusable_rows_are_refused_one_line_each_and_the_rest_scored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bad = [
        {
            "id_": "far",
            "question": "?",
            "options": ["red", "blue"],
            "answer": 5,
            "image_path": "red.png",
        },
        {
            "id_": "same",
            "question": "?",
            "options": ["red", "red"],
            "answer": 0,
            "image_path": "red.png",
        },
        {
            "id_": "nolist",
            "question": "?",
            "options": "red or blue",
            "answer": 0,
            "image_path": "red.png",
        },
    ]
    write_release(tmp_path, bad)
    done = run_release(tmp_path, monkeypatch)
    assert done.exit_code == 0, done.output
    result, _ = stored(tmp_path)
    assert result["n"] == 3 and result["n_skipped"] == 3
    assert "3 malformed item(s) skipped" in done.output
    for item_id, line, reason in (
        ("far", 5, "answer index 5 outside 0..1"),
        ("same", 6, "options are not distinct"),
        ("nolist", 7, "not a JSON list"),
    ):
        (shown,) = [text for text in done.output.splitlines() if f"'{item_id}'" in text]
        assert f"(line {line})" in shown and reason in shown


def test_a_missing_id_column_gives_stable_content_ids(tmp_path: Path) -> None:
    from cultureclip.eval.items import read_items

    write_release(tmp_path)
    path = tmp_path / "data" / "annotations.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    for row in rows:
        row.pop("id_")
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    columns = {"image": "image_path"}
    first = read_items(path, columns, image_root=tmp_path / "data" / "images")
    rows.reverse()  # the same rows in another order keep their ids
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    again = read_items(path, columns, image_root=tmp_path / "data" / "images")
    assert len(first) == 3 and first.duplicates == 1 and first.suffixed == 0
    assert all(item.id.startswith("c-") for item in first)
    assert {item.id for item in first} == {item.id for item in again}
    assert first.load_image(first.items[0]).size == (16, 16)


# ---- hidden answers -------------------------------------------------------------------------
def test_a_cvqa_test_split_with_every_label_hidden_is_predicted(tmp_path: Path) -> None:
    from .test_released_layouts import cvqa_rows

    rows, features = cvqa_rows()
    for row in rows:
        row["Label"] = -1  # the public test split: "Label: will always be -1"
    # a fresh folder name: the datasets cache keys a local folder by its name, not its content
    hub = write_hub_layout(tmp_path / f"cvqa-{uuid.uuid4().hex}", rows, features)
    args = ["eval", "-m", "colour:oracle", "-b", "cvqa", "-d", str(hub), "-o", str(tmp_path / "o")]
    done = runner.invoke(app, [*args, "--model-name", "oracle"])
    assert done.exit_code == 0, done.output
    assert "answers hidden: 6 items, not scored" in done.output
    folder = tmp_path / "o" / "cvqa" / "oracle"
    result = json.loads((folder / "result.json").read_text())
    assert result["metrics"] == {} and result["n"] == 0 and result["counts"]["hidden"] == 6
    predictions = [
        json.loads(line) for line in (folder / "predictions.jsonl").read_text().splitlines()
    ]
    by_id = {p["id"]: p["prediction"] for p in predictions}
    # the option naming the image's colour; r1 names none (a tie: the first option)
    assert by_id == {"cvqa_0": 0, "cvqa_1": 0, "cvqa_2": 0, "cvqa_3": 1, "cvqa_4": 0, "cvqa_5": 2}
    assert all(p["answer"] is None and p["correct"] is None for p in predictions)
    from cultureclip.eval.report import build_report

    page = build_report([folder], tmp_path / "report", n_resamples=10).read_text()
    assert "oracle" in page


def test_a_mixed_split_scores_the_known_answers_and_predicts_all(tmp_path: Path) -> None:
    from cultureclip.eval import evaluate

    from .layouts import ColourOracle, write_plain_parquet
    from .test_released_layouts import cvqa_rows

    rows, features = cvqa_rows()
    rows[1]["Label"] = rows[4]["Label"] = -1
    data = write_plain_parquet(tmp_path / "cvqa.parquet", rows, features)
    result = evaluate(ColourOracle(), "cvqa", data=data, out_dir=tmp_path / "o", model_name="o")
    assert result.n == 4 and result.counts.hidden == 2
    assert result.metrics["accuracy"] == pytest.approx(100.0)
    predictions = result.predictions()
    assert len(predictions) == 6
    assert [p["correct"] for p in predictions].count(None) == 2


def test_a_chat_model_predicts_withheld_answers_too(tmp_path: Path) -> None:
    from cultureclip.eval import evaluate

    from .chat_server import chat_server
    from .test_generative import FAST

    images = tmp_path / "images"
    images.mkdir()
    Image.new("RGB", (8, 8), PALETTE["red"]).save(images / "red.png")
    rows = [
        {"id": "known", "image": "images/red.png", "options": ["a", "b"], "answer": 1},
        {"id": "hidden", "image": "images/red.png", "options": ["c", "d"], "answer": None},
        {"id": "absent", "image": "images/red.png", "options": ["e", "f"]},
    ]
    (tmp_path / "items.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with chat_server(lambda body, number: (200, "B")) as server:
        result = evaluate(
            f"openai:tiny-vlm@{server.url}",
            "cultureverse",
            data=tmp_path / "items.jsonl",
            out_dir=tmp_path / "out",
            model_name="vlm",
            generative=FAST,
        )
    assert result.n == 1 and result.metrics["accuracy"] == 100.0
    assert result.counts.hidden == 2 and result.counts.failed == 0
    predicted = {p["id"]: (p["prediction"], p["correct"]) for p in result.predictions()}
    assert predicted == {"known": (1, True), "hidden": (1, None), "absent": (1, None)}


def test_a_csv_release_reads_the_same_way(tmp_path: Path) -> None:
    from cultureclip.eval import evaluate

    from .layouts import ColourOracle

    write_release(tmp_path)
    rows = [
        json.loads(line)
        for line in (tmp_path / "data/annotations.jsonl").read_text().split("\n")
        if line
    ]
    header = ["id_", "question", "options", "answer", "category", "question_type", "image_path"]
    lines = [",".join(header)]
    for row in rows:
        options = row["options"] if isinstance(row["options"], str) else json.dumps(row["options"])
        cells = [str(row[key]) if key != "options" else options for key in header]
        lines.append(",".join('"' + cell.replace('"', '""') + '"' for cell in cells))
    data = tmp_path / "release.csv"
    data.write_text("\n".join(lines) + "\n")
    result = evaluate(
        ColourOracle(),
        "cultureverse",
        data=data,
        columns={"id": "id_", "image": "image_path"},
        image_root=str(tmp_path / "data" / "images"),
        value_maps={"question_type": {1: "recognition", 2: "knowledge"}},
    )
    assert result.n == 3 and result.metrics["accuracy"] == pytest.approx(200 / 3)
    assert (result.counts.ids_suffixed, result.counts.duplicates_dropped) == (1, 1)
    assert set(result.per_group["question_type"]) == {"recognition", "knowledge"}
