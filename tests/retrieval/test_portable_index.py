"""A portable index (moved, used from elsewhere, without its collection), Chinese-CLIP
base64 alphabets, the CulTi samples layout, stale temp files and the indexer's pixel cap."""

from __future__ import annotations

import base64
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from cultureclip.data.collections import (
    CollectionFormatError,
    ImageDecodeError,
    decode_image,
    load_collection,
    write_chinese_clip,
)
from cultureclip.data.pairs import PairCollection
from cultureclip.retrieval import IndexConfig, RetrievalIndex, RetrievalIndexError, build_index
from cultureclip.retrieval.server import create_app


def _png(colour: tuple[int, int, int], size: tuple[int, int] = (40, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="PNG")
    return buffer.getvalue()


def test_moved_index_used_from_another_directory_searches_and_serves_images(
    tmp_path: Path, culti_dir: Path, tiny_clip_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Model and data given relative to the working directory, as a user types them.
    work = tmp_path / "work"
    shutil.copytree(tiny_clip_dir, work / "models" / "tiny")
    shutil.copytree(culti_dir, work / "data")
    monkeypatch.chdir(work)
    config = IndexConfig(model="hf:models/tiny", data="data", split="test", out="runs/idx")
    build_index(config, progress=False)
    manifest = json.loads((work / "runs/idx/index.json").read_text())
    assert manifest["model"] == f"hf:{(work / 'models/tiny').resolve()}"
    assert manifest["images_stored"] and manifest["model_fingerprint"]

    # Move the index, delete the collection, and use it from somewhere else.
    moved = tmp_path / "elsewhere" / "index"
    moved.parent.mkdir()
    shutil.move(work / "runs/idx", moved)
    shutil.rmtree(work / "data")
    monkeypatch.chdir(tmp_path)
    index = RetrievalIndex(moved)
    hits = index.search_text("a round concept 2", k=3)
    assert len(hits) == 3
    with TestClient(create_app(index, warm=False), raise_server_exceptions=False) as client:
        response = client.get("/api/image", params={"id": hits[0].image_id})
        assert response.status_code == 200 and response.headers["content-type"] == "image/jpeg"
        assert client.get("/api/search", params={"q": "round"}).status_code == 200

    # The CLI too, from another working directory.
    from typer.testing import CliRunner

    from cultureclip.cli.main import app

    result = CliRunner().invoke(
        app, ["search", "--index", str(moved), "--text", "round", "-k", "2", "--json"]
    )
    assert result.exit_code == 0, result.output
    assert len(json.loads(result.output)["results"]) == 2


def test_a_changed_or_missing_model_is_a_clear_error_and_bundling_carries_it(
    tmp_path: Path, culti_dir: Path, tiny_clip_dir: Path, session_model
) -> None:
    model_dir = tmp_path / "model"
    shutil.copytree(tiny_clip_dir, model_dir)
    out = tmp_path / "idx"
    build_index(
        IndexConfig(model=f"hf:{model_dir}", data=str(culti_dir), split="test", out=str(out)),
        model=session_model,
        progress=False,
    )
    config_json = model_dir / "config.json"
    config_json.write_text(config_json.read_text() + " ")
    with pytest.raises(RetrievalIndexError, match="changed since this index was built"):
        RetrievalIndex(out).model_spec()
    shutil.rmtree(model_dir)
    with pytest.raises(RetrievalIndexError, match="is not there any more"):
        RetrievalIndex(out).model_spec()

    shutil.copytree(tiny_clip_dir, model_dir)
    bundled = tmp_path / "bundled"
    build_index(
        IndexConfig(
            model=f"hf:{model_dir}",
            data=str(culti_dir),
            split="test",
            out=str(bundled),
            bundle_model=True,
        ),
        model=session_model,
        progress=False,
    )
    shutil.rmtree(model_dir)
    moved = tmp_path / "moved"
    shutil.move(bundled, moved)
    assert RetrievalIndex(moved).model_spec() == f"hf:{(moved / 'model').resolve()}"
    assert len(RetrievalIndex(moved).search_text("round", k=2)) == 2


def test_index_without_stored_images_names_the_missing_collection(
    tmp_path: Path, culti_dir: Path, tiny_clip_dir: Path, session_model
) -> None:
    data = tmp_path / "data"
    shutil.copytree(culti_dir, data)
    out = tmp_path / "idx"
    build_index(
        IndexConfig(
            model=f"hf:{tiny_clip_dir}",
            data=str(data),
            split="test",
            out=str(out),
            store_images=False,
        ),
        model=session_model,
        progress=False,
    )
    assert not (out / "images.bin").exists()
    index = RetrievalIndex(out, model=session_model)
    assert isinstance(index.image_source(index.image_ids[0]), bytes)
    shutil.rmtree(data)
    index = RetrievalIndex(out, model=session_model)
    with pytest.raises(RetrievalIndexError, match="store_images: false"):
        index.image_source(index.image_ids[0])
    with TestClient(create_app(index, warm=False), raise_server_exceptions=False) as client:
        response = client.get("/api/image", params={"id": index.image_ids[0]})
    assert response.status_code == 503
    assert str(tmp_path) not in response.text and "id " in response.json()["error"]["message"]


def test_urlsafe_and_standard_base64_tsvs_give_the_same_index(
    tmp_path: Path, toy_collection, tiny_clip_dir: Path, session_model
) -> None:
    collection = toy_collection(tmp_path)
    write_chinese_clip(tmp_path / "std", "test", collection)
    write_chinese_clip(tmp_path / "url", "test", collection, urlsafe=True)
    std_tsv = (tmp_path / "std/test_imgs.tsv").read_bytes()
    url_tsv = (tmp_path / "url/test_imgs.tsv").read_bytes()
    assert b"+" in std_tsv or b"/" in std_tsv.split(b"\t", 1)[1]
    assert b"-" in url_tsv or b"_" in url_tsv  # the alphabets really differ here
    vectors = []
    for name in ("std", "url"):
        summary = build_index(
            IndexConfig(
                model=f"hf:{tiny_clip_dir}",
                data=str(tmp_path / name),
                split="test",
                out=str(tmp_path / f"idx-{name}"),
            ),
            model=session_model,
            progress=False,
        )
        assert summary.failed == []
        vectors.append(np.load(tmp_path / f"idx-{name}/image_vectors.npy"))
    np.testing.assert_array_equal(vectors[0], vectors[1])
    # Unpadded URL-safe (some writers strip "=") decodes too; a mix is named as such.
    raw = collection.images[0]
    unpadded = base64.urlsafe_b64encode(raw).rstrip(b"=")
    assert decode_image(unpadded).size == decode_image(raw).size
    with pytest.raises(ImageDecodeError, match="mixes the standard"):
        decode_image(b"ab+c-d==")
    with pytest.raises(ImageDecodeError, match="not valid standard base64"):
        decode_image(b"abc*def=")


def test_culti_samples_layout_indexes_directly(
    tmp_path: Path, tiny_clip_dir: Path, session_model
) -> None:
    """``sample_texts.jsonl`` beside ``sample_images/{id}.png``, as CulTi publishes them."""
    root = tmp_path / "samples"
    (root / "sample_images").mkdir(parents=True)
    colours = [(200, 30, 30), (30, 200, 30), (30, 30, 200), (200, 200, 30)]
    for number, colour in enumerate(colours, start=1):
        (root / "sample_images" / f"{number}.png").write_bytes(_png(colour))
    rows = [
        {"text_id": n, "text": t, "image_ids": [n]}
        for n, t in enumerate(["窠内一飞鸟", "折枝宝相花", "芙蓉花形态", "枝条上缀有莲叶"], 1)
    ]
    (root / "sample_texts.jsonl").write_text(
        "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8"
    )
    collection = load_collection(root)
    assert collection.image_ids == ["1", "2", "3", "4"]
    assert collection.texts[0] == "窠内一飞鸟" and collection.text_to_images[3] == [3]
    assert load_collection(root / "sample_texts.jsonl").image_ids == ["1", "2", "3", "4"]
    summary = build_index(
        IndexConfig(model=f"hf:{tiny_clip_dir}", data=str(root), out=str(tmp_path / "idx")),
        model=session_model,
        progress=False,
    )
    assert (summary.n_images, summary.n_texts) == (4, 4)
    assert RetrievalIndex(tmp_path / "idx", model=session_model).name == "samples/sample"

    # Texts without images: the error says how to convert.
    lonely = tmp_path / "lonely"
    lonely.mkdir()
    shutil.copy(root / "sample_texts.jsonl", lonely)
    with pytest.raises(CollectionFormatError, match="cultureclip convert"):
        load_collection(lonely)


def test_stale_temp_files_of_a_killed_build_are_removed(
    tmp_path: Path, culti_dir: Path, tiny_clip_dir: Path, session_model
) -> None:
    out = tmp_path / "idx"
    (out / "chunks").mkdir(parents=True)
    stale = [
        out / "chunks" / ".images-00000.npz.k3j2h1.npz",
        out / "chunks" / ".images-00001.bin.x8y7z6.bin",
        out / "chunks" / ".texts-00000.npy.a1b2c3.npy",
        out / ".image_vectors.npy.q1w2e3.npy",
    ]
    for path in stale:
        path.write_bytes(b"\0" * 100)
    keep = out / "notes.txt"
    keep.write_text("mine")
    build_index(
        IndexConfig(model=f"hf:{tiny_clip_dir}", data=str(culti_dir), split="test", out=str(out)),
        model=session_model,
        progress=False,
    )
    assert not any(path.exists() for path in stale)
    assert keep.exists()
    assert not list(out.rglob(".*.*"))  # nothing temporary is left


def test_indexer_caps_pixels_and_reports_images_over_the_cap(
    tmp_path: Path, tiny_clip_dir: Path, session_model
) -> None:
    from cultureclip.data.pairs import DOWNSCALED_FROM

    big = io.BytesIO()
    Image.new("RGB", (2400, 1600), (120, 60, 30)).save(big, format="JPEG", quality=70)
    image = decode_image(big.getvalue(), max_pixels=200_000)
    assert image.width * image.height <= 200_000 and image.info[DOWNSCALED_FROM] == (2400, 1600)
    png = _png((1, 2, 3), (1000, 800))
    with pytest.raises(ImageDecodeError, match="over the cap"):
        decode_image(png, max_pixels=200_000)

    collection = PairCollection(
        image_ids=["small", "bigjpeg", "bigpng"],
        images=[_png((9, 9, 9)), big.getvalue(), png],
        text_ids=["0", "1", "2"],
        texts=["small", "big jpeg", "big png"],
        text_to_images=[[0], [1], [2]],
    )
    write_chinese_clip(tmp_path / "cc", "test", collection)
    messages: list[str] = []
    summary = build_index(
        IndexConfig(
            model=f"hf:{tiny_clip_dir}",
            data=str(tmp_path / "cc"),
            split="test",
            out=str(tmp_path / "idx"),
            max_pixels=200_000,
        ),
        model=session_model,
        progress=False,
        log=messages.append,
    )
    assert [f["image_id"] for f in summary.failed] == ["bigpng"]
    assert [d["image_id"] for d in summary.downscaled] == ["bigjpeg"]
    assert any("bigjpeg is 2400×1600, over max_pixels=200,000" in m for m in messages)
    index = RetrievalIndex(tmp_path / "idx", model=session_model)
    assert index.manifest["n_downscaled"] == 1
    served = decode_image(index.image_source("bigjpeg"), index.max_pixels)
    assert served.size == image.size  # the server decodes what the indexer encoded
