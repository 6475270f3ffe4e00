"""Contrastive losses for fine-tuning: ``clip``, ``negclip`` and the CultureCLIP twin loss.

Every loss takes a dict of named L2-normalised features (:data:`TWIN_FEATURES` from a
CulTwin batch, :data:`PAIR_FEATURES` from image–text pairs) and the logit multiplier
``s = exp(t)``; :meth:`ContrastiveLoss.required_features` says which names it needs, so
unused towers are never run. On twin data ``clip`` (2B images against their 2B
captions) and ``negclip`` (the caption term of CultureCLIP with weight 1) see the same
images and captions as ``cultureclip``, so the comparisons of the paper are fair.

Local loss (several processes): every term is a mean over *rows* of a cross-entropy
whose candidates are the whole batch, so ``loss.compute(local, scale, gathered=gathered,
offset=rank * rows)`` is the mean over this process's rows against the gathered batch;
the mean of the processes' results is the whole batch's loss, at ``B_local × B_global``
logits per process. Twin batches are laid out ``[I⁺; I⁻]`` over the whole batch, so a
local ``I⁻`` row ``j`` targets column ``N + offset + j``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cultureclip.core.errors import InputError
from cultureclip.core.registry import Registry

DataKind = Literal["twin", "pairs"]

#: Feature names of a CulTwin batch (what the trainer encodes for twin data).
TWIN_FEATURES = (
    "pos_image",
    "neg_image",
    "pos_caption",
    "neg_caption",
    "pos_concept",
    "neg_concept",
)
#: What ``clip`` and ``negclip`` read of a CulTwin batch: images and captions.
CAPTION_FEATURES = TWIN_FEATURES[:4]
#: Feature names of an image–text pair batch.
PAIR_FEATURES = ("image", "text")


class LossError(InputError):
    """A loss cannot be used as configured (wrong data kind, bad weights)."""


@dataclass
class LossOutput:
    """The scalar to backpropagate and its named parts (for logging)."""

    loss: Tensor
    parts: dict[str, Tensor] = field(default_factory=dict)


def _targets(rows: int, device: torch.device, offset: int = 0) -> Tensor:
    return torch.arange(offset, offset + rows, device=device)


def _ce(queries: Tensor, candidates: Tensor, targets: Tensor, scale: Tensor) -> Tensor:
    """Mean over the query rows of CE(s · queries candidatesᵀ, targets)."""
    return F.cross_entropy(scale * queries @ candidates.T, targets)


def clip_loss(
    image: Tensor,
    text: Tensor,
    scale: Tensor,
    *,
    all_image: Tensor | None = None,
    all_text: Tensor | None = None,
    offset: int = 0,
    targets: Tensor | None = None,
) -> Tensor:
    """Symmetric InfoNCE: ½ [CE(s·I Tᵀ, diag) + CE(s·T Iᵀ, diag)]; row i of I matches row i of T.

    With ``all_image``/``all_text`` (the whole batch), ``image``/``text`` are the rows
    ``offset …`` of it and the result is the mean over those rows only; ``targets``
    (the matching column of every row) replaces ``offset`` where those rows are not
    one contiguous run of the whole batch.
    """
    if image.shape != text.shape:
        raise LossError(f"image {tuple(image.shape)} and text {tuple(text.shape)} features differ")
    all_image = image if all_image is None else all_image
    all_text = text if all_text is None else all_text
    if targets is None:
        targets = _targets(image.shape[0], image.device, offset)
    return 0.5 * (_ce(image, all_text, targets, scale) + _ce(text, all_image, targets, scale))


def negclip_loss(
    image: Tensor,
    text: Tensor,
    hard_negatives: Tensor,
    scale: Tensor,
    *,
    all_image: Tensor | None = None,
    all_text: Tensor | None = None,
    all_hard_negatives: Tensor | None = None,
    offset: int = 0,
) -> Tensor:
    """½ [CE(s·[I Tᵀ | I T⁻ᵀ], diag) + CE(s·T Iᵀ, diag)]: image→text logits are B×2B.

    The ``all_*`` arguments and ``offset`` work as in :func:`clip_loss` (local rows
    against the whole batch).
    """
    if not image.shape == text.shape == hard_negatives.shape:
        raise LossError(
            f"negclip needs equal shapes, got image {tuple(image.shape)}, text {tuple(text.shape)}, "
            f"hard negatives {tuple(hard_negatives.shape)}"
        )
    all_text = text if all_text is None else all_text
    all_negatives = hard_negatives if all_hard_negatives is None else all_hard_negatives
    # clip_loss with the hard negatives as extra text candidates of every image
    candidates = torch.cat([all_text, all_negatives])
    return clip_loss(image, text, scale, all_image=all_image, all_text=candidates, offset=offset)


def twin_term(
    local: Mapping[str, Tensor],
    whole: Mapping[str, Tensor],
    text: str,
    scale: Tensor,
    offset: int = 0,
) -> Tensor:
    """negclip(I⁺, T⁺, T⁻) + negclip(I⁻, T⁻, T⁺) for ``text`` = caption or concept.

    Every hard negative is a candidate column from the whole batch, so the twins of
    other processes' rows stay negatives of this process's rows.
    """
    pos, neg = f"pos_{text}", f"neg_{text}"
    return negclip_loss(
        local["pos_image"], local[pos], local[neg], scale,
        all_image=whole["pos_image"], all_text=whole[pos], all_hard_negatives=whole[neg],
        offset=offset,
    ) + negclip_loss(
        local["neg_image"], local[neg], local[pos], scale,
        all_image=whole["neg_image"], all_text=whole[neg], all_hard_negatives=whole[pos],
        offset=offset,
    )  # fmt: skip


class ContrastiveLoss(nn.Module, ABC):
    """Base of registered losses: says which features it reads and computes from a dict of them."""

    name: str = ""
    #: whether :meth:`compute` accepts ``gathered``/``offset`` (a local loss); the
    #: trainer computes the whole batch's loss on every process for a loss that does not
    supports_local: ClassVar[bool] = False

    @abstractmethod
    def required_features(self, kind: DataKind) -> tuple[str, ...]:
        """Feature names needed from a batch of ``kind``; raises :class:`LossError` if unsupported."""

    @abstractmethod
    def compute(
        self,
        features: Mapping[str, Tensor],
        scale: Tensor,
        *,
        gathered: Mapping[str, Tensor] | None = None,
        offset: int = 0,
    ) -> LossOutput:
        """The loss from named normalised features (``kind`` is inferred from the names).

        With ``gathered`` (the whole batch), ``features`` are its rows from ``offset`` on
        and the result is the mean over those rows (see the module docstring).
        """

    @staticmethod
    def kind_of(features: Mapping[str, Tensor]) -> DataKind:
        if "pos_image" in features:
            return "twin"
        if "image" in features:
            return "pairs"
        raise LossError(f"features {sorted(features)} are neither a twin nor a pair batch")


class _LocalLoss(ContrastiveLoss):
    """A built-in loss: :meth:`compute` checks its inputs once, then :meth:`rows_loss`
    computes the loss of this process's rows against the whole batch."""

    supports_local = True

    def compute(
        self,
        features: Mapping[str, Tensor],
        scale: Tensor,
        *,
        gathered: Mapping[str, Tensor] | None = None,
        offset: int = 0,
    ) -> LossOutput:
        if gathered is None and offset:
            raise LossError("offset is only meaningful with gathered features")
        self.required_features(self.kind_of(features))  # data this loss cannot use: the reason
        return self.rows_loss(features, features if gathered is None else gathered, scale, offset)

    @abstractmethod
    def rows_loss(
        self, local: Mapping[str, Tensor], whole: Mapping[str, Tensor], scale: Tensor, offset: int
    ) -> LossOutput:
        """The mean loss of the ``local`` rows, which start at ``offset`` in ``whole``."""


