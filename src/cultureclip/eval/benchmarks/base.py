"""What every benchmark is, and the scoring machinery the multiple-choice ones share.

A benchmark is built from its data (a local path, or a hub dataset name) and options
(a pydantic :class:`~cultureclip.config.Config`, so unknown options are errors), and
``run(model)`` returns a :class:`BenchmarkOutput`: overall metrics plus one prediction
record per scored unit, carrying the group fields (continent, country, category,
question type) the report breaks results down by.

Multiple-choice benchmarks (CultureVerse, GlobalRG, CROPE) only have to turn their data
into :class:`~cultureclip.eval.items.MCQItem` s; :class:`MCQBenchmark` scores them with a
contrastive model (each option becomes a text through a template; softmax over
``s·cos(image, text)``; argmax with pessimistic ties) or with a generative chat model
(lettered options, parsed reply).
"""

from __future__ import annotations

import random
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import torch
from pydantic import Field
from torch import Tensor

from cultureclip.config import Config
from cultureclip.core.errors import InputError
from cultureclip.core.progress import track
from cultureclip.eval.items import ItemSet, MCQItem, validate_items
from cultureclip.eval.metrics import GROUP_KEYS, accuracy, group_accuracy
from cultureclip.models.base import VisionLanguageModel
from cultureclip.utils.io import stable_hash

T = TypeVar("T")


class BenchmarkOptions(Config):
    """Options every benchmark takes."""

    batch_size: int = Field(64, ge=1)
    seed: int = 42


@dataclass
class BenchmarkOutput:
    metrics: dict[str, float]
    predictions: list[dict[str, Any]]
    per_group: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    n: int = 0
    skipped: list[str] = field(default_factory=list)
    #: the main metric of a uniform random guess (percent), when it has one
    chance: float | None = None


class Benchmark(ABC):
    """Base class of registered benchmarks."""

    name: ClassVar[str] = ""
    task: ClassVar[str] = ""
    Options: ClassVar[type[BenchmarkOptions]] = BenchmarkOptions
    #: whether generative chat models can be scored (multiple-choice benchmarks)
    supports_generative: ClassVar[bool] = False
    #: bumped when this benchmark's scoring changes (part of the result's reuse key)
    protocol_version: ClassVar[int] = 1

    def __init__(self, data: str | Path, *, split: str | None = None, **options: Any) -> None:
        self.data = data
        self.split = split
        self.options = self.Options.model_validate(options)

    @abstractmethod
    def run(
        self, model: Any, *, work_dir: Path | None = None, progress: bool = True
    ) -> BenchmarkOutput:
        """Scores ``model`` (a :class:`VisionLanguageModel`, or a generative model if supported)."""

    def prepare(self) -> None:
        """Reads and validates the data (called before the model loads; errors come early)."""
        return None

    def config(self) -> dict[str, Any]:
        return {"data": str(self.data), "split": self.split, **self.options.model_dump(mode="json")}


def batched(sequence: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    for start in range(0, len(sequence), size):
        yield sequence[start : start + size]


# ---- data location --------------------------------------------------------------------
def is_local(data: str | Path) -> bool:
    return Path(data).exists()


def load_hub_rows(name: str, split: str | None) -> list[dict[str, Any]]:
    """Rows of a hub dataset (``datasets.load_dataset``); images keep their original bytes."""
    from cultureclip.eval.benchmarks.source import load_dataset_rows

    return load_dataset_rows(name, split, local=False)


def seeded_rng(seed: int, *key: Any) -> random.Random:
    """A random generator that depends only on the seed and ``key`` (not on item order)."""
    return random.Random(stable_hash(seed, *key))


# ---- contrastive features ----------------------------------------------------------------
class TextFeatureCache:
    """Normalised text features by string: a repeated option text is encoded once."""

    def __init__(self, model: VisionLanguageModel, batch_size: int = 256) -> None:
        self.model = model
        self.batch_size = batch_size
        self._features: dict[str, Tensor] = {}
        self.encoded = 0  # how many texts went through the text tower (for tests/benchmarks)

    def __len__(self) -> int:
        return len(self._features)

    @torch.no_grad()
    def encode(self, texts: Sequence[str]) -> Tensor:
        missing = list(dict.fromkeys(t for t in texts if t not in self._features))
        for chunk in batched(missing, self.batch_size):
            features = self.model.embed_texts(list(chunk), batch_size=self.batch_size)
            self.encoded += len(chunk)
            for text, feature in zip(chunk, features, strict=True):
                self._features[text] = feature
        if not texts:
            return torch.empty(0, self.model.embed_dim)
        return torch.stack([self._features[t] for t in texts])


#: what an unreadable image raises: missing file, truncated or non-image data, bad data: URL
IMAGE_ERRORS: tuple[type[BaseException], ...] = (OSError, ValueError, SyntaxError)


def describe_image_error(exc: BaseException) -> str:
    """One line for a skipped image (``UnidentifiedImageError`` says ``cannot identify …``)."""
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:200]


