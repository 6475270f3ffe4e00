"""WiSE-FT stores only what differs from the base, as ``save`` does (issue 16 item 8)."""

from __future__ import annotations

from pathlib import Path

import torch

from cultureclip.models import create_model
from cultureclip.models.base import WEIGHTS_NAME
from cultureclip.train import wise_ft


def _heads_finetune(spec: str, out: Path):
    model = create_model(spec)
    model.configure_training(image="heads", text="heads")
    torch.manual_seed(0)
    with torch.no_grad():
        for param in model.trainable_parameters():
            param.add_(0.1 * torch.randn_like(param))
    model.save(out)
    return create_model(out)


def _saved(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path / WEIGHTS_NAME))


def test_wise_ft_of_a_heads_only_model_stores_only_the_heads(
    tiny_clip_dir: Path, tmp_path: Path
) -> None:
    spec = f"hf:{tiny_clip_dir}"
    tuned = _heads_finetune(spec, tmp_path / "ft")
    base = create_model(spec)
    mixed = wise_ft(base, tuned, 0.5)
    assert not mixed.weights_diverged
    mixed.save(tmp_path / "mix")
    stored, finetune = _saved(tmp_path / "mix"), _saved(tmp_path / "ft")
    assert set(stored) == set(finetune)  # the heads and the temperature, not the towers
    assert len(stored) < len(base.state_dict()) / 4
    size = (tmp_path / "mix" / WEIGHTS_NAME).stat().st_size
    assert size <= (tmp_path / "ft" / WEIGHTS_NAME).stat().st_size + 1024

    base_state = base.state_dict()
    for name, tensor in stored.items():
        torch.testing.assert_close(tensor, 0.5 * (base_state[name] + finetune[name]))
    reloaded = create_model(tmp_path / "mix")
    texts = ["a photo of Miao costume", "a photo of Dong costume"]
    torch.testing.assert_close(reloaded.embed_texts(texts), mixed.embed_texts(texts))


def test_wise_ft_with_a_base_whose_towers_differ_stores_everything(
    tiny_clip_dir: Path, tmp_path: Path
) -> None:
    spec = f"hf:{tiny_clip_dir}"
    tuned = _heads_finetune(spec, tmp_path / "ft")
    other = create_model(spec)
    with torch.no_grad():
        next(p for n, p in other.named_parameters() if "q_proj" in n).add_(0.5)
    mixed = wise_ft(other, tuned, 0.5)
    assert mixed.weights_diverged
    mixed.save(tmp_path / "mix")
    assert len(_saved(tmp_path / "mix")) == len(dict(mixed.named_parameters()))
    reloaded = create_model(tmp_path / "mix")
    texts = ["a photo of Yi costume"]
    torch.testing.assert_close(reloaded.embed_texts(texts), mixed.embed_texts(texts))
