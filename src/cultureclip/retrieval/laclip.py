"""LACLIP: training-free local alignment as a re-scoring stage for any model.

For an image ``I`` with global embedding ``u_I`` and local views ``u_1 … u_k`` (random
crops, or the vision transformer's own patch tokens), each view gets a weight from its
agreement with the global view, and the image–text score is

    score(I, T) = β · (u_I · u_T) + (1 − β) · Σ_j w_j (u_j · u_T)

Because ``w_j`` depends on the image only, the score is the inner product of ``u_T`` with
one *fused* vector per image, ``v_I = β u_I + (1 − β) Σ_j w_j u_j``. The index stores
``v_I`` (not re-normalised: normalising would change the score), so a LACLIP query costs
exactly what a global-only query costs.

Weightings (``w`` from ``c_j = cos(u_I, u_j)``):

- ``softmax`` (default): ``softmax(c / τ)``.
- ``uniform``: ``1 / k``.
- ``relu``: ``relu(c) / Σ relu(c)``; an image whose views all disagree (every ``c_j ≤ 0``)
  gets all-zero weights, i.e. a local score of 0.
- ``cosine``: ``c / Σ |c|`` (raw cosines, normalised by their absolute sum).

k, crop scale and weighting are not published for LACLIP; they are parameters here and
``cultureclip retrieval-eval`` measures them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from PIL import Image
from pydantic import Field, model_validator
from torch import Tensor

from cultureclip.core.config import Config, ConfigError
from cultureclip.core.errors import InputError
from cultureclip.core.io import stable_hash
from cultureclip.models.base import VisionLanguageModel

Weighting = Literal["softmax", "uniform", "relu", "cosine"]


class LaclipSettings(Config):
    """Parameters of LACLIP local alignment."""

    #: ``crops``: k seeded random crops re-encoded by the model; ``patches``: the model's own
    #: projected patch tokens (no extra forward passes; k is then the number of patches).
    mode: Literal["crops", "patches"] = "crops"
    k: int = Field(8, ge=1, le=256)
    #: crop area as a fraction of the image area, sampled uniformly in [low, high]
    scale: tuple[float, float] = (0.25, 0.75)
    #: crop aspect ratio (width / height), sampled log-uniformly in [low, high]
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    seed: int = 0
    weighting: Weighting = "softmax"
    tau: float = Field(0.05, gt=0)
    #: blend with the global score: β · global + (1 − β) · local
    beta: float = Field(0.0, ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _check_ranges(self) -> LaclipSettings:
        low, high = self.scale
        if not 0 < low <= high <= 1:
            raise InputError(f"scale must satisfy 0 < low <= high <= 1, got {self.scale}")
        if not 0 < self.ratio[0] <= self.ratio[1]:
            raise InputError(f"ratio must satisfy 0 < low <= high, got {self.ratio}")
        return self

    def crop_key(self) -> tuple[object, ...]:
        """The parameters that decide the views (configs sharing it can share encodings)."""
        return (self.mode, self.k, self.scale, self.ratio, self.seed)

    def label(self) -> str:
        if self.mode == "patches":
            views = "patches"
        else:
            views = f"k={self.k} scale={self.scale[0]:g}-{self.scale[1]:g}"
        weighting = f"τ={self.tau:g}" if self.weighting == "softmax" else self.weighting
        blend = f" β={self.beta:g}" if self.beta else ""
        return f"LACLIP {views} {weighting}{blend}"


def _parse_range(raw: str) -> tuple[float, float]:
    for sep in ("-", ":", "/"):
        if sep in raw.strip().lstrip("-"):
            low, high = raw.split(sep, 1)
            return float(low), float(high)
    value = float(raw)
    return value, value


def parse_laclip_option(text: str) -> LaclipSettings:
    """Parses the CLI form ``"k=8,scale=0.3-0.8,tau=0.05,weighting=softmax,beta=0.2"``.

    ``"on"`` or ``"default"`` gives the defaults. Ranges are ``low-high`` (or ``low:high``).
    """
    text = text.strip()
    if text.lower() in ("", "on", "default", "defaults", "true"):
        return LaclipSettings()
    values: dict[str, object] = {}
    for item in text.split(","):
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep:
            raise ConfigError(
                f"LACLIP option {item!r} must look like key=value (e.g. k=8,tau=0.05)"
            )
        if key not in LaclipSettings.model_fields:
            raise ConfigError(
                f"unknown LACLIP option {key!r}; known: {', '.join(LaclipSettings.model_fields)}"
            )
        try:
            values[key] = _parse_range(raw) if key in ("scale", "ratio") else raw.strip()
        except ValueError as exc:
            raise ConfigError(
                f"LACLIP option {key}={raw!r}: expected a number or a low-high range"
            ) from exc
    try:
        return LaclipSettings.model_validate(values)
    except ValueError as exc:
        raise ConfigError(f"invalid LACLIP options {text!r}: {exc}") from exc


# ---- views -------------------------------------------------------------------------------
def image_rng(seed: int, image_id: str) -> np.random.Generator:
    """A generator seeded by (seed, image id): an image's crops do not depend on batch order."""
    return np.random.default_rng(int(stable_hash(seed, image_id), 16))


