"""Frozen-tower outputs, computed once per input and shared by every model of one base.

A tower that does not train (``frozen`` or ``heads`` mode, in eval mode) maps an input
to the same features every time: its output is a pure function of the tower's weights,
the preprocessing and the input. This module keys those outputs so that they can be
reused safely:

- a **namespace** names the function: a fingerprint of the tower's tensors (names,
  dtypes, shapes and bytes: ``core.identity.ModuleFingerprint``) plus a description of
  the preprocessing (image size and normalisation, tokenizer and length). Changing either
  gives another namespace, so nothing computed before is read;
- a **key** names the input: :func:`file_identity` (a hash of the file's bytes)
  for an image file, :func:`content_key` (a hash of the bytes) for in-memory data,
  the text itself for a caption.

:class:`FeatureStore` is a bounded in-memory LRU of ``(namespace, key) → row``;
:func:`shared_store` is the process-wide one, which is how three models fine-tuned
from one base encode each evaluation image once. :class:`DiskFeatureCache` keeps rows
on disk for later runs.

Every stage with a frozen tower gets its outputs the same way:
:func:`frozen_tower_tables` (or, per tower, :func:`encode_image_sources` /
:func:`encode_text_sources`) returns the rows of a list of inputs from memory, else disk,
else the tower (each input encoded once), as a :class:`FeatureTable` that serves them by
input in place of the tower.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from cultureclip.core.identity import cache_root, file_hash
from cultureclip.core.io import atomic_path

logger = logging.getLogger(__name__)

#: bytes of tower outputs the process-wide store keeps (environment: megabytes)
DEFAULT_STORE_MB = 1024
STORE_MB_ENV = "CULTURECLIP_FEATURE_CACHE_MB"
SHARD_SUFFIX = ".safetensors"


# ---------------------------------------------------------------------------- identities
def file_identity(path: str | os.PathLike[str]) -> str:
    """``file:<sha256 of the bytes>``: the same for a copy, new whenever the file is rewritten
    (the hash is remembered by path, size, mtime and inode: :func:`core.identity.file_hash`)."""
    return "file:" + file_hash(path)[:32]


def content_key(data: bytes | memoryview, kind: str = "bytes") -> str:
    return f"{kind}:" + hashlib.sha256(data).hexdigest()[:32]


def image_identity(source: Any) -> str:
    """The key of an image source: a path (file identity), encoded bytes or a PIL image (content)."""
    if isinstance(source, str | os.PathLike):
        return file_identity(source)
    if isinstance(source, bytes | bytearray | memoryview):
        return content_key(bytes(source))
    from PIL import Image

    if isinstance(source, Image.Image):
        header = f"{source.mode}:{source.size}:".encode()
        return content_key(header + source.tobytes(), "pil")
    raise TypeError(f"no identity for an image source of type {type(source).__name__}")


def text_identity(text: str) -> str:
    # Short texts are their own key; long ones are hashed to keep the store small.
    return f"text:{text}" if len(text) <= 256 else content_key(text.encode("utf-8"), "text")


def tensor_row_keys(tensor: Tensor, mask: Tensor | None = None) -> list[str]:
    """One key per row of a preprocessed input: its dtype, shape and bytes (``mask``: kept items)."""
    prefix = f"row:{tensor.dtype}:{tuple(tensor.shape[1:])}:"
    rows = tensor.detach().cpu().contiguous()
    keep = mask.detach().cpu().bool() if mask is not None else None
    keys = []
    for index, row in enumerate(rows):
        data = row[keep[index]] if keep is not None else row
        digest = hashlib.blake2b(data.contiguous().numpy().tobytes(), digest_size=16).hexdigest()
        keys.append(prefix + digest)
    return keys


# --------------------------------------------------------------------------- fingerprints
def namespace(*parts: str) -> str:
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:32]


# ---------------------------------------------------------------------------- the store
class FeatureStore:
    """A bounded LRU of ``(namespace, key) → feature row`` (float32, on the CPU).

    ``max_bytes`` bounds the whole store; ``lookup(..., limit=n)`` also keeps at most
    ``n`` rows of that namespace. Thread-safe (the data loader's thread may look up).
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._rows: OrderedDict[tuple[str, str], Tensor] = OrderedDict()
        self._per_namespace: Counter[str] = Counter()
        self._bytes = 0
        self._lock = threading.RLock()
        #: rows computed by ``lookup`` (what tests and benchmarks count)
        self.computed = 0

    def __len__(self) -> int:
        return len(self._rows)

    @property
    def nbytes(self) -> int:
        return self._bytes

    def count(self, space: str | None) -> int:
        return self._per_namespace[space] if space is not None else 0

    def clear(self) -> None:
        with self._lock:
            self._rows.clear()
            self._per_namespace.clear()
            self._bytes = 0

    def _drop(self, key: tuple[str, str]) -> None:
        row = self._rows.pop(key)
        self._bytes -= row.nbytes
        self._per_namespace[key[0]] -= 1

    def get(self, space: str, keys: Sequence[str]) -> list[Tensor | None]:
        with self._lock:
            found: list[Tensor | None] = []
            for key in keys:
                row = self._rows.get((space, key))
                if row is not None:
                    self._rows.move_to_end((space, key))
                found.append(row)
            return found

    def put(
        self,
        space: str,
        keys: Sequence[str],
        rows: Tensor | Sequence[Tensor],
        limit: int = 0,
        *,
        computed: bool = False,
    ) -> None:
        """Stores rows; ``computed``: they were just encoded (counted in :attr:`computed`)."""
        with self._lock:
            if computed:
                self.computed += len(keys)
            if self.max_bytes <= 0:
                return
            for key, row in zip(keys, rows, strict=True):
                # A plain tensor even when encoded under inference_mode (retrieval indexing):
                # a later training step must be able to save it for backward.
                with torch.inference_mode(False):
                    stored = row.detach().to("cpu", torch.float32).clone()
                if (space, key) in self._rows:
                    self._drop((space, key))
                self._rows[(space, key)] = stored
                self._bytes += stored.nbytes
                self._per_namespace[space] += 1
            if limit and self.count(space) > limit:  # the namespace's oldest rows first
                for key in [k for k in self._rows if k[0] == space][: self.count(space) - limit]:
                    self._drop(key)
            while self._bytes > self.max_bytes and self._rows:
                self._drop(next(iter(self._rows)))

    def lookup(
        self,
        space: str,
        keys: Sequence[str],
        compute: Callable[[list[int]], Tensor],
        *,
        limit: int = 0,
    ) -> Tensor:
        """Rows for ``keys``; ``compute(indices)`` encodes the first occurrence of each missing key."""
        found = self.get(space, keys)
        first: dict[str, int] = {}
        for index, (key, row) in enumerate(zip(keys, found, strict=True)):
            if row is None:
                first.setdefault(key, index)
        fresh: dict[str, Tensor] = {}
        if first:
            computed = compute(list(first.values())).detach().to("cpu", torch.float32)
            fresh = dict(zip(first, computed, strict=True))
            self.put(space, list(fresh), list(fresh.values()), limit, computed=True)
        return torch.stack(
            [row if row is not None else fresh[key] for key, row in zip(keys, found, strict=True)]
        )


_SHARED: FeatureStore | None = None


def shared_store() -> FeatureStore:
    """The process-wide store (``CULTURECLIP_FEATURE_CACHE_MB`` megabytes; 0 turns it off)."""
    global _SHARED
    if _SHARED is None:
        try:
            megabytes = int(os.environ.get(STORE_MB_ENV, DEFAULT_STORE_MB))
        except ValueError:
            logger.warning("%s is not a number; using %d MB", STORE_MB_ENV, DEFAULT_STORE_MB)
            megabytes = DEFAULT_STORE_MB
        _SHARED = FeatureStore(megabytes * 2**20)
    return _SHARED


class StoreView:
    """One model's window on the shared store: ``namespace()`` names its tower now (None: the
    tower is not fixed, nothing is cached); at most ``size`` rows (0: off)."""

    def __init__(
        self, size: int, space: Callable[[], str | None], store: FeatureStore | None = None
    ) -> None:
        self.size = size
        self._space = space
        self._store = store

    @property
    def store(self) -> FeatureStore:
        return self._store if self._store is not None else shared_store()

    def namespace(self) -> str | None:
        return self._space() if self.size > 0 and self.store.max_bytes > 0 else None

    def __len__(self) -> int:
        return self.store.count(self.namespace())

    def __call__(self, keys: Sequence[str], compute: Callable[[list[int]], Tensor]) -> Tensor:
        space = self.namespace()
        if space is None:
            return compute(list(range(len(keys))))
        return self.lookup(space, keys, compute)

    def lookup(
        self, space: str, keys: Sequence[str], compute: Callable[[list[int]], Tensor]
    ) -> Tensor:
        """Rows of ``keys`` in ``space``, a namespace the caller just took from :meth:`namespace`
        (so a tower is fingerprinted once per call, not once to decide and once to look up)."""
        return self.store.lookup(space, keys, compute, limit=self.size)


# ----------------------------------------------------------------------------- on disk
class DiskFeatureCache:
    """Tower outputs in safetensors shards: ``<root>/<namespace>/<digest>.safetensors``.

    A shard holds ``features [N, F]`` and, in its metadata, the namespace and the N keys.
    Shards are written atomically; one that fails to read or disagrees with its namespace
    is skipped (with a warning) and its rows are computed again.
    """

    def __init__(self, root: str | os.PathLike[str], max_bytes: int | None = None) -> None:
        self.root = Path(root)
        self._index: dict[str, dict[str, tuple[Path, int]]] = {}
        #: shards are no longer written once the folder holds this many bytes (None: no cap)
        self.max_bytes = max_bytes
        self._used: int | None = None

    def _full(self, adding: int) -> bool:
        if self.max_bytes is None:
            return False
        if self._used is None:
            self._used = sum(p.stat().st_size for p in self.root.rglob(f"*{SHARD_SUFFIX}"))
            if self._used + adding > self.max_bytes:
                logger.info(
                    "the feature cache %s is full (%d MB); new features are kept in memory only",
                    self.root,
                    self._used >> 20,
                )
        return self._used + adding > self.max_bytes

    def _load_index(self, space: str) -> dict[str, tuple[Path, int]]:
        if space in self._index:
            return self._index[space]
        from safetensors import safe_open

        index: dict[str, tuple[Path, int]] = {}
        folder = self.root / space
        for shard in sorted(folder.glob(f"*{SHARD_SUFFIX}")) if folder.is_dir() else []:
            try:
                with safe_open(str(shard), framework="pt") as handle:
                    meta = handle.metadata() or {}
                    keys = json.loads(meta.get("keys", "null"))
                    rows = handle.get_slice("features").get_shape()[0]
                if meta.get("namespace") != space or not isinstance(keys, list):
                    raise ValueError("metadata does not name this namespace")
                if len(keys) != rows:
                    raise ValueError(f"{len(keys)} keys for {rows} rows")
            except Exception as exc:  # any shard that does not read back is skipped, never trusted
                logger.warning("ignoring feature cache shard %s: %s", shard, exc)
                continue
            for row, key in enumerate(keys):
                index[str(key)] = (shard, row)
        self._index[space] = index
        return index

    def get(self, space: str, keys: Sequence[str]) -> list[Tensor | None]:
        from safetensors import safe_open

        index = self._load_index(space)
        found: list[Tensor | None] = [None] * len(keys)
        by_shard: dict[Path, list[tuple[int, int]]] = {}
        for position, key in enumerate(keys):
            if key in index:
                shard, row = index[key]
                by_shard.setdefault(shard, []).append((position, row))
        for shard, wanted in by_shard.items():
            try:
                with safe_open(str(shard), framework="pt") as handle:
                    features = handle.get_tensor("features")
            except Exception as exc:  # torn after it was indexed: its rows are recomputed
                logger.warning("ignoring feature cache shard %s: %s", shard, exc)
                for key in [k for k, (s, _) in index.items() if s == shard]:
                    del index[key]
                continue
            for position, row in wanted:
                found[position] = features[row].to(torch.float32)
        return found

    def put(self, space: str, keys: Sequence[str], rows: Tensor) -> None:
        if not keys:
            return
        from safetensors.torch import save_file

        features = rows.detach().to("cpu", torch.float32).contiguous()
        if self._full(features.numel() * 4):
            return
        folder = self.root / space
        folder.mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha256("\n".join(keys).encode()).hexdigest()[:24]
        path = folder / f"{digest}{SHARD_SUFFIX}"
        with atomic_path(path) as tmp:
            save_file(
                {"features": features},
                str(tmp),
                metadata={"namespace": space, "keys": json.dumps(list(keys))},
            )
        if self._used is not None:
            self._used += path.stat().st_size
        index = self._load_index(space)
        for row, key in enumerate(keys):
            index[key] = (path, row)


# ---------------------------------------------------------------- frozen towers, encoded once
#: below this many examples, starting worker processes costs more than it saves
MIN_EXAMPLES_FOR_WORKERS = 256
MAX_AUTO_WORKERS = 4


def auto_workers(examples: int) -> int:
    """min(4, CPUs - 1) decoding processes, none for small data."""
    from cultureclip.core.threads import available_cpus

    if examples < MIN_EXAMPLES_FOR_WORKERS:
        return 0
    return max(0, min(MAX_AUTO_WORKERS, available_cpus() - 1))


@dataclass
class _ImageSources(torch.utils.data.Dataset):
    """Decodes and preprocesses image sources (paths or encoded bytes), one tensor each."""

    sources: Sequence[Any]
    transform: Any

    def __len__(self) -> int:
        return len(self.sources)

    def __getitem__(self, index: int) -> Tensor:
        from cultureclip.data.pairs import open_image

        source = self.sources[index]
        return self.transform([open_image(Path(source) if isinstance(source, str) else source)])[0]


def _stored_or_encoded(
    space: str,
    keys: list[str],
    disk: Any,
    encode: Callable[[list[int]], Iterator[tuple[list[int], Tensor]]],
) -> Tensor:
    """Rows of ``keys`` from the shared store, else ``disk``, else ``encode(missing)``,
    which yields ``(indices, rows)`` batches; encoded rows are stored in both."""
    store = shared_store()
    found = store.get(space, keys)
    missing = [i for i, row in enumerate(found) if row is None]
    if disk is not None and missing:
        from_disk = disk.get(space, [keys[i] for i in missing])
        hits = [(i, row) for i, row in zip(missing, from_disk, strict=True) if row is not None]
        if hits:
            store.put(space, [keys[i] for i, _ in hits], [row for _, row in hits])
        for i, row in hits:
            found[i] = row
        missing = [i for i, row in enumerate(found) if row is None]
    for batch, rows in encode(missing):
        store.put(space, [keys[i] for i in batch], rows, computed=True)
        if disk is not None:
            disk.put(space, [keys[i] for i in batch], rows)
        for i, row in zip(batch, rows, strict=True):
            found[i] = row
    return torch.stack([row for row in found if row is not None]) if found else torch.empty(0)


def encode_image_sources(
    model: Any,
    sources: Sequence[Any],
    *,
    space: str,
    disk: Any = None,
    workers: int | None = None,
    batch_size: int = 64,
    show_progress: bool = False,
) -> Tensor:
    """Tower outputs ``[N, F]`` of image ``sources``: from memory, disk, or decoded (in
    ``workers`` processes) and encoded once. ``space`` is ``model.tower_namespace("image")``."""
    from torch.utils.data import DataLoader

    from cultureclip.core.progress import progress
    from cultureclip.core.threads import worker_init

    def encode(missing: list[int]) -> Iterator[tuple[list[int], Tensor]]:
        if not missing:
            return
        count = auto_workers(len(missing)) if workers is None else workers
        loader = DataLoader(
            _ImageSources([sources[i] for i in missing], model.preprocess),
            batch_size=batch_size,
            num_workers=count,
            worker_init_fn=worker_init if count else None,
            pin_memory=model.device.type == "cuda",
            collate_fn=torch.stack,
        )
        done = 0
        with progress("encode frozen image tower", len(missing), enabled=show_progress) as task:
            for pixels in loader:
                rows = model.image_tower_features(pixels).to("cpu", torch.float32)
                yield missing[done : done + len(rows)], rows
                done += len(rows)
                task.update(completed=done)

    return _stored_or_encoded(space, [image_identity(s) for s in sources], disk, encode)


def encode_text_sources(
    model: Any, texts: Sequence[str], *, space: str, disk: Any = None, batch_size: int = 256
) -> Tensor:
    """Text-tower outputs ``[N, F]`` of ``texts``, each text encoded once (memory, disk, tower)."""
    from cultureclip.models.base import by_length

    def encode(missing: list[int]) -> Iterator[tuple[list[int], Tensor]]:
        # Batched by length: a batch pads to its own longest text (much less tower work).
        missing = [missing[j] for j in by_length([texts[i] for i in missing])]
        for start in range(0, len(missing), batch_size):
            batch = missing[start : start + batch_size]
            rows = model.text_tower_features([texts[i] for i in batch])
            yield batch, rows.to("cpu", torch.float32)

    return _stored_or_encoded(space, [text_identity(t) for t in texts], disk, encode)


class FeatureTable:
    """Feature rows of distinct inputs, looked up by input (what a frozen tower would output)."""

    def __init__(self, inputs: list[Any], rows: Tensor) -> None:
        self.index = {source: row for row, source in enumerate(inputs)}
        self.rows = rows

    def __call__(self, inputs: Sequence[Any]) -> Tensor:
        return self.rows[torch.tensor([self.index[i] for i in inputs], dtype=torch.long)]

    def as_tokens(self, texts: Sequence[str]) -> dict[str, Tensor]:
        """What a fixed text tower reads in place of tokens: its stored outputs ``[B, F]``."""
        from cultureclip.models.base import TOWER_FEATURES

        return {TOWER_FEATURES: self(texts)}


def frozen_tower_tables(
    model: Any,
    images: Sequence[Any],
    texts: Sequence[str],
    *,
    disk_dir: str | None = None,
    workers: int | None = None,
    batch_size: int = 64,
    show_progress: bool = False,
) -> tuple[FeatureTable | None, FeatureTable | None] | None:
    """``(image table, text table)`` of ``model``'s fixed towers (None for a tower that
    trains), every distinct input encoded once (memory, then ``disk_dir``, then the tower).

    None when no tower is fixed (``tower_namespace``) or when the outputs would not fit
    the shared store's memory budget: the caller then encodes as it goes.
    """
    image_space, text_space = model.tower_namespace("image"), model.tower_namespace("text")
    if image_space is None and text_space is None:
        return None
    # On disk, outputs of another precision (autocast, half weights) are other outputs.
    precision = precision_of(model)
    image_space = image_space and namespace(image_space, precision)
    text_space = text_space and namespace(text_space, precision)
    # Pooled outputs are ~1-2k floats; estimated with 2048 to stay on the safe side.
    estimate = 4 * 2048 * ((len(images) if image_space else 0) + (len(texts) if text_space else 0))
    store = shared_store()
    if estimate > store.max_bytes:
        logger.info(
            "frozen-tower features of %d images and %d texts (~%d MB) exceed the feature "
            "store's %d MB; encoding every step instead",
            len(images),
            len(texts),
            estimate >> 20,
            store.max_bytes >> 20,
        )
        return None
    disk = DiskFeatureCache(disk_dir) if disk_dir else None
    computed_before = store.computed
    image_table = text_table = None
    if image_space is not None:
        rows = encode_image_sources(
            model,
            images,
            space=image_space,
            disk=disk,
            workers=workers,
            batch_size=batch_size,
            show_progress=show_progress,
        )
        image_table = FeatureTable(images, rows)
    if text_space is not None:
        text_table = FeatureTable(
            texts, encode_text_sources(model, texts, space=text_space, disk=disk)
        )
    logger.info(
        "frozen-tower features: %s images, %s texts (%d encoded now, the others stored)",
        len(images) if image_table else "no",
        len(texts) if text_table else "no",
        store.computed - computed_before,
    )
    return image_table, text_table


# ------------------------------------------------------- shared across checkpoints and runs
_USER_CACHE: dict[Path, DiskFeatureCache] = {}
#: megabytes of features the user cache may hold (environment), before it stops growing
DISK_MB_ENV = "CULTURECLIP_FEATURE_DISK_MB"
DEFAULT_DISK_MB = 4096


def user_feature_cache() -> DiskFeatureCache:
    """The per-user on-disk feature store, ``<cache>/features`` (``CULTURECLIP_CACHE``),
    that every run and checkpoint of one tower shares; it stops growing at
    ``CULTURECLIP_FEATURE_DISK_MB`` (4096 MB; delete the folder to start over)."""
    root = cache_root() / "features"
    if root not in _USER_CACHE:
        try:
            megabytes = int(os.environ.get(DISK_MB_ENV, DEFAULT_DISK_MB))
        except ValueError:
            logger.warning("%s is not a number; using %d MB", DISK_MB_ENV, DEFAULT_DISK_MB)
            megabytes = DEFAULT_DISK_MB
        _USER_CACHE[root] = DiskFeatureCache(root, max_bytes=megabytes * 2**20)
    return _USER_CACHE[root]


def precision_of(model: Any) -> str:
    """What besides the weights changes a tower's output bits: dtype, device kind, autocast."""
    device = model.device.type
    autocast = torch.is_autocast_enabled(device) and torch.get_autocast_dtype(device)
    return f"{model._dtype}:{device}:autocast={autocast}"


def shared_tower_features(
    model: Any, tower: str, inputs: Sequence[Any], batch_size: int
) -> Tensor | None:
    """Outputs ``[N, F]`` of ``model``'s fixed ``tower`` ("image": PIL images, "text":
    texts), keyed by (tower weights + preprocessing, input content, precision): from the
    process-wide store, else the user's feature cache on disk, else the tower (and kept in
    both). None when the tower is not fixed (it trains, or the backend cannot split its
    towers) or the store is off (``CULTURECLIP_FEATURE_CACHE_MB=0``)."""
    if not getattr(model, "splits_towers", False) or shared_store().max_bytes <= 0:
        return None
    fixed = model.tower_namespace(tower)
    if fixed is None:
        return None
    space = namespace("shared", tower, fixed, precision_of(model))
    disk = user_feature_cache()
    if tower == "text":
        return encode_text_sources(model, inputs, space=space, disk=disk, batch_size=batch_size)

    def encode(missing: list[int]) -> Iterator[tuple[list[int], Tensor]]:
        for start in range(0, len(missing), batch_size):
            batch = missing[start : start + batch_size]
            pixels = model.preprocess([inputs[i] for i in batch])
            yield batch, model.image_tower_features(pixels).to("cpu", torch.float32)

    return _stored_or_encoded(space, [image_identity(image) for image in inputs], disk, encode)
