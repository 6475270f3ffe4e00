"""Benchmark builder (the CultureVerse pipeline): documents → concepts → multiple-choice items.

For each text document about a country (``<country>.txt`` / ``.md``; the file stem names
the country), an LLM (any backend of ``cultureclip.core.llm``; an OpenAI-compatible
server by default):

1. extracts **region-specific concepts** in the CultureVerse categories, each with a short
   introduction (concepts the LLM marks as not region-specific, or in an unknown
   category, are dropped);
2. writes one **recognition**, one **cultural knowledge** and one **scene** question per
   concept, each with 4 options, the answer and a reason.

The prompts are versioned YAML (``eval/prompts/build-*.yaml``, or files of your own).
Every reply is validated with pydantic and asked again with the error when it does not
fit. Work is resumable on the keyed store (``<out>/work/``): each document's concepts and
each concept's questions are keyed by a hash of everything that decides them (see
``_Step.key``), so a rerun asks nothing again, and a changed ``--llm``, prompt or setting
asks again exactly what it changes.

Outputs in ``out``: ``items.jsonl`` (the MCQ item format, for concepts that have an
image in ``images/`` named by the concept's slug, e.g. ``images/jp-kimono.jpg``),
``review.csv`` (every question, for human review, with a ``status`` column saying what
is missing), and ``instruct.jsonl`` (LLaVA-style chat records with the image, for
fine-tuning generative VLMs; see :func:`export_instruction_data`).
"""

from __future__ import annotations

import logging
import re
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, field_validator, model_validator

from cultureclip.core.config import Config
from cultureclip.core.errors import InputError, MissingInputError
from cultureclip.core.io import stable_hash, write_jsonl
from cultureclip.core.llm import (
    Items,
    LLMError,
    LLMSettings,
    PromptTemplate,
    SyncLLM,
    load_prompt,
)
from cultureclip.core.llm.settings import parse_model_at_url
from cultureclip.core.store import FailureLog, ResultStore
from cultureclip.data.taxonomy import categories
from cultureclip.eval.items import (
    LETTERS,
    ItemSet,
    MCQItem,
    resolve_answer,
    write_items,
)
from cultureclip.eval.report import write_csv
from cultureclip.models.generative import prompt_text

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")
DOCUMENT_SUFFIXES = (".txt", ".md")
#: how much of a document the concept prompt quotes
DOCUMENT_CHARS = 20000
#: the builder's LLM defaults where they differ from ``LLMSettings``'
LLM_DEFAULTS = {"concurrency": 4, "max_tokens": 2048}
#: top-level keys of earlier builder configs, now ``llm.<key>``
LEGACY_LLM_KEYS = ("concurrency", "timeout", "max_retries", "temperature")

logger = logging.getLogger(__name__)


class BuilderConfig(Config):
    """Settings of ``cultureclip eval build``."""

    documents: str
    out: str = "runs/benchmark"
    #: the LLM: ``<model>@<base_url>`` (``@<base_url>`` optional: ``$OPENAI_BASE_URL``) or
    #: its settings (``llm.backend``, ``llm.model``, ``llm.timeout_s``, …); the top-level
    #: ``concurrency``, ``timeout``, ``max_retries`` and ``temperature`` still set them
    llm: LLMSettings
    images: str | None = None  # default: <out>/images
    categories: list[str] | None = None  # default: the 15 CultureVerse categories
    max_concepts_per_document: int = Field(20, ge=1)
    language: str = "en"
    #: built-in prompt names (``eval/prompts/``) or paths of .yaml prompt files
    concepts_prompt: str = "build-concepts"
    questions_prompt: str = "build-questions"

    @model_validator(mode="before")
    @classmethod
    def _llm_settings(cls, data: Any) -> Any:
        if not isinstance(data, dict) or "llm" not in data:
            return data
        data, llm = dict(data), data["llm"]
        if isinstance(llm, LLMSettings):
            return data
        llm = {**LLM_DEFAULTS, **(parse_model_at_url(llm) if isinstance(llm, str) else llm)}
        for key in LEGACY_LLM_KEYS:
            if key in data:
                llm[key] = data.pop(key)
        data["llm"] = llm
        return data


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


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "concept"


