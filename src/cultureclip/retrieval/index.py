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

:class:`~cultureclip.retrieval.search.RetrievalIndex` loads such a directory and answers
text → image and image → text queries; the manifest and model specs are in
:mod:`~cultureclip.retrieval.layout`, FAISS in :mod:`~cultureclip.retrieval.faiss_index`.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import Field

from cultureclip.core.device import DeviceSettings
from cultureclip.core.errors import InputError
from cultureclip.core.identity import data_identity, module_hash, references_hash
from cultureclip.core.io import (
    atomic_path,
    atomic_write_json,
    read_json,
    read_jsonl,
    stable_hash,
    write_jsonl,
)
from cultureclip.core.progress import progress as track_progress
from cultureclip.core.store import changed_fields
from cultureclip.data.collections import ImageDecodeError, decode_image, load_collection
from cultureclip.data.pairs import (
    DEFAULT_MAX_PIXELS,
    DOWNSCALED_FROM,
    PairCollection,
    raw_image_bytes,
)
from cultureclip.retrieval.faiss_index import FaissSettings, build_faiss, write_faiss
from cultureclip.retrieval.laclip import LaclipEncoder, LaclipSettings
from cultureclip.retrieval.layout import (
    INDEX_VERSION,
    MANIFEST,
    RetrievalIndexError,
    local_model_path,
    model_fingerprint,
    resolve_model_spec,
    save_npy,
)

if TYPE_CHECKING:
    from PIL import Image

    from cultureclip.models.base import VisionLanguageModel


logger = logging.getLogger(__name__)


class IndexConfig(DeviceSettings):
    """Settings of ``cultureclip index`` (saved as ``config.yaml`` in the index directory);
    ``precision`` bf16/fp16 encodes under autocast (``auto``: bf16 on a GPU, fp32 on a CPU)."""

    model: str
    data: str
    split: str | None = None
    out: str
    batch_size: int = Field(32, ge=1)
    #: images per resumable chunk file
    chunk_size: int = Field(512, ge=1)
    faiss: FaissSettings = FaissSettings()
    laclip: LaclipSettings | None = None
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


