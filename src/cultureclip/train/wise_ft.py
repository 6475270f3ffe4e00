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
    result.load_state_dict(mixed)
    # Every weight may now differ from the base checkpoint: save() must store them all.
    result.weights_diverged = True
    return result
