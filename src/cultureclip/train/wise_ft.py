"""WiSE-FT (Wortsman et al., 2022): interpolate fine-tuned and base weights.

θ = (1 − α)·θ_base + α·θ_ft. α = 1 is the fine-tuned model, α = 0 the base one;
values in between usually keep most of the fine-tuning gain while restoring the
base model's general zero-shot ability (the guard against forgetting).
"""

from __future__ import annotations

import copy

import torch

from cultureclip.core.errors import InputError
from cultureclip.models.base import BackendError, VisionLanguageModel


def wise_ft(
    base_model: VisionLanguageModel, finetuned_model: VisionLanguageModel, alpha: float
) -> VisionLanguageModel:
    """A new model with weights ``(1 - alpha)·base + alpha·finetuned``; inputs are not modified.

    LoRA adapters are merged first (on copies), so a LoRA fine-tune interpolates
    with its base like a full one. Both models must share an architecture.
    """
    if not 0.0 <= alpha <= 1.0:
        raise InputError(f"WiSE-FT alpha must be in [0, 1], got {alpha}")
    base = copy.deepcopy(base_model)
    result = copy.deepcopy(finetuned_model)
    base.merge_lora()
    result.merge_lora()
    base_state = base.state_dict()
    result_state = result.state_dict()
    if set(base_state) != set(result_state):
        only_base = sorted(set(base_state) - set(result_state))[:5]
        only_ft = sorted(set(result_state) - set(base_state))[:5]
        raise BackendError(
            f"WiSE-FT needs two models of one architecture; only in base: {only_base}, "
            f"only in fine-tuned: {only_ft}"
        )
    # What save() stores of the fine-tune: every other tensor equals the base checkpoint
    # its spec rebuilds. The mix keeps that small form if it changes nothing else.
    small = set(result.trainable_state_dict()) if not result.weights_diverged else None
    mixed: dict[str, torch.Tensor] = {}
    for name, tuned in result_state.items():
        original = base_state[name]
        if original.shape != tuned.shape:
            raise BackendError(
                f"WiSE-FT: {name} has shape {tuple(original.shape)} in base and {tuple(tuned.shape)} "
                "in the fine-tuned model"
            )
        if tuned.is_floating_point():
            mixed[name] = torch.lerp(original.to(tuned.dtype).to(tuned.device), tuned, alpha)
        else:
            mixed[name] = tuned  # integer buffers (position ids) are not weights
    # Only if a weight outside the fine-tune's saved tensors moved (the two models differ
    # in their towers: full training, merged LoRA, another base) must save() store the
    # whole state; a heads-only mix stays as small as the fine-tune. (Compared before
    # loading: ``result_state`` shares storage with the model's tensors.)
    diverged = small is None or any(
        not torch.equal(mixed[name], result_state[name])
        for name in mixed
        if name not in small and mixed[name].is_floating_point()
    )
    # Stored frozen-tower outputs need no clearing: load_state_dict bumps every tensor's
    # version counter, so a changed tower fingerprints to a new namespace.
    result.load_state_dict(mixed)
    result.weights_diverged = diverged
    return result
