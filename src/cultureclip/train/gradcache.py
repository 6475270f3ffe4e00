"""Gradients of a contrastive loss over a batch larger than memory (gradient caching).

Plain accumulation over 16 micro-batches of 128 trains with 128 negatives, not 2048.
Gradient caching (Gao et al., 2021, "GradCache") gets the 2048-batch gradient exactly
with the memory of one chunk:

1. encode the batch chunk by chunk *without* a graph;
2. compute the loss on all features, held as leaf tensors, and backprop to them:
   this yields d loss / d feature for every example (the "cache");
3. re-encode each chunk *with* a graph and backprop the cached feature gradients.

Dropout (LoRA dropout, for one) must draw the same masks in steps 1 and 3, so the
RNG state is recorded before each chunk in step 1 and restored for its re-run. Under
DDP, only the last chunk's backward all-reduces; the logit scale is an output of
:class:`FeatureEncoder`, so its gradient, too, reaches the parameters through it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

import torch
from torch import Tensor, nn

from cultureclip.models.base import VisionLanguageModel
from cultureclip.train import distributed
from cultureclip.train.checkpoint import rng_state, set_rng_state
from cultureclip.train.data import EncoderInputs
from cultureclip.train.distributed import DistInfo
from cultureclip.train.losses import ContrastiveLoss, LossOutput

#: ``inputs → (named normalised features, logit scale)``: a :class:`FeatureEncoder`, or
#: one wrapped in DDP and/or ``torch.compile``
Encoder = Callable[[EncoderInputs], tuple[dict[str, Tensor], Tensor]]


def encode_features(model: VisionLanguageModel, inputs: EncoderInputs) -> dict[str, Tensor]:
    """Normalised fp32 features for every named input (all images in one tower call)."""
    features: dict[str, Tensor] = {}
    if inputs.images:
        names = list(inputs.images)
        pixels = (
            torch.cat([inputs.images[n] for n in names])
            if len(names) > 1
            else inputs.images[names[0]]
        )
        encoded = model.encode_image(pixels).float()
        sizes = [int(inputs.images[n].shape[0]) for n in names]
        features.update(zip(names, encoded.split(sizes), strict=True))
    for name, tokens in inputs.texts.items():
        features[name] = model.encode_text(tokens).float()
    return features


class FeatureEncoder(nn.Module):
    """:func:`encode_features` and the logit scale as one ``forward``: what DDP and
    ``torch.compile`` wrap (DDP only sees parameters used inside a module call)."""

    def __init__(self, model: VisionLanguageModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, inputs: EncoderInputs) -> tuple[dict[str, Tensor], Tensor]:
        return encode_features(self.model, inputs), self.model.logit_scale


def contrastive_backward(
    model: VisionLanguageModel,
    loss_fn: ContrastiveLoss,
    inputs: EncoderInputs,
    *,
    chunk_size: int | None = None,
    autocast: Callable[[], AbstractContextManager[object]] = contextlib.nullcontext,
    dist: DistInfo | None = None,
    local_loss: bool = True,
    loss_multiplier: float = 1.0,
    backward: Callable[[Tensor], None] | None = None,
    encoder: Encoder | None = None,
    no_sync: Callable[[], AbstractContextManager[object]] = contextlib.nullcontext,
) -> LossOutput:
    """Accumulates into ``.grad`` the gradient of ``loss_multiplier · loss`` over the batch.

    With ``dist`` (several processes), ``inputs`` are this process's rows; features are
    gathered with gradients and the loss is, with ``local_loss``, this process's rows'
    against the gathered batch (the mean over processes is the batch loss), else the
    whole batch's. Pass ``encoder`` (the :class:`FeatureEncoder` under DDP) and its
    ``no_sync`` so parameter gradients are averaged over processes. ``backward``
    replaces ``tensor.backward()`` (a GradScaler's scaled backward).
    """
    encode: Encoder = encoder if encoder is not None else FeatureEncoder(model)
    do_backward = backward or Tensor.backward
    rows = inputs.rows
    if chunk_size is None or chunk_size >= rows:
        with autocast():
            features, scale = encode(inputs)
        out = _batch_loss(loss_fn, features, scale, dist, local_loss, rows)
        do_backward(out.loss * loss_multiplier)
        return LossOutput(out.loss.detach(), out.parts)

    device = model.device
    bounds = [(start, min(start + chunk_size, rows)) for start in range(0, rows, chunk_size)]
    # 1. every chunk's features without a graph, and the RNG state before each chunk
    rng_states: list[dict[str, Any]] = []
    chunks: list[dict[str, Tensor]] = []
    with torch.no_grad():
        for start, stop in bounds:
            rng_states.append(rng_state(device))
            with autocast():
                chunk, scale = encode(inputs.slice(start, stop))
            chunks.append(chunk)
    after_first_pass = rng_state(device)
    # 2. the loss on leaf copies of them, whose gradients are the cache
    cached = {
        name: torch.cat([chunk[name] for chunk in chunks]).detach().requires_grad_(True)
        for name in chunks[0]
    }
    cached_scale = scale.detach().requires_grad_(model.logit_scale_param.requires_grad)
    out = _batch_loss(loss_fn, cached, cached_scale, dist, local_loss, rows)
    do_backward(out.loss * loss_multiplier)
    # 3. each chunk again, with its RNG state and a graph, backpropagating its cached gradients
    last = len(bounds) - 1
    for index, ((start, stop), rng) in enumerate(zip(bounds, rng_states, strict=True)):
        set_rng_state(rng, device)
        # The last chunk's backward is the one DDP synchronises (and overlaps).
        with no_sync() if index < last else contextlib.nullcontext():
            with autocast():
                features, scale = encode(inputs.slice(start, stop))
            # A frozen tower's features carry no graph: nothing to send back through them.
            pairs = [
                (features[name], cached[name].grad[start:stop])
                for name in features
                if cached[name].grad is not None and features[name].requires_grad
            ]
            if index == last and cached_scale.grad is not None:
                pairs.append((scale, cached_scale.grad))
            if pairs:
                torch.autograd.backward([f for f, _ in pairs], [g for _, g in pairs])
    # Leave the RNG where a single pass would have left it, so what follows does not
    # depend on the number of chunks.
    set_rng_state(after_first_pass, device)
    return LossOutput(out.loss.detach(), out.parts)


def _batch_loss(
    loss_fn: ContrastiveLoss,
    features: dict[str, Tensor],
    scale: Tensor,
    dist: DistInfo | None,
    local_loss: bool,
    rows: int,
) -> LossOutput:
    """The loss of this process's ``rows`` of features: alone, local against the gathered
    batch, or the whole gathered batch's."""
    if dist is None or not dist.enabled:
        return loss_fn.compute(features, scale)
    gathered = distributed.gather_features(features)
    if local_loss and loss_fn.supports_local:
        return loss_fn.compute(features, scale, gathered=gathered, offset=dist.rank * rows)
    return loss_fn.compute(gathered, scale)
