"""Training data loading: frozen-tower features in place of decoding, and loader workers."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from cultureclip.core.io import read_jsonl
from cultureclip.models.base import TOWER_FEATURES
from cultureclip.models.feature_cache import MIN_EXAMPLES_FOR_WORKERS, auto_workers, shared_store
from cultureclip.train import TrainConfig, train
from cultureclip.train.config import DataSettings
from cultureclip.train.data import (
    FrozenFeatureDataset,
    build_dataset,
    frozen_feature_data,
    loader_workers,
)

LITE = "lite:en?image_size=64&dim=32"


pytestmark = pytest.mark.usefixtures("empty_feature_store")


def _heads_config(data: Path, out: Path, **overrides) -> TrainConfig:
    values = dict(
        model=LITE,
        data={"path": str(data)},
        loss="cultureclip",
        training={"image": "heads", "text": "heads"},
        batch_size=4,
        epochs=3,
        log_every=1,
        optim={"lr": 1e-3},
        schedule={"kind": "constant", "warmup_steps": 0},
        out=str(out),
        progress=False,
    )
    values.update(overrides)
    return TrainConfig.model_validate(values)


def test_heads_training_on_stored_features_follows_the_same_losses(tmp_path: Path) -> None:
    from cultureclip.testing import write_toy_cultwin

    data = write_toy_cultwin(tmp_path / "toy", n_pairs=8)
    runs = {}
    for frozen in (False, True):
        shared_store().clear()
        config = _heads_config(data, tmp_path / f"frozen-{frozen}")
        config.data.frozen_features = frozen
        result = train(config)
        runs[frozen] = [r["loss"] for r in read_jsonl(result.metrics_path)]
    assert len(runs[True]) == len(runs[False]) == 6
    largest = max(abs(a - b) for a, b in zip(runs[True], runs[False], strict=True))
    print(f"largest loss difference, stored features vs encoding every step: {largest:.2e}")
    assert largest < 1e-4


def test_frozen_feature_data_serves_rows_and_keeps_trained_towers_on_pixels(
    tmp_path: Path,
) -> None:
    from cultureclip.models import create_model
    from cultureclip.testing import write_toy_cultwin

    data = write_toy_cultwin(tmp_path / "toy", n_pairs=4)
    model = create_model(LITE)
    model.configure_training(image="heads", text="full")
    config = DataSettings(path=str(data))
    kind, dataset, _ = build_dataset(
        config, transform=model.preprocess, tokenize=model.tokenize, seed=0
    )
    dataset_and_collate = frozen_feature_data(model, kind, dataset, config)
    assert dataset_and_collate is not None
    features, collate = dataset_and_collate
    batch = collate([features[i] for i in range(len(features))])
    assert batch.pos_images.shape == (4, 1280)  # image tower outputs, not pixels
    assert "input_ids" in batch.pos_captions  # the training text tower still gets tokens
    assert loader_workers(None, features) == 0  # nothing to decode per step
    with torch.no_grad():
        direct = model.image_tower_features(
            model.preprocess([_open(dataset.sources(0)["pos_image"])])
        )
    torch.testing.assert_close(batch.pos_images[:1], direct, rtol=1e-4, atol=1e-4)

    model.configure_training(image="full", text="heads")
    model.train()
    features, collate = frozen_feature_data(model, kind, dataset, config)
    batch = collate([features[i] for i in range(2)])
    assert batch.pos_images.ndim == 4 and set(batch.pos_captions) == {TOWER_FEATURES}
    assert isinstance(features, FrozenFeatureDataset) and features.decodes_images

    model.configure_training(image="full", text="full")
    assert frozen_feature_data(model, kind, dataset, config) is None
    model.configure_training(image="heads", text="heads")
    off = DataSettings(path=str(data), frozen_features=False)
    assert frozen_feature_data(model, kind, dataset, off) is None


def _open(path):
    from PIL import Image

    with Image.open(path) as image:
        return image.convert("RGB")


def test_loader_workers_default_to_the_cpus_on_enough_data(monkeypatch) -> None:
    from cultureclip.core import threads

    monkeypatch.setattr(threads, "available_cpus", lambda: 8)
    assert auto_workers(MIN_EXAMPLES_FOR_WORKERS) == 4
    assert auto_workers(MIN_EXAMPLES_FOR_WORKERS - 1) == 0  # tiny data: no processes
    monkeypatch.setattr(threads, "available_cpus", lambda: 2)
    assert auto_workers(10_000) == 1
    big = list(range(10_000))
    assert loader_workers(None, big) == 1  # type: ignore[arg-type]
    assert loader_workers(3, big) == 3  # type: ignore[arg-type]  # a setting wins
    assert loader_workers(0, big) == 0  # type: ignore[arg-type]  # 0 too: no processes


def test_the_former_data_workers_names_num_workers() -> None:
    from cultureclip.core.config import ConfigError, load_config

    with pytest.raises(ConfigError, match=r"data: workers was renamed: use num_workers"):
        load_config(TrainConfig, None, ["data.workers=2"], data={"path": "x"})


def test_data_loading_settings_do_not_change_the_run_identity(tmp_path: Path) -> None:
    config = _heads_config(tmp_path / "data", tmp_path / "out")
    changed = config.model_copy(
        update={
            "num_workers": 2,
            "data": config.data.model_copy(
                update={"frozen_features": False, "feature_cache_dir": "c"}
            ),
        }
    )
    assert changed.run_identity() == config.run_identity()  # a resume may change them
    other = config.model_copy(update={"data": config.data.model_copy(update={"split": "x"})})
    assert other.run_identity() != config.run_identity()


def test_feature_cache_dir_is_reused_by_the_next_run(tmp_path: Path) -> None:
    from cultureclip.testing import write_toy_cultwin

    data = write_toy_cultwin(tmp_path / "toy", n_pairs=4)
    cache = tmp_path / "features"
    config = _heads_config(data, tmp_path / "a", epochs=1)
    config.data.feature_cache_dir = str(cache)
    first = train(config)
    shards = sorted(cache.rglob("*.safetensors"))
    assert len(shards) == 2  # images and texts
    shared_store().clear()
    store = shared_store()
    computed = store.computed
    config = _heads_config(data, tmp_path / "b", epochs=1)
    config.data.feature_cache_dir = str(cache)
    second = train(config)
    assert store.computed == computed  # every tower output came from the first run's shards
    assert first.final_loss == pytest.approx(second.final_loss, abs=1e-6)


class _EpochEcho(torch.utils.data.Dataset):
    """Item ``i`` of epoch ``e`` is ``100 * e + i``: what a caption draw seeded by epoch does."""

    def __init__(self) -> None:
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return 4

    def __getitem__(self, index: int) -> int:
        return 100 * self.epoch + index


def test_persistent_workers_see_every_epoch() -> None:
    from cultureclip.train.data import EpochItems, ResumableSampler

    sampler = ResumableSampler(4, rank=0, world_size=1, seed=0, shuffle=False)
    loader = torch.utils.data.DataLoader(
        EpochItems(_EpochEcho()),
        batch_size=2,
        sampler=sampler,
        num_workers=1,
        persistent_workers=True,
    )
    seen = []
    for epoch in range(3):
        sampler.set_epoch(epoch, start=2 if epoch == 1 else 0)
        seen.append(sorted(int(x) for batch in loader for x in batch))
    # The one worker process kept its dataset copy across epochs, yet drew each epoch's items.
    assert seen == [[0, 1, 2, 3], [102, 103], [200, 201, 202, 203]]
