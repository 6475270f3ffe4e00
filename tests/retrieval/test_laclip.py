"""LACLIP: views, weights, the fused vector, and the reduction to global-only scoring."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from cultureclip.core.config import ConfigError
from cultureclip.retrieval.laclip import (
    LaclipEncoder,
    LaclipSettings,
    agreement_weights,
    crop_boxes,
    explicit_scores,
    fuse,
    image_rng,
    parse_laclip_option,
    patch_boxes,
)

WEIGHTINGS = ("softmax", "uniform", "relu", "cosine")


def _images(n: int = 4, size: tuple[int, int] = (40, 40)) -> list[Image.Image]:
    rng = np.random.default_rng(0)
    images = []
    for _ in range(n):
        image = Image.new("RGB", size, tuple(int(v) for v in rng.integers(0, 256, 3)))
        draw = ImageDraw.Draw(image)
        for _ in range(3):
            x, y = (int(v) for v in rng.integers(0, min(size) - 10, 2))
            draw.rectangle(
                (x, y, x + 10, y + 10), fill=tuple(int(v) for v in rng.integers(0, 256, 3))
            )
        images.append(image)
    return images


@pytest.mark.parametrize("weighting", WEIGHTINGS)
def test_crops_equal_to_the_whole_image_reduce_to_global_scores(
    session_model, weighting: str
) -> None:
    images = _images()
    ids = [f"img{i}" for i in range(len(images))]
    config = LaclipSettings(k=3, scale=(1.0, 1.0), ratio=(1.0, 1.0), weighting=weighting, tau=0.07)
    features = LaclipEncoder(session_model, config).encode(images, ids)
    assert (features.views.boxes == np.array([0, 0, 40, 40])).all()
    global_emb = session_model.embed_images(images)
    texts = session_model.embed_texts(["a red square", "blue", "丝绸上的凤凰"])
    torch.testing.assert_close(features.fused, global_emb, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(features.fused @ texts.T, global_emb @ texts.T, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("weighting", WEIGHTINGS)
@pytest.mark.parametrize("beta", [0.0, 0.3])
def test_fused_vector_score_equals_explicit_sum(weighting: str, beta: float) -> None:
    generator = torch.Generator().manual_seed(1)
    n, k, t, d = 5, 6, 7, 16
    global_emb = torch.nn.functional.normalize(torch.randn(n, d, generator=generator), dim=-1)
    local = torch.nn.functional.normalize(
        global_emb[:, None] + 0.8 * torch.randn(n, k, d, generator=generator), dim=-1
    )
    texts = torch.nn.functional.normalize(torch.randn(t, d, generator=generator), dim=-1)
    weights = agreement_weights(global_emb, local, weighting, tau=0.1)
    fused_scores = fuse(global_emb, local, weights, beta) @ texts.T
    # The definition, one term at a time.
    expected = torch.zeros(n, t)
    for i in range(n):
        for j in range(t):
            local_score = sum(
                float(weights[i, c]) * float(local[i, c] @ texts[j]) for c in range(k)
            )
            expected[i, j] = beta * float(global_emb[i] @ texts[j]) + (1 - beta) * local_score
    torch.testing.assert_close(fused_scores, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(
        explicit_scores(global_emb, local, weights, texts, beta), expected, atol=1e-5, rtol=1e-5
    )


def test_fused_vector_from_a_real_model_matches_explicit_scores(session_model) -> None:
    images = _images(3)
    encoder = LaclipEncoder(session_model, LaclipSettings(k=5, beta=0.25))
    features = encoder.encode(images, ["a", "b", "c"])
    texts = session_model.embed_texts(["one", "two"])
    views = features.views
    torch.testing.assert_close(
        features.fused @ texts.T,
        explicit_scores(views.global_emb, views.local, features.weights, texts, 0.25),
        atol=1e-5,
        rtol=1e-5,
    )
    # Crops really are different views: at least one differs from the global embedding.
    assert (views.local - views.global_emb[:, None]).abs().amax() > 1e-3


def test_weightings() -> None:
    global_emb = torch.tensor([[1.0, 0.0]])
    local = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]]])  # cos = 1, 0, -1
    softmax = agreement_weights(global_emb, local, "softmax", tau=0.5)
    torch.testing.assert_close(softmax, torch.softmax(torch.tensor([[2.0, 0.0, -2.0]]), dim=-1))
    sharp = agreement_weights(global_emb, local, "softmax", tau=0.001)
    assert float(sharp[0, 0]) > 0.999
    torch.testing.assert_close(
        agreement_weights(global_emb, local, "uniform"), torch.full((1, 3), 1 / 3)
    )
    torch.testing.assert_close(
        agreement_weights(global_emb, local, "relu"), torch.tensor([[1.0, 0.0, 0.0]])
    )
    torch.testing.assert_close(
        agreement_weights(global_emb, local, "cosine"), torch.tensor([[0.5, 0.0, -0.5]])
    )
    disagreeing = -local[:, :1]
    assert (
        agreement_weights(global_emb, disagreeing, "relu").sum() == 0
    )  # documented: no agreeing view
    with pytest.raises(ValueError, match="unknown LACLIP weighting"):
        agreement_weights(global_emb, local, "max")  # type: ignore[arg-type]


def test_crop_boxes_are_seeded_per_image_and_respect_scale() -> None:
    def boxes(image_id: str, seed: int = 0) -> np.ndarray:
        return crop_boxes(
            200, 100, k=50, scale=(0.2, 0.5), ratio=(0.75, 1.33), rng=image_rng(seed, image_id)
        )

    first = boxes("a")
    assert np.array_equal(first, boxes("a"))
    assert not np.array_equal(first, boxes("b"))
    assert not np.array_equal(first, boxes("a", seed=1))
    assert (first[:, 0] >= 0).all() and (first[:, 2] <= 200).all()
    assert (first[:, 1] >= 0).all() and (first[:, 3] <= 100).all()
    area = (first[:, 2] - first[:, 0]) * (first[:, 3] - first[:, 1]) / (200 * 100)
    assert area.min() >= 0.18 and area.max() <= 0.52


def test_patch_variant(session_model) -> None:
    images = _images(2, size=(64, 48))
    features = LaclipEncoder(session_model, LaclipSettings(mode="patches")).encode(
        images, ["a", "b"]
    )
    n_patches = (32 // 8) ** 2  # tiny CLIP: 32 px input, 8 px patches
    assert features.views.local.shape == (2, n_patches, session_model.embed_dim)
    assert features.weights.shape == (2, n_patches)
    torch.testing.assert_close(features.weights.sum(dim=1), torch.ones(2))
    boxes = features.views.boxes[0]
    assert boxes[0].tolist() == [8, 0, 20, 12] and boxes[-1].tolist() == [44, 36, 56, 48]
    texts = session_model.embed_texts(["x"])
    views = features.views
    torch.testing.assert_close(
        features.fused @ texts.T,
        explicit_scores(views.global_emb, views.local, features.weights, texts),
    )
    with pytest.raises(ValueError, match="square grid"):
        patch_boxes(10, 10, 12)


def test_parse_laclip_option() -> None:
    assert parse_laclip_option("on") == LaclipSettings()
    config = parse_laclip_option(
        "k=4, scale=0.3-0.8, tau=0.1, weighting=relu, beta=0.2, mode=crops"
    )
    assert (config.k, config.scale, config.tau, config.weighting, config.beta) == (
        4,
        (0.3, 0.8),
        0.1,
        "relu",
        0.2,
    )
    with pytest.raises(ConfigError, match="unknown LACLIP option 'kk'"):
        parse_laclip_option("kk=3")
    with pytest.raises(ConfigError, match="key=value"):
        parse_laclip_option("k")
    with pytest.raises(ConfigError, match="scale"):
        parse_laclip_option("scale=0.8-0.3")