def _find_image(directory: Path, concept_id: str) -> Path | None:
    candidates = (directory / f"{concept_id}{suffix}" for suffix in IMAGE_SUFFIXES)
    return next((path for path in candidates if path.exists()), None)


def _documents(config: BuilderConfig) -> list[Path]:
    folder = Path(config.documents)
    documents = (
        sorted(p for p in folder.iterdir() if p.suffix in DOCUMENT_SUFFIXES)
        if folder.is_dir()
        else []
    )
    if not documents:
        raise MissingInputError(f"no .txt or .md documents in {folder}")
    return documents


def _categories(config: BuilderConfig) -> list[str]:
    if config.categories is not None:
        return list(config.categories)
    return list(categories("cultureverse"))


class _Step:
    """One keyed LLM step of the builder: reuse what is stored, ask the rest, store it."""

    def __init__(self, out: Path, name: str, llm: SyncLLM, prompt: PromptTemplate) -> None:
        self.name, self.llm, self.prompt = name, llm, prompt
        self.store = ResultStore(out / "work", name)
        self.failures = FailureLog(out / "work")
        self.failed = 0

    def key(self, *parts: Any) -> str:
        # Everything that decides an answer: the item, the prompt's version, the model and
        # its sampling settings (not the server's address or the retry budget).
        return stable_hash(
            f"build-{self.name}", *parts, self.prompt.id, self.llm.settings.identity()
        )

    def run(
        self,
        work: list[tuple[str, dict[str, Any], dict[str, Any]]],
        schema: type[BaseModel],
        make_record: Any,
        items: Items,
    ) -> list[dict[str, Any]]:
        """``work`` is (key, prompt variables, item); returns the stored record of each item."""
        todo = [(key, variables, item) for key, variables, item in work if key not in self.store]
        logger.info("build %s: %d reused, %d to ask", self.name, len(work) - len(todo), len(todo))
        outcomes = self.llm.ask_many(
            [self.prompt.messages(variables) for _, variables, _ in todo], schema, items=items
        )
        for (key, _, item), outcome in zip(todo, outcomes, strict=True):
            if outcome.ok:
                self.store.add({"key": key, **make_record(item, outcome.value)})
                self.failures.add_dropped(
                    self.name, key, outcome.dropped, raw=outcome.raw, item=item
                )
            else:
                self.failed += 1
                self.failures.add(
                    self.name,
                    key,
                    outcome.error,
                    raw=outcome.raw,
                    item=item,
                    dropped=outcome.dropped,
                )
        return [self.store.get(key) for key, _, _ in work if key in self.store]  # type: ignore[misc]


def _concept_records(
    document: dict[str, Any], found: ConceptList, allowed: list[str], limit: int
) -> dict[str, Any]:
    """The region-specific concepts in known categories, one per concept id."""
    country, concepts, seen = document["country"], [], set()
    by_lowercase = {c.lower(): c for c in allowed}
    for concept in found.concepts[:limit]:
        category = by_lowercase.get(concept.category.strip().lower())
        concept_id = f"{slug(country)}-{slug(concept.name)}"
        if not concept.region_specific or category is None or concept_id in seen:
            continue
        seen.add(concept_id)
        concepts.append(
            {
                "concept_id": concept_id,
                "country": country,
                "name": concept.name,
                "category": category,
                "introduction": concept.introduction,
            }
        )
    return {"document": document["document"], "concepts": concepts}


