"""A twin miner that needs no LLM: nearest concept of another group, same category.

Given a labelled image corpus (concept, country or any other group, category, images),
each concept is paired with the most visually similar concept of a *different* group
(by default the country) in the *same* category, by cosine similarity of image
embeddings from any registered model. It is the cheap alternative to LLM twin
matching: on emoji and flags it finds pairs such as Indonesia/Monaco or kimono/sari
from pixels alone; on photos of ethnic groups' costumes within one country it pairs
each photo with the most similar photo of another group.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from PIL import Image

from cultureclip.core.errors import InputError


class Labelled(Protocol):
    key: str  # stable identity; breaks similarity ties deterministically
    country: str
    category: str


@dataclass(frozen=True)
class MinedTwin:
    pos: int  # index of the concept
    neg: int  # index of its twin
    similarity: float


def _field(item: Any, name: str) -> str:
    return str(item[name] if isinstance(item, dict) else getattr(item, name))


def mine_twins(
    concepts: Sequence[Labelled | dict[str, Any]],
    embeddings: Any,
    *,
    min_similarity: float | None = None,
    across: str = "country",
) -> list[MinedTwin]:
    """Pairs every concept with its most similar concept of another country in its category.

    ``across`` names the field twins must differ in: ``country`` by default, or any
    grouping field the concepts carry (a culture, ethnic group, region or period).

    ``embeddings`` is ``[N, D]`` (numpy or torch), one row per concept (normalised here).
    Ties in similarity go to the candidate with the smaller ``key``, so the result does
    not depend on input order. Concepts without any candidate (or none above
    ``min_similarity``) are left out. Returns one :class:`MinedTwin` per paired concept,
    in input order.
    """
    matrix = np.asarray(
        embeddings.detach().cpu() if hasattr(embeddings, "detach") else embeddings, dtype=np.float64
    )
    if matrix.ndim != 2 or matrix.shape[0] != len(concepts):
        raise ValueError(f"embeddings must be [N={len(concepts)}, D], got shape {matrix.shape}")
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    if np.any(norms == 0):
        raise ValueError("an embedding is all zeros; cannot compute cosine similarity")
    matrix = matrix / norms
    similarity = matrix @ matrix.T
    keys = [_field(c, "key") for c in concepts]
    groups = [_field(c, across) for c in concepts]
    categories = [_field(c, "category") for c in concepts]
    by_category: dict[str, list[int]] = {}
    for index, category in enumerate(categories):
        by_category.setdefault(category, []).append(index)
    twins = []
    for i in range(len(concepts)):
        candidates = [j for j in by_category[categories[i]] if groups[j] != groups[i]]
        if not candidates:
            continue
        # Rounding makes float noise between equal images a tie, resolved by key.
        best = min(candidates, key=lambda j: (-round(float(similarity[i, j]), 9), keys[j], j))
        score = float(similarity[i, best])
        if min_similarity is not None and score < min_similarity:
            continue
        twins.append(MinedTwin(pos=i, neg=best, similarity=score))
    return twins


def embed_concepts(
    model: Any,
    images_per_concept: Sequence[Sequence[Image.Image | Callable[[], Image.Image]]],
    *,
    batch_size: int = 32,
    on_progress: Callable[[int], None] | None = None,
) -> np.ndarray:
    """One embedding per concept: the normalised mean of its images' embeddings.

    ``model`` is a :class:`~cultureclip.models.base.VisionLanguageModel`; images may be
    given lazily as callables so a large corpus is not held in memory at once.
    ``on_progress(n)`` is called after each batch with the number of images embedded.
    """
    flat: list[tuple[int, Image.Image | Callable[[], Image.Image]]] = [
        (concept, image) for concept, images in enumerate(images_per_concept) for image in images
    ]
    if any(len(images) == 0 for images in images_per_concept):
        raise InputError("every concept needs at least one image to be mined")
    sums: np.ndarray | None = None
    for start in range(0, len(flat), batch_size):
        chunk = flat[start : start + batch_size]
        pil = [image() if callable(image) else image for _, image in chunk]
        features = model.embed_images(pil, batch_size=len(pil)).cpu().numpy().astype(np.float64)
        if sums is None:
            sums = np.zeros((len(images_per_concept), features.shape[1]))
        for (concept, _), feature in zip(chunk, features, strict=True):
            sums[concept] += feature
        if on_progress is not None:
            on_progress(len(chunk))
    assert sums is not None
    return sums / np.linalg.norm(sums, axis=1, keepdims=True)
