from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from cultureclip.eval import read_items
from cultureclip.eval.builder import BuilderConfig, build_benchmark
from cultureclip.utils.io import read_jsonl
from tests.eval.chat_server import chat_server

CATEGORIES = ["Food", "Traditional Clothing", "Festivals"]


def _questions(name: str, n_options: int = 4) -> str:
    def q(kind: str) -> dict:
        options = [f"{name} {kind} {k}" for k in range(n_options)]
        return {
            "question": f"{kind} question about {name}?",
            "options": options,
            "answer": options[1],
            "reason": f"because of {name}",
        }

    return json.dumps({"recognition": q("rec"), "knowledge": q("know"), "scene": q("scene")})


def behaviour(body: dict, number: int) -> tuple:
    prompt = body["messages"][0]["content"]
    last = body["messages"][-1]["content"]
    if "list up to" in prompt:
        if len(body["messages"]) == 1:
            return 200, "Sure! Here are some concepts."  # not JSON: the builder must ask again
        concepts = [
            {
                "name": "Kimono",
                "category": "traditional clothing",
                "region_specific": True,
                "introduction": "A robe.",
            },
            {
                "name": "Sushi",
                "category": "Food",
                "region_specific": True,
                "introduction": "Rice and fish.",
            },
            {
                "name": "Bread",
                "category": "Food",
                "region_specific": False,
                "introduction": "Everywhere.",
            },
            {
                "name": "Rain",
                "category": "Weather",
                "region_specific": True,
                "introduction": "Not a category.",
            },
        ]
        return 200, "```json\n" + json.dumps({"concepts": concepts}) + "\n```"
    name = prompt.split("Concept: ", 1)[1].split(" (", 1)[0]
    if name == "Sushi" and "not valid" not in last:
        return 200, _questions(name, n_options=3)  # too few options: must be asked again
    return 200, _questions(name)


def test_builder_against_loopback_llm(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "Japan.txt").write_text("Kimono is a robe. Sushi is food. Bread is eaten everywhere.")
    images = tmp_path / "images"
    images.mkdir()
    Image.new("RGB", (32, 32), (200, 0, 0)).save(images / "japan-kimono.png")
    with chat_server(behaviour) as server:
        config = BuilderConfig(
            documents=str(docs),
            out=str(tmp_path / "out"),
            llm=f"llm@{server.url}",
            images=str(images),
            categories=CATEGORIES,
            max_retries=0,
        )
        counts = build_benchmark(config)
        requests_first = len(server.requests)
        again = build_benchmark(config)  # resumable: nothing is asked twice
        assert len(server.requests) == requests_first
    assert (
        counts
        == again
        == {"documents": 1, "concepts": 2, "questions": 6, "items": 3, "needs_image": 3}
    )
    items = read_items(tmp_path / "out" / "items.jsonl")
    assert not items.errors and len(items) == 3
    assert {i.question_type for i in items} == {"recognition", "knowledge", "scene"}
    assert all(
        i.answer == 1 and i.category == "Traditional Clothing" and i.country == "Japan"
        for i in items
    )
    with open(tmp_path / "out" / "review.csv") as handle:
        review = list(csv.DictReader(handle))
    assert len(review) == 6 and {r["answer"] for r in review} == {"B"}
    assert sum(r["status"].startswith("needs image") for r in review) == 3
    instruct = read_jsonl(tmp_path / "out" / "instruct.jsonl")
    assert len(instruct) == 3
    human, gpt = instruct[0]["conversations"]
    assert human["value"].startswith("<image>\n") and "A. " in human["value"]
    assert gpt["value"].startswith("B. Kimono rec 1") or gpt["value"].startswith("B. ")
    assert Path(instruct[0]["image"]).exists()
    assert (tmp_path / "out" / "config.yaml").exists()
