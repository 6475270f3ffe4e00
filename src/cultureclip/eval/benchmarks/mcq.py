"""The scoring machinery multiple-choice benchmarks share.

Multiple-choice benchmarks (CultureVerse, GlobalRG, CROPE) only have to turn their data
into :class:`~cultureclip.eval.items.MCQItem` s; :class:`MCQBenchmark` scores them with a
contrastive model (each option becomes a text through a template; softmax over
``s·cos(image, text)``; argmax with pessimistic ties) or with a generative chat model
(lettered options, parsed reply).
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch
from pydantic import Field

from cultureclip.core.errors import InputError
from cultureclip.core.progress import track
from cultureclip.eval.benchmarks.benchmark import (
    Benchmark,
    BenchmarkOutput,
    BenchmarkSettings,
    batched,
)
from cultureclip.eval.benchmarks.features import (
    IMAGE_ERRORS,
    TextFeatureCache,
    describe_image_error,
    embed_images,
    image_key,
)
from cultureclip.eval.benchmarks.source import apply_columns, read_rows
from cultureclip.eval.generative import AnswerStore, GenerativeModel, MCQPrompt, parse_answer_letter
from cultureclip.eval.items import ItemSet, MCQItem, validate_items
from cultureclip.eval.metrics import GROUP_KEYS, accuracy, group_accuracy, mcq_decisions
from cultureclip.models.base import VisionLanguageModel


# ---- multiple-choice benchmarks ------------------------------------------------------------
class MCQOptions(BenchmarkSettings):
    #: per question type, how an option becomes a text for contrastive scoring; fields of the
    #: item can be used: {option}, {question}, {country}, {category}, {region}, {concept}…
    templates: dict[str, str] = Field(
        default_factory=lambda: {
            "recognition": "a photo of {option}.",
            "knowledge": "{question} {option}",
            "scene": "{question} {option}",
        }
    )
    #: generative models: how many items are sent per checkpointed chunk
    chunk_size: int = Field(64, ge=1)
    #: our field -> the data's column, for released files with other names
    #: (``--set columns.answer=Label``)
    columns: dict[str, str] = Field(default_factory=dict)


class MCQBenchmark(Benchmark):
    task = "mcq"
    Options: ClassVar[type[BenchmarkSettings]] = MCQOptions
    options: MCQOptions
    #: the fields results are grouped by (``language`` too for multilingual sets)
    group_keys: ClassVar[tuple[str, ...]] = GROUP_KEYS

    @abstractmethod
    def load_items(self) -> ItemSet:
        """The benchmark's data as validated items (malformed ones in ``errors``)."""

    def items(self) -> ItemSet:
        """:meth:`load_items`, read once and kept."""
        cached = getattr(self, "_items", None)
        if cached is None:
            cached = self._items = self.load_items()
        return cached

    def prepare(self) -> None:
        item_set = self.items()
        if not item_set.items:
            problems = (
                f"; {len(item_set.errors)} malformed: {item_set.errors[0]}"
                if item_set.errors
                else ""
            )
            raise InputError(
                f"benchmark {self.name!r} found no valid items in {self.data}{problems}"
            )

    def rows(self, preferred: Sequence[str] = ()) -> tuple[list[dict[str, Any]], Path]:
        """The data's rows with ``columns`` applied, and the folder image paths start from."""
        rows, root = read_rows(self.data, self.split, preferred)
        return [apply_columns(row, self.options.columns) for row in rows], root

    def record_id(self, record: dict[str, Any], index: int, keys: Sequence[str] = ("id",)) -> str:
        """The record's own id (the first of ``keys`` it has), else ``{name}-{index:06d}``."""
        found = next((record[key] for key in keys if record.get(key)), None)
        return str(found or f"{self.name}-{index:06d}")

    def summarize(self, predictions: list[dict[str, Any]]) -> dict[str, float]:
        """Overall metrics from prediction records (default: accuracy)."""
        return {"accuracy": accuracy([p["correct"] for p in predictions])}

    def option_texts(self, item: MCQItem) -> list[str]:
        template = self.options.templates.get(item.question_type)
        if template is None:
            raise InputError(
                f"no template for question type {item.question_type!r}; set templates.{item.question_type}"
            )
        fields = {k: v for k, v in item.model_dump().items() if k not in ("image", "options")}
        texts = []
        for option in item.options:
            try:
                texts.append(template.format_map({**fields, "option": option}).strip())
            except KeyError as exc:
                raise InputError(
                    f"template {template!r} uses field {exc} that item {item.id!r} does not have"
                ) from None
        return texts

    def run(
        self, model: Any, *, work_dir: Path | None = None, progress: bool = True
    ) -> BenchmarkOutput:
        self.prepare()
        item_set = self.items()
        unreadable: list[str] = []
        if isinstance(model, VisionLanguageModel):
            predictions = self._run_contrastive(model, item_set, progress, unreadable)
        elif isinstance(model, GenerativeModel):
            predictions = self._run_generative(model, item_set, work_dir, progress, unreadable)
        else:
            raise TypeError(
                f"cannot score a {type(model).__name__}; pass a model backend or a generative model"
            )
        if not predictions:
            raise InputError(
                f"benchmark {self.name!r}: no item of {self.data} has a readable image"
                + (f"; e.g. {unreadable[0]}" if unreadable else "")
            )
        metrics = self.summarize(predictions)
        if not isinstance(model, VisionLanguageModel):
            # Generative runs say how many answers were lost, so nobody mistakes them for wrong guesses.
            metrics["n_failed"] = float(sum(p.get("error") is not None for p in predictions))
            metrics["n_unparsed"] = float(
                sum(p.get("error") is None and p["prediction"] == -1 for p in predictions)
            )
        # chance: the expected accuracy of a uniform guess over each scored item's options
        widths = {item.id: len(item.options) for item in item_set.items}
        chance = 100.0 * sum(1.0 / widths[p["id"]] for p in predictions) / len(predictions)
        return BenchmarkOutput(
            metrics=metrics,
            predictions=predictions,
            per_group=group_accuracy(predictions, keys=self.group_keys),
            n=len(predictions),
            skipped=[str(bad) for bad in item_set.errors] + unreadable,
            chance=round(chance, 4),
        )

    def _record(self, item: MCQItem, predicted: int, correct: bool, **extra: Any) -> dict[str, Any]:
        record = {
            "id": item.id,
            "answer": item.answer,
            "prediction": predicted,
            "correct": correct,
            **item.group_fields(),
        }
        if "language" in self.group_keys:
            record["language"] = item.language
        for key in ("role", "group_id"):
            if key in (item.model_extra or {}):
                record[key] = item.model_extra[key]
        record.update(extra)
        return record

    def _run_contrastive(
        self,
        model: VisionLanguageModel,
        item_set: ItemSet,
        progress: bool,
        unreadable: list[str],
    ) -> list[dict[str, Any]]:
        items = item_set.items
        by_key = {image_key(item): item for item in items}
        failed: dict[str, str] = {}
        image_features = embed_images(
            model,
            list(by_key),
            lambda key: item_set.load_image(by_key[key]),
            batch_size=self.options.batch_size,
            progress=progress,
            description=f"{self.name}: images",
            failed=failed,
        )
        self._image_features = image_features  # for subclasses' extra metrics (GlobalRG)
        unreadable += [
            f"item {item.id!r}: unreadable image: {failed[image_key(item)]}"
            for item in items
            if image_key(item) in failed
        ]
        items = [item for item in items if image_key(item) not in failed]
        if not items:
            return []
        texts_per_item = [self.option_texts(item) for item in items]
        # Every distinct option text is encoded once, every distinct image once.
        text_index = {
            text: i for i, text in enumerate(dict.fromkeys(t for ts in texts_per_item for t in ts))
        }
        text_features = TextFeatureCache(model).encode(list(text_index))
        # Score all items at once: options padded to the widest item and masked out.
        width = max(len(ts) for ts in texts_per_item)
        option_ids = torch.zeros(len(items), width, dtype=torch.long)
        valid = torch.zeros(len(items), width, dtype=torch.bool)
        for row, texts in enumerate(texts_per_item):
            option_ids[row, : len(texts)] = torch.tensor([text_index[t] for t in texts])
            valid[row, : len(texts)] = True
        images = torch.stack([image_features[image_key(item)] for item in items])
        scale = float(model.logit_scale.detach())
        scores = scale * torch.einsum("nd,nkd->nk", images, text_features[option_ids])
        scores = scores.masked_fill(~valid, float("-inf")).double()
        probs = torch.softmax(scores, dim=1)
        predicted, correct = mcq_decisions(scores, torch.tensor([item.answer for item in items]))
        return [
            self._record(
                item,
                int(predicted[row]),
                bool(correct[row]),
                probs=[round(float(p), 6) for p in probs[row, : len(texts_per_item[row])]],
            )
            for row, item in enumerate(items)
        ]

    def _run_generative(
        self,
        model: Any,
        item_set: ItemSet,
        work_dir: Path | None,
        progress: bool,
        unreadable: list[str],
    ) -> list[dict[str, Any]]:
        # Resume: answered items are kept; failed ones are asked again.
        answers = AnswerStore(work_dir, model, self.name, self.options)
        done = answers.reused(item_set.items)
        todo = [item for item in item_set.items if item.id not in done]
        chunks = list(batched(todo, self.options.chunk_size))
        for chunk in track(chunks, f"{self.name}: asking {model.spec}", enabled=progress):
            prompts, asked = [], []
            for i in chunk:
                try:
                    image = item_set.load_image(i)
                except IMAGE_ERRORS as exc:
                    unreadable.append(
                        f"item {i.id!r}: unreadable image: {describe_image_error(exc)}"
                    )
                    continue
                prompts.append(
                    MCQPrompt(image, i.question or "What is shown in the picture?", i.options)
                )
                asked.append(i)
            if not asked:
                continue
            outcomes = model.generate(prompts)
            records = []
            for item, outcome in zip(asked, outcomes, strict=True):
                choice = (
                    parse_answer_letter(outcome.reply, item.options)
                    if outcome.reply is not None
                    else None
                )
                predicted = -1 if choice is None else choice
                records.append(
                    self._record(
                        item,
                        predicted,
                        predicted == item.answer,
                        reply=outcome.reply,
                        error=outcome.error,
                    )
                )
            answers.add(asked, records)
            done.update({r["id"]: r for r in records})
        return [done[item.id] for item in item_set.items if item.id in done]


def items_from_rows(rows: Sequence[dict[str, Any]], root: Path, name: str) -> ItemSet:
    """Validates already-built item dicts (numbered from 1)."""
    return validate_items(list(enumerate(rows, start=1)), root=root, name=name)
