"""Frozen-tower outputs computed once: never stale, shared by models of one base, kept on disk."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from cultureclip.core.identity import ModuleFingerprint
from cultureclip.models import TrainMode, create_model, feature_cache
from cultureclip.models.feature_cache import (
    DiskFeatureCache,
    FeatureStore,
    StoreView,
    encode_image_sources,
    encode_text_sources,
    file_identity,
    image_identity,
    shared_store,
)
from cultureclip.testing import ImageTowerRowCounter

LITE = "lite:en?image_size=64&dim=32"


pytestmark = pytest.mark.usefixtures("empty_feature_store")


@pytest.fixture(scope="module")
def lite():
    return create_model(LITE)


def _write_images(folder: Path, count: int = 3) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(count):
        path = folder / f"img{index}.png"
        Image.new("RGB", (40 + index, 30), (60 * index, 255 - 50 * index, 90)).save(path)
        paths.append(path)
    return paths


def test_store_is_a_bounded_lru_per_namespace() -> None:
    store = FeatureStore(max_bytes=10 * 4 * 4)  # room for ten rows of four floats
    rows = torch.arange(48, dtype=torch.float32).view(12, 4)
    store.put("a", [str(i) for i in range(6)], rows[:6], limit=4)
    assert store.count("a") == 4 and store.get("a", ["0", "1"]) == [None, None]
    store.put("b", [str(i) for i in range(8)], rows[:8])
    assert len(store) == 10 and store.nbytes == 10 * 16  # the oldest rows left first
    computed = store.lookup("c", ["x", "y", "x"], lambda idx: rows[idx])
    assert store.computed == 2  # "x" twice is computed once
    torch.testing.assert_close(computed, rows[[0, 1, 0]])
    view = StoreView(3, lambda: None, store)
    assert len(view) == 0  # no namespace (a training tower): nothing is cached
    torch.testing.assert_close(view(["q"], lambda idx: rows[idx]), rows[:1])
    assert store.computed == 2


def test_a_changed_tower_is_never_served_stale_outputs(tmp_path: Path) -> None:
    model = create_model(LITE + "&cache=100")
    paths = _write_images(tmp_path / "images")
    space = model.tower_namespace("image")
    before = encode_image_sources(model, paths, space=space)
    counter = ImageTowerRowCounter(model)
    with torch.no_grad():  # an in-place change bumps the version counter → a new fingerprint
        model.image_tower.conv_head.weight.mul_(0.5)
    changed = model.tower_namespace("image")
    assert changed != space
    after = encode_image_sources(model, paths, space=changed)
    assert counter.rows == len(paths) and not torch.allclose(before, after)
    # The pixel-keyed path (eval, indexing) follows the same fingerprint.
    pixels = model.preprocess([Image.open(p) for p in paths])
    with torch.no_grad():
        first = model.encode_image(pixels)
        model.image_tower.conv_head.weight.mul_(2.0)  # back to the packaged weights' values
        second = model.encode_image(pixels)
    assert not torch.allclose(first, second)
    # Writes through .data are invisible to version counters; configure_training and
    # load_saved_weights (and LoRA merges) reset the fingerprint themselves.
    space = model.tower_namespace("image")
    model.image_tower.conv_head.weight.data.mul_(0.5)
    model.configure_training(image=TrainMode.heads, text=TrainMode.heads)
    assert model.tower_namespace("image") != space
    # A tower that trains has no namespace at all.
    model.configure_training(image=TrainMode.full, text=TrainMode.heads)
    model.train()
    assert model.tower_namespace("image") is None
    assert model.tower_namespace("text") is not None


def test_changed_preprocessing_is_another_namespace(lite) -> None:
    other_size = create_model("lite:en?image_size=96&dim=32")
    assert lite.tower_namespace("image") != other_size.tower_namespace("image")
    assert lite.tower_namespace("text") == other_size.tower_namespace("text")
    shorter = create_model(LITE, context_length=8)
    assert lite.tower_namespace("text") != shorter.tower_namespace("text")
    # Different heads (another seed) on the same towers share every namespace.
    other_heads = create_model(LITE + "&seed=3")
    assert lite.tower_namespace("image") == other_heads.tower_namespace("image")
    assert lite.tower_namespace("text") == other_heads.tower_namespace("text")


def test_a_rewritten_image_file_is_encoded_again(lite, tmp_path: Path) -> None:
    (path,) = _write_images(tmp_path / "images", 1)
    space = lite.tower_namespace("image")
    key = file_identity(path)
    first = encode_image_sources(lite, [path], space=space)
    Image.new("RGB", (50, 50), (250, 10, 10)).save(path)
    os.utime(path, ns=(1, 1))  # even an old mtime: size, mtime and inode are all in the key
    assert file_identity(path) != key
    store = shared_store()
    computed = store.computed
    second = encode_image_sources(lite, [path], space=space)
    assert store.computed == computed + 1
    with torch.no_grad():
        fresh = lite.image_tower_features(lite.preprocess([Image.open(path)]))
    torch.testing.assert_close(second, fresh, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(first, second)
    # In-memory images are keyed by their content.
    red = Image.new("RGB", (8, 8), (255, 0, 0))
    assert image_identity(red) == image_identity(red.copy())
    assert image_identity(red) != image_identity(Image.new("RGB", (8, 8), (254, 0, 0)))


def test_three_models_of_one_base_encode_each_image_once(tmp_path: Path) -> None:
    """What eval and indexing of a base and two fine-tunes cost: one tower pass per image."""
    models = [create_model(f"{LITE}&cache=1000&seed={seed}") for seed in range(3)]
    counters = [ImageTowerRowCounter(m) for m in models]
    images = [Image.open(p).convert("RGB") for p in _write_images(tmp_path / "images", 5)]
    embeddings = [m.embed_images(images, batch_size=2) for m in models]
    assert sum(c.rows for c in counters) == len(images)
    assert not torch.allclose(embeddings[0], embeddings[1])  # each through its own head
    plain = create_model(LITE + "&seed=1")  # no cache: the reference
    torch.testing.assert_close(embeddings[1], plain.embed_images(images), rtol=1e-5, atol=1e-5)
    # The identity-keyed path (training data) shares the same way.
    paths = _write_images(tmp_path / "more", 4)
    for model in models:
        encode_image_sources(model, paths, space=model.tower_namespace("image"))
    assert sum(c.rows for c in counters) == len(images) + len(paths)


_ENCODE_IN_A_SUBPROCESS = """
import sys
from pathlib import Path
from cultureclip.models import create_model
from cultureclip.models.feature_cache import DiskFeatureCache
from cultureclip.models.feature_cache import encode_image_sources, encode_text_sources
model = create_model(sys.argv[1])
disk = DiskFeatureCache(sys.argv[2])
paths = [Path(p) for p in sys.argv[3:]]
encode_image_sources(model, paths, space=model.tower_namespace("image"), disk=disk)
encode_text_sources(model, ["kimono", "sari"], space=model.tower_namespace("text"), disk=disk)
"""


def test_disk_cache_is_reused_by_another_process_and_a_corrupt_shard_is_ignored(
    lite, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    paths = _write_images(tmp_path / "images", 3)
    cache_dir = tmp_path / "features"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src")}
    subprocess.run(
        [sys.executable, "-c", _ENCODE_IN_A_SUBPROCESS, LITE, str(cache_dir), *map(str, paths)],
        check=True,
        env=env,
        timeout=300,
    )
    shards = sorted(cache_dir.rglob("*.safetensors"))
    assert len(shards) == 2  # one image shard, one text shard
    counter = ImageTowerRowCounter(lite)
    image_space, text_space = lite.tower_namespace("image"), lite.tower_namespace("text")
    from_disk = encode_image_sources(
        lite, paths, space=image_space, disk=DiskFeatureCache(cache_dir)
    )
    assert counter.rows == 0  # every row came from the other process's shards
    with torch.no_grad():
        fresh = lite.image_tower_features(lite.preprocess([Image.open(p) for p in paths]))
    torch.testing.assert_close(from_disk, fresh, rtol=1e-4, atol=1e-4)
    texts = encode_text_sources(
        lite, ["sari", "kimono"], space=text_space, disk=DiskFeatureCache(cache_dir)
    )
    torch.testing.assert_close(texts, lite.text_tower_features(["sari", "kimono"]))

    image_shard = next(s for s in shards if s.parent.name == image_space)
    image_shard.write_bytes(image_shard.read_bytes()[:40] + b"\x00garbage")
    shared_store().clear()
    counter.rows = 0
    with caplog.at_level("WARNING"):
        again = encode_image_sources(
            lite, paths, space=image_space, disk=DiskFeatureCache(cache_dir)
        )
    assert "ignoring feature cache shard" in caplog.text
    assert counter.rows == len(paths)  # recomputed, not read from the broken shard
    torch.testing.assert_close(again, fresh, rtol=1e-4, atol=1e-4)


def test_fingerprint_rehashes_only_when_a_tensor_changes() -> None:
    module = torch.nn.Linear(4, 2)
    fingerprint = ModuleFingerprint(module, "linear")
    first = fingerprint()
    assert fingerprint() == first
    with torch.no_grad():
        module.bias.add_(1.0)
    assert fingerprint() != first
    assert ModuleFingerprint(module, "other preprocessing")() != fingerprint()


def test_texts_over_several_batches_are_batched_by_length_and_put_back_in_order(lite) -> None:
    texts = ["a very long caption about a castle on a hill in spring", "sari", "a kimono", "obi"]
    one_batch = lite.embed_texts(texts)
    by_length = lite.embed_texts(texts, batch_size=2)  # ("obi", "sari"), then the two longest
    torch.testing.assert_close(by_length, one_batch, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(by_length[1], lite.embed_texts(["sari"])[0], rtol=1e-5, atol=1e-5)


def test_checkpoints_differing_in_heads_or_text_tower_share_image_features_across_runs(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 23: (tower weights, image content, preprocessing, precision) keys a fixed
    tower's outputs in the user's cache, so a later run of another checkpoint encodes nothing."""
    monkeypatch.setenv("CULTURECLIP_CACHE", str(tmp_path / "cache"))
    images = [Image.open(p).convert("RGB") for p in _write_images(tmp_path / "images", 4)]
    base = create_model(LITE)
    heads = create_model(LITE + "&seed=3")  # other heads, same towers
    retuned = create_model(LITE + "&seed=5")  # other text tower, same image tower
    with torch.no_grad():
        next(retuned.text_tower.parameters()).add_(0.5)
    counters = [ImageTowerRowCounter(m) for m in (base, heads, retuned)]
    first = base.embed_images(images, batch_size=3)
    shared_store().clear()  # a new process: only the disk store is left
    assert base.tower_namespace("text") != retuned.tower_namespace("text")
    others = [m.embed_images(images, batch_size=3) for m in (heads, retuned)]
    assert [c.rows for c in counters] == [len(images), 0, 0]
    torch.testing.assert_close(
        others[0], create_model(LITE + "&seed=3").embed_images(images), rtol=1e-5, atol=1e-5
    )
    assert not torch.allclose(first, others[0])
    # another precision is another namespace: nothing stored is read
    counters[0].rows = 0
    with torch.autocast("cpu", dtype=torch.bfloat16):
        base.embed_images(images)
    assert counters[0].rows == len(images)
    # a torn shard: one warning line, recomputed
    shard = next((tmp_path / "cache" / "features").rglob("*.safetensors"))
    shard.write_bytes(shard.read_bytes()[:30])
    shared_store().clear()
    feature_cache._USER_CACHE.clear()
    with caplog.at_level("WARNING"):
        again = base.embed_images(images, batch_size=3)
    assert "ignoring feature cache shard" in caplog.text
    torch.testing.assert_close(again, first, rtol=1e-5, atol=1e-5)


def test_a_full_disk_cache_stops_growing_and_still_serves(tmp_path: Path) -> None:
    rows = torch.randn(3, 8)
    roomy = DiskFeatureCache(tmp_path / "roomy", max_bytes=1 << 20)
    roomy.put("space", ["a", "b", "c"], rows)
    tight = DiskFeatureCache(tmp_path / "roomy", max_bytes=1)  # already over its cap
    tight.put("space", ["d"], rows[:1])
    assert len(list((tmp_path / "roomy").rglob("*.safetensors"))) == 1
    torch.testing.assert_close(tight.get("space", ["b"])[0], rows[1])
