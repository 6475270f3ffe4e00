"""The one retrieval evaluator (``retrieval-eval`` and the ``retrieval`` benchmark): R@1/5/10
both ways and MR, global-only next to LACLIP variants (views encoded once per crop
setting), with chance levels and 95% bootstrap intervals over the queries."""

from __future__ import annotations

import csv
import io
import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import torch
from pydantic import Field, field_validator

from cultureclip.core.device import DeviceSettings
from cultureclip.core.errors import InputError
from cultureclip.core.progress import progress as track_progress
from cultureclip.data.collections import ImageDecodeError, decode_image
from cultureclip.data.pairs import PairCollection
from cultureclip.eval.metrics import (
    RECALL_KS,
    best_correct_rank,
    bootstrap_ci,
    bootstrap_draws,
    retrieval_metrics,
)
from cultureclip.models.base import VisionLanguageModel
from cultureclip.retrieval.laclip import LaclipEncoder, LaclipSettings, LaclipViews, Weighting

if TYPE_CHECKING:
    from PIL import Image

T = TypeVar("T")

METRIC_KEYS = ("t2i_R@1", "t2i_R@5", "t2i_R@10", "i2t_R@1", "i2t_R@5", "i2t_R@10", "MR")

#: about how many image–text pairs the published rows were measured on (the 2/10 test part
#: of CulTi's 5,726 pairs)
PUBLISHED_N = 1145


def published_rows() -> dict[str, tuple[float, ...]]:
    """The ``retrieval`` spec's published rows, in METRIC_KEYS order."""
    from cultureclip.eval.spec import get_spec

    reference = get_spec("retrieval").reference
    return {f"{m} (published)": tuple(v[k] for k in METRIC_KEYS) for m, v in reference.items()}


class RetrievalEvalConfig(DeviceSettings):
    """Settings of ``cultureclip retrieval-eval``: a grid over LACLIP's parameters."""

    model: str
    data: str
    #: ``all`` (or null): the whole collection
    split: str | None = "test"
    split_seed: int = 0
    batch_size: int = Field(32, ge=1)
    #: where results.json, results.csv and config.yaml go (None: nothing is written)
    out: str | None = None
    #: only the global row, no LACLIP sweep
    global_only: bool = False
    ks: list[int] = [4, 8]
    scales: list[tuple[float, float]] = [(0.25, 0.75)]
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    taus: list[float] = [0.05]
    weightings: list[Weighting] = ["softmax"]
    betas: list[float] = [0.0]
    seed: int = 0
    #: also evaluate the patch-token variant (needs a backend with patch features)
    patches: bool = False

    @field_validator("split")
    @classmethod
    def _all_is_none(cls, value: str | None) -> str | None:
        return None if value == "all" else value

    def grid(self) -> list[LaclipSettings]:
        """Every LACLIP setting of the sweep (softmax rows once per τ, others once)."""
        configs: list[LaclipSettings] = []
        views: list[dict[str, Any]] = [
            {"mode": "crops", "k": k, "scale": scale, "ratio": self.ratio, "seed": self.seed}
            for k, scale in itertools.product(self.ks, self.scales)
        ]
        if self.patches:
            views.append({"mode": "patches"})
        for view, weighting, beta in itertools.product(views, self.weightings, self.betas):
            taus = self.taus if weighting == "softmax" else [self.taus[0]]
            configs.extend(
                LaclipSettings(**view, weighting=weighting, tau=tau, beta=beta) for tau in taus
            )
        return configs


@dataclass
class SweepRow:
    label: str
    laclip: LaclipSettings | None
    metrics: dict[str, float]
    #: 95% bootstrap interval per metric (percentile, over queries)
    ci: dict[str, tuple[float, float]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "laclip": self.laclip.model_dump(mode="json") if self.laclip else None,
            **self.metrics,
            "ci95": {key: list(bounds) for key, bounds in self.ci.items()},
        }


def _image_to_texts(n_images: int, targets: Sequence[Sequence[int]]) -> list[list[int]]:
    result: list[list[int]] = [[] for _ in range(n_images)]
    for t, images in enumerate(targets):
        for i in images:
            result[i].append(t)
    return result


