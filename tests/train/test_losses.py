"""Every loss against a slow, loop-based re-computation of its formula (design.md §1)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from cultureclip.train.losses import (
    LOSSES,
    PAIR_FEATURES,
    TWIN_FEATURES,
    LossError,
    create_loss,
)

B, D = 5, 7


def _unit(rows: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(rows, D, generator=generator, dtype=torch.float64), dim=-1)


@pytest.fixture
def twin() -> dict[str, torch.Tensor]:
    return {name: _unit(B, seed) for seed, name in enumerate(TWIN_FEATURES)}


SCALE = torch.tensor(7.5, dtype=torch.float64)


def slow_ce(
    query: torch.Tensor, candidates: list[torch.Tensor], target: int, scale: float
) -> float:
    """-log softmax of the target among ``scale · query·candidate``, with python loops."""
    logits = [
        scale * sum(float(q) * float(c) for q, c in zip(query, cand, strict=True))
        for cand in candidates
    ]
    top = max(logits)
    log_sum = top + math.log(sum(math.exp(v - top) for v in logits))
    return log_sum - logits[target]


def slow_clip(image: torch.Tensor, text: torch.Tensor, scale: float) -> float:
    n = image.shape[0]
    i2t = sum(slow_ce(image[i], list(text), i, scale) for i in range(n)) / n
    t2i = sum(slow_ce(text[i], list(image), i, scale) for i in range(n)) / n
    return 0.5 * (i2t + t2i)


def slow_negclip(
    image: torch.Tensor, text: torch.Tensor, negatives: torch.Tensor, scale: float
) -> float:
    n = image.shape[0]
    i2t = sum(slow_ce(image[i], [*text, *negatives], i, scale) for i in range(n)) / n
    t2i = sum(slow_ce(text[i], list(image), i, scale) for i in range(n)) / n
    return 0.5 * (i2t + t2i)


def slow_cultureclip(f: dict[str, torch.Tensor], cap: float, con: float, scale: float) -> float:
    l_cap = slow_negclip(f["pos_image"], f["pos_caption"], f["neg_caption"], scale) + slow_negclip(
        f["neg_image"], f["neg_caption"], f["pos_caption"], scale
    )
    l_con = slow_negclip(f["pos_image"], f["pos_concept"], f["neg_concept"], scale) + slow_negclip(
        f["neg_image"], f["neg_concept"], f["pos_concept"], scale
    )
    return cap * l_cap + con * l_con


def test_clip_on_pairs_matches_formula() -> None:
    image, text = _unit(B, 1), _unit(B, 2)
    got = create_loss("clip").compute({"image": image, "text": text}, SCALE).loss
    assert float(got) == pytest.approx(slow_clip(image, text, 7.5), rel=1e-10)


def test_clip_on_twins_uses_all_2b_images_and_captions(twin) -> None:
    got = create_loss("clip").compute(twin, SCALE).loss
    image = torch.cat([twin["pos_image"], twin["neg_image"]])
    text = torch.cat([twin["pos_caption"], twin["neg_caption"]])
    assert float(got) == pytest.approx(slow_clip(image, text, 7.5), rel=1e-10)


def test_negclip_forward_matches_formula() -> None:
    image, text, negatives = _unit(B, 1), _unit(B, 2), _unit(B, 3)
    got = create_loss("negclip")(image, text, negatives, SCALE)
    assert float(got) == pytest.approx(slow_negclip(image, text, negatives, 7.5), rel=1e-10)


def test_negclip_on_twins_is_both_caption_terms(twin) -> None:
    got = create_loss("negclip").compute(twin, SCALE).loss
    assert float(got) == pytest.approx(slow_cultureclip(twin, 1.0, 0.0, 7.5), rel=1e-10)


@pytest.mark.parametrize(
    ("name", "kwargs", "cap", "con"),
    [
        ("cultureclip", {}, 0.7, 0.3),
        ("cultureclip", {"caption_weight": 0.5, "concept_weight": 2.0}, 0.5, 2.0),
        ("cultureclip_caption_only", {}, 0.7, 0.0),
        ("cultureclip_concept_only", {}, 0.0, 0.3),
    ],
)
def test_cultureclip_matches_formula(twin, name, kwargs, cap, con) -> None:
    loss = create_loss(name, **kwargs)
    out = loss.compute(twin, SCALE)
    assert float(out.loss) == pytest.approx(slow_cultureclip(twin, cap, con, 7.5), rel=1e-10)
    assert set(out.parts) == {p for p, w in (("caption", cap), ("concept", con)) if w > 0}


def test_cultureclip_forward_signature_matches_compute(twin) -> None:
    loss = create_loss("cultureclip")
    direct = loss(*(twin[n] for n in TWIN_FEATURES), scale=SCALE)
    assert float(direct) == pytest.approx(float(loss.compute(twin, SCALE).loss))


def test_twin_hard_negatives_raise_the_loss_of_a_confusable_batch() -> None:
    """If the twin caption sits close to the image, negclip must punish it; clip barely sees it."""
    image = _unit(B, 1)
    text = F.normalize(image + 0.3 * _unit(B, 2), dim=-1)
    twin_text = F.normalize(image + 0.35 * _unit(B, 3), dim=-1)
    far = _unit(B, 4)
    confusable = create_loss("negclip")(image, text, twin_text, SCALE)
    harmless = create_loss("negclip")(image, text, far, SCALE)
    assert confusable > 2 * harmless


@pytest.mark.parametrize("name", LOSSES.names())
def test_every_registered_loss_trains_on_twins(name, twin) -> None:
    loss = create_loss(name)
    features = {n: t.float().clone().requires_grad_(True) for n, t in twin.items()}
    needed = loss.required_features("twin")
    assert set(needed) <= set(TWIN_FEATURES)
    scale = torch.tensor(10.0, requires_grad=True)
    out = loss.compute({n: features[n] for n in needed}, scale)
    assert out.loss.ndim == 0 and torch.isfinite(out.loss)
    out.loss.backward()
    assert scale.grad is not None
    for n in needed:
        assert features[n].grad is not None and features[n].grad.abs().sum() > 0


@pytest.mark.parametrize("name", LOSSES.names())
def test_pairs_support_is_explicit(name) -> None:
    loss = create_loss(name)
    if name == "clip":
        assert loss.required_features("pairs") == PAIR_FEATURES
    else:
        with pytest.raises(LossError, match="loss=clip"):
            loss.required_features("pairs")


def test_bad_loss_arguments_are_explained() -> None:
    with pytest.raises(LossError, match="both 0"):
        create_loss("cultureclip", caption_weight=0.0, concept_weight=0.0)
    with pytest.raises(LossError, match="does not accept"):
        create_loss("clip", temperature=0.1)
    with pytest.raises(KeyError, match="registered"):
        create_loss("infonce")
    with pytest.raises(LossError, match="differ"):
        create_loss("clip")(_unit(3, 0), _unit(4, 1), SCALE)


# ---- local loss: each process's rows against the gathered batch ------------------------
GLOBAL_ROWS = 8


def _batch(kind: str, seed: int = 10) -> dict[str, torch.Tensor]:
    names = TWIN_FEATURES if kind == "twin" else PAIR_FEATURES
    return {name: _unit(GLOBAL_ROWS, seed + i).requires_grad_(True) for i, name in enumerate(names)}


def _simulated_ranks_loss(loss, whole, scale, world: int) -> torch.Tensor:
    """mean_r L_r, rank r's rows sliced out of the whole batch (a gather with gradients)."""
    rows = GLOBAL_ROWS // world
    shares = []
    for rank in range(world):
        local = {n: t[rank * rows : (rank + 1) * rows] for n, t in whole.items()}
        shares.append(loss.compute(local, scale, gathered=whole, offset=rank * rows).loss)
    return torch.stack(shares).mean()


