"""Benchmark builder (the CultureVerse pipeline): documents → concepts → multiple-choice items.

For each text document about a country (``<country>.txt`` / ``.md``; the file stem names
the country), an LLM behind an OpenAI-compatible API:

1. extracts **region-specific concepts** in the CultureVerse categories, each with a short
   introduction (concepts the LLM marks as not region-specific, or in an unknown
   category, are dropped);
2. writes one **recognition**, one **cultural knowledge** and one **scene** question per
   concept, each with 4 options, the answer and a reason.

Every reply is validated with pydantic and asked again with the error when it does not
fit (:meth:`ChatClient.complete_json`). Work is resumable: finished documents and
concepts are appended to ``concepts.jsonl`` / ``questions.jsonl`` and skipped on rerun.

Outputs in ``out``: ``items.jsonl`` (the MCQ item format, for concepts that have an
image in ``images/`` named by the concept's slug, e.g. ``images/jp-kimono.jpg``),
``review.csv`` (every question, for human review, with a ``status`` column saying what
is missing), and ``instruct.jsonl`` (LLaVA-style chat records with the image, for
fine-tuning generative VLMs; see :func:`export_instruction_data`).
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, field_validator, model_validator

from cultureclip.config import Config
from cultureclip.core.errors import InputError, MissingInputError
from cultureclip.eval.items import (
    LETTERS,
    ItemSet,
    MCQItem,
    read_items,
    resolve_answer,
    write_items,
)
from cultureclip.eval.openai_client import ChatClient
from cultureclip.utils.io import (
    append_jsonl,
    atomic_write_text,
    read_jsonl,
    stable_hash,
    write_jsonl,
)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")
DOCUMENT_SUFFIXES = (".txt", ".md")


class BuilderConfig(Config):
    """Settings of ``cultureclip eval build``."""

    documents: str
    out: str = "runs/benchmark"
    #: the LLM as ``<model>@<base_url>`` (``@<base_url>`` optional: ``$OPENAI_BASE_URL``)
    llm: str
    images: str | None = None  # default: <out>/images
    categories: list[str] | None = None  # default: the 15 CultureVerse categories
    max_concepts_per_document: int = Field(20, ge=1)
    language: str = "en"
    concurrency: int = Field(4, ge=1)
    timeout: float = Field(120.0, gt=0)
    max_retries: int = Field(4, ge=0)
    temperature: float = 0.7


class Concept(BaseModel):
    name: str = Field(min_length=1)
    category: str
    region_specific: bool = True
    introduction: str = ""


class ConceptList(BaseModel):
    concepts: list[Concept]


class Question(BaseModel):
    question: str = Field(min_length=1)
    options: list[str] = Field(min_length=4, max_length=4)
    answer: int
    reason: str = ""

    @model_validator(mode="before")
    @classmethod
    def _answer_to_index(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("options"), list) and "answer" in data:
            data = {
                **data,
                "answer": resolve_answer(data["answer"], [str(o) for o in data["options"]]),
            }
        return data

    @field_validator("options")
    @classmethod
    def _distinct(cls, options: list[str]) -> list[str]:
        if len({o.strip().lower() for o in options}) != len(options):
            raise InputError("options must be distinct")
        return options

    @model_validator(mode="after")
    def _answer_in_range(self) -> Question:
        if not 0 <= self.answer < len(self.options):
            raise InputError(f"answer {self.answer} is not an option index")
        return self


class QuestionSet(BaseModel):
    recognition: Question
    knowledge: Question
    scene: Question


EXTRACT_PROMPT = """You build a benchmark of cultural knowledge about {country}.
From the document below, list up to {limit} concepts that are specific to {country}
(not common to many regions), each in exactly one of these categories:
{categories}.
Answer with only a JSON object:
{{"concepts": [{{"name": "...", "category": "<one of the categories>", "region_specific": true,
  "introduction": "two sentences: what it is, where it comes from, why it matters"}}]}}

Document:
{document}"""

QUESTION_PROMPT = """Concept: {name} ({category}, {country})
Introduction: {introduction}