def build_benchmark(config: BuilderConfig, *, llm: SyncLLM | None = None) -> dict[str, int]:
    """Runs the pipeline; returns counts (documents, concepts, questions, items, needs_image).

    Raises :class:`LLMError` after writing the outputs when answers failed (they are in
    ``work/failures.jsonl`` with the raw replies, and a rerun asks only those again).
    """
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    config.save(out)
    documents, allowed = _documents(config), _categories(config)
    package = "cultureclip.eval"
    # a client passed in stays open for its owner
    with SyncLLM(config.llm) if llm is None else nullcontext(llm) as client:
        concept_step = _Step(out, "concepts", client, load_prompt(config.concepts_prompt, package))
        limit = config.max_concepts_per_document
        work = []
        for document in documents:
            text = document.read_text(encoding="utf-8")
            variables = {
                "country": document.stem,
                "limit": limit,
                "categories": ", ".join(allowed),
                "document": text[:DOCUMENT_CHARS],
            }
            item = {"document": document.name, "country": document.stem}
            work.append((concept_step.key(document.name, text, allowed, limit), variables, item))
        found = concept_step.run(
            work,
            ConceptList,
            lambda item, answer: _concept_records(item, answer, allowed, limit),
            # the valid concepts of a partly valid list are kept, invalid ones asked again
            Items("concepts", same=lambda concept: concept.name.strip().lower()),
        )
        concepts = [c for record in found for c in record["concepts"]]

        question_step = _Step(
            out, "questions", client, load_prompt(config.questions_prompt, package)
        )
        work = [
            (
                question_step.key(concept, config.language),
                {"language": config.language, **concept},
                concept,
            )
            for concept in concepts
        ]
        stored = question_step.run(
            work,
            QuestionSet,
            lambda item, answer: {"concept_id": item["concept_id"], **answer.model_dump()},
            Items(),  # each question is an item: a valid one is kept, a bad one asked again
        )
    questions = {r["concept_id"]: r for r in stored}
    counts = {"documents": len(documents), **_write_outputs(config, out, concepts, questions)}
    failed = concept_step.failed + question_step.failed
    if failed:
        raise LLMError(
            f"{failed} answer(s) failed validation or transport "
            f"(raw replies in {out / 'work' / 'failures.jsonl'})"
        )
    return counts


REVIEW_FIELDS = [
    "id",
    "country",
    "category",
    "concept",
    "introduction",
    "question_type",
    "question",
    *(f"option_{letter}" for letter in LETTERS[:4]),  # a question has 4 options
    "answer",
    "reason",
    "image",
    "status",
]


def _write_outputs(
    config: BuilderConfig,
    out: Path,
    concepts: list[dict[str, Any]],
    questions: dict[str, dict[str, Any]],
) -> dict[str, int]:
    """items.jsonl (concepts with an image), review.csv (everything), instruct.jsonl."""
    images_dir = Path(config.images) if config.images else out / "images"
    items: list[MCQItem] = []
    review: list[dict[str, Any]] = []
    for concept in concepts:
        qs = questions.get(concept["concept_id"])
        if qs is None:
            continue
        image = _find_image(images_dir, concept["concept_id"])
        status = "ok" if image else f"needs image {images_dir / concept['concept_id']}.jpg"
        for question_type in ("recognition", "knowledge", "scene"):
            q = qs[question_type]
            shared = {
                "id": f"{concept['concept_id']}-{question_type}",
                "question": q["question"],
                "country": concept["country"],
                "category": concept["category"],
                "question_type": question_type,
            }
            review.append(
                {
                    **shared,
                    "concept": concept["name"],
                    "introduction": concept["introduction"],
                    **{f"option_{LETTERS[i]}": o for i, o in enumerate(q["options"])},
                    "answer": LETTERS[q["answer"]],
                    "reason": q["reason"],
                    "image": str(image) if image else "",
                    "status": status,
                }
            )
            if image is not None:
                items.append(
                    MCQItem(
                        **shared,
                        image=str(Path(image).resolve()),
                        options=q["options"],
                        answer=q["answer"],
                        language=config.language,
                        concept=concept["name"],
                        reason=q["reason"],
                        introduction=concept["introduction"],
                    )
                )
    write_items(out / "items.jsonl", items)
    write_csv(out / "review.csv", review, REVIEW_FIELDS)
    export_instruction_data(ItemSet(items=items, root=out), out / "instruct.jsonl")
    return {
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
    records = []
    for item in item_set.items:
        if item.answer is None:  # a withheld answer has nothing to teach
            continue
        prompt = prompt_text(item.question, item.options)
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
                    {"from": "human", "value": f"<image>\n{prompt}"},
                    {"from": "gpt", "value": answer},
                ],
            }
        )
    return write_jsonl(path, records)
