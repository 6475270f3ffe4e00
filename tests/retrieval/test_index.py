"""Index building (chunks, resume, corrupt images), FAISS kinds and querying."""

from __future__ import annotations

import base64
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from cultureclip.data.collections import load_collection, write_chinese_clip
from cultureclip.data.pairs import PairCollection
from cultureclip.retrieval import (
    FaissSettings,
    IndexConfig,
    LaclipSettings,
    RetrievalIndex,
    RetrievalIndexError,
    build_faiss,
    build_index,
)
from cultureclip.retrieval.laclip import LaclipEncoder


def _config(tiny_clip_dir: Path, data: Path, out: Path, **kw) -> IndexConfig:
    return IndexConfig(
        model=f"hf:{tiny_clip_dir}", data=str(data), split="test", out=str(out), **kw
    )


def test_global_index_search_scores_are_inner_products(
    tmp_path, culti_dir, tiny_clip_dir, session_model
) -> None:
    out = tmp_path / "idx"
    summary = build_index(
        _config(tiny_clip_dir, culti_dir, out, chunk_size=5), model=session_model, progress=False
    )
    assert (summary.n_images, summary.n_texts, summary.failed) == (12, 25, [])
    assert yaml.safe_load((out / "config.yaml").read_text())["chunk_size"] == 5
    index = RetrievalIndex(out, model=session_model)
    collection = load_collection(culti_dir, "test")
    expected_images = session_model.embed_images(
        [collection.load_image(i) for i in range(12)]
    ).numpy()
    np.testing.assert_allclose(index.image_vectors, expected_images, atol=1e-5)

    hits = index.search_text("a round concept 1", k=5)
    assert [h.rank for h in hits] == [1, 2, 3, 4, 5]
    scores = [h.score for h in hits]
    assert scores == sorted(scores, reverse=True)
    query = session_model.embed_texts(["a round concept 1"]).numpy()[0]
    brute = expected_images @ query
    assert hits[0].image_id == index.image_ids[int(brute.argmax())]
    assert hits[0].score == pytest.approx(float(brute.max()), abs=1e-5)
    assert hits[0].captions  # captions of the image come along for display

    text_hits = index.search_image(collection.load_image(0), k=3)
    brute_texts = index.text_vectors @ expected_images[0]
    assert text_hits[0].text == collection.texts[int(brute_texts.argmax())]
    assert len(index.search_text("x", k=100)) == 12  # k past the end: no -1 rows leak out


def test_corrupt_image_is_reported_and_skipped(
    tmp_path, toy_collection, tiny_clip_dir, session_model
) -> None:
    collection = toy_collection(tmp_path)
    broken = list(collection.images)
    broken[2] = base64.b64encode(b"\x89PNG\r\n\x1a\n this is not really a png")
    broken[3] = base64.b64encode(broken[3])[
        :-40
    ]  # truncated: with chunk_size=2, a chunk of failures
    broken[7] = b"!!! not base64 !!!"
    collection = PairCollection(
        collection.image_ids,
        broken,
        collection.text_ids,
        collection.texts,
        collection.text_to_images,
    )
    write_chinese_clip(tmp_path / "cc", "test", collection)
    messages: list[str] = []
    out = tmp_path / "idx"
    config = _config(tiny_clip_dir, tmp_path / "cc", out, chunk_size=2, laclip=LaclipSettings(k=2))
    summary = build_index(config, model=session_model, progress=False, log=messages.append)
    assert [f["image_id"] for f in summary.failed] == ["102", "103", "107"]
    assert all("cannot decode image" in f["reason"] for f in summary.failed)
    assert len(messages) == 3 and "102" in messages[0]
    index = RetrievalIndex(out, model=session_model)
    assert len(index.image_ids) == 9 and "102" not in index.image_ids
    assert np.load(out / "laclip_weights.npy").shape == (9, 2)
    assert [f["image_id"] for f in index.failed] == ["102", "103", "107"]
    assert index.manifest["n_failed"] == 3
    assert index.search_text("a round concept", k=20)[-1].rank == 9

    # A collection with no decodable image at all is an error that points at the report.
    write_chinese_clip(
        tmp_path / "dead", "test", PairCollection(["1"], [b"junk"], ["1"], ["t"], [[0]])
    )
    with pytest.raises(RetrievalIndexError, match=r"failed_images\.jsonl"):
        build_index(
            _config(tiny_clip_dir, tmp_path / "dead", tmp_path / "dead_idx"),
            model=session_model,
            progress=False,
        )
    assert (tmp_path / "dead_idx" / "failed_images.jsonl").exists()


class _Crash(RuntimeError):
    pass