def _hit_probability(candidates: int, correct: int, k: int) -> float:
    """P(at least one of ``correct`` items is in the top ``k`` of a random ranking)."""
    if k >= candidates:
        return 1.0
    return 1.0 - math.comb(candidates - correct, k) / math.comb(candidates, k)


def chance_levels(
    n_images: int, targets: Sequence[Sequence[int]], ks: Sequence[int] = RECALL_KS
) -> dict[str, float]:
    """Expected Recall@K (percent) of a random ranking, with the same queries and answers."""
    image_texts = [t for t in _image_to_texts(n_images, targets) if t]
    n_texts = len(targets)
    out: dict[str, float] = {}
    for k in ks:
        t2i = [_hit_probability(n_images, len(set(r)), k) for r in targets]
        i2t = [_hit_probability(n_texts, len(t), k) for t in image_texts]
        out[f"t2i_R@{k}"] = 100 * float(np.mean(t2i))
        out[f"i2t_R@{k}"] = 100 * float(np.mean(i2t))
    out["MR"] = float(np.mean([out[f"{d}_R@{k}"] for d in ("t2i", "i2t") for k in ks]))
    return out


def query_hits(
    sim: torch.Tensor, targets: Sequence[Sequence[int]]
) -> tuple[np.ndarray, np.ndarray]:
    """Per-query hits at each of RECALL_KS, text → image and image → text."""
    image_texts = _image_to_texts(sim.shape[0], targets)
    queried = [i for i, t in enumerate(image_texts) if t]
    t2i = best_correct_rank(sim.T, targets).numpy()
    i2t = best_correct_rank(sim[queried], [image_texts[i] for i in queried]).numpy()
    ks = np.asarray(RECALL_KS)
    return t2i[:, None] < ks, i2t[:, None] < ks


def recall_intervals(t2i_hits: np.ndarray, i2t_hits: np.ndarray) -> dict[str, tuple[float, float]]:
    """95% intervals of every recall and MR over 1,000 seeded resamples of the queries
    (texts and images independently)."""
    rng = np.random.default_rng(0)
    draws = np.concatenate(
        [bootstrap_draws(t2i_hits, rng=rng), bootstrap_draws(i2t_hits, rng=rng)], axis=1
    )
    draws = np.concatenate([draws, draws.mean(axis=1, keepdims=True)], axis=1)
    return dict(zip(METRIC_KEYS, bootstrap_ci(draws=draws), strict=True))


@dataclass
class SweepResult:
    rows: list[SweepRow]
    n_images: int
    n_texts: int
    failed: list[dict[str, str]] = field(default_factory=list)
    dropped_texts: int = 0
    #: expected recall of a random ranking on these queries and candidates
    chance: dict[str, float] = field(default_factory=dict)
    #: images that are queries (described by at least one text) in image → text
    n_image_queries: int = 0
    #: for per-query predictions: the global row's similarities [kept images, queried texts],
    #: their collection rows, and each text's images as indices among the kept ones
    sim: torch.Tensor | None = None
    kept: list[int] = field(default_factory=list)
    text_rows: list[int] = field(default_factory=list)
    targets: list[list[int]] = field(default_factory=list)