LOSSES: Registry[type[ContrastiveLoss]] = Registry("loss", entry_point_group="cultureclip.losses")


@LOSSES.register(
    "clip", help="symmetric InfoNCE (CLIP); on twin data: 2B images vs their 2B captions"
)
class ClipLoss(_LocalLoss):
    """Symmetric InfoNCE. ``forward(image, text, scale)`` is the bare formula."""

    name = "clip"

    def forward(self, image: Tensor, text: Tensor, scale: Tensor) -> Tensor:
        return clip_loss(image, text, scale)

    def required_features(self, kind: DataKind) -> tuple[str, ...]:
        return CAPTION_FEATURES if kind == "twin" else PAIR_FEATURES

    def rows_loss(
        self, local: Mapping[str, Tensor], whole: Mapping[str, Tensor], scale: Tensor, offset: int
    ) -> LossOutput:
        if self.kind_of(local) == "pairs":
            loss = clip_loss(
                local["image"], local["text"], scale,
                all_image=whole["image"], all_text=whole["text"], offset=offset,
            )  # fmt: skip
            return LossOutput(loss, {"clip": loss.detach()})
        # 2B images [I⁺; I⁻] against their 2B captions: a local row of I⁻ sits N rows
        # below its I⁺ twin in the whole batch.
        rows, total = local["pos_image"].shape[0], whole["pos_image"].shape[0]
        device = local["pos_image"].device
        loss = clip_loss(
            torch.cat([local["pos_image"], local["neg_image"]]),
            torch.cat([local["pos_caption"], local["neg_caption"]]),
            scale,
            all_image=torch.cat([whole["pos_image"], whole["neg_image"]]),
            all_text=torch.cat([whole["pos_caption"], whole["neg_caption"]]),
            targets=torch.cat(
                [_targets(rows, device, offset), _targets(rows, device, total + offset)]
            ),
        )
        return LossOutput(loss, {"clip": loss.detach()})


