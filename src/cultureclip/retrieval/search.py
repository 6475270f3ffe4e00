"""Querying a retrieval index: :class:`RetrievalIndex` loads an index directory and answers
text → image and image → text queries, and explains LACLIP scores."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from cultureclip.core.device import resolve_device, resolve_precision
from cultureclip.core.errors import InputError, MissingInputError, UnknownNameError
from cultureclip.core.io import read_json, read_jsonl
from cultureclip.data.collections import decode_image, load_collection
from cultureclip.data.pairs import DEFAULT_MAX_PIXELS, PairCollection
from cultureclip.retrieval.faiss_index import FaissSettings, read_faiss
from cultureclip.retrieval.laclip import LaclipEncoder, LaclipSettings, explicit_scores
from cultureclip.retrieval.layout import (
    INDEX_VERSION,
    MANIFEST,
    MANIFEST_KEYS,
    RetrievalIndexError,
    display_model,
    local_model_path,
    model_fingerprint,
)

if TYPE_CHECKING:
    from PIL import Image

    from cultureclip.models.base import VisionLanguageModel


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


def _ranked(scores: np.ndarray, rows: np.ndarray) -> list[tuple[int, float, int]]:
    """(rank, score, row) of one query's results; FAISS pads a short list with row -1."""
    pairs = zip(scores[0].tolist(), rows[0].tolist(), strict=True)
    return [(rank, score, row) for rank, (score, row) in enumerate(pairs, start=1) if row >= 0]


class RetrievalIndex:
    """A loaded index directory. The query model is created on first use (or passed in)."""

    def __init__(
        self,
        directory: str | Path,
        *,
        model: VisionLanguageModel | None = None,
        device: str | None = None,
        precision: str | None = "auto",
    ) -> None:
        import pyarrow.parquet as pq

        if model is None:  # a device this machine lacks (or a bad precision) fails now
            resolve_precision(precision, resolve_device(device))
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
        missing = [key for key in MANIFEST_KEYS if key not in self.manifest]
        if missing:
            raise RetrievalIndexError(
                f"{manifest_path} lacks {', '.join(missing)} (written by an older cultureclip?); "
                f"rebuild the index with `cultureclip index --overwrite`"
            )
        self.faiss_settings = FaissSettings.model_validate(self.manifest["faiss"])
        laclip = self.manifest.get("laclip")
        self.laclip = LaclipSettings.model_validate(laclip) if laclip else None
        self.image_ids: list[str] = (
            pq.read_table(self.directory / "images.parquet").column("image_id").to_pylist()
        )
        texts = pq.read_table(self.directory / "texts.parquet").to_pydict()
        self.text_ids: list[str] = texts["text_id"]
        self.texts: list[str] = texts["text"]
        self.text_image_ids: list[list[str]] = texts["image_ids"]
        self.image_vectors = np.load(self.directory / "image_vectors.npy", mmap_mode="r")
        self.text_vectors = np.load(self.directory / "text_vectors.npy", mmap_mode="r")
        self.image_faiss = read_faiss(self.directory / "images.faiss", self.faiss_settings)
        text_settings = FaissSettings.model_validate(self.manifest["text_faiss"])
        self.text_faiss = read_faiss(self.directory / "texts.faiss", text_settings)
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
            self._blob = np.memmap(self.directory / "images.bin", dtype=np.uint8, mode="r")
        self.captions: dict[str, list[str]] = {}
        self._text_rows: dict[str, list[int]] = {}
        for row, (text, image_ids) in enumerate(zip(self.texts, self.text_image_ids, strict=True)):
            for image_id in image_ids:
                self.captions.setdefault(image_id, []).append(text)
                self._text_rows.setdefault(image_id, []).append(row)
        self._model = model
        self._device = device
        #: what queries encode in (``auto``: bf16 on a GPU, fp32 on a CPU; ``bf16``/``fp16``
        #: run under autocast); the manifest's ``precision`` says what the images were
        self._precision = precision
        self._collection: PairCollection | None = None
        self._positions: dict[str, int] = {}
        self._lock = threading.RLock()

    @property
    def name(self) -> str:
        """The collection's name (never a path)."""
        return str(
            self.manifest.get("name") or Path(str(self.manifest.get("data") or "index")).name
        )

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
        if not expected:  # a hub name or built-in backend
            return spec
        if local_model_path(spec) is None:
            raise RetrievalIndexError(
                f"the model of this index, {spec}, is not there any more; move it back, or "
                f"rebuild the index (`cultureclip index --set bundle_model=true` copies the model in)"
            )
        found = model_fingerprint(spec)
        if found is not None and len(expected) != len(found):
            raise RetrievalIndexError(
                f"this index was built by an older cultureclip that did not hash the model's "
                f"whole content, so {spec} cannot be checked; rebuild with "
                f"`cultureclip index --overwrite`"
            )
        if found != expected:
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

                device = resolve_device(self._device)
                self._model = create_model(
                    self.model_spec(), device=device, precision=self._precision
                )
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
        if self._blob is not None and self._offsets is not None:
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
            ImageHit(rank, self.image_ids[row], score, self.captions.get(self.image_ids[row], []))
            for rank, score, row in _ranked(scores, rows)
        ]

    def search_image(self, image: Image.Image, k: int = 10) -> list[TextHit]:
        """Texts for an image query, best first."""
        scores, rows = self.search_vectors(self.encode_image(image), k, "texts")
        return [
            TextHit(
                rank, self.text_ids[row], self.texts[row], score, list(self.text_image_ids[row])
            )
            for rank, score, row in _ranked(scores, rows)
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
            CropExplanation(box.tolist(), weight, similarity, (1 - beta) * weight * similarity)
            for box, weight, similarity in zip(
                views.boxes[0], weights.tolist(), per_view, strict=True
            )
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
