"""Fixtures of the training tests: small twin batches and a quiet, fast torch."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    # The test machine is shared; one thread also makes float sums reproducible.
    torch.set_num_threads(1)


@pytest.fixture
def twin_batch(tiny_model, toy_cultwin: Path):
    """All 8 toy twin pairs as one collated batch for ``tiny_model``."""
    from cultureclip.data.cultwin import read_cultwin
    from cultureclip.data.twin_dataset import TwinCollator, TwinDataset

    dataset = TwinDataset(read_cultwin(toy_cultwin), tiny_model.preprocess, seed=0)
    return TwinCollator(tiny_model.tokenize)([dataset[i] for i in range(len(dataset))])


@pytest.fixture
def make_config(tiny_clip_dir: Path, toy_cultwin: Path, tmp_path: Path):
    """``make_config(**overrides)``: a fast, quiet TrainConfig on the tiny CLIP and toy twins."""
    return lambda **overrides: train_config(
        tiny_clip_dir, toy_cultwin, tmp_path / "run", **overrides
    )


def train_config(model_dir: Path, data_path: Path, run_dir: Path, **overrides):
    from cultureclip.train import TrainConfig

    values = dict(
        model=f"hf:{model_dir}",
        data={"path": str(data_path)},
        batch_size=4,
        epochs=2,
        out=str(run_dir),
        log_every=1,
        progress=False,
        optim={"lr": 1e-3},
        schedule={"warmup_steps": 1},
    )
    values.update(overrides)
    return TrainConfig.model_validate(values)
