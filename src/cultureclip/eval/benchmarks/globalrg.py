"""GlobalRG as 4-way multiple choice, following the CultureCLIP evaluation protocol.

**Grounding** (culture-specific concepts of 15 regions): each image shows a ``concept``
of a ``region``; the options are that concept and 3 distractor concepts drawn from the
*same region* (regions with at least 4 distinct concepts only; seed 42); text
``"The item in the picture is {option} in {region}"``.

**Retrieval** (universals across 50 regions): each image shows a ``universal`` (e.g.
"wedding") in a ``region``; the options are the same universal in its region and in 3
distractor regions; text ``"The picture depicts a kind of {universal} in {option}"``.

``protocol=authors`` (the default) uses these templates without a final period, as the
CultureCLIP authors' evaluator does; ``protocol=cultureclip`` adds the period the paper
prints. Setting ``templates`` overrides both.

Layout accepted: an annotation file (JSON list / ``{"data": [...]}`` / JSONL / CSV /
Parquet), or a directory holding exactly one (or ``grounding.json`` / ``retrieval.json``),
with image paths relative to it; key aliases are listed below. Distractors are drawn with
a generator seeded by ``(seed, record id)``, so an item's options do not depend on which
other records are present. The correct option's position is shuffled with the same
generator (it matters to generative models).
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
from pydantic import Field, model_validator

from cultureclip.core.errors import InputError
from cultureclip.eval.benchmarks.benchmark import BenchmarkSettings, seeded_rng
from cultureclip.eval.benchmarks.features import TextFeatureCache, image_key
from cultureclip.eval.benchmarks.mcq import MCQBenchmark, MCQOptions, items_from_rows
from cultureclip.eval.benchmarks.registry import BENCHMARKS
from cultureclip.eval.benchmarks.source import pick
from cultureclip.eval.items import ItemSet

IMAGE_KEYS = ("image", "image_path", "img", "file_name", "filename", "path")
REGION_KEYS = ("region", "country", "culture")


GROUNDING_TEMPLATE = "The item in the picture is {option} in {region}"
RETRIEVAL_TEMPLATE = "The picture depicts a kind of {universal} in {option}"


class _ProtocolOptions(MCQOptions):
    #: ``authors``: the CultureCLIP authors' evaluator (templates without the final period);
    #: ``cultureclip``: the templates as the paper prints them (with the period)
    protocol: Literal["authors", "cultureclip"] = "authors"
    #: empty: the protocol's template
    templates: dict[str, str] = Field(default_factory=dict)
    n_options: int = Field(4, ge=2)
    template: ClassVar[str] = ""

    @model_validator(mode="after")
    def _protocol_templates(self) -> _ProtocolOptions:
        if not self.templates:
            period = "" if self.protocol == "authors" else "."
            # validate_assignment would recurse into this validator: set the field directly
            object.__setattr__(self, "templates", {"recognition": self.template + period})
        return self


class GroundingOptions(_ProtocolOptions):
    template: ClassVar[str] = GROUNDING_TEMPLATE
    #: score on the box crop when a record has a box (``bbox``, ``box``, ``bounding_box``):
    #: the grounding view; without boxes (the public test set) the whole image is used
    use_boxes: bool = False
    #: ``xywh`` (COCO: x, y, width, height) or ``xyxy`` (corners), in pixels
    box_format: Literal["xywh", "xyxy"] = "xywh"


class RetrievalOptions(_ProtocolOptions):
    template: ClassVar[str] = RETRIEVAL_TEMPLATE
    #: the benchmark's own retrieval metrics: the query text per universal and the cut-offs
    query_template: str = "a photo of {universal}"
    retrieval_ks: list[int] = Field(default_factory=lambda: [5, 10], min_length=1)


class _GlobalRGBenchmark(MCQBenchmark):
    def _base(self, index: int, record: dict[str, Any]) -> dict[str, Any]:
        if "_error" in record:
            raise InputError(str(record["_error"]))
        region = str(pick(record, REGION_KEYS, "region"))
        return {
            "id": self.record_id(record, index, ("id", "u_id", "image_id")),
            "image": pick(record, IMAGE_KEYS, "image"),
            "country": region,
            "region": region,
            "category": str(record.get("category") or ""),
            "question_type": "recognition",
            "language": "en",
        }


@BENCHMARKS.register(
    "globalrg-grounding", help="GlobalRG grounding: 4-way, distractor concepts of the same region"
)
class GlobalRGGrounding(_GlobalRGBenchmark):
    name = "globalrg-grounding"
    Options: ClassVar[type[BenchmarkSettings]] = GroundingOptions
    options: GroundingOptions

    def load_items(self) -> ItemSet:
        records, root = self.rows(("grounding.json", "grounding.jsonl", "annotations.json"))
        rows: list[dict[str, Any]] = []
        concepts_by_region: dict[str, set[str]] = defaultdict(set)
        parsed = []
        for index, record in enumerate(records):
            try:
                base = self._base(index, record)
                concept = str(pick(record, ("concept", "keyword", "label", "name"), "concept"))
            except ValueError as exc:
                rows.append({"id": self.record_id(record, index), "_error": str(exc)})
                continue
            if self.options.use_boxes:
                box = next(
                    (record[k] for k in ("bbox", "box", "bounding_box") if record.get(k)), None
                )
                if box is not None:
                    try:
                        x0, y0, a, b = (float(v) for v in box)
                    except (TypeError, ValueError):
                        rows.append({"id": base["id"], "_error": f"box {box!r} is not 4 numbers"})
                        continue
                    base["crop_box"] = (
                        [x0, y0, x0 + a, y0 + b]
                        if self.options.box_format == "xywh"
                        else [x0, y0, a, b]
                    )
            concepts_by_region[base["region"]].add(concept)
            parsed.append((base, concept))
        for base, concept in parsed:
            pool = sorted(concepts_by_region[base["region"]] - {concept})
            if len(pool) < self.options.n_options - 1:
                continue  # the protocol keeps only regions with enough concepts
            rng = seeded_rng(self.options.seed, base["id"])
            choices = [concept, *rng.sample(pool, self.options.n_options - 1)]
            rng.shuffle(choices)
            rows.append(
                {
                    **base,
                    "question": "Which item is in the picture?",
                    "options": choices,
                    "answer": choices.index(concept),
                    "concept": concept,
                }
            )
        return items_from_rows(rows, root, self.name)


@BENCHMARKS.register(
    "globalrg-retrieval", help="GlobalRG retrieval: 4-way, the universal in 3 distractor regions"
)
class GlobalRGRetrieval(_GlobalRGBenchmark):
    name = "globalrg-retrieval"
    Options: ClassVar[type[BenchmarkSettings]] = RetrievalOptions
    options: RetrievalOptions

    def run(self, model: Any, *, work_dir: Path | None = None, progress: bool = True) -> Any:
        output = super().run(model, work_dir=work_dir, progress=progress)
        features = getattr(self, "_image_features", None)
        if features:
            output.metrics.update(self.retrieval_metrics(model, features))
        return output

    def retrieval_metrics(self, model: Any, features: dict[str, Any]) -> dict[str, float]:
        """GlobalRG's retrieval view: per universal, rank every image by the query text.

        ``precision@k``: the share of the top k images that show the queried universal;
        ``diversity@k``: the normalised Shannon entropy of the regions among the top k
        (1 = all different regions, 0 = one region), both averaged over universals.
        """
        items = [i for i in self.items().items if image_key(i) in features]
        if not items:
            return {}
        universals = sorted({str(i.model_extra["universal"]) for i in items})
        queries = [self.options.query_template.format(universal=u) for u in universals]
        texts = TextFeatureCache(model).encode(queries)
        images = torch.stack([features[image_key(i)] for i in items])
        sim = texts @ images.T  # [universals, images]
        metrics: dict[str, float] = {}
        for k in self.options.retrieval_ks:
            top = min(k, len(items))
            precisions, diversities = [], []
            for row, universal in enumerate(universals):
                order = torch.argsort(sim[row], descending=True, stable=True)[:top].tolist()
                hits = [items[j] for j in order]
                precision = (
                    100.0 * sum(str(h.model_extra["universal"]) == universal for h in hits) / top
                )
                counts = Counter(h.country for h in hits)
                entropy = -sum(c / top * math.log(c / top) for c in counts.values())
                diversity = 100.0 * entropy / math.log(top) if top > 1 else 0.0
                precisions.append(precision)
                diversities.append(diversity)
            metrics[f"precision@{k}"] = sum(precisions) / len(precisions)
            metrics[f"diversity@{k}"] = sum(diversities) / len(diversities)
        return metrics

    def load_items(self) -> ItemSet:
        records, root = self.rows(("retrieval.json", "retrieval.jsonl", "annotations.json"))
        rows: list[dict[str, Any]] = []
        parsed = []
        for index, record in enumerate(records):
            try:
                base = self._base(index, record)
                universal = str(pick(record, ("universal", "concept", "category"), "universal"))
            except ValueError as exc:
                rows.append({"id": self.record_id(record, index), "_error": str(exc)})
                continue
            parsed.append((base, universal))
        regions = sorted({base["region"] for base, _ in parsed})
        if len(regions) < self.options.n_options:
            raise InputError(
                f"{self.name} needs at least {self.options.n_options} regions for {self.options.n_options}-way items; "
                f"{self.data} has {len(regions)}"
            )
        for base, universal in parsed:
            rng = seeded_rng(self.options.seed, base["id"])
            distractors = rng.sample(
                [r for r in regions if r != base["region"]], self.options.n_options - 1
            )
            choices = [base["region"], *distractors]
            rng.shuffle(choices)
            rows.append(
                {
                    **base,
                    "category": base["category"] or universal,
                    "question": f"In which region was this picture of a {universal} taken?",
                    "options": choices,
                    "answer": choices.index(base["region"]),
                    "universal": universal,
                }
            )
        return items_from_rows(rows, root, self.name)
