"""The offline ``lite:`` backend: real packaged weights, spec options, the multilingual tower."""

from __future__ import annotations

import copy

import pytest
import torch
from PIL import Image

from cultureclip.models import BackendError, TrainMode, create_model
from cultureclip.models.lite import (
    E5Tower,
    LiteSettings,
    decode_utf8,
    encode_utf8,
    image_transform,
    lite_spec,
    load_efficientnet_lite0,
    parse_lite_spec,
)

# Small inputs keep the real towers fast; the weights are the real ones.
LITE_EN = "lite:en?image_size=64&dim=32"
LITE_MULTI = "lite:multi?image_size=64&dim=32"


@pytest.fixture(scope="module")
def lite_en():
    return create_model(LITE_EN)


@pytest.fixture(scope="module")
def lite_multi():
    return create_model(LITE_MULTI)


def _sample_photo(name: str) -> Image.Image:
    from sklearn.datasets import load_sample_image

    return Image.fromarray(load_sample_image(name))


@pytest.mark.parametrize(
    ("photo", "label"),
    [("china.jpg", "palace"), ("flower.jpg", "daisy")],
)
def test_image_tower_has_real_imagenet_weights(photo: str, label: str) -> None:
    """The packaged weights + original classifier name scikit-learn's bundled photos."""
    from timm.data import ImageNetInfo

    torch.set_num_threads(1)
    classifier = load_efficientnet_lite0(num_classes=1000)
    pixels = image_transform(224)(_sample_photo(photo).convert("RGB")).unsqueeze(0)
    with torch.no_grad():
        probabilities = classifier(pixels).softmax(-1)[0]
    info = ImageNetInfo()
    top5 = [info.index_to_description(int(i)) for i in probabilities.topk(5).indices]
    assert label in top5[0], top5
    assert probabilities.max() > 0.2  # confident, unlike random weights (~0.001)


