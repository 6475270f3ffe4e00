"""Gradient caching gives the full-batch gradient with chunk-sized graphs."""

from __future__ import annotations

import pytest
import torch

from cultureclip.testing import perturb_lora_b
from cultureclip.train.data import encoder_inputs
from cultureclip.train.gradcache import contrastive_backward, encode_features
from cultureclip.train.losses import create_loss


def _grads(model) -> dict[str, torch.Tensor]:
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    return grads


def _configure(model, dropout: float) -> None:
    model.configure_training(
        image="lora", text="lora", logit_scale=True, lora={"r": 4, "alpha": 8, "dropout": dropout}
    )
    perturb_lora_b(model, seed=1)
    model.train()


@pytest.mark.parametrize("loss_name", ["cultureclip", "clip"])
@pytest.mark.parametrize("chunk", [3, 1])
def test_cached_gradients_equal_full_batch_gradients(
    tiny_model, twin_batch, loss_name, chunk
) -> None:
    _configure(tiny_model, dropout=0.0)
    loss = create_loss(loss_name)
    inputs = encoder_inputs(twin_batch).select(loss.required_features("twin"))

    full = contrastive_backward(tiny_model, loss, inputs)
    expected = _grads(tiny_model)
    cached = contrastive_backward(tiny_model, loss, inputs, chunk_size=chunk)
    got = _grads(tiny_model)

    assert float(cached.loss) == pytest.approx(float(full.loss), rel=1e-5)
    assert set(got) == set(expected)
    assert any("lora_A" in n for n in got) and any("logit_scale" in n for n in got)
    for name, grad in expected.items():
        assert grad.abs().sum() > 0, name
        torch.testing.assert_close(got[name], grad, rtol=1e-4, atol=1e-6, msg=name)


def test_dropout_masks_are_replayed_in_the_second_pass(tiny_model, twin_batch) -> None:
    """With dropout, the cached gradient equals the gradient of the same chunked forward pass."""
    _configure(tiny_model, dropout=0.5)
    loss = create_loss("cultureclip")
    inputs = encoder_inputs(twin_batch).select(loss.required_features("twin"))

    torch.manual_seed(123)
    chunks = [encode_features(tiny_model, inputs.slice(s, s + 3)) for s in range(0, inputs.rows, 3)]
    features = {n: torch.cat([c[n] for c in chunks]) for n in chunks[0]}
    loss.compute(features, tiny_model.logit_scale).loss.backward()
    expected = _grads(tiny_model)

    torch.manual_seed(123)
    contrastive_backward(tiny_model, loss, inputs, chunk_size=3)
    got = _grads(tiny_model)
    for name, grad in expected.items():
        torch.testing.assert_close(got[name], grad, rtol=1e-4, atol=1e-6, msg=name)


def test_loss_multiplier_scales_gradients(tiny_model, twin_batch) -> None:
    _configure(tiny_model, dropout=0.0)
    loss = create_loss("negclip")
    inputs = encoder_inputs(twin_batch).select(loss.required_features("twin"))
    contrastive_backward(tiny_model, loss, inputs, chunk_size=4)
    once = _grads(tiny_model)
    contrastive_backward(tiny_model, loss, inputs, chunk_size=4, loss_multiplier=0.25)
    quarter = _grads(tiny_model)
    for name, grad in once.items():
        torch.testing.assert_close(quarter[name], 0.25 * grad, rtol=1e-4, atol=1e-7)


def test_a_frozen_tower_is_skipped_in_the_second_pass(tiny_model, twin_batch) -> None:
    tiny_model.configure_training(image="frozen", text="lora", lora={"r": 4, "dropout": 0.0})
    perturb_lora_b(tiny_model, seed=1)
    tiny_model.train()
    loss = create_loss("clip")
    inputs = encoder_inputs(twin_batch).select(loss.required_features("twin"))
    contrastive_backward(tiny_model, loss, inputs)
    expected = _grads(tiny_model)
    contrastive_backward(tiny_model, loss, inputs, chunk_size=3)
    got = _grads(tiny_model)
    assert set(got) == set(expected) and all("text" in n for n in got)
    for name, grad in expected.items():
        torch.testing.assert_close(got[name], grad, rtol=1e-4, atol=1e-6, msg=name)
