"""Gradients of a contrastive loss over a batch larger than memory (gradient caching).

A contrastive loss couples every example with every other, so its batch cannot be
split like a per-example loss: plain gradient accumulation over 16 micro-batches
of 128 trains with 128 negatives, not 2048. Gradient caching (Gao et al., 2021,
"GradCache") gets the 2048-batch gradient exactly with the memory of one chunk:

1. encode the batch chunk by chunk *without* a graph;
2. compute the loss on all features, held as leaf tensors, and backprop to them:
   this yields d loss / d feature for every example (the "cache");
3. re-encode each chunk *with* a graph and backprop the cached feature gradients.

Dropout (LoRA dropout, for one) must draw the same masks in steps 1 and 3, so the
RNG state is recorded before each chunk in step 1 and restored for its re-run.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass

import torch
from torch import Tensor

from cultureclip.models.base import VisionLanguageModel
from cultureclip.train.data import EncoderInputs
from cultureclip.train.losses import ContrastiveLoss, LossOutput

Gather = Callable[[dict[str, Tensor]], dict[str, Tensor]]


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


@dataclass
class RngState:
    cpu: Tensor
    cuda: Tensor | None

    @classmethod
    def capture(cls, device: torch.device) -> RngState:
        cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
        return cls(torch.get_rng_state(), cuda)

    def restore(self, device: torch.device) -> None:
        torch.set_rng_state(self.cpu)
        if self.cuda is not None:
            torch.cuda.set_rng_state(self.cuda, device)


def contrastive_backward(
    model: VisionLanguageModel,
    loss_fn: ContrastiveLoss,
    inputs: EncoderInputs,
    *,
    chunk_size: int | None = None,
    autocast: Callable[[], AbstractContextManager[object]] = contextlib.nullcontext,
    gather: Gather | None = None,
    loss_multiplier: float = 1.0,
    backward: Callable[[Tensor], None] | None = None,
) -> LossOutput:
    """Accumulates into ``.grad`` the gradient of ``loss_multiplier · loss`` over the batch.

    ``gather`` concatenates features across processes (with gradients) before the
    loss; ``backward`` replaces ``tensor.backward()`` for the loss (a GradScaler's
    scaled backward). Returns the detached loss and its parts.
    """
    do_backward = backward or (lambda t: t.backward())
    rows = inputs.rows
    if chunk_size is None or chunk_size >= rows:
        with autocast():
            features = encode_features(model, inputs)
        out = loss_fn.compute(gather(features) if gather else features, model.logit_scale)
        do_backward(out.loss * loss_multiplier)
        return LossOutput(out.loss.detach(), out.parts)

    device = model.device
    bounds = [(start, min(start + chunk_size, rows)) for start in range(0, rows, chunk_size)]
    rng_states: list[RngState] = []
    chunks: list[dict[str, Tensor]] = []
    with torch.no_grad():
        for start, stop in bounds:
            rng_states.append(RngState.capture(device))
            with autocast():
                chunks.append(encode_features(model, inputs.slice(start, stop)))
    cached = {
        name: torch.cat([chunk[name] for chunk in chunks]).detach().requires_grad_(True)
        for name in chunks[0]
    }
    after_first_pass = RngState.capture(device)
    out = loss_fn.compute(gather(cached) if gather else cached, model.logit_scale)
    do_backward(out.loss * loss_multiplier)

    for (start, stop), rng in zip(bounds, rng_states, strict=True):
        rng.restore(device)
        with autocast():
            features = encode_features(model, inputs.slice(start, stop))
        pairs = [
            (features[name], cached[name].grad[start:stop])
            for name in features
            if cached[name].grad is not None
        ]
        if pairs:
            torch.autograd.backward([f for f, _ in pairs], [g for _, g in pairs])
    # Leave the RNG where a single pass would have left it, so what follows does not
    # depend on the number of chunks.
    after_first_pass.restore(device)
    return LossOutput(out.loss.detach(), out.parts)
