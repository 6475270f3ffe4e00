"""Self-contained model folders: each loads with its own library, the base checkpoint gone."""

from __future__ import annotations

import shutil
from pathlib import Path

import torch
from PIL import Image

from cultureclip.models import create_model
from cultureclip.publish import export_model, export_vlm
from cultureclip.testing import perturb_lora_b
from tests.publish.conftest import run_fresh

TEXTS = ["a red round thing", "a blue square twin"]

# What a user of the hub folder runs: plain transformers, nothing of cultureclip.
LOAD_CLIP = """
import json, torch
from PIL import Image
from transformers import AutoModel, AutoProcessor

model = AutoModel.from_pretrained("run/export").eval()
processor = AutoProcessor.from_pretrained("run/export")
inputs = processor(text={texts!r}, images=[Image.open("image.png")], padding=True, return_tensors="pt")
pooled = lambda out: out if isinstance(out, torch.Tensor) else out.pooler_output
with torch.no_grad():
    text = pooled(model.get_text_features(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]))
    image = pooled(model.get_image_features(pixel_values=inputs["pixel_values"]))
norm = torch.nn.functional.normalize
print(json.dumps({{"text": norm(text, dim=-1).tolist(), "image": norm(image, dim=-1).tolist()}}))
"""


def _image(path: Path) -> Image.Image:
    image = Image.new("RGB", (40, 40), (200, 30, 30))
    image.save(path)
    return image