def _encode_decodable(
    collection: PairCollection,
    batch_size: int,
    failed: list[dict[str, str]],
    advance: Callable[[int], None],
    encode: Callable[[list[Image.Image], list[str]], T],
) -> tuple[list[int], list[T]]:
    """``encode(images, image_ids)`` per batch of decodable images, and the rows kept."""
    kept: list[int] = []
    parts: list[T] = []
    for start in range(0, len(collection.images), batch_size):
        rows, images = [], []
        for row in range(start, min(start + batch_size, len(collection.images))):
            try:
                images.append(decode_image(collection.images[row]))
                rows.append(row)
            except ImageDecodeError as exc:
                failed.append({"image_id": collection.image_ids[row], "reason": str(exc)})
        if images:
            parts.append(encode(images, [collection.image_ids[r] for r in rows]))
            kept.extend(rows)
        advance(len(rows))
    if not parts:
        raise InputError(f"no image of {collection.name or 'the collection'} could be decoded")
    return kept, parts


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
    laclip_configs: Sequence[LaclipSettings] = (),
    *,
    batch_size: int = 32,
    progress: bool = False,
) -> SweepResult:
    """Global-only metrics first, then one row per LACLIP config; undecodable images are
    left out (``failed``), and so are texts left without an image (``dropped_texts``)."""
    model.eval()
    failed: list[dict[str, str]] = []
    groups: dict[tuple[object, ...], list[LaclipSettings]] = {}
    for config in laclip_configs:
        groups.setdefault(config.crop_key(), []).append(config)

    def embed(images: list[Image.Image], _ids: list[str]) -> torch.Tensor:
        return model.embed_images(images, batch_size=batch_size)

    view_sets = []
    for number, configs in enumerate(list(groups.values()) or [[]]):
        encoder = LaclipEncoder(model, configs[0]) if configs else None
        label = configs[0].label().rsplit(" ", 1)[0] if configs else "global"
        with track_progress(label, len(collection.images), enabled=progress) as task:
            kept, parts = _encode_decodable(
                collection,
                batch_size,
                failed if number == 0 else [],  # every setting fails the same images
                lambda k, task=task: task.update(advance=k),
                encoder.encode_views if encoder else embed,
            )
        if encoder is None:
            global_emb = torch.cat(parts)
            continue
        views = LaclipViews(
            torch.cat([p.global_emb for p in parts]),
            torch.cat([p.local for p in parts]),
            np.concatenate([p.boxes for p in parts]),
        )
        view_sets.append((encoder, configs, views))
        global_emb = view_sets[0][2].global_emb
    text_rows, targets = _text_targets(collection, kept)
    text_emb = model.embed_texts([collection.texts[t] for t in text_rows])

    def row(label: str, config: LaclipSettings | None, sim: torch.Tensor) -> SweepRow:
        t2i, i2t = query_hits(sim, targets)
        return SweepRow(label, config, retrieval_metrics(sim, targets), recall_intervals(t2i, i2t))

    def similarity(image_vectors: torch.Tensor) -> torch.Tensor:
        return image_vectors.double() @ text_emb.double().T

    sim = similarity(global_emb)
    rows = [row("global", None, sim)]
    for encoder, configs, views in view_sets:
        for config in configs:
            fused = encoder.fuse_views(views, config).fused
            rows.append(row(config.label(), config, similarity(fused)))
    return SweepResult(
        rows,
        n_images=len(kept),
        n_texts=len(text_rows),
        failed=failed,
        dropped_texts=len(collection.texts) - len(text_rows),
        chance=chance_levels(len(kept), targets),
        n_image_queries=sum(1 for t in _image_to_texts(len(kept), targets) if t),
        sim=sim,
        kept=kept,
        text_rows=text_rows,
        targets=targets,
    )


def run(config: RetrievalEvalConfig, *, progress: bool = True) -> SweepResult:
    """The retrieval-eval stage; with ``config.out`` it writes config.yaml and the results."""
    from cultureclip.data.collections import load_collection
    from cultureclip.models.registry import create_model

    device = config.resolved_device()  # a device this machine lacks fails before any work
    collection = load_collection(config.data, config.split, seed=config.split_seed)
    model = create_model(config.model, device=device, precision=config.precision)
    result = evaluate_retrieval(
        model,
        collection,
        [] if config.global_only else config.grid(),
        batch_size=config.batch_size,
        progress=progress,
    )
    if config.out is not None:
        write_results(result, Path(config.out))
        config.save(config.out)
    return result


def write_results(result: SweepResult, out: Path) -> None:
    """``results.json`` (rows, intervals, chance, failures) and ``results.csv`` (metrics)."""
    from cultureclip.core.io import atomic_write_json, atomic_write_text

    rows = [row.as_dict() for row in result.rows]
    summary = ("n_images", "n_texts", "n_image_queries", "chance", "failed")
    atomic_write_json(
        out / "results.json", {**{k: getattr(result, k) for k in summary}, "rows": rows}
    )
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["label", *METRIC_KEYS])
    writer.writerows([row["label"], *(f"{row[k]:.2f}" for k in METRIC_KEYS)] for row in rows)
    atomic_write_text(out / "results.csv", text.getvalue())
