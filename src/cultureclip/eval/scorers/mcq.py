"""Multiple choice (``scorer: mcq``; docs/eval.md, "Benchmarks"): a contrastive model scores
each option's text (each distinct text and image encoded once), a generative one answers
the lettered options (resumable, :class:`~cultureclip.models.generative.AnswerStore`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import torch
from pydantic import Field, field_validator

from cultureclip.core.errors import InputError
from cultureclip.core.progress import track
from cultureclip.eval.features import (
    IMAGE_ERRORS,
    TextFeatureCache,
    batched,
    describe_image_error,
    embed_images,
    image_key,
)
from cultureclip.eval.items import ItemSet, MCQItem, as_text
from cultureclip.eval.layouts import LAYOUTS
from cultureclip.eval.metrics import accuracy, group_accuracy, mcq_decisions, role_accuracy
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
    parse_answer_letter,
)


class MCQOptions(ScorerSettings):
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
    #: a question type without its own template (a release's ``1``, ``2``…) uses this one;
    #: none: such an item stops the run, naming the type
    default_template: str | None = "{question} {option}"
    #: our field -> the data's column, for released files with other names
    #: (``--set columns.answer=Label``)
    columns: dict[str, str] = Field(default_factory=dict)
    #: where relative image paths start (default: the annotation file's folder)
    image_root: str | None = None
    #: per field, the release's value -> ours, matched as text:
    #: ``--set options.value_maps.question_type='{1: recognition, 2: knowledge}'``
    value_maps: dict[str, dict[str, str]] = Field(default_factory=dict)
    #: item roles scored apart (``{role}_accuracy``, ``both_accuracy``)
    roles: list[str] = Field(default_factory=list)
    #: ``accuracy`` counts this role only (none: every item)
    accuracy_role: str | None = None

    @field_validator("value_maps", mode="before")
    @classmethod
    def _as_text(cls, value: Any) -> Any:
        # YAML reads {1: recognition} with integer keys; a release's values match as text
        if not isinstance(value, dict):
            return value
        return {
            str(name): {str(as_text(k)): v for k, v in mapping.items()}
            if isinstance(mapping, dict)
            else mapping
            for name, mapping in value.items()
        }


@SCORERS.register("mcq", help="multiple choice: option texts (contrastive) or letters (chat)")
class MCQScorer(Scorer):
    task = "mcq"
    Options: ClassVar[type[ScorerSettings]] = MCQOptions
    prompt_option = "templates"
    #: an item whose image cannot be read takes the other items of its group with it (twins)
    whole_groups: ClassVar[bool] = False

    def load_items(self) -> ItemSet:
        """The benchmark's data as validated items (malformed ones in ``errors``)."""
        return LAYOUTS.get(self.bench.spec.layout or "mcq-items")(self.bench)

    def items(self) -> ItemSet:
        """:meth:`load_items`, read once and kept."""
        cached = getattr(self, "_items", None)
        if cached is None:
            cached = self._items = self.load_items()
        return cached

    def image_files(self) -> list[tuple[str, Path]]:
        item_set = self.items()
        return referenced_files((item.image for item in item_set.items), item_set.root)

    def prepare(self) -> None:
        item_set = self.items()
        if not item_set.items:
            errors = item_set.errors
            problems = f"; {len(errors)} malformed: {errors[0]}" if errors else ""
            raise InputError(
                f"benchmark {self.bench.name!r} found no valid items in {self.bench.data}{problems}"
            )

    def summarize(self, predictions: list[dict[str, Any]]) -> dict[str, float]:
        """Overall metrics from the prediction records of items with a known answer."""
        if not predictions:
            return {}
        if not self.options.roles:
            return {"accuracy": accuracy([p["correct"] for p in predictions])}
        metrics = role_accuracy(predictions, self.options.roles)  # accuracy pools every role
        if self.options.accuracy_role:
            metrics["accuracy"] = metrics[f"{self.options.accuracy_role}_accuracy"]
        return metrics

    def option_texts(self, item: MCQItem) -> list[str]:
        template = self.options.templates.get(item.question_type, self.options.default_template)
        if template is None:
            raise InputError(
                f"no prompt for question type {item.question_type!r}: add "
                f"prompts.contrastive.{item.question_type} to the spec, or "
                f"--set options.templates.{item.question_type}='...'"
            )
        fields = {k: v for k, v in item.model_dump().items() if k not in ("image", "options")}
        try:
            return [template.format_map({**fields, "option": o}).strip() for o in item.options]
        except KeyError as exc:
            raise InputError(
                f"template {template!r} uses field {exc} that item {item.id!r} does not have"
            ) from None

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
                f"benchmark {self.bench.name!r}: no item of {self.bench.data} has a readable image"
                + (f"; e.g. {unreadable[0]}" if unreadable else "")
            )
        # items whose answer is withheld are predicted (predictions.jsonl), never scored
        scored = [p for p in predictions if p["correct"] is not None]
        counts = {
            "hidden": len(predictions) - len(scored),
            "ids_suffixed": item_set.suffixed,
            "duplicates_dropped": item_set.duplicates,
        }
        if not isinstance(model, VisionLanguageModel):
            # Generative runs say how many answers were lost, so nobody mistakes them for wrong guesses.
            # (withheld answers too: a lost one is asked again by the rerun)
            counts["failed"] = sum(p.get("error") is not None for p in predictions)
            counts["refused"] = sum(
                p.get("error") is None and p["prediction"] == -1 for p in predictions
            )
        # chance: the expected accuracy of a uniform guess over each scored item's options
        widths = {item.id: len(item.options) for item in item_set.items}
        chance = (
            100.0 * sum(1.0 / widths[p["id"]] for p in scored) / len(scored) if scored else None
        )
        return BenchmarkOutput(
            metrics=self.summarize(scored),
            predictions=predictions,
            per_group=group_accuracy(scored, keys=self.bench.spec.group_keys),
            n=len(scored),
            skipped=[str(bad) for bad in item_set.errors] + unreadable,
            chance=None if chance is None else round(chance, 4),
            counts=counts,
        )

    def _record(
        self, item: MCQItem, predicted: int, correct: bool | None, **extra: Any
    ) -> dict[str, Any]:
        record = {
            "id": item.id,
            "answer": item.answer,
            "prediction": predicted,
            "correct": correct,
            **item.group_fields(),
        }
        if "language" in self.bench.spec.group_keys:
            record["language"] = item.language
        for key in ("role", "group_id"):
            if key in (item.model_extra or {}):
                record[key] = item.model_extra[key]
        return {**record, **extra}

    def _run_contrastive(
        self, model: VisionLanguageModel, item_set: ItemSet, progress: bool, unreadable: list[str]
    ) -> list[dict[str, Any]]:
        items = item_set.items
        by_key = {image_key(item): item for item in items}
        failed: dict[str, str] = {}
        self.image_features = embed_images(
            model,
            list(by_key),
            lambda key: item_set.load_image(by_key[key]),
            batch_size=self.options.batch_size,
            progress=progress,
            description=f"{self.bench.name}: images",
            failed=failed,
        )
        lost = {item.id: failed[image_key(item)] for item in items if image_key(item) in failed}
        if self.whole_groups:  # a group is scored whole or not at all (a twin pair)
            groups = {
                (i.model_extra or {}).get("group_id", i.id): i.id for i in items if i.id in lost
            }
            unreadable += [
                f"record {g!r} ({i}): unreadable image: {lost[i]}" for g, i in groups.items()
            ]
            items = [i for i in items if (i.model_extra or {}).get("group_id", i.id) not in groups]
        else:
            unreadable += [f"item {i!r}: unreadable image: {error}" for i, error in lost.items()]
            items = [item for item in items if item.id not in lost]
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
        images = torch.stack([self.image_features[image_key(item)] for item in items])
        scale = float(model.logit_scale.detach())
        scores = scale * torch.einsum("nd,nkd->nk", images, text_features[option_ids])
        scores = scores.masked_fill(~valid, float("-inf")).double()
        probs = torch.softmax(scores, dim=1)
        hidden = torch.tensor([item.answer is None for item in items])
        answers = torch.tensor([item.answer or 0 for item in items])
        predicted, correct = mcq_decisions(scores, answers)
        # a withheld answer: the best-scoring option is the prediction
        predicted = torch.where(hidden, scores.argmax(dim=1), predicted)
        return [
            self._record(
                item,
                int(predicted[row]),
                None if hidden[row] else bool(correct[row]),
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
        answers = AnswerStore(work_dir, model, self.bench.name, self.options)
        done = answers.reused(item_set.items)
        todo = [item for item in item_set.items if item.id not in done]
        chunks = list(batched(todo, self.options.chunk_size))
        for chunk in track(chunks, f"{self.bench.name}: asking {model.spec}", enabled=progress):
            prompts, asked = [], []
            for i in chunk:
                try:
                    image = item_set.load_image(i)
                except IMAGE_ERRORS as exc:
                    error = describe_image_error(exc)
                    unreadable.append(f"item {i.id!r}: unreadable image: {error}")
                    continue
                question = i.question or "What is shown in the picture?"
                prompts.append(MCQPrompt(image, question, i.options))
                asked.append(i)
            if not asked:
                continue
            records = []
            for item, outcome in zip(asked, model.generate(prompts), strict=True):
                reply = outcome.reply
                choice = parse_answer_letter(reply, item.options) if reply is not None else None
                predicted = -1 if choice is None else choice
                extra = {"reply": reply, "error": outcome.error}
                correct = None if item.answer is None else predicted == item.answer
                records.append(self._record(item, predicted, correct, **extra))
            answers.add(asked, records)
            done.update({r["id"]: r for r in records})
        return [done[item.id] for item in item_set.items if item.id in done]
