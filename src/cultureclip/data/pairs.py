"""Plain image–text pairs, the common currency of retrieval data and plain CLIP training.

A :class:`PairCollection` is a list of images and a list of texts with a many-to-many
relation (a CulTi text may describe several images). Readers for the on-disk
layouts (Chinese-CLIP/CulTi TSV+JSONL, folders with a captions file, CulTwin sets)
live in :mod:`cultureclip.data.collections` and all return this type.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

ImageSource = Path | bytes


def open_image(source: ImageSource) -> Image.Image:
    """Opens a path or encoded bytes (base64 text is decoded) as an RGB PIL image."""
    if isinstance(source, Path):
        with Image.open(source) as image:
            return image.convert("RGB")
    data = source
    if not data[:8].startswith((b"\x89PNG", b"\xff\xd8", b"GIF8", b"RIFF", b"BM")):
        data = base64.b64decode(data)
    with Image.open(io.BytesIO(data)) as image:
        return image.convert("RGB")


@dataclass
class PairCollection:
    """Images and texts with ``text_to_images[t]`` = indices of the images text ``t`` describes."""

    image_ids: list[str]
    images: list[ImageSource]
    text_ids: list[str]
    texts: list[str]
    text_to_images: list[list[int]]
    name: str = ""
    meta: dict[str, object] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.image_ids) != len(self.images):
            raise ValueError("image_ids and images differ in length")
        if not (len(self.text_ids) == len(self.texts) == len(self.text_to_images)):
            raise ValueError("text_ids, texts and text_to_images differ in length")

    def load_image(self, index: int) -> Image.Image:
        return open_image(self.images[index])

    def pairs(self) -> list[tuple[int, int]]:
        """Every (image index, text index) positive pair: one training example each."""
        return [
            (image, text) for text, images in enumerate(self.text_to_images) for image in images
        ]

    def image_to_texts(self) -> list[list[int]]:
        result: list[list[int]] = [[] for _ in self.images]
        for text, images in enumerate(self.text_to_images):
            for image in images:
                result[image].append(text)
        return result

    def subset(self, text_indices: Sequence[int]) -> PairCollection:
        """The texts at ``text_indices`` and just the images they reference."""
        keep = sorted({i for t in text_indices for i in self.text_to_images[t]})
        remap = {old: new for new, old in enumerate(keep)}
        return PairCollection(
            image_ids=[self.image_ids[i] for i in keep],
            images=[self.images[i] for i in keep],
            text_ids=[self.text_ids[t] for t in text_indices],
            texts=[self.texts[t] for t in text_indices],
            text_to_images=[[remap[i] for i in self.text_to_images[t]] for t in text_indices],
            name=self.name,
            meta=dict(self.meta),
        )


PairLoader = Callable[..., PairCollection]
