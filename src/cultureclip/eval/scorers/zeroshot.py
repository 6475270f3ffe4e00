"""Zero-shot classification (``scorer: zeroshot``; docs/eval.md, "Benchmarks") of an image
folder, a labelled list or a hub dataset with a ``ClassLabel``: ``acc1``, ``acc5`` and
``mean_per_class_recall``."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import torch
from pydantic import Field

from cultureclip.core.errors import InputError
from cultureclip.eval.features import TextFeatureCache, embed_images
from cultureclip.eval.items import load_image
from cultureclip.eval.metrics import accuracy, best_correct_rank, group_accuracy
from cultureclip.eval.scorers import SCORERS, BenchmarkOutput, Scorer, ScorerSettings
from cultureclip.eval.source import find_annotation_file, is_hub_layout, read_records, read_rows
from cultureclip.models.base import VisionLanguageModel

NOT_IMAGES = {".txt", ".csv", ".tsv", ".json", ".jsonl", ".parquet", ".md", ".yaml", ".yml"}


def image_suffixes() -> set[str]:
    """Every file extension Pillow can open (``.jpg``, ``.jfif``, ``.png``, ``.tif``…)."""
    from PIL import Image

    Image.init()
    return {suffix.lower() for suffix in Image.registered_extensions()}


class ZeroShotOptions(ScorerSettings):
    templates: list[str] = Field(
        default_factory=lambda: ["a photo of a {c}.", "a photo of the {c}.", "an image of a {c}."],
        min_length=1,
    )


def _read_classnames(directory: Path) -> list[str] | None:
    file = directory / "classnames.txt"
    if not file.exists():
        return None
    return [line.strip() for line in file.read_text(encoding="utf-8").splitlines() if line.strip()]


@SCORERS.register("zeroshot", help="zero-shot classification: top-1/top-5, per-class recall")
class ZeroShotScorer(Scorer):
    task = "zeroshot_classification"
    Options: ClassVar[type[ScorerSettings]] = ZeroShotOptions
    prompt_option = "templates"

    def load(self) -> tuple[list[str | bytes], list[int], list[str], Path]:
        """Images, label indices, class names and the image root (skips in ``self.skipped``)."""
        self.skipped: list[str] = []
        bench = self.bench
        path = Path(str(bench.data))
        label_files = bench.spec.source.files
        if not path.exists() or is_hub_layout(path):
            rows, _ = read_rows(bench.data, bench.split, label_names=True)
            images = [bench.field(r, "image") for r in rows]
            names = [str(bench.field(r, "label")) for r in rows]
            classnames = sorted(set(names))
            return images, [classnames.index(name) for name in names], classnames, Path(".")
        labelled_list = path.is_dir() and any((path / name).is_file() for name in label_files)
        if path.is_dir() and not labelled_list and any(p.is_dir() for p in path.iterdir()):
            return self._load_folder(path)
        file = find_annotation_file(path, label_files)
        rows = read_records(file)
        images = [bench.field(r, "image") for r in rows]
        raw = [bench.field(r, "label") for r in rows]
        classnames = _read_classnames(file.parent)
        if classnames is None:
            classnames = sorted({str(label) for label in raw})
        labels = []
        for label in raw:  # a class name, or with classnames.txt also an index into it
            text = str(label)
            if text in classnames:
                labels.append(classnames.index(text))
            elif text.lstrip("-").isdigit() and 0 <= int(text) < len(classnames):
                labels.append(int(text))
            else:
                raise InputError(f"label {label!r} in {file} is not in classnames.txt")
        return images, labels, classnames, file.parent

    def _load_folder(self, path: Path) -> tuple[list[str | bytes], list[int], list[str], Path]:
        folders = sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
        if len(folders) == 1:
            raise InputError(
                f"{path} is an image folder with a single class ({folders[0].name!r}): "
                "zero-shot needs one sub-folder per class; for a labelled list pass the "
                "labels file (labels.csv) itself"
            )
        classnames = _read_classnames(path) or [p.name.replace("_", " ") for p in folders]
        if len(classnames) != len(folders):
            raise InputError(
                f"classnames.txt in {path} lists {len(classnames)} names for {len(folders)} folders"
            )
        suffixes = image_suffixes()
        images: list[str | bytes] = []
        labels: list[int] = []
        for index, folder in enumerate(folders):
            for file in sorted(folder.rglob("*")):
                relative = file.relative_to(path)
                if not file.is_file() or any(part.startswith(".") for part in relative.parts):
                    continue
                if file.suffix.lower() in suffixes:
                    images.append(str(relative))
                    labels.append(index)
                elif file.suffix.lower() not in NOT_IMAGES:
                    self.skipped.append(f"{relative}: not an image file Pillow reads")
        return images, labels, classnames, path

    def prepare(self) -> None:
        if getattr(self, "_loaded", None) is None:
            self._loaded = self.load()
        if not self._loaded[0]:
            detail = f"; skipped: {self.skipped[0]}" if self.skipped else ""
            raise InputError(f"no images found in {self.bench.data}{detail}")

    def run(
        self, model: Any, *, work_dir: Path | None = None, progress: bool = True
    ) -> BenchmarkOutput:
        if not isinstance(model, VisionLanguageModel):
            raise TypeError("zero-shot classification scores contrastive models only")
        self.prepare()
        images, labels, classnames, root = self._loaded
        # Every class's prompts in one pass: a tower call per class is mostly overhead.
        templates = self.options.templates
        prompts = [t.format(c=name) for name in classnames for t in templates]
        per_class = (
            TextFeatureCache(model).encode(prompts).view(len(classnames), len(templates), -1)
        )
        weights = torch.nn.functional.normalize(per_class.mean(dim=1), dim=-1)
        failed: dict[int, str] = {}
        features = embed_images(
            model,
            range(len(images)),
            lambda index: load_image(images[index], root),
            batch_size=self.options.batch_size,
            progress=progress,
            description="zeroshot: images",
            failed=failed,
        )
        skipped = list(self.skipped)
        for index, error in failed.items():
            name = images[index] if isinstance(images[index], str) else f"row {index}"
            skipped.append(f"{name}: unreadable image: {error}")
        keep = [i for i in range(len(images)) if i not in failed]
        if not keep:
            raise InputError(f"no readable image in {self.bench.data}; e.g. {skipped[0]}")
        logits = torch.stack([features[i] for i in keep]) @ weights.T
        images = [images[i] for i in keep]
        labels = [labels[i] for i in keep]
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
        # over the classes that have images (CLIP_benchmark, sklearn balanced accuracy)
        recalls = [group["accuracy"] for group in per_class.get("class", {}).values()]
        metrics = {
            "acc1": accuracy([r == 0 for r in ranks.tolist()]),
            "acc5": accuracy([r < 5 for r in ranks.tolist()]),
            "mean_per_class_recall": float(sum(recalls) / max(1, len(recalls))),
        }
        return BenchmarkOutput(
            metrics=metrics,
            predictions=predictions,
            per_group=per_class,
            n=len(images),
            skipped=skipped,
            chance=round(100.0 / len(classnames), 4),
        )
