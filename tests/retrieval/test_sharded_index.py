"""Sharded index building (accelerate/torchrun ranks, Ray tasks) and IVF-PQ."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cultureclip.retrieval import (
    FaissSettings,
    IndexConfig,
    RetrievalIndex,
    build_faiss,
    build_index,
)
from cultureclip.retrieval.index import RetrievalIndexError


def _config(tiny_clip_dir: Path, culti_dir: Path, out: Path, **kw) -> IndexConfig:
    return IndexConfig(
        model=f"hf:{tiny_clip_dir}",
        data=str(culti_dir),
        split="test",
        out=str(out),
        chunk_size=3,
        **kw,
    )


def test_two_shards_give_the_unsharded_index(
    tmp_path: Path, culti_dir: Path, tiny_clip_dir: Path, session_model, monkeypatch
) -> None:
    plain = tmp_path / "plain"
    build_index(_config(tiny_clip_dir, culti_dir, plain), model=session_model, progress=False)
    sharded = tmp_path / "sharded"
    # Rank 1 (as accelerate/torchrun set it in the environment) encodes its chunks only.
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    first = build_index(
        _config(tiny_clip_dir, culti_dir, sharded), model=session_model, progress=False
    )
    assert not first.finalized and not (sharded / "index.json").exists()
    assert sorted(p.name for p in (sharded / "chunks").glob("images-*.npz")) == [
        "images-00001.npz",
        "images-00003.npz",
    ]
    monkeypatch.delenv("RANK")
    monkeypatch.delenv("WORLD_SIZE")
    last = build_index(
        _config(tiny_clip_dir, culti_dir, sharded, shard="0/2", shard_wait_s=5),
        model=session_model,
        progress=False,
    )
    assert last.finalized and last.n_images == 12
    for name in ("image_vectors.npy", "text_vectors.npy", "image_offsets.npy"):
        np.testing.assert_array_equal(np.load(plain / name), np.load(sharded / name))
    assert (plain / "images.bin").read_bytes() == (sharded / "images.bin").read_bytes()
    assert RetrievalIndex(sharded, model=session_model).search_text("round", k=3)

    # Rank 0 alone waits for the missing shard, then names it.
    lonely = tmp_path / "lonely"
    with pytest.raises(RetrievalIndexError, match="did not appear"):
        build_index(
            _config(tiny_clip_dir, culti_dir, lonely, shard="0/2", shard_wait_s=1),
            model=session_model,
            progress=False,
        )


def test_ivfpq_compresses_and_keeps_recall() -> None:
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((50, 32)).astype(np.float32)
    vectors = centres[rng.integers(0, 50, 4000)] + 0.1 * rng.standard_normal((4000, 32)).astype(
        np.float32
    )
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    exact = build_faiss(vectors).search(vectors[:100], 10)[1]
    index = build_faiss(vectors, FaissSettings(kind="ivfpq", nprobe=16, pq_m=16))
    found = index.search(vectors[:100], 10)[1]
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(exact, found, strict=True)])
    assert recall > 0.45  # lossy codes on tight clusters; chance is 10/4000
    assert index.code_size == 16  # 16 bytes per vector instead of 128
    with pytest.raises(RetrievalIndexError, match="needs at least 256"):
        build_faiss(vectors[:200], FaissSettings(kind="ivfpq", nlist=2, pq_m=8))


@pytest.mark.slow
def test_ray_shards_build_the_same_index(
    tmp_path: Path, culti_dir: Path, tiny_clip_dir: Path, session_model
) -> None:
    ray = pytest.importorskip("ray")
    from cultureclip.retrieval.distributed import build_index_ray

    plain = tmp_path / "plain"
    build_index(_config(tiny_clip_dir, culti_dir, plain), model=session_model, progress=False)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        summary = build_index_ray(_config(tiny_clip_dir, culti_dir, tmp_path / "ray"), shards=2)
    finally:
        ray.shutdown()
    assert summary.finalized and summary.n_images == 12
    np.testing.assert_allclose(
        np.load(plain / "image_vectors.npy"),
        np.load(tmp_path / "ray" / "image_vectors.npy"),
        atol=1e-6,
    )
