"""Every registered backend, through the one interface (timm style: new entries are tested for free)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image, ImageDraw

from cultureclip.models import (
    MODELS,
    BackendError,
    TrainMode,
    VisionLanguageModel,
    create_model,
    list_models,
)

BACKEND_IDS = ["hf-clip", "hf-chinese_clip", "hf-siglip", "lite-en", "lite-multi", "open_clip-tiny"]
TEXTS = ["a red circle", "a blue square", "一座红色的宝塔", "a green triangle"]


def _images() -> list[Image.Image]:
    images = []
    for i, colour in enumerate([(220, 30, 30), (30, 30, 220), (200, 60, 20), (30, 180, 60)]):
        image = Image.new("RGB", (40 + 8 * i, 48), (255, 255, 255))
        draw = ImageDraw.Draw(image)
        (draw.ellipse if i % 2 == 0 else draw.rectangle)((6, 6, 34, 40), fill=colour)
        images.append(image)
    return images


@pytest.fixture(params=BACKEND_IDS)
def spec(request: pytest.FixtureRequest, backend_specs: dict[str, str]) -> str:
    return backend_specs[request.param]


def _lora_or_heads(model: VisionLanguageModel, tower: str) -> TrainMode:
    return TrainMode.lora if TrainMode.lora in model.supported_modes[tower] else TrainMode.heads


def _train_steps(model: VisionLanguageModel, steps: int = 2, lr: float = 2e-2) -> None:
    """A few CLIP-loss steps on fixed data, enough to move every trainable weight."""
    pixels = model.preprocess(_images())
    tokens = model.tokenize(TEXTS)
    optimizer = torch.optim.Adam(model.trainable_parameters(), lr=lr)
    model.train()
    labels = torch.arange(len(TEXTS))
    for _ in range(steps):
        image_features, text_features, scale = model(pixels, tokens)
        logits = scale * image_features @ text_features.T
        loss = (
            torch.nn.functional.cross_entropy(logits, labels)
            + torch.nn.functional.cross_entropy(logits.T, labels)
        ) / 2
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()


def _outputs(model: VisionLanguageModel) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.no_grad():
        return model.embed_images(_images()), model.embed_texts(TEXTS)


def _built_in(names) -> set[str]:
    # Test modules may register helper backends of their own (tests/eval/layouts.py).
    return {n for n in names if MODELS.get(n).__module__.startswith("cultureclip.")}


def test_every_registered_backend_is_covered() -> None:
    names = _built_in(list_models())
    assert names == _built_in(MODELS.names())
    assert {spec_id.split("-")[0] for spec_id in BACKEND_IDS} == names, (
        "add a spec for the new backend"
    )


def test_encodes_to_unit_vectors(spec: str) -> None:
    model = create_model(spec)
    images, texts = _outputs(model)
    assert images.shape == (4, model.embed_dim)
    assert texts.shape == (4, model.embed_dim)
    torch.testing.assert_close(images.norm(dim=-1), torch.ones(4))
    torch.testing.assert_close(texts.norm(dim=-1), torch.ones(4))
    # Different inputs give different features: the towers are not constant.
    assert (images[0] - images[1]).abs().max() > 1e-4
    assert (texts[0] - texts[1]).abs().max() > 1e-4
    assert model.logit_scale.numel() == 1 and model.logit_scale.item() > 0
    with torch.no_grad():
        patches = model.encode_image_patches(model.preprocess(_images()[:2]))
    assert patches.ndim == 3 and patches.shape[0] == 2 and patches.shape[2] == model.embed_dim


def test_save_load_round_trip_after_lora_training(spec: str, tmp_path: Path) -> None:
    model = create_model(spec)
    before_images, before_texts = _outputs(model)
    model.configure_training(
        image=TrainMode.lora, text=_lora_or_heads(model, "text"), logit_scale=True
    )
    _train_steps(model)
    images, texts = _outputs(model)
    assert (images - before_images).abs().max() > 1e-3, "training did not change the image features"
    assert (texts - before_texts).abs().max() > 1e-3, "training did not change the text features"

    saved = model.save(tmp_path / "saved")
    reloaded = create_model(saved)
    reloaded_images, reloaded_texts = _outputs(reloaded)
    torch.testing.assert_close(reloaded_images, images, rtol=0, atol=1e-6)
    torch.testing.assert_close(reloaded_texts, texts, rtol=0, atol=1e-6)
    torch.testing.assert_close(reloaded.logit_scale, model.logit_scale)
    # The LoRA fine-tune stores only what trained, not a copy of the towers.
    base_size = sum(p.numel() for p in create_model(spec).parameters())
    saved_size = sum(t.numel() for t in reloaded.trainable_state_dict().values())
    assert saved_size < base_size / 2

    # Merged for export, the model computes the same features without adapter layers.
    model.merge_lora()
    assert not any("lora_" in name for name, _ in model.named_parameters())
    merged_images, merged_texts = _outputs(model)
    torch.testing.assert_close(merged_images, images, rtol=0, atol=1e-5)
    torch.testing.assert_close(merged_texts, texts, rtol=0, atol=1e-5)


def test_full_training_round_trip(spec: str, tmp_path: Path) -> None:
    model = create_model(spec)
    text_mode = (
        TrainMode.full if TrainMode.full in model.supported_modes["text"] else TrainMode.heads
    )
    model.configure_training(image=TrainMode.full, text=text_mode)
    _train_steps(model, steps=1, lr=1e-3)
    images, texts = _outputs(model)
    reloaded = create_model(model.save(tmp_path / "full"))
    assert reloaded.weights_diverged
    reloaded_images, reloaded_texts = _outputs(reloaded)
    torch.testing.assert_close(reloaded_images, images, rtol=0, atol=1e-6)
    torch.testing.assert_close(reloaded_texts, texts, rtol=0, atol=1e-6)


def _owner(model: VisionLanguageModel, name: str) -> str:
    """Which part a parameter belongs to: image tower, text tower or other (heads, scale)."""
    param = dict(model.named_parameters())[name]
    for tower in ("image", "text"):
        if any(param is p for p in model.tower(tower).parameters()):
            return tower
    return "other"


@pytest.mark.parametrize("tower", ["image", "text"])
def test_lora_adds_parameters_only_where_asked(spec: str, tower: str) -> None:
    model = create_model(spec)
    if TrainMode.lora not in model.supported_modes[tower]:
        with pytest.raises(BackendError, match="cannot train its text tower in mode 'lora'"):
            model.configure_training(**{tower: TrainMode.lora})
        return
    count_before = sum(p.numel() for p in model.parameters())
    model.configure_training(**{tower: TrainMode.lora})
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    adapters = {name for name, _ in model.named_parameters() if "lora_" in name}
    assert trainable and trainable == adapters, "exactly the injected adapters train"
    assert {_owner(model, name) for name in adapters} == {tower}
    added = sum(p.numel() for p in model.parameters()) - count_before
    assert added == sum(p.numel() for p in model.trainable_parameters())


def test_heads_mode_trains_only_heads(spec: str) -> None:
    model = create_model(spec)
    model.configure_training(image=TrainMode.heads, text=TrainMode.heads)
    trainable = {id(p) for p in model.trainable_parameters()}
    heads = {id(p) for tower in ("image", "text") for p in model.head_parameters(tower)}
    assert trainable == heads and heads


def test_bad_lora_target_is_a_backend_error(spec: str) -> None:
    model = create_model(spec)
    with pytest.raises(BackendError, match="LoRA on the image tower"):
        model.configure_training(image="lora", lora={"target_modules": ["no_such_module"]})


def test_hf_export_loads_in_transformers(backend_specs: dict[str, str], tmp_path: Path) -> None:
    from transformers import AutoModel

    model = create_model(backend_specs["hf-clip"])
    model.configure_training(image="lora", text="lora")
    _train_steps(model)
    pixels = model.preprocess(_images())
    tokens = model.tokenize(TEXTS)
    with torch.no_grad():
        expected_images = model.encode_image(pixels, normalize=False)
        expected_texts = model.encode_text(tokens, normalize=False)
    export_dir = model.export(tmp_path / "export")
    native = AutoModel.from_pretrained(export_dir).eval()
    with torch.no_grad():
        images = native.get_image_features(pixel_values=pixels).pooler_output
        texts = native.get_text_features(**tokens).pooler_output
    torch.testing.assert_close(images, expected_images, rtol=0, atol=1e-5)
    torch.testing.assert_close(texts, expected_texts, rtol=0, atol=1e-5)


def test_unknown_spec_errors() -> None:
    with pytest.raises(BackendError, match="backend prefix"):
        create_model("no-prefix-and-not-a-dir")
    with pytest.raises(KeyError, match="unknown model backend 'nope'"):
        create_model("nope:thing")


def test_loaded_lora_model_has_no_dropout(tiny_clip_dir: Path, tmp_path: Path) -> None:
    """Loading injects adapters into an eval-mode model: they must not drop out."""
    from cultureclip.models.base import LoraSettings, TrainingSettings

    model = create_model(f"hf:{tiny_clip_dir}")
    model.configure_training(
        TrainingSettings(image=TrainMode.lora, text=TrainMode.lora, lora=LoraSettings(dropout=0.9))
    )
    loaded = create_model(str(model.save(tmp_path / "saved")))
    assert not any(m.training for m in loaded.modules())
    first = loaded.embed_texts(["a red circle", "a blue square"])
    assert torch.equal(first, loaded.embed_texts(["a red circle", "a blue square"]))


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("hf:/no/such/dir", "no such directory /no/such/dir"),
        ("hf:./typo/model", "no such directory ./typo/model"),
        ("hf:nobody/not-a-cached-model", "HF_HUB_OFFLINE is set"),
    ],
)
def test_a_spec_that_does_not_resolve_is_one_line(
    spec: str, expected: str, monkeypatch, tmp_path: Path
) -> None:
    from typer.testing import CliRunner

    from cultureclip.cli.main import app

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(BackendError, match=expected):
        create_model(spec)
    args = ["train", "--data", "d.jsonl", "-o", str(tmp_path / "run"), "--set", f"model={spec}"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2
    assert "Traceback" not in result.output and "cannot load model" in result.output


def test_bf16_inference_runs_under_autocast_close_to_fp32(spec: str) -> None:
    reference = _outputs(create_model(spec))
    model = create_model(spec, device="cpu", precision="bf16")
    assert model.inference_precision == "bf16" and model.device == torch.device("cpu")
    seen: list[torch.dtype | None] = []

    def record(module: torch.nn.Module, inputs: Any) -> None:
        enabled = torch.is_autocast_enabled("cpu")
        seen.append(torch.get_autocast_dtype("cpu") if enabled else None)

    for module in model.modules():
        if isinstance(module, torch.nn.Linear):
            module.register_forward_pre_hook(record)
    outputs = _outputs(model)
    assert seen and set(seen) == {torch.bfloat16}
    for half, full in zip(outputs, reference, strict=True):
        assert half.dtype == torch.float32  # features come back as fp32 whatever the precision
        assert torch.nn.functional.cosine_similarity(half, full).min() > 0.98