@LOSSES.register(
    "negclip", help="InfoNCE with the twins' captions as extra hard negatives (twin data)"
)
class NegClipLoss(_LocalLoss):
    """negclip(I⁺, C⁺, C⁻) + negclip(I⁻, C⁻, C⁺). ``forward(image, text, hard_negatives, scale)``."""

    name = "negclip"

    def forward(self, image: Tensor, text: Tensor, hard_negatives: Tensor, scale: Tensor) -> Tensor:
        return negclip_loss(image, text, hard_negatives, scale)

    def required_features(self, kind: DataKind) -> tuple[str, ...]:
        if kind != "twin":
            raise LossError(
                "loss 'negclip' needs hard negatives, which only CulTwin data provides; "
                "train image–text pairs with loss=clip"
            )
        return CAPTION_FEATURES

    def rows_loss(
        self, local: Mapping[str, Tensor], whole: Mapping[str, Tensor], scale: Tensor, offset: int
    ) -> LossOutput:
        loss = twin_term(local, whole, "caption", scale, offset)
        return LossOutput(loss, {"negclip": loss.detach()})


@LOSSES.register(
    "cultureclip", help="CultureCLIP: λ_cap·L_cap + λ_con·L_con with twin hard negatives"
)
class CultureClipLoss(_LocalLoss):
    """L = λ_cap·L_cap + λ_con·L_con (design.md §1).

    L_cap = negclip(I⁺, C⁺, C⁻) + negclip(I⁻, C⁻, C⁺) over captions C,
    L_con = negclip(I⁺, K⁺, K⁻) + negclip(I⁻, K⁻, K⁺) over bare concept names K.
    A term whose weight is 0 is not computed (and its text features are not encoded).
    """

    name = "cultureclip"

    def __init__(self, caption_weight: float = 0.7, concept_weight: float = 0.3) -> None:
        super().__init__()
        if caption_weight < 0 or concept_weight < 0:
            raise LossError(f"loss weights must be ≥ 0, got {caption_weight=} {concept_weight=}")
        if caption_weight == 0 and concept_weight == 0:
            raise LossError("caption_weight and concept_weight are both 0: nothing to train")
        self.caption_weight = float(caption_weight)
        self.concept_weight = float(concept_weight)

    def extra_repr(self) -> str:
        return f"caption_weight={self.caption_weight}, concept_weight={self.concept_weight}"

    def forward(
        self,
        pos_image: Tensor,
        neg_image: Tensor,
        pos_caption: Tensor | None,
        neg_caption: Tensor | None,
        pos_concept: Tensor | None,
        neg_concept: Tensor | None,
        scale: Tensor,
    ) -> Tensor:
        values = (pos_image, neg_image, pos_caption, neg_caption, pos_concept, neg_concept)
        features = {n: v for n, v in zip(TWIN_FEATURES, values, strict=True) if v is not None}
        return self.compute(features, scale).loss

    def required_features(self, kind: DataKind) -> tuple[str, ...]:
        if kind != "twin":
            raise LossError(
                f"loss {self.name!r} needs CulTwin data (twin images, captions and concept names); "
                "train image–text pairs with loss=clip"
            )
        names = ["pos_image", "neg_image"]
        if self.caption_weight > 0:
            names += ["pos_caption", "neg_caption"]
        if self.concept_weight > 0:
            names += ["pos_concept", "neg_concept"]
        return tuple(names)

    def rows_loss(
        self, local: Mapping[str, Tensor], whole: Mapping[str, Tensor], scale: Tensor, offset: int
    ) -> LossOutput:
        parts: dict[str, Tensor] = {}
        total = local["pos_image"].new_zeros(())
        for text, weight in (("caption", self.caption_weight), ("concept", self.concept_weight)):
            if weight > 0:
                term = twin_term(local, whole, text, scale, offset)
                parts[text] = term.detach()
                total = total + weight * term
        return LossOutput(total, parts)


@LOSSES.register(
    "cultureclip_caption_only", help="ablation: CultureCLIP without the concept-name term"
)
def cultureclip_caption_only(caption_weight: float = 0.7) -> CultureClipLoss:
    """CultureCLIP with λ_con = 0 (the paper code's caption-only ablation)."""
    loss = CultureClipLoss(caption_weight=caption_weight, concept_weight=0.0)
    loss.name = "cultureclip_caption_only"
    return loss


@LOSSES.register("cultureclip_concept_only", help="ablation: CultureCLIP without the caption term")
def cultureclip_concept_only(concept_weight: float = 0.3) -> CultureClipLoss:
    """CultureCLIP with λ_cap = 0 (the paper code's concept-only ablation)."""
    loss = CultureClipLoss(caption_weight=0.0, concept_weight=concept_weight)
    loss.name = "cultureclip_concept_only"
    return loss


def create_loss(name: str, **kwargs: Any) -> ContrastiveLoss:
    """Builds a registered loss by name: ``create_loss("cultureclip", concept_weight=0.5)``."""
    factory = LOSSES.get(name)
    try:
        return factory(**kwargs)  # type: ignore[operator]
    except TypeError as exc:
        raise LossError(f"loss {name!r} does not accept {sorted(kwargs)}: {exc}") from exc
