"""Retrieval evaluation: Recall@1/5/10 both ways and MR, global-only next to LACLIP variants.

Metrics come from :func:`cultureclip.eval.metrics.retrieval_metrics` (one implementation
for the whole toolkit): a text with several correct images is a hit when any of them is
in the top K. Views are encoded once per crop setting (k, scale, ratio, seed) and reused
for every weighting, τ and β, so a sweep costs one encoding pass per crop setting.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from pydantic import Field

from cultureclip.config import Config
from cultureclip.core.errors import InputError
from cultureclip.data.collections import ImageDecodeError, decode_image
from cultureclip.data.pairs import PairCollection
from cultureclip.models.base import VisionLanguageModel
from cultureclip.retrieval.laclip import LaclipConfig, LaclipEncoder, LaclipViews, Weighting

METRIC_KEYS = ("t2i_R@1", "t2i_R@5", "t2i_R@10", "i2t_R@1", "i2t_R@5", "i2t_R@10", "MR")

#: CulTi test split, published in the LACLIP paper (T2I R1/R5/R10, I2T R1/R5/R10, MR).
PUBLISHED_CULTI: dict[str, tuple[float, ...]] = {
    "CN-CLIP ViT-B (published)": (19.7, 43.9, 54.8, 17.4, 40.9, 53.0, 38.3),
    "CN-CLIP ViT-L (published)": (22.9, 49.6, 62.2, 21.9, 46.2, 59.3, 43.7),
    "CN-CLIP ViT-H (published)": (27.2, 53.2, 64.5, 24.5, 50.4, 64.0, 47.3),
    "LACLIP ViT-H (published)": (28.1, 56.6, 66.2, 23.6, 49.9, 62.9, 47.9),
}


class SweepConfig(Config):
    """Settings of ``cultureclip retrieval-eval``: a grid over LACLIP's parameters."""

    model: str
    data: str
    split: str | None = "test"
    split_seed: int = 0
    batch_size: int = Field(32, ge=1)
    device: str = "cpu"
    ks: list[int] = [4, 8]
    scales: list[tuple[float, float]] = [(0.25, 0.75)]
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    taus: list[float] = [0.05]
    weightings: list[Weighting] = ["softmax"]
    betas: list[float] = [0.0]
    seed: int = 0
    #: also evaluate the patch-token variant (needs a backend with patch features)
    patches: bool = False

    def grid(self) -> list[LaclipConfig]:
        """Every LACLIP setting of the sweep (softmax rows once per τ, others once)."""
        configs: list[LaclipConfig] = []
        views: list[dict[str, Any]] = [
            {"mode": "crops", "k": k, "scale": scale, "ratio": self.ratio, "seed": self.seed}
            for k, scale in itertools.product(self.ks, self.scales)
        ]
        if self.patches:
            views.append({"mode": "patches"})
        for view, weighting, beta in itertools.product(views, self.weightings, self.betas):
            taus = self.taus if weighting == "softmax" else [self.taus[0]]
            configs.extend(
                LaclipConfig(**view, weighting=weighting, tau=tau, beta=beta) for tau in taus
            )
        return configs


@dataclass
class SweepRow:
    label: str
    laclip: LaclipConfig | None
    metrics: dict[str, float]

    def as_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "laclip": self.laclip.model_dump(mode="json") if self.laclip else None,
            **self.metrics,
        }


@dataclass
class SweepResult:
    rows: list[SweepRow]
    n_images: int
    n_texts: int
    failed: list[dict[str, str]] = field(default_factory=list)
    dropped_texts: int = 0


def _decoded_batches(
    collection: PairCollection, batch_size: int, failed: list[dict[str, str]] | None
) -> Any:
    """Yields (rows, images) batches of decodable images; undecodable ones go to ``failed``."""
    for start in range(0, len(collection.images), batch_size):
        rows, images = [], []
        for row in range(start, min(start + batch_size, len(collection.images))):
            try:
                images.append(decode_image(collection.images[row]))
                rows.append(row)
            except ImageDecodeError as exc:
                if failed is not None:
                    failed.append({"image_id": collection.image_ids[row], "reason": str(exc)})
        yield rows, images


def _encode_views(
    encoder: LaclipEncoder,
    collection: PairCollection,
    batch_size: int,
    failed: list[dict[str, str]] | None,
    advance: Callable[[int], None],
) -> tuple[list[int], LaclipViews]:
    kept: list[int] = []
    parts: list[LaclipViews] = []
    for rows, images in _decoded_batches(collection, batch_size, failed):
        if images:
            parts.append(encoder.encode_views(images, [collection.image_ids[r] for r in rows]))
            kept.extend(rows)
        advance(len(rows))
    if not parts:
        raise InputError(f"no image of {collection.name or 'the collection'} could be decoded")
    views = LaclipViews(
        torch.cat([p.global_emb for p in parts]),
        torch.cat([p.local for p in parts]),
        np.concatenate([p.boxes for p in parts]),
    )
    return kept, views


