"""Open-ended questions with reference answers (``scorer: openended``; docs/eval.md and
docs/vlm.md): string matches per item and, with ``judge=<model>@<url>``, an LLM's verdict."""

from __future__ import annotations

import logging
import re
import string
from contextlib import nullcontext
from pathlib import Path
from typing import Any, ClassVar

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from cultureclip.core.config import describe
from cultureclip.core.errors import InputError, MissingInputError
from cultureclip.core.io import jsonl_lines
from cultureclip.core.llm import LLMSettings, SyncLLM, load_prompt
from cultureclip.core.llm.settings import parse_model_at_url
from cultureclip.core.progress import track
from cultureclip.data.taxonomy import continent_of
from cultureclip.eval.features import TextFeatureCache, batched, embed_images
from cultureclip.eval.items import BadItem, load_image
from cultureclip.eval.metrics import GROUP_KEYS, accuracy, group_accuracy
from cultureclip.eval.scorers import (
    SCORERS,
    BenchmarkOutput,
    Scorer,
    ScorerSettings,
    referenced_files,
)
from cultureclip.models.base import VisionLanguageModel
from cultureclip.models.generative import (
    AnswerStore,
    GenerativeModel,
    MCQPrompt,
    from_main_process,
    is_main_process,
)

logger = logging.getLogger(__name__)

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = str.maketrans({c: " " for c in string.punctuation})


