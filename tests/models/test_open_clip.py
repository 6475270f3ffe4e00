"""The ``open_clip:`` backend on a tiny architecture registered from a JSON config."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from cultureclip.models import BackendError, create_model
from cultureclip.models.open_clip import parse_open_clip_spec
from cultureclip.testing import perturb_lora_b


def _pixels(model) -> torch.Tensor:
    return model.preprocess(
        [Image.new("RGB", (40, 30), (200, 20, 20)), Image.new("RGB", (32, 32), (0, 90, 200))]
    )


def test_spec_parsing() -> None:
    assert parse_open_clip_spec("ViT-B-32/laion2b_s34b_b79k") == ("ViT-B-32", "laion2b_s34b_b79k")
    assert parse_open_clip_spec("ViT-B-32") == ("ViT-B-32", None)
    assert parse_open_clip_spec("ViT-B-32//abs/ckpt.pt") == ("ViT-B-32", "/abs/ckpt.pt")
    assert parse_open_clip_spec("local-dir:/a/b") == ("local-dir:/a/b", None)
    with pytest.raises(BackendError, match="architecture name is empty"):
        parse_open_clip_spec("/tag")


def test_unknown_architecture_or_tag_is_a_backend_error(tiny_open_clip: str) -> None:
    with pytest.raises(BackendError, match="open_clip cannot build"):
        create_model("open_clip:no-such-arch")
    with pytest.raises(BackendError, match="not a known tag"):
        create_model(f"open_clip:{tiny_open_clip}/no_such_tag")


def test_tokenizer_works_offline(tiny_open_clip: str) -> None:
    model = create_model(f"open_clip:{tiny_open_clip}")
    tokens = model.tokenize(["a pagoda", "a castle on a hill"])["input_ids"]
    assert tokens.shape == (2, 77)
    assert tokens[0, 0].item() == 49406  # <start_of_text> of the bundled BPE vocabulary
    assert 49407 in tokens[0].tolist()  # <end_of_text>


def test_same_spec_same_random_model(tiny_open_clip: str) -> None:
    first, second = (
        create_model(f"open_clip:{tiny_open_clip}"),
        create_model(f"open_clip:{tiny_open_clip}"),
    )
    with torch.no_grad():
        torch.testing.assert_close(
            first.encode_image(_pixels(first)), second.encode_image(_pixels(second))
        )


def test_checkpoint_path_as_pretrained(tiny_open_clip: str, tmp_path: Path) -> None:
    """``open_clip:<arch>/<file>`` loads a checkpoint through open_clip's own loader."""
    model = create_model(f"open_clip:{tiny_open_clip}")
    with torch.no_grad():
        for param in model.model.parameters():
            param.add_(0.01 * torch.randn_like(param))
    checkpoint = tmp_path / "tiny.pt"
    torch.save(model.model.state_dict(), checkpoint)
    loaded = create_model(f"open_clip:{tiny_open_clip}/{checkpoint}")
    with torch.no_grad():
        torch.testing.assert_close(
            loaded.encode_image(_pixels(loaded)), model.encode_image(_pixels(model))
        )


def test_export_is_an_open_clip_local_dir(tiny_open_clip: str, tmp_path: Path) -> None:
    import open_clip

    model = create_model(f"open_clip:{tiny_open_clip}")
    model.configure_training(image="lora", text="lora")
    perturb_lora_b(model)  # make the adapters matter
    with torch.no_grad():
        expected = model.encode_image(_pixels(model))
        expected_text = model.encode_text(model.tokenize(["a pagoda"]))
    export_dir = model.export(tmp_path / "export")
    # Plain open_clip reads it ...
    native, _, _ = open_clip.create_model_and_transforms(f"local-dir:{export_dir}")
    with torch.no_grad():
        torch.testing.assert_close(
            torch.nn.functional.normalize(native.eval().encode_image(_pixels(model)), dim=-1),
            expected,
            atol=1e-5,
            rtol=0,
        )
    # ... and so does the backend, through the same spec path users take.
    reloaded = create_model(f"open_clip:local-dir:{export_dir}")
    with torch.no_grad():
        torch.testing.assert_close(
            reloaded.encode_text(reloaded.tokenize(["a pagoda"])), expected_text, atol=1e-5, rtol=0
        )


def test_default_lora_targets_change_the_output(tiny_open_clip: str) -> None:
    """The MLP adapters take part in the forward pass (an ``out_proj`` adapter would not)."""
    model = create_model(f"open_clip:{tiny_open_clip}")
    pixels = _pixels(model)
    with torch.no_grad():
        before = model.encode_image(pixels)
        model.configure_training(image="lora")
        perturb_lora_b(model, std=0.1)
        after = model.encode_image(pixels)
    assert (after - before).abs().max() > 1e-3


def test_context_length_is_fixed(tiny_open_clip: str) -> None:
    with pytest.raises(BackendError, match="fixed context length of 77"):
        create_model(f"open_clip:{tiny_open_clip}", context_length=52)
