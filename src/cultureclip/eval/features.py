"""Contrastive features benchmarks share: cached text embeddings, and image embeddings read
on a background thread with unreadable images reported, not fatal."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Hashable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import torch
from torch import Tensor

from cultureclip.core.progress import track
from cultureclip.eval.items import MCQItem
from cultureclip.models.base import VisionLanguageModel

T = TypeVar("T")


def batched(sequence: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    for start in range(0, len(sequence), size):
        yield sequence[start : start + size]


class TextFeatureCache:
    """Normalised text features by string: a repeated option text is encoded once."""

    def __init__(self, model: VisionLanguageModel, batch_size: int = 256) -> None:
        self.model = model
        self.batch_size = batch_size
        self._features: dict[str, Tensor] = {}
        self.encoded = 0  # how many texts went through the text tower (for tests/benchmarks)

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


K = TypeVar("K", bound=Hashable)

#: what an unreadable image raises: missing file, truncated or non-image data, bad data: URL
IMAGE_ERRORS: tuple[type[BaseException], ...] = (OSError, ValueError, SyntaxError)


def describe_image_error(exc: BaseException) -> str:
    """One line for a skipped image (``UnidentifiedImageError`` says ``cannot identify …``)."""
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:200]


@torch.no_grad()
def embed_images(
    model: VisionLanguageModel,
    keys: Sequence[K],
    load: Callable[[K], Any],
    *,
    batch_size: int,
    progress: bool,
    description: str = "images",
    failed: dict[K, str] | None = None,
) -> dict[K, Tensor]:
    """``{key: normalised feature}``, each distinct key once; the next batch decodes on a
    thread while this one encodes. With ``failed``, an unreadable image is left out and
    ``failed[key]`` says why; without it, the error propagates."""
    unique = list(dict.fromkeys(keys))
    features: dict[K, Tensor] = {}
    chunks = list(batched(unique, batch_size))
    if not chunks:
        return features

    def load_chunk(chunk: Sequence[K]) -> list[tuple[K, Any]]:
        loaded = []
        for key in chunk:
            try:
                loaded.append((key, load(key)))
            except IMAGE_ERRORS as exc:
                if failed is None:
                    raise
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
    image = item.image
    key = image if isinstance(image, str) else "bytes:" + hashlib.sha256(image).hexdigest()[:32]
    box = (item.model_extra or {}).get("crop_box")
    return f"{key}#{','.join(str(v) for v in box)}" if box else key
