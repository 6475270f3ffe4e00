"""Fixture data for the eval tests: small files in each benchmark's released layout."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

torch.set_num_threads(1)

COUNTRIES = ["JP", "IN", "NG", "FR", "BR", "EG"]
COLOURS = [
    (200, 30, 30),
    (30, 200, 30),
    (30, 30, 200),
    (200, 200, 30),
    (30, 200, 200),
    (200, 30, 200),
]


def write_image(path: Path, colour: tuple[int, int, int], size: int = 32) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (size, size), colour).save(path)
    return path.name


@pytest.fixture
def mcq_file(tmp_path: Path) -> Path:
    """A CultureVerse-style items file: 3 question types, answers as index, text and letter."""
    root = tmp_path / "cultureverse"
    lines = []
    for i, country in enumerate(COUNTRIES):
        image = f"images/{i}.png"
        write_image(root / image, COLOURS[i])
        options = [
            f"concept {i}",
            f"concept {(i + 1) % 6}",
            f"concept {(i + 2) % 6}",
            f"concept {(i + 3) % 6}",
        ]
        lines.append(
            {
                "id": f"r{i}",
                "image": image,
                "question": "What is shown?",
                "options": options,
                "answer": 0,
                "country": country,
                "category": "Food",
                "question_type": "recognition",
            }
        )
        lines.append(
            {
                "id": f"k{i}",
                "image": image,
                "question": f"Where is concept {i} from?",
                "options": COUNTRIES[:4] if country in COUNTRIES[:4] else [*COUNTRIES[:3], country],
                "answer": country,
                "country": country,
                "category": "Food",
                "question_type": "knowledge",
            }
        )
        lines.append(
            {
                "id": f"s{i}",
                "image": image,
                "question": "When is it eaten?",
                "options": ["breakfast", "lunch", "dinner", "never"],
                "answer": "B",
                "country": country,
                "category": "Festivals",
                "question_type": "scene",
            }
        )
    text = "".join(json.dumps(line) + "\n" for line in lines)
    text += (
        json.dumps({"id": "bad-1", "image": "images/0.png", "options": ["a", "b"], "answer": 5})
        + "\n"
    )
    text += "{not json\n"
    (root / "items.jsonl").write_text(text)
    return root / "items.jsonl"


@pytest.fixture
def grounding_dir(tmp_path: Path) -> Path:
    """GlobalRG grounding layout: a JSON list of {image, concept, region} beside the images."""
    root = tmp_path / "globalrg_grounding"
    regions = {"India": 5, "Japan": 4, "Peru": 2}  # Peru has too few concepts: dropped
    records = []
    for r, (region, count) in enumerate(regions.items()):
        for c in range(count):
            name = write_image(root / "images" / f"{region}_{c}.png", COLOURS[(r + c) % 6])
            records.append(
                {"image": f"images/{name}", "concept": f"{region} thing {c}", "region": region}
            )
    (root / "grounding.json").write_text(json.dumps(records))
    return root


@pytest.fixture
def globalrg_retrieval_dir(tmp_path: Path) -> Path:
    """GlobalRG retrieval layout: JSONL of {image, universal, country}."""
    root = tmp_path / "globalrg_retrieval"
    lines = []
    for r, region in enumerate(["India", "Japan", "Nigeria", "France", "Brazil"]):
        for u, universal in enumerate(["wedding", "breakfast"]):
            name = write_image(root / f"{region}_{universal}.png", COLOURS[(r + u) % 6])
            lines.append(
                json.dumps(
                    {
                        "id": f"{region}-{universal}",
                        "image": name,
                        "universal": universal,
                        "country": region,
                    }
                )
            )
    (root / "retrieval.jsonl").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture
def crope_dir(tmp_path: Path) -> Path:
    """CROPE-style records: only 'no' items are scored (main image + definition images)."""
    root = tmp_path / "crope"
    records = []
    for i in range(4):
        main = write_image(root / f"main_{i}.png", COLOURS[i])
        defs = [write_image(root / f"def_{i}_{k}.png", COLOURS[(i + 3) % 6]) for k in range(2)]
        records.append(
            {
                "id": f"q{i}",
                "image": main,
                "concept": f"asked {i}",
                "target_concept": f"shown {i}",
                "definition_images": defs,
                "answer": "no",
                "country": COUNTRIES[i],
            }
        )
    records.append(
        {
            "id": "yes-item",
            "image": "main_0.png",
            "concept": "shown 0",
            "target_concept": "shown 0",
            "definition_images": ["def_0_0.png"],
            "answer": "yes",
            "country": "JP",
        }
    )
    (root / "crope.json").write_text(json.dumps({"data": records}))
    return root


@pytest.fixture
def zeroshot_dir(tmp_path: Path) -> Path:
    """An image folder: one sub-folder per class."""
    root = tmp_path / "zeroshot"
    for c, name in enumerate(["red_square", "green_square", "blue_square"]):
        for k in range(2):
            write_image(root / name / f"{k}.png", tuple(max(0, v - 40 * k) for v in COLOURS[c]))
    return root


@pytest.fixture
def chinese_clip_dir(tmp_path: Path) -> Path:
    """Chinese-CLIP/CulTi layout: test_imgs.tsv (id TAB base64) + test_texts.jsonl."""
    import base64
    import io

    root = tmp_path / "culti"
    root.mkdir()
    rows = []
    for i in range(4):
        buffer = io.BytesIO()
        Image.new("RGB", (32, 32), COLOURS[i]).save(buffer, format="PNG")
        rows.append(f"{i + 1}\t{base64.b64encode(buffer.getvalue()).decode()}")
    (root / "test_imgs.tsv").write_text("\n".join(rows) + "\n")
    texts = [
        {"text_id": 1, "text": "红色图案", "image_ids": [1, 2]},
        {"text_id": 2, "text": "蓝色丝绸", "image_ids": [3]},
        {"text_id": 3, "text": "敦煌壁画", "image_ids": [4]},
    ]
    (root / "test_texts.jsonl").write_text(
        "".join(json.dumps(t, ensure_ascii=False) + "\n" for t in texts)
    )
    return root


@pytest.fixture
def cvqa_file(tmp_path: Path) -> Path:
    """CVQA as released (one parquet, images as the datasets.Image {bytes, path} struct)."""
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = []
    for i, country in enumerate(["Japan", "Japan", "South Korea", "Nigeria"]):
        buffer = io.BytesIO()
        Image.new("RGB", (32, 32), COLOURS[i]).save(buffer, format="JPEG")
        rows.append(
            {
                "image": {"bytes": buffer.getvalue(), "path": f"{i}.jpg"},
                "ID": f"c{i}",
                "Subset": f"('Lang{i % 2}', '{country}')",
                "Question": "What is this?",
                "Translated Question": "What is this?",
                "Options": [f"thing {i}", f"thing {i + 1}", f"thing {i + 2}", f"thing {i + 3}"],
                "Translated Options": [f"a {i}", f"b {i}", f"c {i}", f"d {i}"],
                "Label": i % 4,
                "Category": "Food",
            }
        )
    path = tmp_path / "cvqa" / "test.parquet"
    path.parent.mkdir()
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


@pytest.fixture
def openended_file(tmp_path: Path) -> Path:
    """Four open-ended questions with reference answers (the ``openended`` benchmark)."""
    from tests.helpers import write_open_items

    return write_open_items(tmp_path / "openended")


@pytest.fixture
def benchmark_data(
    request: pytest.FixtureRequest,
    mcq_file: Path,
    openended_file: Path,
    grounding_dir: Path,
    globalrg_retrieval_dir: Path,
    crope_dir: Path,
    zeroshot_dir: Path,
    chinese_clip_dir: Path,
    toy_cultwin: Path,
    cvqa_file: Path,
) -> dict[str, tuple[Path, dict]]:
    """Data path and expected unit count of every shipped benchmark spec."""
    return {
        "cultureverse": (mcq_file, {"n": 18}),
        "globalrg-grounding": (grounding_dir, {"n": 9}),
        "globalrg-retrieval": (globalrg_retrieval_dir, {"n": 10}),
        "crope": (crope_dir, {"n": 12}),
        "zeroshot": (zeroshot_dir, {"n": 6}),
        "retrieval": (chinese_clip_dir, {"n": 3}),
        "twins": (toy_cultwin, {"n": 16}),
        "cvqa": (cvqa_file, {"n": 4}),
        "cvqa-en": (cvqa_file, {"n": 4}),
        "openended": (openended_file, {"n": 4}),
    }