Write three multiple-choice questions in {language} about a picture of this concept, each with
exactly 4 distinct options, the correct answer (the option text) and a one-sentence reason:
- "recognition": what the picture shows (the options are concepts of the same category);
- "knowledge": a fact about the concept (history, meaning, use), answerable from the picture
  by someone who knows the culture;
- "scene": a realistic situation involving the concept where the right action or
  interpretation depends on cultural knowledge.
Answer with only a JSON object:
{{"recognition": {{"question": "...", "options": ["...", "...", "...", "..."], "answer": "...", "reason": "..."}},
 "knowledge": {{...}}, "scene": {{...}}}}"""


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "concept"


def _match_category(category: str, allowed: Sequence[str]) -> str | None:
    lowered = {c.lower(): c for c in allowed}
    return lowered.get(category.strip().lower())


def _find_image(directory: Path, concept_id: str) -> Path | None:
    for suffix in IMAGE_SUFFIXES:
        if (directory / f"{concept_id}{suffix}").exists():
            return directory / f"{concept_id}{suffix}"
    return None


def build_benchmark(config: BuilderConfig, *, client: ChatClient | None = None) -> dict[str, int]:
    """Runs the pipeline; returns counts (documents, concepts, questions, items, needs_image)."""
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    config.save(out)
    documents_dir = Path(config.documents)
    documents = (
        sorted(p for p in documents_dir.iterdir() if p.suffix in DOCUMENT_SUFFIXES)
        if documents_dir.is_dir()
        else []
    )
    if not documents:
        raise MissingInputError(f"no .txt or .md documents in {documents_dir}")
    if config.categories is None:
        from cultureclip.data.taxonomy import categories

        allowed = categories("cultureverse")
    else:
        allowed = config.categories
    model, _, base_url = config.llm.partition("@")
    client = client or ChatClient(
        model,
        base_url or None,
        timeout=config.timeout,
        max_retries=config.max_retries,
        concurrency=config.concurrency,
        temperature=config.temperature,
        max_tokens=2048,
    )

    # 1. concepts, one LLM call per document (resumable by document hash)
    concepts_file = out / "concepts.jsonl"
    done_docs = {r["document_hash"] for r in read_jsonl(concepts_file)}
    for document in documents:
        text = document.read_text(encoding="utf-8")
        doc_hash = stable_hash(document.name, text)
        if doc_hash in done_docs:
            continue
        country = document.stem
        prompt = EXTRACT_PROMPT.format(
            country=country,
            limit=config.max_concepts_per_document,
            categories=", ".join(allowed),
            document=text[:20000],
        )
        found = client.complete_json([{"role": "user", "content": prompt}], ConceptList)
        records, seen = [], set()
        for concept in found.concepts[: config.max_concepts_per_document]:
            category = _match_category(concept.category, allowed)
            concept_id = f"{slug(country)}-{slug(concept.name)}"
            if not concept.region_specific or category is None or concept_id in seen:
                continue
            seen.add(concept_id)
            records.append(
                {
                    "document_hash": doc_hash,
                    "concept_id": concept_id,
                    "country": country,
                    "name": concept.name,
                    "category": category,
                    "introduction": concept.introduction,
                }
            )
        # a marker line records a finished document even when no concept survived
        append_jsonl(concepts_file, [*records, {"document_hash": doc_hash, "concept_id": None}])
    concepts = [r for r in read_jsonl(concepts_file) if r.get("concept_id")]

    # 2. questions, one LLM call per concept, concurrently (resumable by concept id)
    questions_file = out / "questions.jsonl"
    done = {r["concept_id"] for r in read_jsonl(questions_file)}
    todo = [c for c in concepts if c["concept_id"] not in done]

    def ask(concept: dict[str, Any]) -> dict[str, Any]:
        prompt = QUESTION_PROMPT.format(language=config.language, **concept)
        questions = client.complete_json([{"role": "user", "content": prompt}], QuestionSet)
        return {"concept_id": concept["concept_id"], **questions.model_dump()}

    with ThreadPoolExecutor(max_workers=config.concurrency) as pool:
        for record in pool.map(ask, todo):
            append_jsonl(questions_file, [record])
    questions = {r["concept_id"]: r for r in read_jsonl(questions_file)}

    # 3. items (concepts with an image), review CSV (everything), instruction data
    images_dir = Path(config.images) if config.images else out / "images"
    items: list[MCQItem] = []
    review: list[dict[str, Any]] = []
    for concept in concepts:
        qs = questions.get(concept["concept_id"])
        if qs is None:
            continue
        image = _find_image(images_dir, concept["concept_id"])
        for question_type in ("recognition", "knowledge", "scene"):
            q = qs[question_type]
            item_id = f"{concept['concept_id']}-{question_type}"
            review.append(
                {
                    "id": item_id,
                    "country": concept["country"],
                    "category": concept["category"],
                    "concept": concept["name"],
                    "introduction": concept["introduction"],
                    "question_type": question_type,
                    "question": q["question"],
                    **{f"option_{LETTERS[i]}": o for i, o in enumerate(q["options"])},
                    "answer": LETTERS[q["answer"]],
                    "reason": q["reason"],
                    "image": str(image) if image else "",
                    "status": "ok"
                    if image
                    else f"needs image {images_dir / concept['concept_id']}.jpg",
                }
            )
            if image is not None:
                items.append(
                    MCQItem(
                        id=item_id,
                        image=str(Path(image).resolve()),
                        question=q["question"],
                        options=q["options"],
                        answer=q["answer"],
                        country=concept["country"],
                        category=concept["category"],
                        question_type=question_type,
                        language=config.language,
                        concept=concept["name"],
                        reason=q["reason"],
                        introduction=concept["introduction"],
                    )
                )
    write_items(out / "items.jsonl", items)
    buffer = io.StringIO()
    fields = [
        "id",
        "country",
        "category",
        "concept",
        "introduction",
        "question_type",
        "question",
        "option_A",
        "option_B",
        "option_C",
        "option_D",
        "answer",
        "reason",
        "image",
        "status",
    ]
    writer = csv.DictWriter(buffer, fieldnames=fields)
    writer.writeheader()
    writer.writerows(review)
    atomic_write_text(out / "review.csv", buffer.getvalue())
    item_set = read_items(out / "items.jsonl") if items else ItemSet(items=[], root=out)
    export_instruction_data(item_set, out / "instruct.jsonl")
    return {
        "documents": len(documents),
        "concepts": len(concepts),
        "questions": 3 * len(questions),
        "items": len(items),
        "needs_image": sum(r["status"] != "ok" for r in review),
    }


def export_instruction_data(
    item_set: ItemSet, path: str | Path, *, with_reason: bool = True
) -> Path:
    """Writes LLaVA-style instruction records (one per item) for generative VLM fine-tuning.

    ``{"id", "image", "conversations": [{"from": "human", "value": "<image>\\n…"},
    {"from": "gpt", "value": "B. Hanbok. <reason>"}]}``; ``image`` is the item's path
    as stored (resolve relative paths against the items file).
    """
    from cultureclip.eval.generative import ANSWER_INSTRUCTION

    records = []
    for item in item_set.items:
        lines = [item.question.strip()] if item.question.strip() else []
        lines += [f"{LETTERS[i]}. {option}" for i, option in enumerate(item.options)]
        lines.append(ANSWER_INSTRUCTION)
        answer = f"{LETTERS[item.answer]}. {item.answer_text}"
        reason = (item.model_extra or {}).get("reason", "")
        if with_reason and reason:
            answer += f" {reason}"
        image = item.image if isinstance(item.image, str) else "<inline>"
        records.append(
            {
                "id": item.id,
                "image": image,
                "conversations": [
                    {"from": "human", "value": "<image>\n" + "\n".join(lines)},
                    {"from": "gpt", "value": answer},
                ],
            }
        )
    return write_jsonl(path, records)