def normalize_answer(text: str) -> str:
    """Lowercase, punctuation → space, articles dropped, whitespace collapsed."""
    text = text.lower().translate(_PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def match_scores(reply: str, references: list[str]) -> dict[str, bool]:
    """``exact`` / ``normalized`` / ``contains`` of one reply against its references."""
    stripped = reply.strip().lower()
    normal = normalize_answer(reply)
    refs = [normalize_answer(r) for r in references]
    padded = f" {normal} "
    return {
        "exact": any(stripped == r.strip().lower() for r in references),
        "normalized": normal in refs,
        "contains": any(r and f" {r} " in padded for r in refs),
    }


class OpenItem(BaseModel):
    """One open-ended question; extra keys are kept."""

    model_config = ConfigDict(extra="allow")

    id: str = Field(min_length=1)
    image: str | bytes
    question: str = Field(min_length=1)
    answers: list[str] = Field(min_length=1)
    country: str = ""
    continent: str = ""
    category: str = ""
    question_type: str = "open"

    @field_validator("answers", mode="before")
    @classmethod
    def _listify(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    def group_fields(self) -> dict[str, str]:
        fields = self.model_dump(include=set(GROUP_KEYS))
        if not self.continent and self.country:  # filled here: the item (and its key) stays as read
            fields["continent"] = continent_of(self.country)
        return fields


def read_open_items(path: str | Path) -> tuple[list[OpenItem], list[BadItem], Path]:
    """Valid items, skipped ones (with the reason), and the folder images are relative to."""
    path = Path(path)
    if path.is_dir():
        path = path / "items.jsonl"
    if not path.exists():
        raise MissingInputError(f"open-ended items not found: {path}")
    items, errors = [], []
    for number, raw, _ in jsonl_lines(path):
        if isinstance(raw, str):  # not UTF-8, not JSON, not an object
            errors.append(BadItem(number, None, raw))
            continue
        try:
            if raw.get("id") is not None:
                raw["id"] = str(raw["id"])
            items.append(OpenItem.model_validate(raw))
        except ValidationError as exc:
            errors.append(BadItem(number, raw.get("id"), describe(exc, "")))
    return items, errors, path.parent


class JudgeVerdict(BaseModel):
    correct: bool


class OpenEndedOptions(ScorerSettings):
    #: contrastive models: how a candidate answer becomes a text (``{answer}``)
    template: str = "a photo of {answer}."
    #: items sent to the model per checkpointed chunk
    chunk_size: int = Field(64, ge=1)
    #: an LLM judge ``<model>@<base_url>`` (OpenAI-compatible); None: string matching only
    judge: str | None = None
    #: settings of the judge's client (``LLMSettings``: timeout, max_retries, concurrency, …)
    judge_options: dict[str, Any] = Field(default_factory=dict)


@SCORERS.register("openended", help="open-ended answers: string match, optional LLM judge")
class OpenEndedScorer(Scorer):
    task = "openended"
    Options: ClassVar[type[ScorerSettings]] = OpenEndedOptions
    prompt_option = "template"

    def open_items(self) -> tuple[list[OpenItem], list[BadItem], Path]:
        """:func:`read_open_items` of the data, read once and kept."""
        cached = getattr(self, "_open_items", None)
        if cached is None:
            cached = self._open_items = read_open_items(self.bench.data)
        return cached

    def image_files(self) -> list[tuple[str, Path]]:
        items, _, root = self.open_items()
        return referenced_files((item.image for item in items), root)

    def run(
        self, model: Any, *, work_dir: Path | None = None, progress: bool = True
    ) -> BenchmarkOutput:
        options: OpenEndedOptions = self.options  # type: ignore[assignment]
        items, errors, root = self.open_items()
        if not items:
            raise InputError(f"no valid open-ended items in {self.bench.data}")
        if not isinstance(model, VisionLanguageModel | GenerativeModel):
            raise TypeError(f"cannot score a {type(model).__name__} on open-ended questions")
        judge = _judge_client(options) if options.judge else None
        with judge or nullcontext():
            if isinstance(model, VisionLanguageModel):
                predictions = self._run_contrastive(model, items, root, progress)
                if judge is not None:
                    self._judge(judge, items, predictions)
            else:
                predictions = self._run_generative(model, items, root, judge, work_dir, progress)
        scored = ("exact", "normalized", "contains", *(["judge"] if judge is not None else []))
        metrics = {key: accuracy([bool(p.get(key)) for p in predictions]) for key in scored}
        metrics["accuracy"] = metrics["judge" if judge is not None else "normalized"]
        counts = {"failed": sum(p.get("error") is not None for p in predictions)}
        if judge is not None:
            counts["judge_failed"] = sum(p.get("judge") is None for p in predictions)
        return BenchmarkOutput(
            counts=counts,
            metrics=metrics,
            predictions=predictions,
            per_group=group_accuracy(predictions),
            n=len(predictions),
            skipped=[str(bad) for bad in errors],
        )

    def _run_contrastive(
        self, model: Any, items: list[OpenItem], root: Path, progress: bool
    ) -> list[dict[str, Any]]:
        options: OpenEndedOptions = self.options  # type: ignore[assignment]
        vocabulary = list(dict.fromkeys(a.strip() for item in items for a in item.answers))
        try:
            texts = [options.template.format(answer=a) for a in vocabulary]
        except (KeyError, IndexError) as exc:
            raise InputError(f"options.template may only use {{answer}}: {exc}") from None
        text_features = TextFeatureCache(model).encode(texts)
        keys = [i.image if isinstance(i.image, str) else i.id for i in items]
        by_key = dict(zip(keys, items, strict=True))
        image_features = embed_images(
            model,
            keys,
            lambda key: load_image(by_key[key].image, root),
            batch_size=options.batch_size,
            progress=progress,
            description=f"{self.bench.name}: images",
        )
        images = torch.stack([image_features[key] for key in keys])
        best = (images @ text_features.T).argmax(dim=1)
        return [
            self._record(item, vocabulary[int(best[row])], None) for row, item in enumerate(items)
        ]

    def _run_generative(
        self,
        model: Any,
        items: list[OpenItem],
        root: Path,
        judge: Any,
        work_dir: Path | None,
        progress: bool,
    ) -> list[dict[str, Any]]:
        options: OpenEndedOptions = self.options  # type: ignore[assignment]
        answers = AnswerStore(work_dir, model, self.bench.name, options)
        done = answers.reused(items)
        todo = [item for item in items if item.id not in done]
        chunks = list(batched(todo, options.chunk_size))
        for chunk in track(chunks, f"{self.bench.name}: asking {model.spec}", enabled=progress):
            prompts = [MCQPrompt(load_image(i.image, root), i.question, []) for i in chunk]
            outcomes = model.generate(prompts)
            records = [
                self._record(item, outcome.reply, outcome.error)
                for item, outcome in zip(chunk, outcomes, strict=True)
            ]
            if judge is not None:
                if is_main_process():  # data-parallel: the judge is asked once, not per process
                    self._judge(judge, chunk, records)
                records = from_main_process(records)
            answers.add(chunk, records)
            done.update({r["id"]: r for r in records})
        return [done[item.id] for item in items]

    def _record(self, item: OpenItem, reply: str | None, error: str | None) -> dict[str, Any]:
        scores = (
            match_scores(reply, item.answers)
            if reply is not None
            else dict.fromkeys(("exact", "normalized", "contains"), False)
        )
        return {
            "id": item.id,
            "answers": item.answers,
            "reply": reply,
            "error": error,
            **scores,
            "correct": scores["normalized"],
            **item.group_fields(),
        }

    def _judge(self, client: Any, items: list[OpenItem], records: list[dict[str, Any]]) -> None:
        prompt = load_prompt("openended-judge", "cultureclip.eval")
        asked = [(i, r) for i, r in zip(items, records, strict=True) if r["reply"] is not None]
        questions = [
            {"question": i.question, "references": "; ".join(i.answers), "reply": r["reply"]}
            for i, r in asked
        ]
        outcomes = client.ask_many([prompt.messages(q) for q in questions], JudgeVerdict)
        for record in records:  # no reply: wrong, and nothing to judge
            record["judge"] = record["correct"] = False
        for (item, record), outcome in zip(asked, outcomes, strict=True):
            if outcome.ok:
                record["judge"] = record["correct"] = bool(outcome.value.correct)
            else:
                record["judge"] = None
                # no verdict: counted as wrong, reported, and asked again on resume
                logger.warning("judge failed on %s: %s", item.id, outcome.error)
                record["error"] = f"judge: {outcome.error}"


def _judge_client(options: OpenEndedOptions) -> Any:
    target = parse_model_at_url(options.judge or "")
    if not target["model"]:
        raise InputError(f"options.judge must be <model>@<base_url>, got {options.judge!r}")
    defaults = {"max_tokens": 32, "temperature": 0.0, "concurrency": 8}
    return SyncLLM(LLMSettings.model_validate({**defaults, **options.judge_options, **target}))