def _encode_global(
    model: VisionLanguageModel,
    collection: PairCollection,
    batch_size: int,
    failed: list[dict[str, str]] | None,
    advance: Callable[[int], None],
) -> tuple[list[int], torch.Tensor]:
    kept: list[int] = []
    parts: list[torch.Tensor] = []
    for rows, images in _decoded_batches(collection, batch_size, failed):
        if images:
            parts.append(model.embed_images(images, batch_size=batch_size))
            kept.extend(rows)
        advance(len(rows))
    if not parts:
        raise InputError(f"no image of {collection.name or 'the collection'} could be decoded")
    return kept, torch.cat(parts)


def _text_targets(
    collection: PairCollection, kept: Sequence[int]
) -> tuple[list[int], list[list[int]]]:
    """Texts that still have an indexed image, with image indices remapped to ``kept``."""
    remap = {row: n for n, row in enumerate(kept)}
    texts, targets = [], []
    for t, refs in enumerate(collection.text_to_images):
        mapped = [remap[i] for i in refs if i in remap]
        if mapped:
            texts.append(t)
            targets.append(mapped)
    return texts, targets


def evaluate_retrieval(
    model: VisionLanguageModel,
    collection: PairCollection,
    laclip_configs: Sequence[LaclipConfig] = (),
    *,
    batch_size: int = 32,
    progress: bool = False,
) -> SweepResult:
    """Global-only metrics first, then one row per LACLIP config.

    Undecodable images are left out (listed in ``failed``), and texts whose images were
    all left out are not queried (counted in ``dropped_texts``).
    """
    from cultureclip.eval.metrics import retrieval_metrics
    from cultureclip.retrieval.index import progress_bar

    model.eval()
    failed: list[dict[str, str]] = []
    groups: dict[tuple[object, ...], list[LaclipConfig]] = {}
    for config in laclip_configs:
        groups.setdefault(config.crop_key(), []).append(config)
    n = len(collection.images)
    with progress_bar(progress) as bar:
        if groups:
            view_sets = []
            for number, configs in enumerate(groups.values()):
                task = bar.add_task(configs[0].label().rsplit(" ", 1)[0], total=n)
                kept, views = _encode_views(
                    LaclipEncoder(model, configs[0]),
                    collection,
                    batch_size,
                    failed if number == 0 else None,
                    lambda k, task=task: bar.advance(task, k),
                )
                view_sets.append((configs, views))
            global_emb = view_sets[0][1].global_emb
        else:
            task = bar.add_task("global", total=n)
            kept, global_emb = _encode_global(
                model, collection, batch_size, failed, lambda k: bar.advance(task, k)
            )
            view_sets = []
        text_rows, targets = _text_targets(collection, kept)
        text_emb = model.embed_texts([collection.texts[t] for t in text_rows])

    def metrics(image_vectors: torch.Tensor) -> dict[str, float]:
        return retrieval_metrics(image_vectors.double() @ text_emb.double().T, targets)

    rows = [SweepRow("global", None, metrics(global_emb))]
    for configs, views in view_sets:
        encoder = LaclipEncoder(model, configs[0])
        for config in configs:
            rows.append(
                SweepRow(config.label(), config, metrics(encoder.fuse_views(views, config).fused))
            )
    return SweepResult(
        rows,
        n_images=len(kept),
        n_texts=len(text_rows),
        failed=failed,
        dropped_texts=len(collection.texts) - len(text_rows),
    )


def results_table(result: SweepResult, *, published: bool = False) -> Any:
    """A rich table in the layout of the CulTi results (T2I R1/R5/R10, I2T R1/R5/R10, MR)."""
    from rich.table import Table

    table = Table(
        title=f"retrieval: {result.n_images} images, {result.n_texts} texts",
        caption="published rows: CulTi test split, for comparison" if published else None,
    )
    table.add_column("method")
    for name in ("T2I R@1", "R@5", "R@10", "I2T R@1", "R@5", "R@10", "MR"):
        table.add_column(name, justify="right")
    best = max(row.metrics["MR"] for row in result.rows)
    for row in result.rows:
        cells = [f"{row.metrics[k]:.1f}" for k in METRIC_KEYS]
        if row.metrics["MR"] == best:
            cells[-1] = f"[bold green]{cells[-1]}[/]"
        table.add_row(row.label, *cells)
    if published:
        table.add_section()
        for label, values in PUBLISHED_CULTI.items():
            table.add_row(f"[dim]{label}[/]", *(f"[dim]{v:.1f}[/]" for v in values))
    return table