# ---- temp files --------------------------------------------------------------------------
#: what a build writes in ``out`` (its temporary files are ``.<name>.*``); under ``chunks/``
#: every dot file is one of its temporary files
_OUT_FILES = (
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


def clean_stale_temp_files(out: Path, rank: int = 0, world: int = 1) -> list[Path]:
    """Removes temporary files a killed index build left in ``out`` and ``out/chunks``.

    A shard removes only the temporary files of its own chunks (and rank 0 those in ``out``),
    so shards starting at different times never delete each other's files in progress.
    """
    candidates = list((out / "chunks").glob(".*"))
    if rank == 0:
        candidates += [path for name in _OUT_FILES for path in out.glob(f".{name}.*")]
    removed: list[Path] = []
    for path in candidates:
        number = re.match(r"\.(?:images|texts)-(\d+)\.", path.name)
        if number and int(number.group(1)) % world != rank:
            continue
        if path.is_file():
            path.unlink(missing_ok=True)
            removed.append(path)
    if removed:
        logger.info("removed %d temporary file(s) left by an interrupted build", len(removed))
    return removed


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


def _data_identity(config: IndexConfig, collection: PairCollection) -> dict[str, Any]:
    """The data's bytes; for a collection file, those of the images beside it too (a folder
    is hashed whole)."""
    identity = data_identity(config.data, exclude=Path(config.out))
    if Path(config.data).is_file():
        files = [(str(image), image) for image in collection.images if isinstance(image, Path)]
        identity["images"] = references_hash(files)
    return identity


def _fingerprint(
    config: IndexConfig, collection: PairCollection, model: VisionLanguageModel
) -> dict[str, Any]:
    """What must match for chunks on disk to be reused by a rerun (``config.model`` resolved):
    the loaded model's tensors and the data's bytes, whatever their names."""
    return {  # not the model's name: a copy of the same weights elsewhere is the same model
        "model_fingerprint": model_fingerprint(config.model),
        "model_weights": module_hash(model),
        "data": _data_identity(config, collection),
        "split": config.split,
        "split_seed": config.split_seed,
        "chunk_size": config.chunk_size,
        "laclip": config.laclip.model_dump(mode="json") if config.laclip else None,
        "max_pixels": config.max_pixels,
        "store_images": config.store_images,
        "images": stable_hash(collection.image_ids),
        "texts": stable_hash(collection.text_ids, collection.texts),
        # half-precision vectors are other numbers
        "precision": config.resolved_precision(
            config.resolved_device(int(os.environ.get("LOCAL_RANK", 0)))
        ),
    }


def _recorded_fingerprint(chunks: Path) -> dict[str, Any] | None:
    """The fingerprint the chunks on disk were made with; None when there are none, or when
    it is damaged (the chunks are then removed: nothing tells what they were made from)."""
    path = chunks / "fingerprint.json"
    if not path.exists():
        return None
    try:
        recorded = read_json(path)
    except InputError as exc:
        logger.warning("%s; rebuilding its chunks", exc)
        shutil.rmtree(chunks)
        return None
    # chunks of a build before ``precision`` existed were encoded in fp32
    return {"precision": "fp32", **recorded}


def _prepare_chunks(chunks: Path, fingerprint: dict[str, Any], overwrite: bool) -> None:
    """Creates ``chunks/`` for a new run, or checks that the chunks there belong to this run."""
    if overwrite and chunks.exists():
        shutil.rmtree(chunks)
    stored = _recorded_fingerprint(chunks)
    if stored is not None:
        changed = changed_fields(stored, fingerprint, shared_only=True)
        if changed:
            raise RetrievalIndexError(
                f"{chunks.parent} holds chunks of a different run (differs in {', '.join(changed)}); "
                f"use a new --out or pass --overwrite"
            )
        return
    chunks.mkdir(parents=True, exist_ok=True)
    atomic_write_json(chunks / "fingerprint.json", fingerprint)


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

    rank, world = shard_of(config)
    # one GPU per process, as accelerate/torchrun launch them; a missing one fails here
    local_rank = int(os.environ.get("LOCAL_RANK", rank)) if world > 1 else None
    device = config.resolved_device(local_rank)
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    if world > 1 and overwrite:
        raise RetrievalIndexError(
            "--overwrite cannot be combined with sharded encoding; remove the old chunks first"
        )
    clean_stale_temp_files(out, rank, world)
    if collection is None:
        collection = load_collection(config.data, config.split, seed=config.split_seed)
    if not collection.images:
        raise RetrievalIndexError(f"collection {config.data} (split {config.split}) has no images")
    if model is None:
        model = create_model(config.model, device=device, precision=config.precision)
    model.eval()
    config = config.model_copy(update={"model": resolve_model_spec(config.model)})
    if rank == 0:
        config.save(out)
    fingerprint = _fingerprint(config, collection, model)
    build = _ChunkedBuild(config, collection, model, out / "chunks", rank, world, log)
    _prepare_chunks(build.chunks, fingerprint, overwrite)
    with (
        track_progress("images", len(collection.images), enabled=progress) as images_task,
        track_progress("texts", len(collection.texts), enabled=progress) as texts_task,
    ):
        build.encode_images(images_task)
        build.encode_texts(texts_task)
    if world > 1:
        if rank != 0:
            logger.info("shard %d/%d done; rank 0 writes the index", rank, world)
            build.summary.finalized = False
            return build.summary
        build.collect_other_shards()
    return _finalize(out, build, fingerprint["model_fingerprint"])


def _chunk_files(
    chunks: Path, kind: str, suffix: str, n: int, size: int
) -> list[tuple[Path, range]]:
    """``(chunks/{kind}-{number:05d}{suffix}, rows)`` of each chunk of ``size`` of ``n`` rows."""
    return [
        (chunks / f"{kind}-{number:05d}{suffix}", range(start, min(start + size, n)))
        for number, start in enumerate(range(0, n, size))
    ]


@dataclass
class _ChunkedBuild:
    """The chunk loop of one process: encodes its chunks, counts what was reused."""

    config: IndexConfig
    collection: PairCollection
    model: VisionLanguageModel
    chunks: Path
    rank: int
    world: int
    log: Any

    def __post_init__(self) -> None:
        size = self.config.chunk_size
        n_images, n_texts = len(self.collection.images), len(self.collection.texts)
        self.image_chunks = _chunk_files(self.chunks, "images", ".npz", n_images, size)
        self.text_chunks = _chunk_files(self.chunks, "texts", ".npy", n_texts, size)
        #: filled in as chunks are encoded or reused; returned by :func:`build_index`
        self.summary = IndexSummary(self.chunks.parent, 0, 0, [], 0, {}, 0)
        self.waiting: list[Path] = []  # chunks of other shards, not written yet

    def mine(self, number: int) -> bool:
        return number % self.world == self.rank

    def encode_images(self, task: Any) -> None:
        started = time.perf_counter()
        for number, (path, rows) in enumerate(self.image_chunks):
            if path.exists() and (
                path.with_suffix(".bin").exists() or not self.config.store_images
            ):
                self.summary.resumed_chunks += 1
                self._read_reports(path)
            elif not self.mine(number):
                self.waiting.append(path)
            else:
                self._encode_image_chunk(path, rows, lambda n: task.update(advance=n))
                continue  # the chunk advanced the bar batch by batch
            task.update(advance=len(rows))
        self.summary.timings["images_s"] = time.perf_counter() - started

    def _encode_image_chunk(self, path: Path, rows: range, advance: Any) -> None:
        config = self.config
        if config.store_images:
            with atomic_path(path.with_suffix(".bin")) as blob_tmp, open(blob_tmp, "wb") as blob:
                arrays, failed, downscaled = self._encode_rows(rows, advance, blob)
        else:
            arrays, failed, downscaled = self._encode_rows(rows, advance, None)
        if self.log is not None:
            for bad in failed:
                self.log(f"skipped image {bad['image_id']}: {bad['reason']}")
            for big in downscaled:
                self.log(
                    f"image {big['image_id']} is {big['size'][0]}×{big['size'][1]}, over "
                    f"max_pixels={config.max_pixels:,}; indexed at "
                    f"{big['used'][0]}×{big['used'][1]}"
                )
        # The failure list is written before the chunk: a chunk file on disk means "done".
        write_jsonl(path.with_suffix(".failed.jsonl"), failed)
        write_jsonl(path.with_suffix(".downscaled.jsonl"), downscaled)
        with atomic_path(path) as tmp, open(tmp, "wb") as handle:
            np.savez(handle, **arrays)
        self.summary.failed.extend(failed)
        self.summary.downscaled.extend(downscaled)

    def _encode_rows(
        self, rows: range, on_batch: Any, blob: Any
    ) -> tuple[dict[str, np.ndarray], list[dict[str, str]], list[dict[str, Any]]]:
        """Encodes the images at ``rows``; with ``blob`` (a binary file) their encoded bytes are
        written to it back to back (``offsets`` in the arrays)."""
        model, collection, config = self.model, self.collection, self.config
        encoder = LaclipEncoder(model, config.laclip) if config.laclip else None
        # crops mode encodes every image once whole and once per crop
        views_per_image = (
            1 + config.laclip.k if config.laclip and config.laclip.mode == "crops" else 1
        )
        kept: list[int] = []
        failed: list[dict[str, str]] = []
        downscaled: list[dict[str, Any]] = []
        offsets = [0]
        vectors, globals_, weights, boxes = [], [], [], []
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
                    size, used = list(image.info[DOWNSCALED_FROM]), list(image.size)
                    downscaled.append({"image_id": image_id, "size": size, "used": used})
                if blob is not None:
                    blob.write(data)
                    offsets.append(offsets[-1] + len(data))
                images.append(image)
                batch_kept.append(row)
            if images:
                if encoder is None:
                    vectors.append(model.embed_images(images, batch_size=len(images)).numpy())
                else:
                    features = encoder.encode(images, [collection.image_ids[r] for r in batch_kept])
                    vectors.append(features.fused.numpy())
                    globals_.append(features.views.global_emb.numpy())
                    weights.append(features.weights.numpy())
                    boxes.append(features.views.boxes)
                self.summary.encoded_views += len(images) * views_per_image
                kept.extend(batch_kept)
            on_batch(len(batch_rows))
        dim = model.embed_dim
        arrays = {
            "rows": np.asarray(kept, dtype=np.int64),
            "offsets": np.asarray(offsets, dtype=np.int64),
            "vectors": np.concatenate(vectors) if vectors else np.zeros((0, dim), np.float32),
        }
        if encoder is not None:
            arrays["global"] = (
                np.concatenate(globals_) if globals_ else np.zeros((0, dim), np.float32)
            )
            arrays["weights"] = np.concatenate(weights) if weights else np.zeros((0, 0), np.float32)
            arrays["boxes"] = np.concatenate(boxes) if boxes else np.zeros((0, 0, 4), np.int32)
        return arrays, failed, downscaled

    def _read_reports(self, path: Path) -> None:
        """The failed and downscaled images of a chunk written earlier or by another shard."""
        self.summary.failed.extend(read_jsonl(path.with_suffix(".failed.jsonl")))
        downscaled = path.with_suffix(".downscaled.jsonl")
        if downscaled.exists():
            self.summary.downscaled.extend(read_jsonl(downscaled))

    def encode_texts(self, task: Any) -> None:
        started = time.perf_counter()
        for number, (path, rows) in enumerate(self.text_chunks):
            if path.exists():
                self.summary.resumed_chunks += 1
            elif not self.mine(number):
                self.waiting.append(path)
            else:
                texts = [self.collection.texts[i] for i in rows]
                batch_size = max(self.config.batch_size, 64)
                save_npy(path, self.model.embed_texts(texts, batch_size=batch_size).numpy())
            task.update(advance=len(rows))
        self.summary.timings["texts_s"] = time.perf_counter() - started

    def collect_other_shards(self) -> None:
        _wait_for(self.waiting, self.config.shard_wait_s)
        for path in self.waiting:
            if path.name.startswith("images-"):
                self._read_reports(path)


def _finalize(out: Path, build: _ChunkedBuild, model_fingerprint: str | None) -> IndexSummary:
    """Joins every shard's chunks into the index directory (rank 0)."""
    config, collection = build.config, build.collection
    # Chunks whose images all failed hold empty arrays of unknown view count: leave them out.
    loaded = [(np.load(path), path.with_suffix(".bin")) for path, _ in build.image_chunks]
    parts = [part for part, _ in loaded if part["rows"].size]
    blobs = [blob for part, blob in loaded if part["rows"].size]
    if not parts:
        write_jsonl(out / "failed_images.jsonl", build.summary.failed)
        raise RetrievalIndexError(
            f"no image of {config.data} could be decoded; see {out / 'failed_images.jsonl'}"
        )
    rows = np.concatenate([p["rows"] for p in parts])
    # write_index makes the vectors contiguous float32
    image_vectors = np.concatenate([p["vectors"] for p in parts])
    text_parts = [np.load(path) for path, _ in build.text_chunks]
    dim = image_vectors.shape[1]
    text_vectors = np.concatenate(text_parts) if text_parts else np.zeros((0, dim), np.float32)
    started = time.perf_counter()
    laclip_arrays = (
        {key: np.concatenate([p[key] for p in parts]) for key in ("global", "weights", "boxes")}
        if config.laclip
        else None
    )
    if config.store_images:
        _join_blobs(out, blobs, [p["offsets"] for p in parts])
    bundled = _bundle_model(out, config.model) if config.bundle_model else None
    meta = collection.meta
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
        failed=build.summary.failed,
        source={
            "data": str(meta.get("source", Path(config.data).resolve())),
            "split": meta.get("split", config.split),
            "split_seed": config.split_seed,
            "layout": meta.get("layout"),
            "name": collection.name or Path(config.data).name,
        },
        extra={
            "timings": build.summary.timings,
            "encoded_views": build.summary.encoded_views,
            "precision": getattr(build.model, "inference_precision", "fp32"),
            "model_fingerprint": model_fingerprint,
            "model_bundled": bundled,
            "images_stored": config.store_images,
            "max_pixels": config.max_pixels,
            "n_downscaled": len(build.summary.downscaled),
            "downscaled": build.summary.downscaled[:1000],
        },
    )
    build.summary.timings["finalize_s"] = time.perf_counter() - started
    build.summary.n_images, build.summary.n_texts = int(rows.size), len(collection.texts)
    return build.summary


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
    joined = [part[1:] + start for start, part in zip(starts, offsets, strict=False)]
    save_npy(out / "image_offsets.npy", np.concatenate([np.zeros(1, np.int64), *joined]))


def _bundle_model(out: Path, spec: str) -> dict[str, str] | None:
    """Copies a local model into ``out/model``; returns how to name it again, or None."""
    local = local_model_path(spec)
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
    laclip: LaclipSettings | None = None,
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
    save_npy(out / "image_vectors.npy", image_vectors)
    save_npy(out / "text_vectors.npy", text_vectors)
    if laclip is not None and laclip_arrays is not None:
        save_npy(out / "image_global.npy", laclip_arrays["global"].astype(np.float32))
        save_npy(out / "laclip_weights.npy", laclip_arrays["weights"].astype(np.float32))
        save_npy(out / "laclip_boxes.npy", laclip_arrays["boxes"].astype(np.int32))
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
    write_faiss(build_faiss(image_vectors, faiss_settings), out / "images.faiss")
    # A handful of texts cannot train IVF cells; small text sides are searched exactly.
    text_settings = faiss_settings if len(text_vectors) >= 1000 else FaissSettings()
    write_faiss(build_faiss(text_vectors, text_settings), out / "texts.faiss")
    source = {"split_seed": 0, **(source or {})}
    manifest = {
        "version": INDEX_VERSION,
        "model": model,
        **{key: source.get(key) for key in ("data", "split", "split_seed", "layout", "name")},
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