def test_interrupted_build_resumes_from_finished_chunks(
    tmp_path, culti_dir, tiny_clip_dir, session_model, monkeypatch
) -> None:
    out = tmp_path / "idx"
    config = _config(
        tiny_clip_dir, culti_dir, out, chunk_size=4, batch_size=2, laclip=LaclipSettings(k=2)
    )
    calls = {"n": 0}
    original = session_model.encode_image

    def crashing(pixels, normalize=True):
        calls["n"] += 1
        if calls["n"] == 4:  # batch 4 = first batch of chunk 1
            raise _Crash("killed")
        return original(pixels, normalize)

    monkeypatch.setattr(session_model, "encode_image", crashing)
    with pytest.raises(_Crash):
        build_index(config, model=session_model, progress=False)
    assert (out / "chunks" / "images-00000.npz").exists()
    assert not (out / "chunks" / "images-00001.npz").exists()
    assert not (out / "index.json").exists()

    calls["n"] = -1000
    summary = build_index(config, model=session_model, progress=False)
    assert summary.resumed_chunks == 1
    assert calls["n"] == -1000 + 4  # only chunks 1 and 2 were encoded (2 batches each)
    monkeypatch.undo()
    fresh = build_index(
        config.model_copy(update={"out": str(tmp_path / "fresh")}),
        model=session_model,
        progress=False,
    )
    np.testing.assert_allclose(
        np.load(out / "image_vectors.npy"), np.load(fresh.out / "image_vectors.npy"), atol=1e-6
    )

    changed = config.model_copy(update={"laclip": LaclipSettings(k=3)})
    with pytest.raises(RetrievalIndexError, match="differs in laclip"):
        build_index(changed, model=session_model, progress=False)
    assert (
        build_index(changed, model=session_model, progress=False, overwrite=True).resumed_chunks
        == 0
    )


def _killed_in_chunk_one(config: IndexConfig, model, monkeypatch) -> None:
    """Builds with chunks of 4 in batches of 2 and dies on chunk 1's first batch."""
    original, calls = model.encode_image, {"n": 0}

    def crashing(pixels, normalize=True):
        if calls["n"] == 2:
            raise _Crash("killed")
        calls["n"] += 1
        return original(pixels, normalize)

    monkeypatch.setattr(model, "encode_image", crashing)
    with pytest.raises(_Crash):
        build_index(config, model=model, progress=False)
    monkeypatch.undo()


def test_a_damaged_chunk_fingerprint_is_rebuilt_with_one_warning(
    tmp_path, culti_dir, tiny_clip_dir, session_model, monkeypatch, caplog
) -> None:
    out = tmp_path / "idx"
    config = _config(tiny_clip_dir, culti_dir, out, chunk_size=4, batch_size=2)
    _killed_in_chunk_one(config, session_model, monkeypatch)
    fingerprint = out / "chunks" / "fingerprint.json"
    fingerprint.write_text(fingerprint.read_text()[:30])  # damaged on disk
    with caplog.at_level(logging.WARNING, logger="cultureclip.retrieval.index"):
        summary = build_index(config, model=session_model, progress=False)
    assert summary.resumed_chunks == 0  # no chunk of unknown making is used
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "rebuilding its chunks" in warnings[0]
    assert "\n" not in warnings[0]


def test_a_copy_of_the_same_weights_elsewhere_resumes_the_build(
    tmp_path, culti_dir, tiny_clip_dir, session_model, monkeypatch
) -> None:
    out = tmp_path / "idx"
    config = _config(tiny_clip_dir, culti_dir, out, chunk_size=4, batch_size=2)
    _killed_in_chunk_one(config, session_model, monkeypatch)
    copy = shutil.copytree(tiny_clip_dir, tmp_path / "copy")  # same bytes, another name
    moved = config.model_copy(update={"model": f"hf:{copy}"})
    assert build_index(moved, model=session_model, progress=False).resumed_chunks == 1


def test_laclip_index_stores_fused_vectors_and_explains_them(
    laclip_index, culti_dir, session_model
) -> None:
    index = RetrievalIndex(laclip_index, model=session_model)
    assert index.laclip == LaclipSettings(k=3)
    collection = load_collection(culti_dir, "test")
    images = [collection.load_image(i) for i in range(12)]
    features = LaclipEncoder(session_model, index.laclip).encode(images, collection.image_ids)
    np.testing.assert_allclose(index.image_vectors, features.fused.numpy(), atol=1e-5)
    np.testing.assert_allclose(
        np.load(laclip_index / "laclip_weights.npy"), features.weights.numpy(), atol=1e-5
    )

    hit = index.search_text("a square twin 3", k=1)[0]
    explanation = index.explain(hit.image_id, "a square twin 3")
    assert explanation.score == pytest.approx(hit.score, abs=1e-5)
    assert sum(c.weight for c in explanation.crops) == pytest.approx(1.0, abs=1e-5)
    assert sum(c.contribution for c in explanation.crops) == pytest.approx(
        explanation.local_score, abs=1e-5
    )
    for crop in explanation.crops:
        x0, y0, x1, y1 = crop.box
        assert 0 <= x0 < x1 <= explanation.width and 0 <= y0 < y1 <= explanation.height
    weights = [c.weight for c in explanation.crops]
    assert weights == sorted(weights, reverse=True)


