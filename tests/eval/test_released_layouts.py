"""Released layouts (issue 11): each built in miniature with the published column names and
embedded images, evaluated through the CLI as a plain parquet file and as a local folder
in the exact hub layout (``load_dataset(folder)``), with hand-computed accuracies.

The colour oracle (tests/eval/layouts.py) picks the option naming the image's colour;
no such option is a tie, and ties are wrong.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from cultureclip.cli.main import app

from .layouts import image_struct, jpeg, write_hub_layout, write_plain_parquet

runner = CliRunner()


def run_eval(benchmark: str, data: Path | str, out: Path, *extra: str) -> dict[str, Any]:
    args = ["eval", "-m", "colour:oracle", "-b", benchmark, "-d", str(data), "-o", str(out)]
    result = runner.invoke(app, [*args, "--model-name", "oracle", *extra])
    assert result.exit_code == 0, result.output
    files = sorted(out.rglob("result.json"), key=lambda p: p.stat().st_mtime)
    return json.loads(files[-1].read_text())


def both_layouts(tmp_path: Path, name: str, rows: list[dict[str, Any]], features: Any):
    plain = write_plain_parquet(tmp_path / f"{name}.parquet", rows, features)
    hub = write_hub_layout(tmp_path / f"{name}-hub", rows, features)
    return [plain, hub]


# ---- CVQA ------------------------------------------------------------------------------
def cvqa_rows() -> tuple[list[dict[str, Any]], Any]:
    import datasets

    # (colour, subset, local options, English options, label)
    # local:   r0 ok, r1 tie (no colour word), r2 ok, r3 ok, r4 wrong label, r5 ok -> 4/6
    # english: r0 ok, r1 ok, r2 ok, r3 ok, r4 wrong label, r5 ok -> 5/6
    spec = [
        ("red", "('Japanese', 'Japan')", ["red 着物", "blue 着物", "green", "cyan"], None, 0),
        (
            "green",
            "('Japanese', 'Japan')",
            ["着物", "浴衣", "羽織", "袴"],
            ["red", "green", "blue", "cyan"],
            1,
        ),
        ("blue", "('Japanese', 'Japan')", ["blue", "red", "green", "yellow"], None, 0),
        ("yellow", "('Korean', 'South Korea')", ["한복", "yellow 한복", "red", "blue"], None, 1),
        ("cyan", "('Korean', 'South Korea')", ["cyan", "red", "blue", "green"], None, 2),
        ("magenta", "('Korean', 'South Korea')", ["떡", "김치", "magenta 떡", "불고기"], None, 2),
    ]
    rows = []
    for i, (colour, subset, local, english, label) in enumerate(spec):
        rows.append(
            {
                "image": image_struct(colour, f"{i}.jpg"),
                "ID": f"cvqa_{i}",
                "Subset": subset,
                "Question": "これは何ですか?",
                "Translated Question": "What is this?",
                "Options": local,
                "Translated Options": english or local,
                "Label": label,
                "Category": "Clothing" if i < 4 else "Food",
                "Image Type": "Self",
                "Image Source": "Self-open",
                "License": "CC BY-SA",
            }
        )
    features = datasets.Features(
        {
            "image": datasets.Image(),
            "ID": datasets.Value("string"),
            "Subset": datasets.Value("string"),
            "Question": datasets.Value("string"),
            "Translated Question": datasets.Value("string"),
            "Options": datasets.List(datasets.Value("string")),
            "Translated Options": datasets.List(datasets.Value("string")),
            "Label": datasets.Value("int64"),
            "Category": datasets.Value("string"),
            "Image Type": datasets.Value("string"),
            "Image Source": datasets.Value("string"),
            "License": datasets.Value("string"),
        }
    )
    return rows, features


def test_cvqa_both_settings_by_path_and_hub_layout(tmp_path: Path) -> None:
    rows, features = cvqa_rows()
    for index, data in enumerate(both_layouts(tmp_path, "cvqa", rows, features)):
        out = tmp_path / f"out{index}"
        local = run_eval("cvqa", data, out)
        assert local["n"] == 6 and local["metrics"]["accuracy"] == pytest.approx(400 / 6)
        assert local["per_group"]["country"]["JP"]["accuracy"] == pytest.approx(200 / 3)
        assert set(local["per_group"]["language"]) == {"Japanese", "Korean"}
        assert local["per_group"]["continent"]["Asia"]["n"] == 6
        english = run_eval(
            "cvqa", data, out, "--set", "options.language=english", "--set", "label=cvqa-en"
        )
        assert english["metrics"]["accuracy"] == pytest.approx(500 / 6)


def test_hub_layout_keeps_the_original_jpeg_bytes(tmp_path: Path) -> None:
    from cultureclip.eval.source import read_rows

    rows, features = cvqa_rows()
    hub = write_hub_layout(tmp_path / "hub", rows, features)
    loaded, _ = read_rows(hub, "test")
    assert loaded[0]["image"] == jpeg("red")  # not decoded, not re-encoded as PNG
    assert loaded[0]["image"][:2] == b"\xff\xd8"


# ---- GlobalRG ----------------------------------------------------------------------------
def test_globalrg_retrieval_released_layout(tmp_path: Path) -> None:
    import datasets

    regions = ["Red Coast", "Green Valley", "Blue Bay", "Yellow Plains", "Cyan Isles"]
    rows = []
    for r, region in enumerate(regions):
        for u, universal in enumerate(["wedding", "breakfast"]):
            # the oracle sees magenta for two images: no option names it -> tie -> wrong
            colour = "magenta" if (r, u) in {(0, 1), (3, 0)} else region.split()[0].lower()
            rows.append(
                {
                    "image": image_struct(colour, f"{r}{u}.jpg"),
                    "region": region,
                    "universal": universal,
                }
            )
    features = datasets.Features(
        {
            "image": datasets.Image(),
            "region": datasets.Value("string"),
            "universal": datasets.Value("string"),
        }
    )
    for index, data in enumerate(both_layouts(tmp_path, "grr", rows, features)):
        result = run_eval("globalrg-retrieval", data, tmp_path / f"out{index}")
        assert result["n"] == 10 and result["metrics"]["accuracy"] == pytest.approx(80.0)


def test_globalrg_grounding_released_layout(tmp_path: Path) -> None:
    import datasets

    concepts = {
        "India": ["red sari", "green chutney", "blue pottery", "yellow turmeric", "cyan tiles"],
        "Japan": ["red torii", "green tea", "blue indigo", "yellow yuzu"],
        "Peru": ["red poncho", "green quinoa"],  # fewer than 4 concepts: left out
    }
    rows = []
    for region, names in concepts.items():
        for c, concept in enumerate(names):
            colour = (
                "magenta" if (region, c) in {("India", 1), ("Japan", 3)} else concept.split()[0]
            )
            rows.append(
                {
                    "image": image_struct(colour, f"{region}{c}.jpg"),
                    "region": region,
                    "concept": concept,
                }
            )
    features = datasets.Features(
        {
            "image": datasets.Image(),
            "region": datasets.Value("string"),
            "concept": datasets.Value("string"),
        }
    )
    for index, data in enumerate(both_layouts(tmp_path, "grg", rows, features)):
        result = run_eval("globalrg-grounding", data, tmp_path / f"out{index}")
        assert result["n"] == 9 and result["metrics"]["accuracy"] == pytest.approx(700 / 9)


# ---- CROPE -------------------------------------------------------------------------------
def test_crope_with_embedded_definition_images(tmp_path: Path) -> None:
    import datasets

    # 3 "no" items: main image shows the target; 2 definition images show the asked concept.
    # item 0: all right; item 1: main image magenta (tie -> wrong); item 2: one definition
    # image magenta. main 2/3, definition 5/6, both 1/3; pooled (authors' accuracy) 7/9.
    spec = [
        ("red hat", "blue hat", "red", ["blue", "blue"]),
        ("green fan", "yellow fan", "magenta", ["yellow", "yellow"]),
        ("cyan cup", "red cup", "cyan", ["red", "magenta"]),
    ]
    rows = [
        {
            "id": f"q{i}",
            "image": image_struct(main, f"m{i}.jpg"),
            "concept": asked,
            "target_concept": target,
            "definition_images": [image_struct(c, f"d{i}{k}.jpg") for k, c in enumerate(defs)],
            "answer": "no",
            "country": "JP",
        }
        for i, (target, asked, main, defs) in enumerate(spec)
    ]
    rows.append({**rows[0], "id": "yes-item", "answer": "yes"})
    features = datasets.Features(
        {
            "id": datasets.Value("string"),
            "image": datasets.Image(),
            "concept": datasets.Value("string"),
            "target_concept": datasets.Value("string"),
            "definition_images": datasets.List(datasets.Image()),
            "answer": datasets.Value("string"),
            "country": datasets.Value("string"),
        }
    )
    for index, data in enumerate(both_layouts(tmp_path, "crope", rows, features)):
        result = run_eval("crope", data, tmp_path / f"out{index}")
        metrics = result["metrics"]
        assert metrics["main_accuracy"] == pytest.approx(200 / 3)
        assert metrics["accuracy"] == pytest.approx(700 / 9)  # authors: 7 of 9 images pooled
        assert metrics["definition_accuracy"] == pytest.approx(500 / 6)
        assert metrics["both_accuracy"] == pytest.approx(100 / 3)


# ---- any MCQ set, with a column mapping ------------------------------------------------
def test_any_mcq_set_with_column_mapping(tmp_path: Path) -> None:
    import datasets

    # r0 ok, r1 ok, r2 wrong (label points at red, image is blue), r3 ok -> 75.0
    spec = [
        ("red", ["red", "blue"], 0),
        ("green", ["blue", "green"], 1),
        ("blue", ["red", "blue"], 0),
        ("yellow", ["yellow", "cyan"], 0),
    ]
    rows = [
        {
            "uid": f"m{i}",
            "picture": image_struct(c, f"{i}.jpg"),
            "choices": o,
            "Label": a,
            "nation": "KR",
        }
        for i, (c, o, a) in enumerate(spec)
    ]
    features = datasets.Features(
        {
            "uid": datasets.Value("string"),
            "picture": datasets.Image(),
            "choices": datasets.List(datasets.Value("string")),
            "Label": datasets.Value("int64"),
            "nation": datasets.Value("string"),
        }
    )
    mapping = [
        "--set", "columns.id=uid", "--set", "columns.image=picture",
        "--set", "columns.options=choices", "--set", "columns.answer=Label",
        "--set", "columns.country=nation",
    ]  # fmt: skip
    for index, data in enumerate(both_layouts(tmp_path, "mcq", rows, features)):
        result = run_eval("cultureverse", data, tmp_path / f"out{index}", *mapping)
        assert result["n"] == 4 and result["metrics"]["accuracy"] == pytest.approx(75.0)
        assert result["per_group"]["country"]["KR"]["n"] == 4

    # the same items as JSONL with data: URLs, and with paths beside the file
    lines = []
    for i, (colour, options, answer) in enumerate(spec):
        url = "data:image/jpeg;base64," + base64.b64encode(jpeg(colour)).decode()
        if i % 2:
            (tmp_path / f"img{i}.jpg").write_bytes(jpeg(colour))
            url = f"img{i}.jpg"
        lines.append(
            json.dumps({"id": f"m{i}", "image": url, "options": options, "answer": answer})
        )
    (tmp_path / "set.jsonl").write_text("\n".join(lines) + "\n")
    result = run_eval("cultureverse", tmp_path / "set.jsonl", tmp_path / "out-jsonl")
    assert result["metrics"]["accuracy"] == pytest.approx(75.0)


# ---- errors a user can act on, before the model loads ------------------------------------
def test_data_errors_are_one_line_and_come_first(tmp_path: Path, monkeypatch) -> None:
    import cultureclip.eval.api as api

    def no_model(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the model must not load before the data is validated")

    monkeypatch.setattr(api, "resolve_model", no_model)
    bad = tmp_path / "blank.jsonl"
    bad.write_text(
        json.dumps({"id": "a", "image": "x.jpg", "options": ["kimono", " "], "answer": 0}) + "\n"
    )
    args = ["eval", "-m", "colour:oracle", "-b", "cultureverse", "-o", str(tmp_path / "o")]
    blank = runner.invoke(app, [*args, "-d", str(bad)])
    assert blank.exit_code == 2 and "blank" in blank.output
    assert "Traceback" not in blank.output

    typo = runner.invoke(app, [*args, "-d", str(tmp_path / "no_such" / "items.jsonl")])
    assert typo.exit_code == 2 and "not found" in typo.output and "hub" in typo.output

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    offline = runner.invoke(app, [*args, "-d", "nobody-here/no-such-dataset-xyz"])
    assert offline.exit_code == 2, offline.output
    assert "cannot load hub dataset 'nobody-here/no-such-dataset-xyz'" in offline.output
    assert "Traceback" not in offline.output


def test_eval_help_shows_defaults() -> None:
    shown = runner.invoke(app, ["eval", "--help"], env={"COLUMNS": "200", "TERM": "dumb"})
    assert shown.exit_code == 0
    assert "runs/eval" in shown.output


def test_plain_progress_lines_when_stderr_is_not_a_terminal(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("CULTURECLIP_PROGRESS_INTERVAL", "0")
    lines = [
        json.dumps({"id": f"m{i}", "image": f"i{i}.jpg", "options": ["red", "blue"], "answer": 0})
        for i in range(3)
    ]
    for i in range(3):
        (tmp_path / f"i{i}.jpg").write_bytes(jpeg("red"))
    (tmp_path / "items.jsonl").write_text("\n".join(lines) + "\n")
    args = [
        "eval",
        "-m",
        "colour:oracle",
        "-b",
        "cultureverse",
        "-d",
        str(tmp_path / "items.jsonl"),
    ]
    result = runner.invoke(app, [*args, "-o", str(tmp_path / "o"), "--set", "options.batch_size=1"])
    assert result.exit_code == 0, result.output
    for done in (1, 2, 3):
        assert f"cultureverse: images: {done}/3" in result.output


def test_globalrg_retrieval_precision_and_diversity(tmp_path: Path) -> None:
    import math

    import datasets

    # universals named by colour so the oracle can rank: each query finds its 3 images first
    rows = [
        {"image": image_struct(u, f"{r}{u}.jpg"), "region": region, "universal": u}
        for r, region in enumerate(["Kenya", "Peru", "Japan"])
        for u in ("red", "blue")
    ]
    features = datasets.Features(
        {
            "image": datasets.Image(),
            "region": datasets.Value("string"),
            "universal": datasets.Value("string"),
        }
    )
    data = write_plain_parquet(tmp_path / "grr.parquet", rows, features)
    result = run_eval(
        "globalrg-retrieval",
        data,
        tmp_path / "out",
        "--set",
        "options.n_options=3",
        "--set",
        "options.retrieval_ks=[3, 6]",
        "--set",
        "options.query_template='{universal}'",
    )
    metrics = result["metrics"]
    assert metrics["precision@3"] == pytest.approx(100.0)
    assert metrics["diversity@3"] == pytest.approx(100.0)  # 3 regions in the top 3
    assert metrics["precision@6"] == pytest.approx(50.0)
    assert metrics["diversity@6"] == pytest.approx(100.0 * math.log(3) / math.log(6))


def test_unknown_benchmark_option_is_one_line(tmp_path: Path) -> None:
    args = ["eval", "-m", "colour:oracle", "-b", "cvqa", "-d", str(tmp_path)]
    bad = runner.invoke(app, [*args, "--set", "options.no_such_option=1"])
    assert bad.exit_code == 2 and "no_such_option" in bad.output
    assert "Traceback" not in bad.output


def test_globalrg_grounding_scores_box_crops_when_boxes_exist(tmp_path: Path) -> None:
    import io

    import datasets
    from PIL import Image

    from .layouts import PALETTE

    image = Image.new("RGB", (40, 20), PALETTE["red"])
    image.paste(Image.new("RGB", (20, 20), PALETTE["blue"]), (20, 0))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    split = {"bytes": buffer.getvalue(), "path": "split.png"}
    right = [20.0, 0.0, 20.0, 20.0]  # xywh: the blue half
    # whole image reads red, the right-half crop blue:
    # boxes on: r0 ok (red), r1 ok (blue crop), r2 wrong, r3 wrong -> 50; boxes off: 25
    rows = [
        {"image": split, "region": "Peru", "concept": "red a", "bbox": None},
        {"image": split, "region": "Peru", "concept": "blue b", "bbox": right},
        {"image": split, "region": "Peru", "concept": "green c", "bbox": right},
        {"image": split, "region": "Peru", "concept": "yellow d", "bbox": None},
    ]
    features = datasets.Features(
        {
            "image": datasets.Image(),
            "region": datasets.Value("string"),
            "concept": datasets.Value("string"),
            "bbox": datasets.List(datasets.Value("float32")),
        }
    )
    data = write_plain_parquet(tmp_path / "grounding.parquet", rows, features)
    boxed = run_eval("globalrg-grounding", data, tmp_path / "a", "--set", "options.use_boxes=true")
    assert boxed["metrics"]["accuracy"] == pytest.approx(50.0)
    whole = run_eval("globalrg-grounding", data, tmp_path / "b")
    assert whole["metrics"]["accuracy"] == pytest.approx(25.0)


def test_several_models_on_one_benchmark(tmp_path: Path) -> None:
    lines = [
        json.dumps({"id": "a", "image": "a.jpg", "options": ["blue", "green"], "answer": 0}),
    ]
    (tmp_path / "a.jpg").write_bytes(jpeg("blue"))
    (tmp_path / "items.jsonl").write_text("\n".join(lines) + "\n")
    args = ["eval", "-m", "colour:oracle", "-m", "colour:weak", "-b", "cultureverse"]
    result = runner.invoke(app, [*args, "-d", str(tmp_path / "items.jsonl"), "-o", str(tmp_path)])
    assert result.exit_code == 0, result.output
    oracle = json.loads((tmp_path / "cultureverse" / "colour_oracle" / "result.json").read_text())
    weak = json.loads((tmp_path / "cultureverse" / "colour_weak" / "result.json").read_text())
    assert oracle["metrics"]["accuracy"] == 100.0 and weak["metrics"]["accuracy"] == 0.0