LOCAL_CASES = [
    ("clip", {}, "pairs"),
    ("clip", {}, "twin"),
    ("negclip", {}, "twin"),
    ("cultureclip", {}, "twin"),
    ("cultureclip", {"caption_weight": 0.5, "concept_weight": 2.0}, "twin"),
    ("cultureclip_concept_only", {}, "twin"),
]


@pytest.mark.parametrize("world", [1, 2, 4, 8])
@pytest.mark.parametrize(("name", "kwargs", "kind"), LOCAL_CASES)
def test_mean_of_local_losses_is_the_global_loss_with_its_gradients(
    name, kwargs, kind, world
) -> None:
    loss = create_loss(name, **kwargs)
    assert loss.supports_local
    features = _batch(kind)
    needed = {n: features[n] for n in loss.required_features(kind)}
    scale = torch.tensor(7.5, dtype=torch.float64, requires_grad=True)

    global_out = loss.compute(needed, scale)
    expected_grads = torch.autograd.grad(global_out.loss, [scale, *needed.values()])
    local = _simulated_ranks_loss(loss, needed, scale, world)
    got_grads = torch.autograd.grad(local, [scale, *needed.values()])

    assert float(local.detach()) == pytest.approx(float(global_out.loss.detach()), rel=1e-12)
    for got, expected in zip(got_grads, expected_grads, strict=True):
        assert expected.abs().sum() > 0
        torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)


def test_local_loss_of_one_rank_is_not_the_global_loss() -> None:
    """The share of one process covers its rows only (the test above can fail)."""
    loss = create_loss("cultureclip")
    whole = _batch("twin")
    local = {n: t[:4] for n, t in whole.items()}
    share = loss.compute(local, SCALE, gathered=whole, offset=0).loss.detach()
    whole_loss = loss.compute(whole, SCALE).loss.detach()
    assert float(share) != pytest.approx(float(whole_loss), rel=1e-6)
    # and it sees the whole batch: not the loss of its rows alone
    alone = loss.compute(local, SCALE).loss.detach()
    assert float(share) != pytest.approx(float(alone), rel=1e-6)


def test_offset_without_gathered_features_is_refused() -> None:
    with pytest.raises(LossError, match="offset"):
        create_loss("clip").compute(_batch("pairs"), SCALE, offset=4)


def test_local_loss_computes_b_local_by_b_global_logits(monkeypatch) -> None:
    """Each process's logits are 1/N of the whole batch's: 12·(N/W)·N for CultureCLIP."""
    from cultureclip.train import losses

    entries: list[int] = []
    real_ce = losses._ce

    def counting_ce(queries, candidates, targets, scale):
        entries.append(queries.shape[0] * candidates.shape[0])
        return real_ce(queries, candidates, targets, scale)

    monkeypatch.setattr(losses, "_ce", counting_ce)
    loss = create_loss("cultureclip")
    whole = _batch("twin")
    loss.compute(whole, SCALE)
    global_entries = sum(entries)
    assert global_entries == 12 * GLOBAL_ROWS**2
    for world in (2, 4):
        entries.clear()
        rows = GLOBAL_ROWS // world
        local = {n: t[:rows] for n, t in whole.items()}
        loss.compute(local, SCALE, gathered=whole, offset=0)
        assert sum(entries) * world == global_entries
