"""Build and query a retrieval index over an image–text collection.

:func:`build_index` encodes a collection with any registered model, chunk by chunk.
Every finished chunk is written atomically under ``chunks/``, so a killed run that is
started again with the same settings continues where it stopped. At the end the
chunks are joined into the index directory::

    index.json            manifest: model, data, split, counts, FAISS and LACLIP settings, timings
    config.yaml           the resolved IndexConfig
    image_vectors.npy     [N, D] float32, the searchable image vectors (LACLIP fused, or global)
    image_global.npy      [N, D] global embeddings (LACLIP indexes only)
    laclip_weights.npy    [N, k] view weights   } LACLIP indexes only, for explanations
    laclip_boxes.npy      [N, k, 4] view boxes  }
    images.parquet        image_id per row
    text_vectors.npy      [T, D] float32
    texts.parquet         text_id, text, image_ids (list of image ids) per row
    images.faiss / texts.faiss   FAISS indexes over the vectors (inner product)
    failed_images.jsonl   {image_id, reason} for every image that could not be decoded
    images.bin            the encoded image files, back to back   } ``store_images`` (default):
    image_offsets.npy     [N + 1] int64 byte offsets into it       } the index is self-contained
    model/                a copy of a local model (``bundle_model``)

An index directory is portable: it names its model by a resolved spec (absolute path for
local models, with a fingerprint checked on load) or carries a copy, and it holds its
images, so it can be moved and used from any working directory.

:class:`RetrievalIndex` loads such a directory and answers text → image and
image → text queries.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import Field

from cultureclip.config import Config
from cultureclip.core.device import Device, resolve_device
from cultureclip.core.errors import InputError, MissingInputError, UnknownNameError
from cultureclip.core.progress import progress as track_progress
from cultureclip.data.collections import ImageDecodeError, decode_image, load_collection
from cultureclip.data.pairs import (
    DEFAULT_MAX_PIXELS,
    DOWNSCALED_FROM,
    PairCollection,
    raw_image_bytes,
)
from cultureclip.retrieval.laclip import LaclipConfig, LaclipEncoder, explicit_scores
from cultureclip.utils.io import (
    atomic_path,
    atomic_write_json,
    content_fingerprint,
    read_json,
    read_jsonl,
    stable_hash,
    write_jsonl,
)

if TYPE_CHECKING:
    import faiss
    from PIL import Image

    from cultureclip.models.base import VisionLanguageModel

logger = logging.getLogger(__name__)

INDEX_VERSION = 1
MANIFEST = "index.json"
_MANIFEST_KEYS = (
    "model",
    "data",
    "split",
    "split_seed",
    "n_images",
    "n_texts",
    "n_failed",
    "faiss",
    "text_faiss",
    "laclip",
)


class RetrievalIndexError(InputError):
    """An index directory that cannot be built or used as asked; the message says what to do."""


class FaissSettings(Config):
    """Which FAISS index to build. ``flat`` is exact; ``ivf``/``hnsw`` trade recall for speed;
    ``ivfpq`` also compresses the vectors (``pq_m`` bytes each at 8 bits) for millions."""

    kind: Literal["flat", "ivf", "hnsw", "ivfpq"] = "flat"
    #: IVF cells; default about 4·√N (capped so each cell gets ≥ 39 training vectors)
    nlist: int | None = Field(None, ge=1)
    #: IVF cells visited per query
    nprobe: int = Field(16, ge=1)
    #: HNSW graph degree
    hnsw_m: int = Field(32, ge=4)
    ef_construction: int = Field(200, ge=8)
    ef_search: int = Field(128, ge=1)
    #: IVF-PQ sub-quantizers (must divide the dimension); default dim/8
    pq_m: int | None = Field(None, ge=1)
    pq_bits: int = Field(8, ge=4, le=12)


class IndexConfig(Config):
    """Settings of ``cultureclip index`` (saved as ``config.yaml`` in the index directory)."""

    model: str
    data: str
    split: str | None = None
    out: str
    batch_size: int = Field(32, ge=1)
    #: images per resumable chunk file
    chunk_size: int = Field(512, ge=1)
    faiss: FaissSettings = FaissSettings()
    laclip: LaclipConfig | None = None
    device: Device = "auto"
    #: seed of the 7:1:2 split for collections that have no split of their own
    split_seed: int = 0
    #: images over this many pixels are decoded reduced (JPEG) or skipped and reported
    max_pixels: int = Field(DEFAULT_MAX_PIXELS, ge=1)
    #: copy the image files into the index (``images.bin``) so it is self-contained
    store_images: bool = True
    #: copy a local model directory into ``model/`` so the index carries its model
    bundle_model: bool = False
    #: ``"rank/world"``: encode only the chunks ``number % world == rank`` (sharded encoding
    #: over processes sharing ``out``); default from ``RANK``/``WORLD_SIZE`` (accelerate,
    #: torchrun). Rank 0 waits for the other shards' chunks and writes the index.
    shard: str | None = Field(None, pattern=r"^\d+/\d+$")
    #: how long rank 0 waits for the other shards
    shard_wait_s: float = Field(24 * 3600, gt=0)


def shard_of(config: IndexConfig) -> tuple[int, int]:
    """(rank, world) of this process: ``config.shard``, else ``RANK``/``WORLD_SIZE``."""

    if config.shard:
        rank, world = (int(v) for v in config.shard.split("/"))
    else:
        rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    if world < 1 or not 0 <= rank < world:
        raise RetrievalIndexError(f"shard {rank}/{world}: the rank must be in 0..world-1")
    return rank, world


# ---- model specs -------------------------------------------------------------------------
def _local_model_path(spec: str) -> tuple[str, Path] | None:
    """(prefix, path) of a spec naming a local directory or file, else None."""
    path = Path(spec).expanduser()
    if path.exists():
        return "", path
    backend, sep, argument = spec.partition(":")
    if not sep or not argument:
        return None
    if backend == "hf" and Path(argument).expanduser().exists():
        return "hf:", Path(argument).expanduser()
    if backend == "open_clip" and "/" in argument:
        arch, _, rest = argument.partition("/")
        if Path(rest).expanduser().exists():
            return f"open_clip:{arch}/", Path(rest).expanduser()
    return None


def resolve_model_spec(spec: str) -> str:
    """The spec with any local path made absolute, so it works from another directory."""
    local = _local_model_path(spec)
    if local is None:
        return spec
    prefix, path = local
    return f"{prefix}{path.resolve()}"


def model_fingerprint(spec: str) -> str | None:
    """A content fingerprint of a local model (:func:`content_fingerprint`); None for hub
    names and built-in backends."""
    local = _local_model_path(spec)
    return None if local is None else content_fingerprint(local[1])


def display_model(spec: str) -> str:
    """A model spec without its directories (what a page may show)."""
    local = _local_model_path(spec)
    if local is not None:
        return f"{local[0]}{local[1].resolve().name}"
    backend, sep, argument = spec.partition(":")
    if Path(spec).is_absolute() or not sep:
        return Path(spec).name
    if argument.startswith(("/", "~", ".")):  # a local path that is not there now
        return f"{backend}:{Path(argument).name}"
    return spec


# ---- temp files --------------------------------------------------------------------------
_TEMP_PATTERNS = (
    ".images-*.npz.*",
    ".images-*.bin.*",
    ".images-*.failed.jsonl.*",
    ".texts-*.npy.*",
    ".fingerprint.json.*",
)
_OUT_TEMP_PATTERNS = tuple(
    f".{name}.*"
    for name in (
        "image_vectors.npy",
        "image_global.npy",
        "laclip_weights.npy",
        "laclip_boxes.npy",
        "text_vectors.npy",
        "images.parquet",
        "texts.parquet",
        "images.faiss",
        "texts.faiss",
        "images.bin",
        "image_offsets.npy",
        "failed_images.jsonl",
        "index.json",
        "config.yaml",
    )
)


def clean_stale_temp_files(out: Path, rank: int = 0, world: int = 1) -> list[Path]:
    """Removes temporary files a killed index build left in ``out`` and ``out/chunks``.

    A shard removes only the temporary files of its own chunks (and rank 0 those in ``out``),
    so shards starting at different times never delete each other's files in progress.
    """
    removed: list[Path] = []
    folders = [(out / "chunks", _TEMP_PATTERNS)]
    if rank == 0:
        folders.append((out, _OUT_TEMP_PATTERNS))
    for folder, patterns in folders:
        if not folder.is_dir():
            continue
        for pattern in patterns:
            for path in folder.glob(pattern):
                number = re.match(r"\.(?:images|texts)-(\d+)\.", path.name)
                if number and world > 1 and int(number.group(1)) % world != rank:
                    continue
                if path.is_file():
                    path.unlink(missing_ok=True)
                    removed.append(path)
    if removed:
        logger.info("removed %d temporary file(s) left by an interrupted build", len(removed))
    return removed


# ---- FAISS -------------------------------------------------------------------------------
def build_faiss(vectors: np.ndarray, settings: FaissSettings | None = None) -> faiss.Index:
    """An inner-product FAISS index over ``vectors`` ([N, D] float32)."""
    import faiss

    settings = settings or FaissSettings()
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    n, dim = vectors.shape
    if settings.kind == "flat":
        index = faiss.IndexFlatIP(dim)
    elif settings.kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, settings.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = settings.ef_construction
        index.hnsw.efSearch = settings.ef_search
    elif settings.kind in ("ivf", "ivfpq"):
        nlist = settings.nlist or max(1, min(round(4 * np.sqrt(n)), n // 39))
        if n < nlist:
            raise RetrievalIndexError(
                f"IVF with nlist={nlist} needs at least {nlist} vectors, got {n}; use --faiss flat"
            )
        quantizer = faiss.IndexFlatIP(dim)
        if settings.kind == "ivf":
            index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
        else:
            m = settings.pq_m or max(1, dim // 8)
            if dim % m:
                raise RetrievalIndexError(f"pq_m={m} must divide the dimension {dim}")
            if n < 2**settings.pq_bits:
                raise RetrievalIndexError(
                    f"IVF-PQ with pq_bits={settings.pq_bits} needs at least "
                    f"{2**settings.pq_bits} vectors to train, got {n}; use --faiss ivf or flat"
                )
            index = faiss.IndexIVFPQ(
                quantizer, dim, nlist, m, settings.pq_bits, faiss.METRIC_INNER_PRODUCT
            )
        index.train(vectors)
        index.nprobe = min(settings.nprobe, nlist)
    else:  # pydantic keeps this unreachable; kept for direct callers
        raise RetrievalIndexError(f"unknown FAISS index kind {settings.kind!r}")
    if n:
        index.add(vectors)
    return index


def _tune_loaded(index: faiss.Index, settings: FaissSettings) -> faiss.Index:
    # Search-time knobs are not serialised by FAISS; set them again after loading.
    import faiss

    if settings.kind in ("ivf", "ivfpq"):
        ivf = faiss.extract_index_ivf(index)
        ivf.nprobe = min(settings.nprobe, ivf.nlist)
    elif settings.kind == "hnsw":
        index.hnsw.efSearch = settings.ef_search
    return index


def _write_faiss(index: faiss.Index, path: Path) -> None:
    import faiss

    with atomic_path(path) as tmp:
        faiss.write_index(index, str(tmp))


def _save_npy(path: Path, array: np.ndarray) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.save(handle, array)


# ---- building ----------------------------------------------------------------------------
@dataclass
class IndexSummary:
    """What :func:`build_index` did (also in ``index.json``)."""

    out: Path
    n_images: int
    n_texts: int
    failed: list[dict[str, str]]
    resumed_chunks: int
    timings: dict[str, float]
    encoded_views: int
    downscaled: list[dict[str, Any]] = field(default_factory=list)
    #: False for a shard other than rank 0 (it encodes chunks; rank 0 writes the index)
    finalized: bool = True


def _fingerprint(config: IndexConfig, collection: PairCollection) -> dict[str, Any]:
    """What must match for chunks on disk to be reused by a rerun."""
    return {
        "model": resolve_model_spec(config.model),
        "model_fingerprint": model_fingerprint(config.model),
        "data": str(Path(config.data).resolve()),
        "split": config.split,
        "split_seed": config.split_seed,
        "chunk_size": config.chunk_size,
        "laclip": config.laclip.model_dump(mode="json") if config.laclip else None,
        "max_pixels": config.max_pixels,
        "store_images": config.store_images,
        "images": stable_hash(collection.image_ids),
        "texts": stable_hash(collection.text_ids, collection.texts),
    }


def _prepare_chunks(chunks: Path, fingerprint: dict[str, Any], overwrite: bool) -> None:
    """Creates ``chunks/`` for a new run, or checks that the chunks there belong to this run."""
    path = chunks / "fingerprint.json"
    if overwrite and chunks.exists():
        shutil.rmtree(chunks)
    if path.exists():
        previous = read_json(path)
        # keys that older builds did not record do not block a resume
        changed = sorted(
            k for k in fingerprint if k in previous and previous.get(k) != fingerprint[k]
        )
        if changed:
            raise RetrievalIndexError(
                f"{chunks.parent} holds chunks of a different run (differs in {', '.join(changed)}); "
                f"use a new --out or pass --overwrite"
            )
        return
    chunks.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, fingerprint)


def _encode_image_chunk(
    model: VisionLanguageModel,
    collection: PairCollection,
    rows: range,
    config: IndexConfig,
    on_batch: Any,
    blob: Any = None,
) -> tuple[dict[str, np.ndarray], list[dict[str, str]], int, list[dict[str, Any]]]:
    """Encodes the images at ``rows``; with ``blob`` (a binary file) their encoded bytes are
    written to it back to back (``offsets`` in the arrays)."""
    import torch

    encoder = LaclipEncoder(model, config.laclip) if config.laclip else None
    kept: list[int] = []
    failed: list[dict[str, str]] = []
    downscaled: list[dict[str, Any]] = []
    offsets = [0]
    vectors, globals_, weights, boxes = [], [], [], []
    encoded = 0
    for start in range(rows.start, rows.stop, config.batch_size):
        batch_rows = range(start, min(start + config.batch_size, rows.stop))
        images: list[Image.Image] = []
        batch_kept: list[int] = []
        for row in batch_rows:
            image_id = collection.image_ids[row]
            try:
                image = decode_image(collection.images[row], config.max_pixels)
                data = raw_image_bytes(collection.images[row]) if blob is not None else b""
            except (ImageDecodeError, OSError) as exc:
                failed.append({"image_id": image_id, "reason": str(exc)})
                continue
            if DOWNSCALED_FROM in image.info:
                width, height = image.info[DOWNSCALED_FROM]
                downscaled.append(
                    {"image_id": image_id, "size": [width, height], "used": list(image.size)}
                )
            if blob is not None:
                blob.write(data)
                offsets.append(offsets[-1] + len(data))
            images.append(image)
            batch_kept.append(row)
        if images:
            if encoder is None:
                with torch.inference_mode():
                    emb = model.encode_image(model.preprocess(images)).float().cpu()
                vectors.append(emb.numpy())
                encoded += len(images)
            else:
                features = encoder.encode(images, [collection.image_ids[r] for r in batch_kept])
                vectors.append(features.fused.numpy())
                globals_.append(features.views.global_emb.numpy())
                weights.append(features.weights.numpy())
                boxes.append(features.views.boxes)
                encoded += (
                    len(images) * (1 + config.laclip.k)
                    if config.laclip.mode == "crops"
                    else len(images)
                )
            kept.extend(batch_kept)
        on_batch(len(batch_rows))
    dim = model.embed_dim
    arrays = {
        "rows": np.asarray(kept, dtype=np.int64),
        "offsets": np.asarray(offsets if blob is not None else [0], dtype=np.int64),
        "vectors": np.concatenate(vectors) if vectors else np.zeros((0, dim), np.float32),
    }
    if encoder is not None:
        arrays["global"] = np.concatenate(globals_) if globals_ else np.zeros((0, dim), np.float32)
        arrays["weights"] = np.concatenate(weights) if weights else np.zeros((0, 0), np.float32)
        arrays["boxes"] = np.concatenate(boxes) if boxes else np.zeros((0, 0, 4), np.int32)
    return arrays, failed, encoded, downscaled


def build_index(
    config: IndexConfig,
    *,
    model: VisionLanguageModel | None = None,
    collection: PairCollection | None = None,
    overwrite: bool = False,
    progress: bool = True,
    log: Any = None,
) -> IndexSummary:
    """Encodes ``config.data`` with ``config.model`` and writes an index to ``config.out``.

    Resumable: finished chunks are kept under ``out/chunks`` and reused by a rerun with
    the same settings (a rerun with different settings is refused unless ``overwrite``).
    Images that cannot be decoded are reported (``failed_images.jsonl`` and ``log``),
    skipped, and indexing continues. ``model``/``collection`` may be passed in to skip
    loading them (tests, benchmarks); they must match ``config``.
    """
    from cultureclip.models.registry import create_model

    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    rank, world = shard_of(config)
    if world > 1 and overwrite:
        raise RetrievalIndexError(
            "--overwrite cannot be combined with sharded encoding; remove the old chunks first"
        )
    clean_stale_temp_files(out, rank, world)
    collection = (
        collection
        if collection is not None
        else load_collection(config.data, config.split, seed=config.split_seed)
    )
    if not collection.images:
        raise RetrievalIndexError(f"collection {config.data} (split {config.split}) has no images")
    # one GPU per process, as accelerate/torchrun launch them
    local_rank = int(os.environ.get("LOCAL_RANK", rank)) if world > 1 else None
    device = resolve_device(config.device, local_rank)
    model = model if model is not None else create_model(config.model, device=device)
    model.eval()
    config = config.model_copy(update={"model": resolve_model_spec(config.model)})
    if rank == 0:
        config.save(out)
    chunks = out / "chunks"
    _prepare_chunks(chunks, _fingerprint(config, collection), overwrite)

    n_images, n_texts = len(collection.images), len(collection.texts)
    image_chunks = [
        range(s, min(s + config.chunk_size, n_images))
        for s in range(0, n_images, config.chunk_size)
    ]
    text_chunks = [
        range(s, min(s + config.chunk_size, n_texts)) for s in range(0, n_texts, config.chunk_size)
    ]
    timings: dict[str, float] = {}
    resumed = 0
    encoded_views = 0
    failed: list[dict[str, str]] = []
    downscaled: list[dict[str, Any]] = []
    waiting: list[Path] = []  # chunks of other shards, not written yet
    with (
        track_progress("images", n_images, enabled=progress) as task,
        track_progress("texts", n_texts, enabled=progress) as texts_task,
    ):
        started = time.perf_counter()
        for number, rows in enumerate(image_chunks):
            path = chunks / f"images-{number:05d}.npz"
            failed_path = chunks / f"images-{number:05d}.failed.jsonl"
            downscaled_path = chunks / f"images-{number:05d}.downscaled.jsonl"
            blob_path = chunks / f"images-{number:05d}.bin"
            if path.exists() and (blob_path.exists() or not config.store_images):
                resumed += 1
                failed.extend(read_jsonl(failed_path))
                if downscaled_path.exists():
                    downscaled.extend(read_jsonl(downscaled_path))
                task.update(advance=len(rows))
                continue
            if number % world != rank:
                waiting.append(path)
                task.update(advance=len(rows))
                continue
            advance = lambda n: task.update(advance=n)  # noqa: E731
            if config.store_images:
                with atomic_path(blob_path) as blob_tmp, open(blob_tmp, "wb") as blob:
                    arrays, chunk_failed, encoded, chunk_downscaled = _encode_image_chunk(
                        model, collection, rows, config, advance, blob
                    )
            else:
                arrays, chunk_failed, encoded, chunk_downscaled = _encode_image_chunk(
                    model, collection, rows, config, advance
                )
            for bad in chunk_failed:
                if log is not None:
                    log(f"skipped image {bad['image_id']}: {bad['reason']}")
            for big in chunk_downscaled:
                if log is not None:
                    log(
                        f"image {big['image_id']} is {big['size'][0]}×{big['size'][1]}, over "
                        f"max_pixels={config.max_pixels:,}; indexed at "
                        f"{big['used'][0]}×{big['used'][1]}"
                    )
            # The failure list is written before the chunk: a chunk file on disk means "done".
            write_jsonl(failed_path, chunk_failed)
            write_jsonl(downscaled_path, chunk_downscaled)
            with atomic_path(path) as tmp, open(tmp, "wb") as handle:
                np.savez(handle, **arrays)
            failed.extend(chunk_failed)
            downscaled.extend(chunk_downscaled)
            encoded_views += encoded
        timings["images_s"] = time.perf_counter() - started

        started = time.perf_counter()
        for number, rows in enumerate(text_chunks):
            path = chunks / f"texts-{number:05d}.npy"
            if path.exists():
                resumed += 1
            elif number % world != rank:
                waiting.append(path)
            else:
                texts = [collection.texts[i] for i in rows]
                _save_npy(
                    path, model.embed_texts(texts, batch_size=max(config.batch_size, 64)).numpy()
                )
            texts_task.update(advance=len(rows))
        timings["texts_s"] = time.perf_counter() - started

    if world > 1:
        if rank != 0:
            logger.info("shard %d/%d done; rank 0 writes the index", rank, world)
            return IndexSummary(
                out, 0, 0, failed, resumed, timings, encoded_views, downscaled, finalized=False
            )
        _wait_for(waiting, config.shard_wait_s)
        for path in waiting:
            if path.name.startswith("images-"):
                failed.extend(read_jsonl(path.with_suffix(".failed.jsonl")))
                extra = path.with_suffix(".downscaled.jsonl")
                if extra.exists():
                    downscaled.extend(read_jsonl(extra))

    # Chunks whose images all failed hold empty arrays of unknown view count: leave them out.
    parts = [np.load(chunks / f"images-{n:05d}.npz") for n in range(len(image_chunks))]
    blobs = [
        chunks / f"images-{n:05d}.bin"
        for n in range(len(image_chunks))
        if parts[n]["rows"].size and config.store_images
    ]
    parts = [p for p in parts if p["rows"].size]
    if not parts:
        write_jsonl(out / "failed_images.jsonl", failed)
        raise RetrievalIndexError(
            f"no image of {config.data} could be decoded; see {out / 'failed_images.jsonl'}"
        )
    rows = np.concatenate([p["rows"] for p in parts])
    image_vectors = np.concatenate([p["vectors"] for p in parts]).astype(np.float32)
    text_parts = [np.load(chunks / f"texts-{n:05d}.npy") for n in range(len(text_chunks))]
    dim = image_vectors.shape[1]
    text_vectors = (
        np.concatenate(text_parts).astype(np.float32)
        if text_parts
        else np.zeros((0, dim), np.float32)
    )

    started = time.perf_counter()
    laclip_arrays = None
    if config.laclip:
        laclip_arrays = {
            key: np.concatenate([p[key] for p in parts]) for key in ("global", "weights", "boxes")
        }
    meta = collection.meta
    if config.store_images:
        _join_blobs(out, blobs, [p["offsets"] for p in parts])
    bundled = _bundle_model(out, config.model) if config.bundle_model else None
    write_index(
        out,
        model=config.model,
        image_ids=[collection.image_ids[r] for r in rows.tolist()],
        image_vectors=image_vectors,
        text_ids=collection.text_ids,
        texts=collection.texts,
        text_image_ids=[
            [collection.image_ids[i] for i in refs] for refs in collection.text_to_images
        ],
        text_vectors=text_vectors,
        faiss_settings=config.faiss,
        laclip=config.laclip,
        laclip_arrays=laclip_arrays,
        failed=failed,
        source={
            "data": str(meta.get("source", Path(config.data).resolve())),
            "split": meta.get("split", config.split),
            "split_seed": config.split_seed,
            "layout": meta.get("layout"),
            "name": collection.name or Path(config.data).name,
        },
        extra={
            "timings": timings,
            "encoded_views": encoded_views,
            "model_fingerprint": model_fingerprint(config.model),
            "model_bundled": bundled,
            "images_stored": config.store_images,
            "max_pixels": config.max_pixels,
            "n_downscaled": len(downscaled),
            "downscaled": downscaled[:1000],
        },
    )
    timings["finalize_s"] = time.perf_counter() - started
    return IndexSummary(
        out, int(rows.size), n_texts, failed, resumed, timings, encoded_views, downscaled
    )


#: the stage's entry point under the name every stage uses
run = build_index


def _wait_for(paths: list[Path], timeout_s: float) -> None:
    """Waits until every chunk file of the other shards exists."""
    deadline = time.monotonic() + timeout_s
    missing = [p for p in paths if not p.exists()]
    while missing:
        if time.monotonic() > deadline:
            raise RetrievalIndexError(
                f"{len(missing)} chunk(s) of other shards did not appear within {timeout_s:.0f}s "
                f"(first: {missing[0].name}); rerun the missing shards, then rank 0"
            )
        time.sleep(1.0)
        missing = [p for p in missing if not p.exists()]


def _join_blobs(out: Path, blobs: list[Path], offsets: list[np.ndarray]) -> None:
    """``images.bin`` (the chunks' image bytes, in row order) and ``image_offsets.npy``."""
    starts = [0]
    with atomic_path(out / "images.bin") as tmp, open(tmp, "wb") as handle:
        for blob in blobs:
            with open(blob, "rb") as part:
                shutil.copyfileobj(part, handle, 1 << 20)
            starts.append(starts[-1] + blob.stat().st_size)
    joined = [np.zeros(1, np.int64)]
    for start, part in zip(starts, offsets, strict=False):
        joined.append(part[1:] + start)
    _save_npy(out / "image_offsets.npy", np.concatenate(joined))


def _bundle_model(out: Path, spec: str) -> dict[str, str] | None:
    """Copies a local model into ``out/model``; returns how to name it again, or None."""
    local = _local_model_path(spec)
    if local is None:
        logger.warning("model %s is not a local directory; the index names it instead", spec)
        return None
    prefix, path = local
    target = out / "model"
    if target.exists():
        shutil.rmtree(target)
    if path.is_dir():
        shutil.copytree(path, target)
        return {"prefix": prefix, "path": "model"}
    target.mkdir()
    shutil.copy2(path, target / path.name)
    return {"prefix": prefix, "path": f"model/{path.name}"}


def write_index(
    out: str | Path,
    *,
    model: str,
    image_ids: Sequence[str],
    image_vectors: np.ndarray,
    text_ids: Sequence[str],
    texts: Sequence[str],
    text_image_ids: Sequence[Sequence[str]],
    text_vectors: np.ndarray,
    faiss_settings: FaissSettings | None = None,
    laclip: LaclipConfig | None = None,
    laclip_arrays: dict[str, np.ndarray] | None = None,
    failed: Sequence[dict[str, str]] = (),
    source: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Writes an index directory from vectors already computed (see the module docstring).

    :func:`build_index` ends here; benchmarks and external encoders can call it directly.
    ``laclip_arrays`` holds ``global``, ``weights`` and ``boxes`` when ``laclip`` is set.
    The manifest is written last, so a directory with ``index.json`` is complete.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    faiss_settings = faiss_settings or FaissSettings()
    image_vectors = np.ascontiguousarray(image_vectors, dtype=np.float32)
    text_vectors = np.ascontiguousarray(text_vectors, dtype=np.float32)
    if len(image_ids) != len(image_vectors) or len(text_ids) != len(text_vectors):
        raise RetrievalIndexError("ids and vectors differ in length")
    if laclip is not None and laclip_arrays is None:
        raise RetrievalIndexError("a LACLIP index needs laclip_arrays (global, weights, boxes)")
    _save_npy(out / "image_vectors.npy", image_vectors)
    _save_npy(out / "text_vectors.npy", text_vectors)
    if laclip is not None and laclip_arrays is not None:
        _save_npy(out / "image_global.npy", laclip_arrays["global"].astype(np.float32))
        _save_npy(out / "laclip_weights.npy", laclip_arrays["weights"].astype(np.float32))
        _save_npy(out / "laclip_boxes.npy", laclip_arrays["boxes"].astype(np.int32))
    tables = {
        "images.parquet": pa.table({"image_id": pa.array(list(image_ids), pa.string())}),
        "texts.parquet": pa.table(
            {
                "text_id": pa.array(list(text_ids), pa.string()),
                "text": pa.array(list(texts), pa.string()),
                "image_ids": pa.array([list(ids) for ids in text_image_ids], pa.list_(pa.string())),
            }
        ),
    }
    for name, table in tables.items():
        with atomic_path(out / name) as tmp:
            pq.write_table(table, tmp)
    write_jsonl(out / "failed_images.jsonl", failed)
    _write_faiss(build_faiss(image_vectors, faiss_settings), out / "images.faiss")
    # A handful of texts cannot train IVF cells; small text sides are searched exactly.
    text_settings = faiss_settings if len(text_vectors) >= 1000 else FaissSettings()
    _write_faiss(build_faiss(text_vectors, text_settings), out / "texts.faiss")
    source = source or {}
    manifest = {
        "version": INDEX_VERSION,
        "model": model,
        "data": source.get("data"),
        "split": source.get("split"),
        "split_seed": source.get("split_seed", 0),
        "layout": source.get("layout"),
        "name": source.get("name"),
        "n_images": len(image_ids),
        "n_texts": len(text_ids),
        "n_failed": len(failed),
        "dim": int(image_vectors.shape[1]),
        "faiss": faiss_settings.model_dump(mode="json"),
        "text_faiss": text_settings.model_dump(mode="json"),
        "laclip": laclip.model_dump(mode="json") if laclip else None,
        **(extra or {}),
    }
    atomic_write_json(out / MANIFEST, manifest)
    return out


# ---- querying ----------------------------------------------------------------------------
@dataclass
class ImageHit:
    rank: int
    image_id: str
    score: float
    captions: list[str] = field(default_factory=list)


@dataclass
class TextHit:
    rank: int
    text_id: str
    text: str
    score: float
    image_ids: list[str] = field(default_factory=list)


@dataclass
class CropExplanation:
    box: list[int]
    weight: float
    similarity: float  # u_j · u_T
    contribution: float  # (1 − β) · w_j · (u_j · u_T)


@dataclass
class Explanation:
    image_id: str
    width: int
    height: int
    mode: str
    global_score: float
    local_score: float
    score: float
    beta: float
    crops: list[CropExplanation]


class RetrievalIndex:
    """A loaded index directory. The query model is created on first use (or passed in)."""

    def __init__(
        self,
        directory: str | Path,
        *,
        model: VisionLanguageModel | None = None,
        device: str | None = None,
    ) -> None:
        import faiss
        import pyarrow.parquet as pq

        self.directory = Path(directory)
        manifest_path = self.directory / MANIFEST
        if not manifest_path.exists():
            raise MissingInputError(
                f"{self.directory} is not a cultureclip index (no {MANIFEST}); build one with `cultureclip index`"
            )
        self.manifest: dict[str, Any] = read_json(manifest_path)
        if self.manifest.get("version") != INDEX_VERSION:
            raise RetrievalIndexError(
                f"index version {self.manifest.get('version')} is not supported (expected {INDEX_VERSION}); rebuild it"
            )
        missing = [key for key in _MANIFEST_KEYS if key not in self.manifest]
        if missing:
            raise RetrievalIndexError(
                f"{manifest_path} lacks {', '.join(missing)} (written by an older cultureclip?); "
                f"rebuild the index with `cultureclip index --overwrite`"
            )
        self.faiss_settings = FaissSettings.model_validate(self.manifest["faiss"])
        laclip = self.manifest.get("laclip")
        self.laclip = LaclipConfig.model_validate(laclip) if laclip else None
        self.image_ids: list[str] = (
            pq.read_table(self.directory / "images.parquet").column("image_id").to_pylist()
        )
        texts = pq.read_table(self.directory / "texts.parquet").to_pydict()
        self.text_ids: list[str] = texts["text_id"]
        self.texts: list[str] = texts["text"]
        self.text_image_ids: list[list[str]] = texts["image_ids"]
        self.image_vectors = np.load(self.directory / "image_vectors.npy", mmap_mode="r")
        self.text_vectors = np.load(self.directory / "text_vectors.npy", mmap_mode="r")
        self.image_faiss = _tune_loaded(
            faiss.read_index(str(self.directory / "images.faiss")), self.faiss_settings
        )
        text_settings = FaissSettings.model_validate(self.manifest["text_faiss"])
        self.text_faiss = _tune_loaded(
            faiss.read_index(str(self.directory / "texts.faiss")), text_settings
        )
        self.failed: list[dict[str, str]] = read_jsonl(self.directory / "failed_images.jsonl")
        self.image_row = {image_id: row for row, image_id in enumerate(self.image_ids)}
        self.max_pixels: int = self.manifest.get("max_pixels") or DEFAULT_MAX_PIXELS
        self._blob: np.ndarray | None = None
        self._offsets: np.ndarray | None = None
        if self.manifest.get("images_stored"):
            for name in ("images.bin", "image_offsets.npy"):
                if not (self.directory / name).exists():
                    raise RetrievalIndexError(
                        f"{self.directory} lacks {name} (its images); copy the whole index "
                        f"directory, or rebuild it with `cultureclip index --overwrite`"
                    )
            self._offsets = np.load(self.directory / "image_offsets.npy")
            if len(self._offsets) != len(self.image_ids) + 1:
                raise RetrievalIndexError(
                    f"{self.directory}/image_offsets.npy does not match images.parquet; rebuild it"
                )
        self.captions: dict[str, list[str]] = {}
        self._text_rows: dict[str, list[int]] = {}
        for row, (text, image_ids) in enumerate(zip(self.texts, self.text_image_ids, strict=True)):
            for image_id in image_ids:
                self.captions.setdefault(image_id, []).append(text)
                self._text_rows.setdefault(image_id, []).append(row)
        self._model = model
        self._device = device
        self._collection: PairCollection | None = None
        self._positions: dict[str, int] = {}
        self._lock = threading.RLock()

    # ---- lazily created parts ---------------------------------------------------------
    @property
    def name(self) -> str:
        """The collection's name (never a path)."""
        name = self.manifest.get("name")
        if name:
            return str(name)
        data = self.manifest.get("data") or "index"
        return Path(str(data)).name

    @property
    def model_name(self) -> str:
        """The model spec without directories, for pages and logs."""
        return display_model(str(self.manifest["model"]))

    def model_spec(self) -> str:
        """The spec to load: the bundled copy, else the recorded (resolved) spec, checked
        against the recorded fingerprint."""
        bundled = self.manifest.get("model_bundled")
        if bundled:
            return f"{bundled['prefix']}{(self.directory / bundled['path']).resolve()}"
        spec = str(self.manifest["model"])
        expected = self.manifest.get("model_fingerprint")
        local = _local_model_path(spec)
        if expected and local is None:
            raise RetrievalIndexError(
                f"the model of this index, {spec}, is not there any more; move it back, or "
                f"rebuild the index (`cultureclip index --set bundle_model=true` copies the model in)"
            )
        found = model_fingerprint(spec) if expected else None
        if expected and found != expected:
            raise RetrievalIndexError(
                f"the model at {spec} changed since this index was built (fingerprint "
                f"{found} ≠ {expected}); rebuild with `cultureclip index --overwrite`"
            )
        return spec

    @property
    def model(self) -> VisionLanguageModel:
        with self._lock:
            if self._model is None:
                from cultureclip.models.registry import create_model

                self._model = create_model(self.model_spec(), device=self._device)
                self._model.eval()
            return self._model

    def warm(self) -> None:
        """Loads the model and runs one text and one image through it (first query fast)."""
        from PIL import Image

        self.encode_text("warm up")
        self.encode_image(Image.new("RGB", (64, 64), (128, 128, 128)), "warm-up")

    def collection(self) -> PairCollection:
        """The indexed collection (for image bytes), loaded again from the manifest's ``data``."""
        with self._lock:
            if self._collection is None:
                self._collection = load_collection(
                    self.manifest["data"], self.manifest["split"], seed=self.manifest["split_seed"]
                )
                self._positions = {
                    image_id: n for n, image_id in enumerate(self._collection.image_ids)
                }
            return self._collection

    def image_source(self, image_id: str) -> Any:
        """The stored bytes (or, for ``store_images: false``, the collection's bytes or path)
        of an indexed image, looked up by id only."""
        if image_id not in self.image_row:
            raise UnknownNameError(f"no image {image_id!r} in this index")
        if self._offsets is not None:
            with self._lock:
                if self._blob is None:
                    self._blob = np.memmap(self.directory / "images.bin", dtype=np.uint8, mode="r")
            row = self.image_row[image_id]
            return self._blob[self._offsets[row] : self._offsets[row + 1]].tobytes()
        data = self.manifest.get("data")
        if not data or not Path(data).exists():
            raise RetrievalIndexError(
                f"this index does not hold its images (built with store_images: false) and its "
                f"collection {data} is missing; put it back or rebuild the index with images"
            )
        collection = self.collection()
        position = self._positions.get(image_id)
        if position is None:
            raise RetrievalIndexError(
                f"image {image_id!r} is no longer in {self.manifest['data']}; rebuild the index"
            )
        return collection.images[position]

    def texts_of(self, image_id: str) -> list[int]:
        """Rows (in ``text_ids``/``texts``) of the texts that describe ``image_id``."""
        return list(self._text_rows.get(image_id, []))

    # ---- search -----------------------------------------------------------------------
    def search_vectors(
        self, queries: np.ndarray, k: int, target: Literal["images", "texts"] = "images"
    ) -> tuple[np.ndarray, np.ndarray]:
        """Raw FAISS search: ``(scores [Q, k], rows [Q, k])``; rows are -1 past the end."""
        index = self.image_faiss if target == "images" else self.text_faiss
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        if queries.ndim != 2 or queries.shape[1] != index.d:
            raise ValueError(f"queries must be [Q, {index.d}], got {queries.shape}")
        return index.search(queries, k)

    def encode_text(self, text: str) -> np.ndarray:
        with self._lock:
            return self.model.embed_texts([text]).numpy()

    def encode_image(self, image: Image.Image, image_id: str = "query") -> np.ndarray:
        """A query image's vector: LACLIP-fused when the index is, so scores are symmetric."""
        model = self.model
        with self._lock:
            if self.laclip is None:
                return model.embed_images([image]).numpy()
            return LaclipEncoder(model, self.laclip).encode([image], [image_id]).fused.numpy()

    def search_text(self, text: str, k: int = 10) -> list[ImageHit]:
        """Images for a text query, best first."""
        if not text.strip():
            raise InputError("the text query is empty")
        scores, rows = self.search_vectors(self.encode_text(text), k, "images")
        return [
            ImageHit(
                rank, self.image_ids[row], float(score), self.captions.get(self.image_ids[row], [])
            )
            for rank, (score, row) in enumerate(zip(scores[0], rows[0], strict=True), start=1)
            if row >= 0
        ]

    def search_image(self, image: Image.Image, k: int = 10) -> list[TextHit]:
        """Texts for an image query, best first."""
        scores, rows = self.search_vectors(self.encode_image(image), k, "texts")
        return [
            TextHit(
                rank,
                self.text_ids[row],
                self.texts[row],
                float(score),
                list(self.text_image_ids[row]),
            )
            for rank, (score, row) in enumerate(zip(scores[0], rows[0], strict=True), start=1)
            if row >= 0
        ]

    def explain(self, image_id: str, text: str) -> Explanation:
        """Which LACLIP views drove the score of ``image_id`` for ``text``.

        The views are recomputed from the image (crops are seeded by image id, so they are
        the indexed ones); the returned score equals the indexed vector's score.
        """
        if self.laclip is None:
            raise RetrievalIndexError(
                "this index was built without LACLIP (--laclip); there are no crops to explain"
            )

        import torch

        image = decode_image(self.image_source(image_id), self.max_pixels)
        text_emb = torch.from_numpy(self.encode_text(text))
        with self._lock:
            features = LaclipEncoder(self.model, self.laclip).encode([image], [image_id])
        views, weights, beta = features.views, features.weights[0], self.laclip.beta
        per_view = (views.local[0] @ text_emb[0]).tolist()
        global_score = float(views.global_emb[0] @ text_emb[0])
        local_score = float(
            explicit_scores(views.global_emb, views.local, features.weights, text_emb)[0, 0]
        )
        crops = [
            CropExplanation(
                box=[int(v) for v in views.boxes[0][j]],
                weight=float(weights[j]),
                similarity=per_view[j],
                contribution=(1 - beta) * float(weights[j]) * per_view[j],
            )
            for j in range(len(per_view))
        ]
        crops.sort(key=lambda c: c.weight, reverse=True)
        return Explanation(
            image_id=image_id,
            width=image.width,
            height=image.height,
            mode=self.laclip.mode,
            global_score=global_score,
            local_score=local_score,
            score=beta * global_score + (1 - beta) * local_score,
            beta=beta,
            crops=crops,
        )
