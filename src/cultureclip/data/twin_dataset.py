"""A torch Dataset over a CulTwin set that yields twin training examples.

Each item carries both halves of a pair: the positive image and its twin's image,
one caption of each (drawn deterministically from ``(seed, epoch, record id)`` so a
resumed run sees the same captions), and both bare concept names: what the
CultureCLIP loss needs.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

from cultureclip.data.cultwin import CulTwinLoad, TwinRecord
from cultureclip.data.pairs import open_image

ImageTransform = Callable[[Sequence[Image.Image]], Tensor]
Tokenize = Callable[[Sequence[str]], dict[str, Tensor]]


@dataclass
class TwinBatch:
    pos_images: Tensor
    neg_images: Tensor
    pos_captions: dict[str, Tensor]
    neg_captions: dict[str, Tensor]
    pos_concepts: dict[str, Tensor]
    neg_concepts: dict[str, Tensor]
    ids: list[str]

    def __len__(self) -> int:
        return len(self.ids)


class TwinDataset(Dataset):
    """Twin examples from a loaded CulTwin set; records without both images are skipped."""

    def __init__(
        self,
        data: CulTwinLoad,
        transform: ImageTransform,
        *,
        seed: int = 0,
        concept_template: str = "{concept}",
    ) -> None:
        self.root = data
        self.records: list[TwinRecord] = [r for r in data.records if r.pos_image and r.neg_image]
        self.transform = transform
        self.seed = seed
        self.epoch = 0
        self.concept_template = concept_template

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.records)

    def _caption(self, captions: list[str], concept: str, rng: random.Random) -> str:
        return rng.choice(captions) if captions else self.concept_template.format(concept=concept)

    def sources(self, index: int) -> dict[str, Any]:
        """Example ``index`` before decoding: its two image paths and its four texts."""
        record = self.records[index]
        rng = random.Random(f"{self.seed}:{self.epoch}:{record.id}")
        return {
            "id": record.id,
            "pos_image": self.root.image_path(record.pos_image),
            "neg_image": self.root.image_path(record.neg_image),
            "pos_caption": self._caption(record.pos_captions, record.pos_concept, rng),
            "neg_caption": self._caption(record.neg_captions, record.neg_concept, rng),
            "pos_concept": self.concept_template.format(concept=record.pos_concept),
            "neg_concept": self.concept_template.format(concept=record.neg_concept),
        }

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = self.sources(index)
        pixels = self.transform([open_image(item["pos_image"]), open_image(item["neg_image"])])
        return {**item, "pos_image": pixels[0], "neg_image": pixels[1]}


@dataclass
class TwinCollator:
    """Stacks images and tokenises captions and concept names with the model's tokenizer.

    ``batch_images`` turns a field's item values into one tensor: ``torch.stack`` of
    pixels, or one gather of a fixed tower's stored rows (items carry image sources).
    """

    tokenize: Tokenize
    batch_images: Callable[[list[Any]], Tensor] = torch.stack

    def __call__(self, items: list[dict[str, Any]]) -> TwinBatch:
        def texts(key: str) -> list[str]:
            return [item[key] for item in items]

        return TwinBatch(
            pos_images=self.batch_images(texts("pos_image")),
            neg_images=self.batch_images(texts("neg_image")),
            pos_captions=self.tokenize(texts("pos_caption")),
            neg_captions=self.tokenize(texts("neg_caption")),
            pos_concepts=self.tokenize(texts("pos_concept")),
            neg_concepts=self.tokenize(texts("neg_concept")),
            ids=texts("id"),
        )
