"""Protocol presets: the CultureCLIP authors' evaluator by default, ours as an option."""

from __future__ import annotations

from pathlib import Path

import pytest

from cultureclip.eval import create_benchmark, evaluate

from .layouts import ColourOracle


def test_globalrg_templates_follow_the_protocol(
    grounding_dir: Path, globalrg_retrieval_dir: Path
) -> None:
    for name, data in (
        ("globalrg-grounding", grounding_dir),
        ("globalrg-retrieval", globalrg_retrieval_dir),
    ):
        authors = create_benchmark(name, data)
        ours = create_benchmark(name, data, protocol="cultureclip")
        item = authors.load_items().items[0]
        assert not authors.option_texts(item)[0].endswith(".")
        assert ours.option_texts(item)[0] == authors.option_texts(item)[0] + "."
        custom = create_benchmark(name, data, templates={"recognition": "{option}"})
        assert custom.option_texts(item)[0] == item.options[0]


def test_crope_accuracy_pools_main_and_definition_images_by_default(tmp_path: Path) -> None:
    import datasets

    from .layouts import image_struct, write_plain_parquet

    # main images: 1 of 2 right; definition images: 4 of 4 right.
    rows = [
        {
            "id": "q0",
            "image": image_struct("red", "m0.jpg"),
            "concept": "blue hat",
            "target_concept": "red hat",
            "definition_images": [image_struct("blue", "d0.jpg"), image_struct("blue", "d1.jpg")],
            "answer": "no",
        },
        {
            "id": "q1",
            "image": image_struct("magenta", "m1.jpg"),
            "concept": "green fan",
            "target_concept": "yellow fan",
            "definition_images": [image_struct("green", "d2.jpg"), image_struct("green", "d3.jpg")],
            "answer": "no",
        },
    ]
    features = datasets.Features(
        {
            "id": datasets.Value("string"),
            "image": datasets.Image(),
            "concept": datasets.Value("string"),
            "target_concept": datasets.Value("string"),
            "definition_images": datasets.List(datasets.Image()),
            "answer": datasets.Value("string"),
        }
    )
    data = write_plain_parquet(tmp_path / "crope.parquet", rows, features)
    model = ColourOracle()
    pooled = evaluate(model, "crope", data=data)
    assert pooled.metrics["accuracy"] == pytest.approx(500 / 6)  # 5 of 6 images
    assert pooled.metrics["main_accuracy"] == pytest.approx(50.0)
    ours = evaluate(model, "crope", data=data, protocol="cultureclip")
    assert ours.metrics["accuracy"] == pytest.approx(50.0)
    assert ours.metrics["definition_accuracy"] == pytest.approx(100.0)


def test_every_eval_config_and_suite_file_validates() -> None:
    from cultureclip.core.config import read_config_file
    from cultureclip.eval.api import EvalConfig, load_suite, suite_names

    root = Path(__file__).resolve().parents[2] / "src" / "cultureclip" / "presets" / "eval"
    for path in sorted(root.glob("*.yaml")):
        cfg = EvalConfig.model_validate(read_config_file(path))
        create_benchmark(
            cfg.benchmark,
            "unused",
            **{**cfg.options, **({"columns": cfg.columns} if cfg.columns else {})},
        )
    for name in suite_names():
        for entry in load_suite(name).benchmarks:
            create_benchmark(entry.benchmark, entry.data, entry.split, **entry.options)
