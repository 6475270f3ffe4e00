"""Zero-shot classification: the general task of the forgetting check.

Data, either:

- an **image folder**: ``root/<class name>/<image>`` (``_`` in folder names reads as a
  space), optionally with ``classnames.txt`` (one display name per line, in sorted
  folder order) to override the folder names;
- a **labelled list**: a CSV/TSV/JSONL/JSON/Parquet file with an image path column
  (``image, image_path, filepath, file_name, path``) and a label column (``label,
  class, classname, category``); a ``classnames.txt`` beside it, if present, fixes the
  class list (integer labels index into it).

Each class text is the mean of its normalised template features (CLIP's prompt
ensembling), re-normalised. Metrics: ``acc1``, ``acc5`` (top-5 with pessimistic ties) and
``mean_per_class_recall``, in percent.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import torch
from pydantic import Field

from cultureclip.core.errors import InputError
from cultureclip.eval.benchmarks.base import (
    Benchmark,
    BenchmarkOptions,
    BenchmarkOutput,
    TextFeatureCache,
    embed_images,
    is_local,
    load_hub_rows,
)
from cultureclip.eval.benchmarks.records import find_annotation_file, pick, read_records
from cultureclip.eval.benchmarks.registry import BENCHMARKS
from cultureclip.eval.items import load_image
from cultureclip.eval.metrics import accuracy, best_correct_rank, group_accuracy
from cultureclip.models.base import VisionLanguageModel

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif"}


class ZeroShotOptions(BenchmarkOptions):
    templates: list[str] = Field(
        default_factory=lambda: ["a photo of a {c}.", "a photo of the {c}.", "an image of a {c}."],
        min_length=1,
    )


def _read_classnames(directory: Path) -> list[str] | None:
    file = directory / "classnames.txt"
    if not file.exists():
        return None
    return [line.strip() for line in file.read_text(encoding="utf-8").splitlines() if line.strip()]


@BENCHMARKS.register(
    "zeroshot", help="zero-shot classification (image folder or labelled list), top-1/top-5"
)
class ZeroShotBenchmark(Benchmark):
    name = "zeroshot"
    task = "zeroshot_classification"
    Options: ClassVar[type[BenchmarkOptions]] = ZeroShotOptions

    def load(self) -> tuple[list[str | bytes], list[int], list[str], Path]:
        """Images, label indices, class names and the image root."""
        if not is_local(self.data):
            rows = load_hub_rows(str(self.data), self.split)
            images = [pick(r, ("image", "img"), "image") for r in rows]
            labels_raw = [pick(r, ("label", "class", "classname"), "label") for r in rows]
            classnames = sorted({str(label) for label in labels_raw})
            return (
                images,
                [classnames.index(str(label)) for label in labels_raw],
                classnames,
                Path("."),
            )
        path = Path(self.data)
        if path.is_dir() and any(p.is_dir() for p in path.iterdir()):
            folders = sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
            classnames = _read_classnames(path) or [p.name.replace("_", " ") for p in folders]
            if len(classnames) != len(folders):
                raise InputError(
                    f"classnames.txt in {path} lists {len(classnames)} names for {len(folders)} folders"
                )
            images: list[str | bytes] = []
            labels: list[int] = []
            for index, folder in enumerate(folders):
                for file in sorted(folder.iterdir()):
                    if file.suffix.lower() in IMAGE_SUFFIXES:
                        images.append(str(file.relative_to(path)))
                        labels.append(index)
            return images, labels, classnames, path
        file = find_annotation_file(path, ("labels.csv", "labels.jsonl", "test.csv"))
        rows = read_records(file)
        images = [
            pick(r, ("image", "image_path", "filepath", "file_name", "path"), "image") for r in rows
        ]
        raw = [pick(r, ("label", "class", "classname", "category"), "label") for r in rows]
        classnames = _read_classnames(file.parent)
        if classnames is None:
            classnames = sorted({str(label) for label in raw})
            labels = [classnames.index(str(label)) for label in raw]
        else:
            labels = []
            for label in raw:
                text = str(label)
                if text in classnames:
                    labels.append(classnames.index(text))
                elif text.lstrip("-").isdigit() and 0 <= int(text) < len(classnames):
                    labels.append(int(text))
                else:
                    raise InputError(f"label {label!r} in {file} is not in classnames.txt")
        return images, labels, classnames, file.parent

    def run(
        self, model: Any, *, work_dir: Path | None = None, progress: bool = True
    ) -> BenchmarkOutput:
        if not isinstance(model, VisionLanguageModel):
            raise TypeError("zero-shot classification scores contrastive models only")
        options: ZeroShotOptions = self.options  # type: ignore[assignment]
        images, labels, classnames, root = self.load()
        if not images:
            raise InputError(f"no images found in {self.data}")
        cache = TextFeatureCache(model)
        class_features = []
        for name in classnames:
            features = cache.encode([t.format(c=name) for t in options.templates]).mean(dim=0)
            class_features.append(torch.nn.functional.normalize(features, dim=0))
        weights = torch.stack(class_features)
        keys = [str(i) for i in range(len(images))]
        features = embed_images(
            model,
            keys,
            lambda key: load_image(images[int(key)], root),
            batch_size=options.batch_size,
            progress=progress,
            description="zeroshot: images",
        )
        logits = torch.stack([features[k] for k in keys]) @ weights.T
        ranks = best_correct_rank(logits, [[label] for label in labels])
        predictions = [
            {
                "id": images[i] if isinstance(images[i], str) else str(i),
                "answer": labels[i],
                "prediction": int(torch.argmax(logits[i])) if ranks[i] > 0 else labels[i],
                "rank": int(ranks[i]),
                "correct": bool(ranks[i] == 0),
                "class": classnames[labels[i]],
            }
            for i in range(len(images))
        ]
        per_class = group_accuracy(predictions, keys=("class",))
        metrics = {
            "acc1": accuracy([r == 0 for r in ranks.tolist()]),
            "acc5": accuracy([r < 5 for r in ranks.tolist()]),
            "mean_per_class_recall": float(
                sum(g["accuracy"] for g in per_class.get("class", {}).values())
                / max(1, len(classnames))
            ),
        }
        return BenchmarkOutput(
            metrics=metrics, predictions=predictions, per_group=per_class, n=len(images)
        )