def crop_boxes(
    width: int,
    height: int,
    *,
    k: int,
    scale: tuple[float, float],
    ratio: tuple[float, float],
    rng: np.random.Generator,
) -> np.ndarray:
    """``k`` random boxes ``[x0, y0, x1, y1]`` (pixels) with area fraction in ``scale``.

    The sampler is the RandomResizedCrop one: draw an area and a log-uniform aspect ratio,
    retry up to 10 times until the box fits, else shrink the last draw to fit the image.
    ``scale=(1, 1)`` with the image's own aspect ratio gives the whole image every time.
    """
    boxes = np.zeros((k, 4), dtype=np.int32)
    area = width * height
    log_low, log_high = math.log(ratio[0]), math.log(ratio[1])
    for j in range(k):
        for _attempt in range(10):
            target = area * rng.uniform(scale[0], scale[1])
            aspect = math.exp(rng.uniform(log_low, log_high))
            w = round(math.sqrt(target * aspect))
            h = round(math.sqrt(target / aspect))
            if 0 < w <= width and 0 < h <= height:
                break
        w, h = max(1, min(w, width)), max(1, min(h, height))
        x0 = int(rng.integers(0, width - w + 1))
        y0 = int(rng.integers(0, height - h + 1))
        boxes[j] = (x0, y0, x0 + w, y0 + h)
    return boxes


def patch_boxes(width: int, height: int, n_patches: int) -> np.ndarray:
    """Boxes of a ``g × g`` patch grid in original-image pixels.

    Assumes CLIP-style preprocessing (resize the short side, centre-crop a square), so
    the grid covers the central square of the image. Used only to draw explanations.
    """
    grid = math.isqrt(n_patches)
    if grid * grid != n_patches:
        raise ValueError(f"{n_patches} patch tokens do not form a square grid")
    side = min(width, height)
    x_off, y_off = (width - side) / 2, (height - side) / 2
    cell = side / grid
    row, col = np.divmod(np.arange(n_patches), grid)
    corners = [
        x_off + col * cell,
        y_off + row * cell,
        x_off + (col + 1) * cell,
        y_off + (row + 1) * cell,
    ]
    return np.round(np.stack(corners, axis=1)).astype(np.int32)


# ---- weights and fusion ------------------------------------------------------------------
def agreement_weights(
    global_emb: Tensor, local: Tensor, weighting: Weighting = "softmax", tau: float = 0.05
) -> Tensor:
    """Weights ``[N, k]`` of local views ``[N, k, D]`` from cos(u_I, u_j) (see module doc)."""
    cos = torch.einsum(
        "nd,nkd->nk",
        torch.nn.functional.normalize(global_emb, dim=-1),
        torch.nn.functional.normalize(local, dim=-1),
    )
    if weighting == "softmax":
        return torch.softmax(cos / tau, dim=-1)
    if weighting == "uniform":
        return torch.full_like(cos, 1.0 / cos.shape[-1])
    if weighting == "relu":
        positive = cos.clamp_min(0.0)
        total = positive.sum(dim=-1, keepdim=True)
        return torch.where(total > 0, positive / total.clamp_min(1e-12), torch.zeros_like(positive))
    if weighting == "cosine":
        return cos / cos.abs().sum(dim=-1, keepdim=True).clamp_min(1e-12)
    raise InputError(
        f"unknown LACLIP weighting {weighting!r}; choose softmax, uniform, relu or cosine"
    )


