from __future__ import annotations

import time
from pathlib import Path

import pytest

from cultureclip.synth.config import ImageSettings
from cultureclip.synth.images import (
    IMAGE_BACKENDS,
    RenderRequest,
    create_image_backend,
    flag_sequence,
    glyph_for,
)


@pytest.mark.parametrize(
    ("concept", "glyph"),
    [
        ("dumpling", "🥟"),
        ("Fortune Cookie", "🥠"),
        ("flag of Japan", "🇯🇵"),
        ("flag of ID", "🇮🇩"),
        ("Erhu", None),
    ],
)
def test_glyph_for_maps_emoji_names_and_flags(concept: str, glyph: str | None) -> None:
    assert glyph_for(concept) == glyph


def test_flag_sequence_rejects_non_codes() -> None:
    assert flag_sequence("mc") == "🇲🇨"
    with pytest.raises(ValueError, match="alpha-2"):
        flag_sequence("MCO")


def test_glyph_backend_draws_real_artwork_and_reports_missing_ones() -> None:
    pytest.importorskip(
        "cultureclip.data.glyphs", reason="the glyph renderer lands with the models issue"
    )
    backend = create_image_backend(ImageSettings(backend="glyph", size=48))
    kimono, sari, unknown = backend.render(
        [
            RenderRequest("a kimono", "kimono", 0),
            RenderRequest("a sari", "sari", 0),
            RenderRequest("x", "Erhu", 0),
        ]
    )
    assert kimono.size == (48, 48) and kimono.mode == "RGB"
    assert len(set(kimono.getdata())) > 5  # colour artwork, not a blank tile
    assert list(kimono.getdata()) != list(sari.getdata())
    assert isinstance(unknown, LookupError) and "Erhu" in str(unknown)


def build_tiny_diffusers_pipeline(path: Path) -> Path:
    """A tiny random StableDiffusionPipeline saved with save_pretrained (about a second)."""
    import torch
    from diffusers import (
        AutoencoderKL,
        DDIMScheduler,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )
    from transformers import AutoTokenizer, CLIPTextConfig, CLIPTextModel

    from cultureclip.models.lite import minilm_dir

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        block_out_channels=(32, 32),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=4,
        norm_num_groups=8,
    )
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        block_out_channels=(8, 8),
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        latent_channels=4,
        norm_num_groups=8,
        sample_size=16,
    )
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=30522,
            hidden_size=32,
            intermediate_size=37,
            num_hidden_layers=1,
            num_attention_heads=4,
            max_position_embeddings=16,
            bos_token_id=101,
            eos_token_id=102,
            pad_token_id=0,
        )
    )
    tokenizer = AutoTokenizer.from_pretrained(minilm_dir(), model_max_length=16)
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=DDIMScheduler(num_train_timesteps=100, clip_sample=False, steps_offset=1),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(path)
    return path


def test_diffusers_backend_loads_any_pipeline_dir_and_renders_per_seed(tmp_path: Path) -> None:
    model_dir = build_tiny_diffusers_pipeline(tmp_path / "tiny-sd")
    settings = ImageSettings(
        backend="diffusers", model=str(model_dir), size=16, steps=2, batch_size=2
    )
    backend = create_image_backend(settings)
    assert backend.identity()["dtype"] == "float32"  # fp32 on CPU
    start = time.perf_counter()
    images = backend.render(
        [
            RenderRequest("a red kimono", "kimono", 1),
            RenderRequest("a sari", "sari", 2),
            RenderRequest("a red kimono", "kimono", 1),
        ]
    )
    assert time.perf_counter() - start < 30
    assert [im.size for im in images] == [(16, 16)] * 3
    # Same prompt and seed give the same pixels even in another batch; another seed differs.
    assert list(images[0].getdata()) == list(images[2].getdata())
    assert list(images[0].getdata()) != list(images[1].getdata())


def test_every_image_backend_has_an_identity() -> None:
    for name in IMAGE_BACKENDS.names():
        identity = create_image_backend(ImageSettings(backend=name)).identity()
        assert identity["backend"] == name
