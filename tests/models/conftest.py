"""Backend fixtures: one spec per registered backend, built small enough for two CPU cores."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

# A tiny ViT open_clip architecture, registered with open_clip under this name.
TINY_OPEN_CLIP = "cultureclip-tiny-vit"
TINY_OPEN_CLIP_CONFIG = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "patch_size": 8, "head_width": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}
# Small inputs keep the real lite towers fast; the weights are the real ones.
LITE_EN = "lite:en?image_size=64&dim=32"
LITE_MULTI = "lite:multi?image_size=64&dim=32"  # test_lite.py uses the same two specs


@pytest.fixture(scope="session", autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_open_clip(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Registers the tiny open_clip architecture and returns its name."""
    import open_clip

    directory: Path = tmp_path_factory.mktemp("open_clip_configs")
    (directory / f"{TINY_OPEN_CLIP}.json").write_text(json.dumps(TINY_OPEN_CLIP_CONFIG))
    open_clip.add_model_config(directory)
    return TINY_OPEN_CLIP


@pytest.fixture(scope="session")
def backend_specs(tiny_hf_dirs: dict[str, Path], tiny_open_clip: str) -> dict[str, str]:
    """Test id → model spec, covering every registered backend."""
    return {
        "hf-clip": f"hf:{tiny_hf_dirs['clip']}",
        "hf-chinese_clip": f"hf:{tiny_hf_dirs['chinese_clip']}",
        "hf-siglip": f"hf:{tiny_hf_dirs['siglip']}",
        "lite-en": LITE_EN,
        "lite-multi": LITE_MULTI,
        "open_clip-tiny": f"open_clip:{tiny_open_clip}",
    }
