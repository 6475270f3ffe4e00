"""Content identity: one place that says what an output was made from.

Every reuse decision (stored eval results, feature caches, the retrieval index, synth
steps, training resume) keys on a hash of what decided the output: the model's weights,
the data's bytes and the settings that change the result, never a name or a path.

- :func:`file_hash` is a SHA-256 of a file's bytes, remembered by (resolved path, size,
  mtime, inode) in memory and, for files of 1 MiB or more, in ``<cache>/file-hashes/``: a
  file is read again only when one of those changes (a rewrite in place changes the mtime,
  a replacement the inode); a file modified in the last 2 s is not remembered yet;
- :func:`content_hash` covers a file or a folder (relative names and file hashes; hidden
  files such as ``.cache``/``.git`` and an ``exclude`` folder left out);
- :func:`tensors_hash` / :func:`module_hash` hash an in-memory model from its parameters
  and buffers (names, dtypes, shapes, bytes);
- :func:`hub_revision` resolves a hub id to the commit it points to (the hub when online,
  the local snapshot's commit offline);
- :func:`spec_identity` is a model spec's identity: its local weights' content, else the
  hub commit it names, else the spec alone (a built-in model such as ``lite:en``).

:func:`cache_root` is the per-user cache these memos and the shared feature store live in
(``CULTURECLIP_CACHE``, else ``$XDG_CACHE_HOME/cultureclip``, else ``~/.cache/cultureclip``).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import os
import re
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from cultureclip.core.errors import DiskFullError
from cultureclip.core.io import atomic_write_text, stable_hash

logger = logging.getLogger(__name__)

CACHE_ENV = "CULTURECLIP_CACHE"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_CHUNK = 1 << 22
_DISK_MEMO_BYTES = 1 << 20
_SETTLED_NS = 2_000_000_000

_memo: dict[tuple[str, int, int, int], str] = {}
_memo_lock = threading.Lock()


def cache_root() -> Path:
    """The per-user cache folder (``CULTURECLIP_CACHE`` overrides it)."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "cultureclip"


def short(identity: Any, length: int = 12) -> str:
    """A short digest of an identity (what logs and result files show)."""
    return stable_hash(identity, length=length)


def file_hash(path: str | os.PathLike[str]) -> str:
    """SHA-256 of a file's bytes, memoised by (resolved path, size, mtime_ns, inode)."""
    resolved = Path(path).resolve()
    stat = resolved.stat()
    signature = (str(resolved), stat.st_size, stat.st_mtime_ns, stat.st_ino)
    # A file modified within the clock's granularity of now could be rewritten again with
    # the same mtime and size ("racy git"): such a hash is not remembered.
    settled = time.time_ns() - stat.st_mtime_ns > _SETTLED_NS
    with _memo_lock:
        if signature in _memo:
            return _memo[signature]
    # Small files (images, annotations) rehash faster than a memo file reads back.
    memo_file = None
    if settled and stat.st_size >= _DISK_MEMO_BYTES:
        memo_file = cache_root() / "file-hashes" / f"{stable_hash(*signature, length=32)}.txt"
    digest = _read_memo(memo_file) if memo_file is not None else None
    if digest is None:
        hasher = hashlib.sha256()
        with open(resolved, "rb") as handle:
            while chunk := handle.read(_CHUNK):
                hasher.update(chunk)
        digest = hasher.hexdigest()
        if memo_file is not None:
            with contextlib.suppress(OSError, DiskFullError):  # a read-only cache: rehash later
                atomic_write_text(memo_file, digest)
    if settled:
        with _memo_lock:
            _memo[signature] = digest
    return digest


def _read_memo(memo_file: Path) -> str | None:
    try:
        text = memo_file.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    if re.fullmatch(r"[0-9a-f]{64}", text):
        return text
    logger.warning("ignoring a corrupt file-hash memo %s; hashing the file again", memo_file)
    return None


def content_hash(
    path: str | os.PathLike[str], exclude: str | os.PathLike[str] | None = None
) -> str:
    """A file's or a folder tree's content hash (relative names and file hashes); hidden
    files and folders and ``exclude`` (e.g. a results folder inside the data) are left
    out. ``""`` for a path that does not exist."""
    path = Path(path)
    if path.is_file():
        return file_hash(path)[:32]
    if not path.is_dir():
        return ""
    excluded = Path(exclude).resolve() if exclude is not None else None
    digest = hashlib.sha256()
    for file in sorted(path.rglob("*")):
        relative = file.relative_to(path)
        if any(part.startswith(".") for part in relative.parts) or not file.is_file():
            continue
        if excluded is not None and file.resolve().is_relative_to(excluded):
            continue
        digest.update(relative.as_posix().encode("utf-8") + b"\0" + file_hash(file).encode())
    return digest.hexdigest()[:32]


