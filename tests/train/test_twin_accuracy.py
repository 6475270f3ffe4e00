"""Must show (issue 3): the CultureCLIP loss raises twin accuracy above the untrained model
and above plain ``clip`` training on the same data and steps.

Twin accuracy: each image scores its own bare concept name against its twin's; the
percentage of images that pick their own. Computed inline here (the eval stage owns
``cultureclip.eval.twin_accuracy``; this keeps the training tests independent of it).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from cultureclip.data.cultwin import CulTwinLoad, TwinRecord, read_cultwin, write_cultwin
from cultureclip.data.twin_dataset import load_image
from cultureclip.models.registry import create_model
from cultureclip.train import TrainConfig, train

# Visually similar, culturally different emoji (OpenMoji artwork): real visual twins.
EMOJI_TWINS = [
    ("JP", "Architecture", "🏯", "Japanese castle", "🏰", "European castle"),
    ("JP", "Clothing", "👘", "kimono", "🥻", "sari"),
    ("ID", "Symbol", "🇮🇩", "flag of Indonesia", "🇲🇨", "flag of Monaco"),
    ("CN", "Cuisine", "🥟", "dumpling", "🥠", "fortune cookie"),
    ("TD", "Symbol", "🇹🇩", "flag of Chad", "🇷🇴", "flag of Romania"),
    ("IE", "Symbol", "🇮🇪", "flag of Ireland", "🇨🇮", "flag of Côte d'Ivoire"),
    ("JP", "Cuisine", "🍣", "sushi", "🍙", "rice ball"),
    ("JP", "Festival", "🎎", "Japanese dolls", "🪆", "nesting dolls"),
    ("MX", "Cuisine", "🌮", "taco", "🌯", "burrito"),
    ("FR", "Cuisine", "🥐", "croissant", "🥯", "bagel"),
    ("NL", "Symbol", "🇳🇱", "flag of the Netherlands", "🇱🇺", "flag of Luxembourg"),
    ("JP", "Daily Life", "🍵", "green tea cup", "☕", "hot coffee"),
    ("NZ", "Symbol", "🇳🇿", "flag of New Zealand", "🇦🇺", "flag of Australia"),
    ("JP", "Architecture", "⛩️", "shinto shrine", "🕌", "mosque"),
    ("CN", "Daily Life", "🥢", "chopsticks", "🍴", "fork and knife"),
    ("NO", "Symbol", "🇳🇴", "flag of Norway", "🇮🇸", "flag of Iceland"),
]


def twin_accuracy(model, load: CulTwinLoad) -> float:
    images, own, twin = [], [], []
    for record in load.records:
        images += [
            load_image(load.image_path(record.pos_image)),
            load_image(load.image_path(record.neg_image)),
        ]
        own += [record.pos_concept, record.neg_concept]
        twin += [record.neg_concept, record.pos_concept]
    image_features = model.embed_images(images)
    own_score = (image_features * model.embed_texts(own)).sum(-1)
    twin_score = (image_features * model.embed_texts(twin)).sum(-1)
    return 100.0 * float((own_score > twin_score).float().mean())


def write_emoji_twins(directory: Path, size: int = 96) -> Path:
    from cultureclip.data.glyphs import render_glyph

    (directory / "images").mkdir(parents=True, exist_ok=True)
    records = []
    for i, (country, category, pos_glyph, pos, neg_glyph, neg) in enumerate(EMOJI_TWINS):
        names = []
        for side, glyph in (("pos", pos_glyph), ("neg", neg_glyph)):
            name = f"images/{i:02d}_{side}.png"
            render_glyph(glyph, size=size).convert("RGB").save(directory / name)
            names.append(name)
        records.append(
            TwinRecord(
                id=f"emoji-{i:02d}",
                country=country,
                category=category,
                pos_concept=pos,
                pos_captions=[f"an emoji of a {pos}", f"a {pos} icon"],
                pos_image=names[0],
                neg_concept=neg,
                neg_captions=[f"an emoji of a {neg}", f"a {neg} icon"],
                neg_image=names[1],
                source="openmoji",
            )
        )
    return write_cultwin(directory / "cultwin.jsonl", records)


def _compare_losses(spec: str, data: Path, out: Path, *, steps: int, lr: float) -> dict[str, float]:
    load = read_cultwin(data)
    scores = {"untrained": twin_accuracy(create_model(spec), load)}
    for loss in ("cultureclip", "clip"):
        config = TrainConfig(
            model=spec,
            data={"path": str(data)},
            loss=loss,
            training={"image": "heads", "text": "heads"},
            batch_size=8,
            max_steps=steps,
            optim={"lr": lr, "weight_decay": 0.0},
            schedule={"kind": "constant", "warmup_steps": 0},
            checkpoint_every=steps,
            output_dir=str(out / loss),
            progress=False,
        )
        scores[loss] = twin_accuracy(train(config).model, load)
    print(f"twin accuracy on {spec.split('/')[-1]}: {scores}")
    return scores


def test_cultureclip_beats_clip_on_toy_twins_tiny_clip(tiny_clip_dir, tmp_path) -> None:
    """The loss-level claim on the tiny random CLIP (heads only) and 16 synthetic twin pairs."""
    from cultureclip.testing import write_toy_cultwin

    torch.manual_seed(0)
    data = write_toy_cultwin(tmp_path / "toy", n_pairs=16)
    scores = _compare_losses(f"hf:{tiny_clip_dir}", data, tmp_path, steps=80, lr=1e-2)
    assert scores["cultureclip"] > scores["untrained"]
    assert scores["cultureclip"] > scores["clip"]


_LITE_READY = all(
    importlib.util.find_spec(m) is not None
    for m in ("cultureclip.models.lite", "cultureclip.data.glyphs")
)


@pytest.mark.skipif(
    not _LITE_READY, reason="lite backend / glyph renderer (models stage) not built yet"
)
def test_cultureclip_beats_clip_on_emoji_twins_lite_en(tmp_path) -> None:
    """The issue's must-show: real pretrained lite:en towers, real OpenMoji twin glyphs."""
    data = write_emoji_twins(tmp_path / "emoji")
    scores = _compare_losses("lite:en", data, tmp_path, steps=60, lr=1e-3)
    assert scores["cultureclip"] > scores["untrained"]
    assert scores["cultureclip"] > scores["clip"]
