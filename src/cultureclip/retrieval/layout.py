"""The index directory's contract: its manifest, its error, and how it names its model.

Shared by building (:mod:`cultureclip.retrieval.index`) and querying
(:mod:`cultureclip.retrieval.search`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cultureclip.core.errors import InputError
from cultureclip.core.identity import content_hash
from cultureclip.core.io import atomic_path

INDEX_VERSION = 1
MANIFEST = "index.json"
MANIFEST_KEYS = (
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


def local_model_path(spec: str) -> tuple[str, Path] | None:
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
    local = local_model_path(spec)
    if local is None:
        return spec
    prefix, path = local
    return f"{prefix}{path.resolve()}"


def model_fingerprint(spec: str) -> str | None:
    """The content hash of a local model's files (:func:`core.identity.content_hash`);
    None for hub names and built-in backends."""
    local = local_model_path(spec)
    return None if local is None else content_hash(local[1])


def display_model(spec: str) -> str:
    """A model spec without its directories (what a page may show)."""
    local = local_model_path(spec)
    if local is not None:
        return f"{local[0]}{local[1].resolve().name}"
    backend, sep, argument = spec.partition(":")
    if Path(spec).is_absolute() or not sep:
        return Path(spec).name
    if argument.startswith(("/", "~", ".")):  # a local path that is not there now
        return f"{backend}:{Path(argument).name}"
    return spec


def save_npy(path: Path, array: np.ndarray) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.save(handle, array)
