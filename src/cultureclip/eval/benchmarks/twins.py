"""Twin accuracy on a CulTwin set: does each image pick its own concept over its twin?

For every pair with both images, the ``pos`` image chooses between the texts of its
concept and of the twin concept, and so does the ``neg`` image. Metrics (percent):
``accuracy`` over all images, ``pos_accuracy``, ``neg_accuracy`` and ``both_accuracy``
(pairs whose two images are both right). Ties count as wrong. A pair with a missing or unreadable image is skipped and reported
by record id (``skipped``), never aborts the run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from pydantic import Field

from cultureclip.core.errors import InputError
from cultureclip.data.cultwin import CulTwinLoad, read_cultwin
from cultureclip.data.taxonomy import continent_of
from cultureclip.eval.benchmarks.benchmark import Benchmark, BenchmarkOutput, BenchmarkSettings
from cultureclip.eval.benchmarks.features import TextFeatureCache, embed_images
from cultureclip.eval.benchmarks.registry import BENCHMARKS
from cultureclip.eval.items import load_image
from cultureclip.eval.metrics import group_accuracy, mcq_decision, role_accuracy
from cultureclip.models.base import VisionLanguageModel


class TwinOptions(BenchmarkSettings):
    template: str = Field(
        "a photo of {concept}.", description="text of a concept; {concept}, {country}, {category}"
    )


@BENCHMARKS.register(
    "twins", help="twin accuracy on a CulTwin set (image picks its concept over its twin)"
)
class TwinBenchmark(Benchmark):
    name = "twins"
    task = "twin_accuracy"
    Options: ClassVar[type[BenchmarkSettings]] = TwinOptions
    options: TwinOptions

    def __init__(
        self, data: str | Path | CulTwinLoad, *, split: str | None = None, **options: Any
    ) -> None:
        super().__init__(
            data if not isinstance(data, CulTwinLoad) else str(data.root), split=split, **options
        )
        self._load = data if isinstance(data, CulTwinLoad) else None

    def prepare(self) -> None:
        if self._load is None:
            self._load = read_cultwin(self.data)
        if not any(r.pos_image and r.neg_image for r in self._load.records):
            raise InputError(f"no twin pair with both images in {self.data}")

    def run(
        self, model: Any, *, work_dir: Path | None = None, progress: bool = True
    ) -> BenchmarkOutput:
        if not isinstance(model, VisionLanguageModel):
            raise TypeError("twin accuracy scores contrastive models only")
        self.prepare()
        load = self._load
        assert load is not None
        records = [r for r in load.records if r.pos_image and r.neg_image]
        cache = TextFeatureCache(model)
        images = {}
        for record in records:
            for side in ("pos", "neg"):
                images[f"{record.id}/{side}"] = load.image_path(getattr(record, f"{side}_image"))
        failed: dict[str, str] = {}
        features = embed_images(
            model,
            list(images),
            lambda key: load_image(str(images[key])),
            batch_size=self.options.batch_size,
            progress=progress,
            description="twins: images",
            failed=failed,
        )
        # A pair is scored only when both of its images read; the others are reported.
        skipped = [f"line {bad.line}: {bad.error}" for bad in load.errors] + [
            f"record {key.rsplit('/', 1)[0]!r} ({key}): unreadable image: {error}"
            for key, error in failed.items()
        ]
        broken = {key.rsplit("/", 1)[0] for key in failed}
        records = [r for r in records if r.id not in broken]
        if not records:
            raise InputError(f"no twin pair with two readable images in {self.data}; {skipped[-1]}")
        scale = float(model.logit_scale.detach())
        predictions = []
        for record in records:
            fields = {"country": record.country, "category": record.category}
            texts = [
                self.options.template.format(concept=record.pos_concept, **fields),
                self.options.template.format(concept=record.neg_concept, **fields),
            ]
            text_features = cache.encode(texts)
            for answer, side in enumerate(("pos", "neg")):
                scores = scale * (text_features @ features[f"{record.id}/{side}"])
                predicted, correct = mcq_decision(scores, answer)
                predictions.append(
                    {
                        "id": f"{record.id}/{side}",
                        "group_id": record.id,
                        "role": side,
                        "answer": answer,
                        "prediction": predicted,
                        "correct": correct,
                        "continent": continent_of(record.country),
                        **fields,
                    }
                )
        return BenchmarkOutput(
            metrics=role_accuracy(predictions, ("pos", "neg")),
            predictions=predictions,
            per_group=group_accuracy(predictions),
            n=len(predictions),
            skipped=skipped,
            chance=50.0,
        )