def test_hf_lora_export_loads_with_transformers_in_a_fresh_process_without_its_base(
    tiny_hf_dirs: dict[str, Path], tmp_path: Path
) -> None:
    from huggingface_hub import ModelCard
    from peft import PeftModel
    from transformers import AutoModel

    base = tmp_path / "base"
    shutil.copytree(tiny_hf_dirs["clip"], base)
    model = create_model(f"hf:{base}")
    model.configure_training(image="lora", text="lora")
    perturb_lora_b(model, seed=0)
    model.eval()
    image = _image(tmp_path / "image.png")
    expected_text, expected_image = model.embed_texts(TEXTS), model.embed_images([image])

    out = export_model(model, tmp_path / "run" / "export", config={"model": f"hf:{base}"})

    # The caller's model still trains its adapters; the folder holds them merged.
    assert any("lora_" in name for name, _ in model.named_parameters())
    exported = AutoModel.from_pretrained(out)
    assert not any("lora" in name for name, _ in exported.named_parameters())
    # The adapter beside it is peft's format: on the base model it gives the same weights.
    merged = PeftModel.from_pretrained(AutoModel.from_pretrained(base), out / "adapter")
    merged_state = merged.merge_and_unload().state_dict()
    for name, tensor in exported.state_dict().items():
        torch.testing.assert_close(merged_state[name], tensor)
    card = ModelCard.load(out / "README.md")
    assert card.data.library_name == "transformers"
    assert "cultureclip" in card.data.tags

    shutil.rmtree(base)
    got = run_fresh(LOAD_CLIP.format(texts=TEXTS), cwd=tmp_path)
    torch.testing.assert_close(torch.tensor(got["text"]), expected_text, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(torch.tensor(got["image"]), expected_image, atol=1e-5, rtol=1e-4)


def test_open_clip_lora_export_is_a_local_dir_and_its_adapter_loads_with_peft(
    tiny_open_clip_arch: str, tmp_path: Path
) -> None:
    import open_clip
    from huggingface_hub import ModelCard
    from peft import PeftModel

    from cultureclip.models.open_clip import RANDOM_INIT_SEED

    model = create_model(f"open_clip:{tiny_open_clip_arch}")
    model.configure_training(image="lora", text="lora")
    perturb_lora_b(model, seed=1)
    model.eval()
    image = _image(tmp_path / "image.png")
    expected_text, expected_image = model.embed_texts(TEXTS), model.embed_images([image])

    out = export_model(model, tmp_path / "export")

    native, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{out}")
    tokenizer = open_clip.get_tokenizer(f"local-dir:{out}")
    native.eval()
    with torch.no_grad():
        text = native.encode_text(tokenizer(TEXTS), normalize=True)
        pixels = preprocess(image).unsqueeze(0)
        image_features = native.encode_image(pixels, normalize=True)
    torch.testing.assert_close(text, expected_text, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(image_features, expected_image, atol=1e-5, rtol=1e-4)

    torch.manual_seed(RANDOM_INIT_SEED)  # the spec's weights: open_clip's seeded random init
    base = open_clip.create_model(tiny_open_clip_arch, force_custom_text=True)
    merged = PeftModel.from_pretrained(base, out / "adapter").merge_and_unload().state_dict()
    for name, tensor in native.state_dict().items():
        torch.testing.assert_close(merged[name], tensor)
    assert ModelCard.load(out / "README.md").data.library_name == "open_clip"


def test_lite_export_reloads_with_create_model(tmp_path: Path) -> None:
    from huggingface_hub import ModelCard

    model = create_model("lite:en?image_size=64&dim=32")
    model.configure_training(image="heads", text="heads")
    with torch.no_grad():
        for param in model.trainable_parameters():
            param.add_(0.01 * torch.randn_like(param))
    model.eval()
    expected = model.embed_texts(TEXTS)

    out = export_model(model, tmp_path / "export")

    torch.testing.assert_close(create_model(out).embed_texts(TEXTS), expected)
    assert not (out / "adapter").exists()  # nothing was LoRA-trained
    assert ModelCard.load(out / "README.md").data.library_name == "cultureclip"


LOAD_VLM = """
import json, torch
from PIL import Image
from transformers import AutoModelForImageTextToText, AutoProcessor

model = AutoModelForImageTextToText.from_pretrained("out/model").eval()
processor = AutoProcessor.from_pretrained("out/model")
inputs = processor(text=["<image>Which country?"], images=[Image.open("image.png")], return_tensors="pt")
with torch.no_grad():
    print(json.dumps({"logits": model(**inputs).logits[0, -1].tolist()}))
"""


def test_vlm_lora_export_loads_with_transformers_without_its_base(
    tiny_vlm: Path, tmp_path: Path
) -> None:
    from huggingface_hub import ModelCard
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from cultureclip.vlm.train import LANGUAGE_LORA_TARGETS

    base = tmp_path / "base"
    shutil.copytree(tiny_vlm, base)
    processor = AutoProcessor.from_pretrained(base)
    model = AutoModelForImageTextToText.from_pretrained(base, dtype=torch.float32)
    model = get_peft_model(model, LoraConfig(r=4, target_modules=LANGUAGE_LORA_TARGETS))
    perturb_lora_b(model, seed=0)
    model.eval()
    image = _image(tmp_path / "image.png")
    inputs = processor(text=["<image>Which country?"], images=[image], return_tensors="pt")
    with torch.no_grad():
        expected = model(**inputs).logits[0, -1]

    target = export_vlm(model, processor, tmp_path / "out", base=str(base), config={"lr": 1e-4})

    assert target == tmp_path / "out" / "model"
    assert (tmp_path / "out" / "adapter" / "adapter_config.json").exists()
    card = ModelCard.load(target / "README.md")
    assert card.data.library_name == "transformers"
    assert card.data.pipeline_tag == "image-text-to-text"
    shutil.rmtree(base)
    got = run_fresh(LOAD_VLM, cwd=tmp_path)
    torch.testing.assert_close(torch.tensor(got["logits"]), expected, atol=1e-4, rtol=1e-4)


def test_vlm_export_without_merge_keeps_only_the_adapter(tiny_vlm: Path, tmp_path: Path) -> None:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForImageTextToText, AutoProcessor

    processor = AutoProcessor.from_pretrained(tiny_vlm)
    model = get_peft_model(
        AutoModelForImageTextToText.from_pretrained(tiny_vlm),
        LoraConfig(r=2, target_modules=["q_proj"]),
    )
    assert export_vlm(model, processor, tmp_path, base=str(tiny_vlm), merge=False) is None
    assert (tmp_path / "adapter" / "adapter_model.safetensors").exists()
    assert not (tmp_path / "model").exists()


def test_a_training_run_ends_with_a_self_contained_carded_export(
    tiny_hf_dirs: dict[str, Path], tmp_path: Path
) -> None:
    """The trainer's one call: a LoRA run's export/ loads with transformers, base deleted."""
    from huggingface_hub import ModelCard

    from cultureclip.testing import write_toy_cultwin
    from cultureclip.train import TrainConfig, train

    base = tmp_path / "base"
    shutil.copytree(tiny_hf_dirs["clip"], base)
    config = TrainConfig.model_validate(
        {
            "model": f"hf:{base}",
            "data": {"path": str(write_toy_cultwin(tmp_path / "toy", n_pairs=8))},
            "training": {"image": "lora", "text": "lora"},
            "batch_size": 4,
            "epochs": 1,
            "out": str(tmp_path / "run"),
            "progress": False,
            "optim": {"lr": 1e-3},
            "schedule": {"warmup_steps": 1},
        }
    )
    result = train(config)
    assert result.export_dir == tmp_path / "run" / "export"
    image = _image(tmp_path / "image.png")
    expected = result.model.embed_texts(TEXTS), result.model.embed_images([image])
    card = ModelCard.load(result.export_dir / "README.md")
    assert card.data.library_name == "transformers"
    assert "training:" in card.text and "lr: 0.001" in card.text  # the run's config
    assert (result.export_dir / "adapter" / "adapter_model.safetensors").exists()

    shutil.rmtree(base)
    got = run_fresh(LOAD_CLIP.format(texts=TEXTS), cwd=tmp_path)
    torch.testing.assert_close(torch.tensor(got["text"]), expected[0], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(torch.tensor(got["image"]), expected[1], atol=1e-5, rtol=1e-4)
