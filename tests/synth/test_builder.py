from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from cultureclip.core.io import read_jsonl
from cultureclip.core.llm import FEEDBACK_PREFIX
from cultureclip.eval import read_items
from cultureclip.synth.builder import BuilderConfig, build_benchmark
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
    prompt = next(m["content"] for m in body["messages"] if m["role"] == "user")
    last = body["messages"][-1]["content"]
    if "list up to" in prompt:
        if not any(m["role"] == "assistant" for m in body["messages"]):
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
    if name == "Sushi" and FEEDBACK_PREFIX not in last:
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
            max_retries=0,  # an old top-level key: still sets llm.max_retries
        )
        assert config.llm.max_retries == 0 and config.llm.model == "llm"
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


def _japan(tmp_path: Path) -> Path:
    docs = tmp_path / "docs"
    docs.mkdir(exist_ok=True)
    (docs / "Japan.txt").write_text("Kimono is a robe. Sushi is food. Bread is eaten everywhere.")
    return docs


def test_builder_keys_decide_what_is_asked_again(tmp_path: Path, caplog) -> None:
    """An unchanged rerun asks nothing (and says what it reused); a changed --llm or prompt
    asks again everything it decides; a changed language only the questions."""
    import logging

    from cultureclip.synth.builder import _categories

    docs = _japan(tmp_path)
    with chat_server(behaviour) as server:

        def build(llm: str = "llm", **kw) -> int:
            before = len(server.requests)
            config = BuilderConfig(
                documents=str(docs), out=str(tmp_path / "out"), llm=f"{llm}@{server.url}",
                **{"categories": CATEGORIES, **kw},
            )  # fmt: skip
            build_benchmark(config)
            return len(server.requests) - before

        first = build()
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="cultureclip.synth.builder"):
            assert build() == 0
        assert "concepts: 1 reused, 0 to ask" in caplog.text
        assert "questions: 2 reused, 0 to ask" in caplog.text
        assert build(llm="other-llm") == first  # another model: everything again
        # the two concepts' questions (Sushi's first answer is rejected), not the document
        assert build(language="fr") == 3
        # categories decide the concepts: the document is asked again (twice: the stub's
        # first answer is prose); Sushi's questions were written for the same concept
        assert build(categories=["Food"]) == 2
        prompt = tmp_path / "concepts-v2.yaml"
        from importlib import resources

        text = resources.files("cultureclip.eval").joinpath("prompts", "build-concepts.yaml")
        prompt.write_text(text.read_text().replace("version: 1", "version: 2"))
        assert build(concepts_prompt=str(prompt)) == 2  # a new prompt version asks again
    assert _categories(BuilderConfig(documents="d", llm="m")) and CATEGORIES


def test_builder_records_failed_answers_and_rerun_asks_only_those(tmp_path: Path) -> None:
    from cultureclip.core.llm import LLMError

    docs = _japan(tmp_path)

    def no_sushi(body: dict, number: int) -> tuple:
        prompt = next(m["content"] for m in body["messages"] if m["role"] == "user")
        if "Concept: Sushi" in prompt:
            return 200, "I would rather not."
        return behaviour(body, number)

    config = {"documents": str(docs), "out": str(tmp_path / "out"), "categories": CATEGORIES}
    with chat_server(no_sushi) as server:
        try:
            build_benchmark(BuilderConfig(llm=f"llm@{server.url}", **config))
            raise AssertionError("failed answers must be reported")
        except LLMError as exc:
            assert "1 answer(s) failed" in str(exc)
    failures = read_jsonl(tmp_path / "out" / "work" / "failures.jsonl")
    assert failures and failures[-1]["raw"] == ["I would rather not."] * 3
    with chat_server(behaviour) as healthy:
        counts = build_benchmark(BuilderConfig(llm=f"llm@{healthy.url}", **config))
        # only the failed concept's questions (asked twice: the stub's first has 3 options)
        assert len(healthy.requests) == 2
    assert counts["questions"] == 6


def test_builder_keeps_the_valid_questions_of_a_partly_valid_answer(tmp_path: Path) -> None:
    def partly(body: dict, number: int) -> tuple:
        prompt = next(m["content"] for m in body["messages"] if m["role"] == "user")
        if "list up to" in prompt:
            kimono = {
                "name": "Kimono",
                "category": "Traditional Clothing",
                "introduction": "A robe.",
            }
            return 200, json.dumps({"concepts": [kimono, {"name": "", "category": "Food"}]})
        answer = json.loads(_questions("Kimono"))
        if FEEDBACK_PREFIX not in body["messages"][-1]["content"]:
            answer["scene"]["options"] = answer["scene"]["options"][:3]  # the one bad question
        else:
            answer["recognition"]["question"] = "A different recognition question?"
        return 200, json.dumps(answer)

    with chat_server(partly) as server:
        config = BuilderConfig(
            documents=str(_japan(tmp_path)), out=str(tmp_path / "out"), llm=f"llm@{server.url}",
            categories=CATEGORIES,
        )  # fmt: skip
        counts = build_benchmark(config)
    assert counts["concepts"] == 1 and counts["questions"] == 3
    (stored,) = read_jsonl(tmp_path / "out" / "work" / "questions.jsonl")
    # The valid recognition question of the first answer is kept; only the scene was re-asked.
    assert stored["recognition"]["question"] == "rec question about Kimono?"
    assert len(stored["scene"]["options"]) == 4
    ledger = {r["stage"]: r for r in read_jsonl(tmp_path / "out" / "work" / "failures.jsonl")}
    (dropped_question,) = ledger["questions"]["dropped"]
    assert "scene" in dropped_question["item"] and "at least 4" in dropped_question["reason"]
    # The nameless concept, asked again for each attempt, and why; Kimono repeats are dropped.
    reasons = {(d["item"]["name"], d["reason"]) for d in ledger["concepts"]["dropped"]}
    assert reasons == {
        ("", "name: String should have at least 1 character"),
        ("Kimono", "repeats an earlier one"),
    }