def test_weight_mapping_fails_loudly_when_shapes_do_not_pair(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from cultureclip.models import lite

    state = list(lite._packaged_efficientnet_state())
    swapped = [state[1], state[0], *state[2:]]  # the stem conv where a BatchNorm weight belongs
    monkeypatch.setattr(lite, "_packaged_efficientnet_state", lambda: tuple(swapped))
    with pytest.raises(BackendError, match="does not fit timm's"):
        load_efficientnet_lite0()
    monkeypatch.setattr(lite, "_packaged_efficientnet_state", lambda: tuple(state[:-2]))
    with pytest.raises(BackendError, match="tensors"):
        load_efficientnet_lite0()


def test_spec_options_parse_and_canonicalise() -> None:
    variant, options = parse_lite_spec("multi?dim=128&image_size=160")
    assert variant == "multi" and options == LiteSettings(dim=128, image_size=160)
    assert lite_spec(variant, options) == "lite:multi?image_size=160&dim=128"
    assert lite_spec("en", LiteSettings()) == "lite:en"
    assert lite_spec("en", LiteSettings(dim=256)) == "lite:en"  # defaults are left out
    for bad, message in [
        ("fr", "unknown lite variant"),
        ("en?colour=red", "colour"),
        ("en?dim=0", "dim"),
        ("en?dim=8&dim=16", "given twice"),
        ("en?dim", "key=value"),
    ]:
        with pytest.raises(BackendError, match=message):
            parse_lite_spec(bad)


def test_spec_rebuilds_the_same_heads(lite_en) -> None:
    again = create_model(LITE_EN)
    assert again.spec == lite_en.spec == LITE_EN
    torch.testing.assert_close(again.image_head.weight, lite_en.image_head.weight, rtol=0, atol=0)
    torch.testing.assert_close(again.text_head.weight, lite_en.text_head.weight, rtol=0, atol=0)
    other_seed = create_model(LITE_EN + "&seed=1")
    assert not torch.equal(other_seed.image_head.weight, lite_en.image_head.weight)
    assert lite_en.logit_scale.item() == pytest.approx(1 / 0.07)


def test_image_size_option_sets_the_input(lite_en) -> None:
    pixels = lite_en.preprocess([Image.new("RGB", (300, 200), (10, 200, 30))])
    assert pixels.shape == (1, 3, 64, 64)


def test_patch_features_average_to_the_global_feature(lite_en) -> None:
    pixels = lite_en.preprocess([_sample_photo("china.jpg")])
    with torch.no_grad():
        patches = lite_en.encode_image_patches(pixels, normalize=False)
        pooled = lite_en.encode_image(pixels, normalize=False)
    assert patches.shape == (1, 4, 32)  # 64 px / stride 32 → a 2×2 grid of cells
    torch.testing.assert_close(patches.mean(dim=1), pooled, rtol=1e-5, atol=1e-5)


def test_frozen_image_tower_keeps_batchnorm_statistics() -> None:
    model = create_model(LITE_EN)
    model.configure_training(image=TrainMode.heads, text=TrainMode.heads)
    stats = {n: b.clone() for n, b in model.image_tower.named_buffers() if "running_mean" in n}
    model.train()
    assert not model.image_tower.training
    assert model.image_head.training
    model.encode_image(torch.randn(4, 3, 64, 64))
    assert all(torch.equal(b, stats[n]) for n, b in model.image_tower.named_buffers() if n in stats)
    # Trained fully, BatchNorm statistics move, and save() must carry them.
    model.configure_training(image=TrainMode.full)
    model.train()
    assert model.image_tower.training
    model.encode_image(torch.randn(4, 3, 64, 64))
    assert any(
        not torch.equal(b, stats[n]) for n, b in model.image_tower.named_buffers() if n in stats
    )
    saved = model.trainable_state_dict()
    assert any(name.startswith("image_tower.") and "running_mean" in name for name in saved)


def test_default_image_lora_targets_pointwise_convs(lite_en) -> None:
    targets = lite_en.default_lora_targets["image"]
    assert "conv_head" in targets
    assert all(t == "conv_head" or t.startswith(("blocks.5.", "blocks.6.")) for t in targets)
    assert lite_en.default_lora_targets["text"] == ("query", "value")


def test_utf8_tokens_round_trip_and_slice() -> None:
    texts = ["一座红色的宝塔", "a daisy", "", "ça va"]
    tokens = encode_utf8(texts)
    assert tokens["utf8"].dtype == torch.uint8 and tokens["utf8"].shape[0] == 4
    assert decode_utf8(tokens) == texts
    # Tokens behave like tensors: slicing a batch keeps the right texts.
    assert decode_utf8({k: v[1:3] for k, v in tokens.items()}) == texts[1:3]
    # Truncation never splits a multi-byte character.
    (cut,) = decode_utf8(encode_utf8(["宝" * 10], max_bytes=10))
    assert cut == "宝" * 3


def test_multilingual_tower_understands_chinese() -> None:
    tower = E5Tower()
    texts = ["熊猫", "a giant panda", "a bicycle", "自行车"]
    features = tower(**encode_utf8(texts))
    assert features.shape == (4, 384)
    similarity = features @ features.T
    assert similarity[0, 1] > similarity[0, 2]  # 熊猫 (panda) is nearer "panda" than "bicycle"
    assert similarity[3, 2] > similarity[3, 1]  # 自行车 (bicycle) is nearer "bicycle"
    assert len(tower._cache) == 4
    torch.testing.assert_close(tower(**encode_utf8(texts[:1]))[0], features[0])


def test_multilingual_text_tower_only_trains_heads(lite_multi) -> None:
    assert lite_multi.tokenize(["宝塔"]).keys() == {"utf8", "utf8_length"}
    for mode in ("lora", "full"):
        with pytest.raises(BackendError, match="supported: frozen, heads"):
            lite_multi.configure_training(text=mode)


def test_lite_models_deep_copy(lite_multi) -> None:
    """WiSE-FT and export deep-copy models; the C-engine tower must survive that."""
    clone = copy.deepcopy(lite_multi)
    texts = ["宝塔", "castle"]
    torch.testing.assert_close(clone.embed_texts(texts), lite_multi.embed_texts(texts))


def _glyphs() -> list[Image.Image]:
    from cultureclip.data.glyphs import render_glyph

    return [render_glyph(e, size=96) for e in "🏯🏰👘🥻"]


def test_frozen_output_cache_gives_the_same_features_and_only_for_fixed_towers() -> None:
    plain = create_model("lite:en?image_size=96")
    cached = create_model("lite:en?image_size=96&cache=3")
    texts = ["kimono", "sari", "a castle", "kimono"]

    def encoded(model):  # the model's own path (embed_* read the shared store: issue 23)
        with torch.no_grad(), model.inference():
            images = model.encode_image(model.preprocess(_glyphs()))
            return images, model.encode_text(model.tokenize(texts))

    for _ in range(2):  # the second pass is served from the cache
        assert torch.allclose(plain.embed_images(_glyphs()), cached.embed_images(_glyphs()))
        assert torch.allclose(plain.embed_texts(texts), cached.embed_texts(texts))
        for fresh, stored in zip(encoded(plain), encoded(cached), strict=True):
            assert torch.allclose(fresh, stored)
    assert len(cached._image_cache) == 3  # bounded: the oldest entry was dropped
    assert len(cached._text_cache) == 3  # "kimono" twice is one entry

    # A tower whose weights may change must never be served stale outputs.
    cached.configure_training(image=TrainMode.lora, text=TrainMode.heads)
    assert len(cached._image_cache) == 0
    encoded(cached)
    assert len(cached._image_cache) == 0


def test_heads_training_with_cache_matches_training_without(tmp_path) -> None:
    from cultureclip.testing import write_toy_cultwin
    from cultureclip.train import TrainConfig, train

    data = write_toy_cultwin(tmp_path / "toy", n_pairs=8)
    finals = []
    for spec in ("lite:en?image_size=64", "lite:en?image_size=64&cache=1000"):
        config = TrainConfig(
            model=spec,
            data={"path": str(data)},
            loss="cultureclip",
            training={"image": "heads", "text": "heads"},
            batch_size=4,
            max_steps=4,
            optim={"lr": 1e-3},
            schedule={"kind": "constant", "warmup_steps": 0},
            out=str(tmp_path / spec.split("&")[-1].replace("?", "_")),
            progress=False,
        )
        finals.append(train(config).model.trainable_state_dict())
    assert finals[0].keys() == finals[1].keys()
    for name in finals[0]:
        assert torch.allclose(finals[0][name], finals[1][name], atol=1e-5), name
