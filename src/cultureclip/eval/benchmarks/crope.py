"""CROPE as contrastive two-way choices, following the CultureCLIP evaluation protocol.

CROPE asks "Is there a {concept} in the image?" about culture-specific concepts, with
*definition images* showing the asked-about concept. Only items whose answer is "no" are
used: their main image shows a different (target) concept. Each becomes two-option
choices between ``"There is {target} in the image."`` and ``"There is {definition
concept} in the image."``:

- the **main image** must pick the target concept;
- **each definition image** must pick the definition concept.

Metrics: ``accuracy``, ``main_accuracy`` (main images), ``definition_accuracy``
(definition images) and ``both_accuracy`` (items whose main image *and* every definition
image are right). With ``protocol=authors`` (the default, as the CultureCLIP authors'
evaluator computes it) ``accuracy`` pools main and definition images; with
``protocol=cultureclip`` it is the main-image accuracy.

Layout accepted: an annotation file (or a directory holding one, ``crope.json`` preferred)
with, per record, the main image, the ``answer`` (``yes``/``no``), the asked-about concept,
the depicted concept and the definition images (a list or one path), each under one of the
key aliases below. Country/category (``country, culture``; ``category``) are used for
grouping when present.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field

from cultureclip.eval.benchmarks.benchmark import BenchmarkSettings
from cultureclip.eval.benchmarks.mcq import MCQBenchmark, MCQOptions, items_from_rows
from cultureclip.eval.benchmarks.registry import BENCHMARKS
from cultureclip.eval.benchmarks.source import pick
from cultureclip.eval.items import ItemSet
from cultureclip.eval.metrics import role_accuracy

IMAGE_KEYS = ("image", "image_path", "img")
ASKED_KEYS = ("concept", "definition_concept", "query_concept", "question_concept")
TARGET_KEYS = ("target_concept", "target", "image_concept", "depicted_concept")
DEFINITION_KEYS = ("definition_images", "context_images", "definition_image")


class CropeOptions(MCQOptions):
    templates: dict[str, str] = Field(
        default_factory=lambda: {"recognition": "There is {option} in the image."}
    )
    #: ``authors``: ``accuracy`` pools main and definition images (the CultureCLIP authors'
    #: evaluator); ``cultureclip``: ``accuracy`` counts the main images only
    protocol: Literal["authors", "cultureclip"] = "authors"


@BENCHMARKS.register(
    "crope", help="CROPE 'no' items: main image picks the target, definition images their concept"
)
class CropeBenchmark(MCQBenchmark):
    name = "crope"
    Options: ClassVar[type[BenchmarkSettings]] = CropeOptions
    options: CropeOptions

    def load_items(self) -> ItemSet:
        records, root = self.rows(("crope.json", "crope.jsonl"))
        rows: list[dict[str, Any]] = []
        for index, record in enumerate(records):
            item_id = self.record_id(record, index)
            if str(record.get("answer", "")).strip().lower() != "no":
                continue
            try:
                image = pick(record, IMAGE_KEYS, "image")
                asked = str(pick(record, ASKED_KEYS, "concept"))
                target = str(pick(record, TARGET_KEYS, "target concept"))
                definitions = pick(record, DEFINITION_KEYS, "definition images")
            except ValueError as exc:
                rows.append({"id": item_id, "_error": str(exc)})
                continue
            if isinstance(definitions, str):
                definitions = [definitions]
            common = {
                "options": [target, asked],
                "question": f"Is there a {asked} in the image?",
                "country": str(record.get("country") or record.get("culture") or ""),
                "category": str(record.get("category") or ""),
                "question_type": "recognition",
                "group_id": item_id,
            }
            rows.append(
                {**common, "id": f"{item_id}/main", "image": image, "answer": 0, "role": "main"}
            )
            for number, definition in enumerate(definitions):
                rows.append(
                    {
                        **common,
                        "id": f"{item_id}/def{number}",
                        "image": definition,
                        "answer": 1,
                        "role": "definition",
                    }
                )
        return items_from_rows(rows, root, self.name)

    def summarize(self, predictions: list[dict[str, Any]]) -> dict[str, float]:
        metrics = role_accuracy(predictions, ("main", "definition"))  # accuracy pools both roles
        if self.options.protocol == "cultureclip":
            metrics["accuracy"] = metrics["main_accuracy"]
        return metrics