def test_explain_needs_a_laclip_index(tmp_path, culti_dir, tiny_clip_dir, session_model) -> None:
    build_index(
        _config(tiny_clip_dir, culti_dir, tmp_path / "g"), model=session_model, progress=False
    )
    index = RetrievalIndex(tmp_path / "g", model=session_model)
    with pytest.raises(RetrievalIndexError, match="without LACLIP"):
        index.explain(index.image_ids[0], "x")
    with pytest.raises(FileNotFoundError, match="not a cultureclip index"):
        RetrievalIndex(tmp_path)


def _recall_at_10(index, vectors: np.ndarray, queries: np.ndarray) -> float:
    truth = np.argsort(-(queries @ vectors.T), axis=1)[:, :10]
    _, found = index.search(queries, 10)
    return float(np.mean([len(set(t) & set(f)) / 10 for t, f in zip(truth, found, strict=True)]))


def test_faiss_kinds_recall_against_exact() -> None:
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((4000, 32)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    queries = vectors[:100] + 0.3 * rng.standard_normal((100, 32)).astype(np.float32)
    flat = build_faiss(vectors)
    assert _recall_at_10(flat, vectors, queries) == 1.0  # flat is exact
    ivf = _recall_at_10(
        build_faiss(vectors, FaissSettings(kind="ivf", nprobe=16)), vectors, queries
    )
    hnsw = _recall_at_10(build_faiss(vectors, FaissSettings(kind="hnsw")), vectors, queries)
    print(f"recall@10 vs exact: ivf(nprobe=16) {ivf:.3f}, hnsw(ef=128) {hnsw:.3f}")
    # Unclustered random data is IVF's worst case; the cost is real and nprobe buys it back.
    assert ivf >= 0.6 and hnsw >= 0.9
    low = _recall_at_10(build_faiss(vectors, FaissSettings(kind="ivf", nprobe=1)), vectors, queries)
    every_cell = _recall_at_10(
        build_faiss(vectors, FaissSettings(kind="ivf", nlist=50, nprobe=50)), vectors, queries
    )
    assert low < ivf < every_cell == 1.0
    with pytest.raises(RetrievalIndexError, match="use --faiss flat"):
        build_faiss(vectors[:3], FaissSettings(kind="ivf", nlist=8))


def test_ivf_index_round_trips_its_search_settings(
    tmp_path, culti_dir, tiny_clip_dir, session_model
) -> None:
    out = tmp_path / "ivf"
    build_index(
        _config(tiny_clip_dir, culti_dir, out, faiss=FaissSettings(kind="ivf", nlist=2, nprobe=2)),
        model=session_model,
        progress=False,
    )
    import faiss

    index = RetrievalIndex(out, model=session_model)
    assert faiss.extract_index_ivf(index.image_faiss).nprobe == 2
    # nprobe = nlist visits every cell: results equal exact search.
    query = session_model.embed_texts(["twin"]).numpy()
    exact = np.argsort(-(index.image_vectors @ query[0]))[:5]
    assert index.search_vectors(query, 5)[1][0].tolist() == exact.tolist()


def test_a_bf16_index_is_encoded_under_autocast_and_keyed_by_it(
    tmp_path, culti_dir, tiny_clip_dir
) -> None:
    out = tmp_path / "idx"
    build_index(
        _config(tiny_clip_dir, culti_dir, out, device="cpu", precision="bf16"), progress=False
    )
    index = RetrievalIndex(out, device="cpu", precision="bf16")
    assert index.manifest["precision"] == "bf16" and index.model.inference_precision == "bf16"
    fp32 = tmp_path / "fp32"
    build_index(_config(tiny_clip_dir, culti_dir, fp32, device="cpu"), progress=False)
    full = RetrievalIndex(fp32, device="cpu")
    assert full.manifest["precision"] == "fp32" and full.model.inference_precision == "fp32"
    cosine = (index.image_vectors * full.image_vectors).sum(axis=1)
    assert cosine.min() > 0.98 and not np.array_equal(index.image_vectors, full.image_vectors)
    # chunks encoded in bf16 are not taken for an fp32 build in the same folder
    with pytest.raises(RetrievalIndexError, match="precision"):
        build_index(_config(tiny_clip_dir, culti_dir, out, device="cpu"), progress=False)