@torch.no_grad()
def embed_images(
    model: VisionLanguageModel,
    keys: Sequence[str],
    load: Callable[[str], Any],
    *,
    batch_size: int,
    progress: bool,
    description: str = "images",
    failed: dict[str, str] | None = None,
) -> dict[str, Tensor]:
    """Embeds each distinct image key once: ``{key: normalised feature}``.

    The next batch is decoded on a background thread while the model encodes the current
    one (PIL releases the GIL while decoding), so disk and decode time overlap compute.
    Only one batch is held decoded at a time. With ``failed`` given, an image that cannot
    be read (missing, truncated, not an image) is left out of the result and ``failed[key]``
    says why; without it, the error propagates.
    """
    from concurrent.futures import ThreadPoolExecutor

    unique = list(dict.fromkeys(keys))
    features: dict[str, Tensor] = {}
    chunks = list(batched(unique, batch_size))
    if not chunks:
        return features

    def load_chunk(chunk: Sequence[str]) -> list[tuple[str, Any]]:
        loaded = []
        for key in chunk:
            if failed is None:
                loaded.append((key, load(key)))
                continue
            try:
                loaded.append((key, load(key)))
            except IMAGE_ERRORS as exc:
                failed[key] = describe_image_error(exc)
        return loaded

    with ThreadPoolExecutor(max_workers=1) as loader:
        pending = loader.submit(load_chunk, chunks[0])
        for index in track(range(len(chunks)), description, enabled=progress):
            loaded = pending.result()
            if index + 1 < len(chunks):
                pending = loader.submit(load_chunk, chunks[index + 1])
            if not loaded:
                continue
            embedded = model.embed_images([image for _, image in loaded], batch_size=batch_size)
            for (key, _), feature in zip(loaded, embedded, strict=True):
                features[key] = feature
            del loaded
    return features


def image_key(item: MCQItem) -> str:
    """One key per distinct image (and crop box): each is decoded and encoded once."""
    import hashlib

    image = item.image
    key = image if isinstance(image, str) else "bytes:" + hashlib.sha256(image).hexdigest()[:32]
    box = (item.model_extra or {}).get("crop_box")
    return f"{key}#{','.join(str(v) for v in box)}" if box else key


# ---- multiple-choice benchmarks ------------------------------------------------------------
class MCQOptions(BenchmarkOptions):
    """Options of multiple-choice benchmarks."""

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
    """A benchmark whose data are multiple-choice items."""

    task = "mcq"
    Options: ClassVar[type[BenchmarkOptions]] = MCQOptions
    supports_generative = True
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

    def summarize(self, predictions: list[dict[str, Any]]) -> dict[str, float]:
        """Overall metrics from prediction records (default: accuracy)."""
        return {"accuracy": accuracy([p["correct"] for p in predictions])}

    def option_texts(self, item: MCQItem) -> list[str]:
        options: MCQOptions = self.options  # type: ignore[assignment]
        template = options.templates.get(item.question_type)
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
        else:
            from cultureclip.eval.generative import GenerativeModel

            if not isinstance(model, GenerativeModel):
                raise TypeError(
                    f"cannot score a {type(model).__name__}; pass a model backend or a generative model"
                )
            predictions = self._run_generative(model, item_set, work_dir, progress, unreadable)
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
        return BenchmarkOutput(
            metrics=metrics,
            predictions=predictions,
            per_group=group_accuracy(predictions, keys=self.group_keys),
            n=len(predictions),
            skipped=[str(bad) for bad in item_set.errors] + unreadable,
            chance=self.chance(item_set, predictions),
        )

    def chance(self, item_set: ItemSet, predictions: list[dict[str, Any]]) -> float | None:
        """Expected accuracy of a uniform guess over each scored item's options (percent)."""
        widths = {item.id: len(item.options) for item in item_set.items}
        scored = [widths[p["id"]] for p in predictions if p["id"] in widths]
        return round(100.0 * sum(1.0 / w for w in scored) / len(scored), 4) if scored else None

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
        unreadable: list[str] | None = None,
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
        if failed:
            kept = []
            for item in items:
                error = failed.get(image_key(item))
                if error is None:
                    kept.append(item)
                elif unreadable is not None:
                    unreadable.append(f"item {item.id!r}: unreadable image: {error}")
            items = kept
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
        answers = torch.tensor([item.answer for item in items])
        answer_scores = scores.gather(1, answers[:, None]).squeeze(1)
        others = scores.scatter(1, answers[:, None], float("-inf"))
        best_other = others.argmax(dim=1)
        # pessimistic ties: right only when strictly above every other option (see metrics)
        correct = answer_scores > others.max(dim=1).values
        predicted = torch.where(correct, answers, best_other)
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
        unreadable: list[str] | None = None,
    ) -> list[dict[str, Any]]:
        from cultureclip.eval.generative import AnswerStore, MCQPrompt, parse_answer_letter

        options: MCQOptions = self.options  # type: ignore[assignment]
        # Resume: answered items are kept; failed ones are asked again.
        answers = AnswerStore(work_dir, model, self.name, self.options)
        done = answers.reused(item_set.items)
        todo = [item for item in item_set.items if item.id not in done]
        chunks = list(batched(todo, options.chunk_size))
        for chunk in track(chunks, f"{self.name}: asking {model.spec}", enabled=progress):
            prompts, asked = [], []
            for i in chunk:
                try:
                    image = item_set.load_image(i)
                except IMAGE_ERRORS as exc:
                    if unreadable is not None:
                        unreadable.append(
                            f"item {i.id!r}: unreadable image: {describe_image_error(exc)}"
                        )
                    continue
                prompts.append(
                    MCQPrompt(image, i.question or "What is shown in the picture?", i.options)
                )
                asked.append(i)
            chunk = asked
            if not chunk:
                continue
            outcomes = model.generate(prompts)
            records = []
            for item, outcome in zip(chunk, outcomes, strict=True):
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
            answers.add(chunk, records)
            done.update({r["id"]: r for r in records})
        return [done[item.id] for item in item_set.items if item.id in done]


def items_from_rows(rows: Sequence[dict[str, Any]], root: Path, name: str) -> ItemSet:
    """Validates already-built item dicts (numbered from 1)."""
    return validate_items(list(enumerate(rows, start=1)), root=root, name=name)