def fuse(global_emb: Tensor, local: Tensor, weights: Tensor, beta: float = 0.0) -> Tensor:
    """The per-image vector ``β u_I + (1 − β) Σ_j w_j u_j`` whose inner product is the score."""
    fused = torch.einsum("nk,nkd->nd", weights, local)
    return beta * global_emb + (1.0 - beta) * fused if beta else fused


def explicit_scores(
    global_emb: Tensor, local: Tensor, weights: Tensor, text_emb: Tensor, beta: float = 0.0
) -> Tensor:
    """``[N, T]`` scores computed view by view: ``β u_I·u_T + (1 − β) Σ_j w_j (u_j·u_T)``.

    Slower than ``fuse(...) @ text_emb.T`` and equal to it; kept as the definition the
    fused vector is tested against and for explanations.
    """
    per_view = torch.einsum("nkd,td->nkt", local, text_emb)
    local_score = (weights.unsqueeze(-1) * per_view).sum(dim=1)
    return beta * (global_emb @ text_emb.T) + (1.0 - beta) * local_score


@dataclass
class LaclipViews:
    """Encoded views of a batch of images."""

    global_emb: Tensor  # [N, D] normalised
    local: Tensor  # [N, k, D] normalised
    boxes: np.ndarray  # [N, k, 4] pixel boxes in the original images


@dataclass
class LaclipFeatures:
    views: LaclipViews
    weights: Tensor  # [N, k]
    fused: Tensor  # [N, D], not normalised


class LaclipEncoder:
    """Encodes images into LACLIP views and fused vectors with any registered model."""

    def __init__(self, model: VisionLanguageModel, config: LaclipSettings | None = None) -> None:
        self.model = model
        self.config = config or LaclipSettings()

    @torch.inference_mode()
    def encode_views(self, images: Sequence[Image.Image], image_ids: Sequence[str]) -> LaclipViews:
        """Global embeddings, local view embeddings and their boxes for ``images``."""
        if len(images) != len(image_ids):
            raise ValueError("images and image_ids differ in length")
        with self.model.inference():  # the model's eval mode and inference precision
            return self._encode_views(images, image_ids)

    def _encode_views(self, images: Sequence[Image.Image], image_ids: Sequence[str]) -> LaclipViews:
        config, model = self.config, self.model
        if config.mode == "patches":
            pixels = model.preprocess(images)
            global_emb = model.encode_image(pixels).float().cpu()
            local = model.encode_image_patches(pixels).float().cpu()
            boxes = np.stack([patch_boxes(im.width, im.height, local.shape[1]) for im in images])
            return LaclipViews(global_emb, local, boxes)
        batch: list[Image.Image] = []
        all_boxes = []
        for image, image_id in zip(images, image_ids, strict=True):
            boxes = crop_boxes(
                image.width,
                image.height,
                k=config.k,
                scale=config.scale,
                ratio=config.ratio,
                rng=image_rng(config.seed, image_id),
            )
            all_boxes.append(boxes)
            batch.append(image)
            batch.extend(image.crop(tuple(int(v) for v in box)) for box in boxes)
        # One forward pass over globals and crops together keeps batches large.
        encoded = model.encode_image(model.preprocess(batch)).float().cpu()
        encoded = encoded.view(len(images), config.k + 1, -1)
        return LaclipViews(encoded[:, 0], encoded[:, 1:], np.stack(all_boxes))

    def fuse_views(
        self, views: LaclipViews, config: LaclipSettings | None = None
    ) -> LaclipFeatures:
        """Weights and fused vectors; ``config`` may vary weighting/τ/β over the same views."""
        config = config or self.config
        weights = agreement_weights(views.global_emb, views.local, config.weighting, config.tau)
        return LaclipFeatures(
            views, weights, fuse(views.global_emb, views.local, weights, config.beta)
        )

    def encode(self, images: Sequence[Image.Image], image_ids: Sequence[str]) -> LaclipFeatures:
        return self.fuse_views(self.encode_views(images, image_ids))