def tensors_hash(named: Iterable[tuple[str, Any]], extra: str = "") -> str:
    """A digest of tensors' names, dtypes, shapes and bytes (and ``extra``)."""
    import torch

    digest = hashlib.sha256(extra.encode())
    for name, tensor in named:
        data = tensor.detach().to("cpu").contiguous()
        digest.update(f"|{name}:{data.dtype}:{tuple(data.shape)}|".encode())
        if data.dtype in (torch.bfloat16, torch.float16):  # hash the raw 16-bit words
            data = data.view(torch.int16)
        elif data.dtype.itemsize == 1 and data.dtype not in (torch.uint8, torch.int8, torch.bool):
            data = data.view(torch.uint8)  # float8 kinds numpy cannot hold
        if data.numel():
            digest.update(memoryview(data.numpy()).cast("B"))
    return digest.hexdigest()[:32]


def module_hash(module: Any) -> str:
    """The content hash of an in-memory model: its parameters and buffers, and its class."""
    tensors = [*module.named_parameters(), *module.named_buffers()]
    return tensors_hash(tensors, type(module).__qualname__)


class ModuleFingerprint:
    """:func:`module_hash` memoised on a cheap signature (each tensor's name, storage
    address, version counter and dtype) for hot paths such as feature-cache lookups.
    Writes through ``tensor.data`` bypass the counter: code that does that must call
    :meth:`reset`. Reuse decisions that run once (a stored eval result) hash in full."""

    def __init__(self, module: Any, describe: str) -> None:
        self.module = module
        self.describe = describe
        self._signature: tuple[Any, ...] | None = None
        self._digest = ""

    def reset(self) -> None:
        self._signature = None

    def __call__(self) -> str:
        tensors = [*self.module.named_parameters(), *self.module.named_buffers()]
        signature = tuple((n, t.data_ptr(), t._version, t.dtype) for n, t in tensors)
        if signature != self._signature:
            self._digest = tensors_hash(tensors, self.describe)
            self._signature = signature
        return self._digest


@functools.lru_cache(maxsize=256)
def hub_revision(repo_id: str, repo_type: str = "model") -> str | None:
    """The commit a hub id points to now: asked of the hub when online, else the local
    snapshot's; None when neither can tell (the id is then all that is known). Asked once
    per process: one run is one revision."""
    if not _HUB_ID.match(repo_id):
        return None
    try:
        from huggingface_hub import HfApi, constants
    except ImportError:
        return None
    if not constants.HF_HUB_OFFLINE:
        try:
            info = HfApi().repo_info(repo_id, repo_type=repo_type, timeout=10)
            return str(info.sha) if info.sha else None
        except Exception as exc:  # offline in practice, private, or moved: fall back to disk
            logger.debug("cannot resolve %s on the hub: %s", repo_id, exc)
    folder = f"{repo_type}s--{repo_id.replace('/', '--')}"
    ref = Path(constants.HF_HUB_CACHE) / folder / "refs" / "main"
    try:
        return ref.read_text(encoding="ascii").strip() or None
    except OSError:
        return None


def local_weights(spec: str) -> Path | None:
    """The local file or folder a model spec (``backend:path@x?y``) names, if any."""
    _, _, argument = spec.partition(":")
    for candidate in (spec, argument, argument.split("@", 1)[0], argument.split("?", 1)[0]):
        if candidate and Path(candidate).expanduser().exists():
            return Path(candidate).expanduser()
    return None


def weights_identity(name_or_path: str) -> dict[str, Any]:
    """``{"weights": content}`` for a local file or folder, ``{"revision": commit}`` for a
    hub id that resolves, else ``{}`` (a built-in or served model known by its name)."""
    path = Path(name_or_path).expanduser()
    if name_or_path and path.exists():
        return {"weights": content_hash(path)}
    revision = hub_revision(name_or_path)
    return {"revision": revision} if revision is not None else {}


def portable_spec(spec: str) -> str:
    """The spec without where its local weights lie (``hf:<local>?x=1``): a copy is the same."""
    local = local_weights(spec)
    return spec if local is None else spec.replace(str(local), "<local>", 1)


def spec_identity(spec: str) -> dict[str, Any]:
    """What a model spec's outputs are made from: the spec, plus the content of the local
    weights it names or the hub commit its id resolves to."""
    local = local_weights(spec)
    if local is not None:  # known by its content, not by where it lies
        return {"spec": portable_spec(spec), "weights": content_hash(local)}
    _, _, argument = spec.partition(":")
    return {"spec": spec, **weights_identity(argument.split("?", 1)[0].split("@", 1)[0])}


def references_hash(references: Iterable[tuple[str, str | os.PathLike[str]]]) -> str:
    """The files a data file points to (images beside an annotation file): each as it is
    written there and by its bytes, so an image rewritten or swapped is other data."""
    digest = hashlib.sha256()
    for written, path in sorted({(str(w), str(p)) for w, p in references}):
        digest.update(f"{written}\0{file_hash(path)}\n".encode())
    return digest.hexdigest()[:32]


def data_identity(data: str | os.PathLike[str], exclude: Path | None = None) -> dict[str, Any]:
    """A local data path's content hash, or a hub dataset id and the commit it resolves to."""
    path = Path(data).expanduser()
    if path.exists():
        return {"content": content_hash(path, exclude)}
    identity: dict[str, Any] = {"hub": str(data)}
    revision = hub_revision(str(data), "dataset")
    if revision is not None:
        identity["revision"] = revision
    return identity
